//! Appender files (F.1, F.8–F.11) and slave files (F.2). Every change goes to the storage the
//! tracker names for updates (103), with the appender's or the master's name.

use std::path::Path;

use fdfs_proto::name::{classify, slave_name, NameFields};
use tokio::io::AsyncRead;

use crate::client::{ext_from_path, open_local};
use crate::error::ClientError;
use crate::{storage, Client, FileId, FileKind, UploadOptions};

impl Client {
    /// Uploads `data` as an appender file, which can later be appended to, modified,
    /// truncated, and finally turned into a normal file with [`regenerate`](Self::regenerate).
    ///
    /// ```no_run
    /// # async fn demo(client: fdfs_client::Client) -> Result<(), fdfs_client::ClientError> {
    /// let id = client.upload_appender_bytes(b"hello\n", &Default::default()).await?;
    /// client.append_bytes(&id, b"world\n").await?;
    /// let normal = client.regenerate(&id).await?;
    /// # Ok(())
    /// # }
    /// ```
    pub async fn upload_appender_bytes(
        &self,
        data: &[u8],
        options: &UploadOptions,
    ) -> Result<FileId, ClientError> {
        let mut reader = data;
        self.upload(true, &mut reader, data.len() as u64, options)
            .await
    }

    /// Uploads a local file as an appender file (extension from the file name when
    /// `options.ext` is empty, as in [`upload_file`](Self::upload_file)).
    ///
    /// ```no_run
    /// # async fn demo(client: fdfs_client::Client) -> Result<(), fdfs_client::ClientError> {
    /// let id = client.upload_appender_file("app.log", &Default::default()).await?;
    /// # Ok(())
    /// # }
    /// ```
    pub async fn upload_appender_file(
        &self,
        path: impl AsRef<Path>,
        options: &UploadOptions,
    ) -> Result<FileId, ClientError> {
        let path = path.as_ref();
        let (mut file, size) = open_local(path).await?;
        let mut options = options.clone();
        if options.ext.is_empty() {
            options.ext = ext_from_path(path).unwrap_or_default();
        }
        self.upload(true, &mut file, size, &options).await
    }

    /// Uploads exactly `size` bytes from `reader` as an appender file.
    ///
    /// ```no_run
    /// # async fn demo(client: fdfs_client::Client) -> Result<(), fdfs_client::ClientError> {
    /// let id = client.upload_appender_reader(&b"log start\n"[..], 10, &Default::default()).await?;
    /// # Ok(())
    /// # }
    /// ```
    pub async fn upload_appender_reader<R: AsyncRead + Unpin + Send>(
        &self,
        mut reader: R,
        size: u64,
        options: &UploadOptions,
    ) -> Result<FileId, ClientError> {
        self.upload(true, &mut reader, size, options).await
    }

    /// Appends `data` to appender file `id` (APPEND_FILE, 24).
    ///
    /// ```no_run
    /// # async fn demo(client: fdfs_client::Client, id: fdfs_client::FileId) -> Result<(), fdfs_client::ClientError> {
    /// client.append_bytes(&id, b"one more line\n").await?;
    /// # Ok(())
    /// # }
    /// ```
    pub async fn append_bytes(&self, id: &FileId, data: &[u8]) -> Result<(), ClientError> {
        self.append_reader(id, data, data.len() as u64).await
    }

    /// Appends exactly `size` bytes from `reader` to appender file `id`, streaming them.
    ///
    /// ```no_run
    /// # async fn demo(client: fdfs_client::Client, id: fdfs_client::FileId) -> Result<(), fdfs_client::ClientError> {
    /// let file = tokio::fs::File::open("more.log").await?;
    /// let size = file.metadata().await?.len();
    /// client.append_reader(&id, file, size).await?;
    /// # Ok(())
    /// # }
    /// ```
    pub async fn append_reader<R: AsyncRead + Unpin + Send>(
        &self,
        id: &FileId,
        mut reader: R,
        size: u64,
    ) -> Result<(), ClientError> {
        require_appender(id)?;
        let addr = self.update_server(id).await?;
        on_conn!(self.inner.pool, addr.as_str(), false, |conn| {
            storage::append(conn, id, size, &mut reader)
        })
    }

    /// Overwrites `data.len()` bytes of appender file `id` at `offset` (MODIFY_FILE, 34).
    /// `offset` may equal the current size (then it appends) but not exceed it.
    ///
    /// ```no_run
    /// # async fn demo(client: fdfs_client::Client, id: fdfs_client::FileId) -> Result<(), fdfs_client::ClientError> {
    /// client.modify_bytes(&id, 0, b"HELLO").await?;
    /// # Ok(())
    /// # }
    /// ```
    pub async fn modify_bytes(
        &self,
        id: &FileId,
        offset: u64,
        data: &[u8],
    ) -> Result<(), ClientError> {
        self.modify_reader(id, offset, data, data.len() as u64)
            .await
    }

    /// Overwrites `size` bytes read from `reader` at `offset` of appender file `id`.
    ///
    /// ```no_run
    /// # async fn demo(client: fdfs_client::Client, id: fdfs_client::FileId) -> Result<(), fdfs_client::ClientError> {
    /// client.modify_reader(&id, 1024, &b"patch"[..], 5).await?;
    /// # Ok(())
    /// # }
    /// ```
    pub async fn modify_reader<R: AsyncRead + Unpin + Send>(
        &self,
        id: &FileId,
        offset: u64,
        mut reader: R,
        size: u64,
    ) -> Result<(), ClientError> {
        require_appender(id)?;
        let addr = self.update_server(id).await?;
        on_conn!(self.inner.pool, addr.as_str(), false, |conn| {
            storage::modify(conn, id, offset, size, &mut reader)
        })
    }

    /// Shortens appender file `id` to `size` bytes (TRUNCATE_FILE, 36). fdfs-rs storages refuse
    /// a size above the current one with status 22 (FastDFS 6.16 would extend with zeros).
    ///
    /// ```no_run
    /// # async fn demo(client: fdfs_client::Client, id: fdfs_client::FileId) -> Result<(), fdfs_client::ClientError> {
    /// client.truncate(&id, 0).await?;
    /// # Ok(())
    /// # }
    /// ```
    pub async fn truncate(&self, id: &FileId, size: u64) -> Result<(), ClientError> {
        require_appender(id)?;
        let addr = self.update_server(id).await?;
        on_conn!(self.inner.pool, addr.as_str(), false, |conn| {
            storage::truncate(conn, id, size)
        })
    }

    /// Turns appender file `id` into a normal file (REGENERATE_APPENDER_FILENAME, 38) and
    /// returns its new ID; the old ID stops working.
    ///
    /// ```no_run
    /// # async fn demo(client: fdfs_client::Client, id: fdfs_client::FileId) -> Result<(), fdfs_client::ClientError> {
    /// let normal = client.regenerate(&id).await?;
    /// println!("{id} is now {normal}");
    /// # Ok(())
    /// # }
    /// ```
    pub async fn regenerate(&self, id: &FileId) -> Result<FileId, ClientError> {
        require_appender(id)?;
        let addr = self.update_server(id).await?;
        let new_id = on_conn!(self.inner.pool, addr.as_str(), false, |conn| {
            storage::regenerate(conn, id)
        })?;
        tracing::debug!(old = %id, new = %new_id, "regenerated appender file");
        Ok(new_id)
    }

    /// Stores `data` as a slave of `master` (UPLOAD_SLAVE_FILE, 21): its name is the master's
    /// without extension, then `prefix`, then `.ext` if `ext` is not empty (H.9).
    ///
    /// ```no_run
    /// # async fn demo(client: fdfs_client::Client, master: fdfs_client::FileId) -> Result<(), fdfs_client::ClientError> {
    /// let thumb = client.upload_slave_bytes(&master, "_150x150", "jpg", b"...").await?;
    /// # Ok(())
    /// # }
    /// ```
    pub async fn upload_slave_bytes(
        &self,
        master: &FileId,
        prefix: &str,
        ext: &str,
        data: &[u8],
    ) -> Result<FileId, ClientError> {
        self.upload_slave_reader(master, prefix, ext, data, data.len() as u64)
            .await
    }

    /// Stores a local file as a slave of `master`; an empty `ext` takes the file name's
    /// extension when it is a valid one.
    ///
    /// ```no_run
    /// # async fn demo(client: fdfs_client::Client, master: fdfs_client::FileId) -> Result<(), fdfs_client::ClientError> {
    /// let thumb = client.upload_slave_file(&master, "_small", "", "thumb.png").await?;
    /// # Ok(())
    /// # }
    /// ```
    pub async fn upload_slave_file(
        &self,
        master: &FileId,
        prefix: &str,
        ext: &str,
        path: impl AsRef<Path>,
    ) -> Result<FileId, ClientError> {
        let path = path.as_ref();
        let (file, size) = open_local(path).await?;
        let ext = match ext {
            "" => ext_from_path(path).unwrap_or_default(),
            given => given.to_string(),
        };
        self.upload_slave_reader(master, prefix, &ext, file, size)
            .await
    }

    /// Stores exactly `size` bytes from `reader` as a slave of `master`.
    ///
    /// ```no_run
    /// # async fn demo(client: fdfs_client::Client, master: fdfs_client::FileId) -> Result<(), fdfs_client::ClientError> {
    /// let slave = client.upload_slave_reader(&master, "_s", "", &b"data"[..], 4).await?;
    /// # Ok(())
    /// # }
    /// ```
    pub async fn upload_slave_reader<R: AsyncRead + Unpin + Send>(
        &self,
        master: &FileId,
        prefix: &str,
        ext: &str,
        mut reader: R,
        size: u64,
    ) -> Result<FileId, ClientError> {
        // the checks the storage makes (prefix, extension, a name different from the master)
        slave_name(&master.name.to_string(), prefix, ext)
            .map_err(|err| ClientError::input("slave name", err))?;
        let addr = self.update_server(master).await?;
        let id = on_conn!(self.inner.pool, addr.as_str(), false, |conn| {
            storage::upload_slave(conn, master, prefix, ext, size, &mut reader)
        })?;
        tracing::debug!(%master, slave = %id, "uploaded slave file");
        Ok(id)
    }
}

/// Refuses, before anything is sent, a name that decodes as something other than an
/// appender file: the storage would only answer "invalid argument" (F.8).
fn require_appender(id: &FileId) -> Result<(), ClientError> {
    let logical = id.name.to_string();
    match NameFields::from_logical_name(&logical) {
        Ok(fields) => match classify(&logical, &fields) {
            FileKind::Appender => Ok(()),
            kind => Err(ClientError::input(
                "file",
                format!(
                    "{id} is a {} file, not an appender file (upload with --appender / \
                     upload_appender_* to get one)",
                    kind.as_str()
                ),
            )),
        },
        // names we cannot decode are left to the storage to judge
        Err(_) => Ok(()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn assert_send<T: Send>(_: T) {}

    /// Callers spawn these futures: they must stay `Send`.
    #[test]
    fn futures_are_send() {
        let client = Client::new(crate::ClientConfig::new(vec!["127.0.0.1:22122".into()])).unwrap();
        let id = FileId::parse("group1/M00/00/00/fwAAH2sDbeuEAzFAAAAAADY6MCA790.txt").unwrap();
        let options = UploadOptions::default();
        assert_send(client.upload_appender_bytes(b"x", &options));
        assert_send(client.upload_appender_file("x", &options));
        assert_send(client.upload_appender_reader(&b"x"[..], 1, &options));
        assert_send(client.append_bytes(&id, b"x"));
        assert_send(client.append_reader(&id, &b"x"[..], 1));
        assert_send(client.modify_bytes(&id, 0, b"x"));
        assert_send(client.modify_reader(&id, 0, &b"x"[..], 1));
        assert_send(client.truncate(&id, 0));
        assert_send(client.regenerate(&id));
        assert_send(client.upload_slave_bytes(&id, "_s", "", b"x"));
        assert_send(client.upload_slave_file(&id, "_s", "", "x"));
        assert_send(client.upload_slave_reader(&id, "_s", "", &b"x"[..], 1));
    }

    #[test]
    fn only_appender_names_pass_the_local_check() {
        let appender =
            FileId::parse("group1/M00/00/00/fwAAH2sDbeuEAzFAAAAAADY6MCA790.txt").unwrap();
        assert!(require_appender(&appender).is_ok());
        let normal = FileId::parse("group1/M00/00/00/fwAAH2sDbeGAVWzkAAAABjY6MCA275.txt").unwrap();
        let err = require_appender(&normal).unwrap_err();
        assert!(
            err.to_string().contains("normal file, not an appender"),
            "{err}"
        );
        let undecodable = FileId::parse("group1/M00/00/00/abcdefgh").unwrap();
        assert!(require_appender(&undecodable).is_ok());
    }
}
