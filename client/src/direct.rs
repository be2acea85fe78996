//! Operations on one given storage, skipping the tracker: what load tools, replication checks
//! and operators need when they must talk to a particular server (`fdfs bench --storage`,
//! polling every peer of a group for a file). Ordinary code should use the routed operations
//! of [`Client`], which ask a tracker first as FastDFS clients do.

use fdfs_proto::cmd::Command;
use fdfs_proto::file_id::validate_group;
use fdfs_proto::name::validate_ext;
use fdfs_proto::scrub_msg::{ScrubAction, ScrubReport};
use fdfs_proto::tracker_msg::QueryStoreReply;
use tokio::io::{AsyncRead, AsyncWrite};

use crate::client::{decode_name, socket_addr};
use crate::config::validate_addr;
use crate::error::ClientError;
use crate::{storage, tracker, Client, FileId, FileInfo};

impl Client {
    /// Asks a tracker which storage and store path take the next upload (101, or 104 with
    /// `group`): the first half of every upload.
    ///
    /// ```no_run
    /// # async fn demo(client: fdfs_client::Client) -> Result<(), fdfs_client::ClientError> {
    /// let store = client.query_store(Some("group1")).await?;
    /// println!("{} path {}", store.server, store.store_path_index);
    /// # Ok(())
    /// # }
    /// ```
    pub async fn query_store(&self, group: Option<&str>) -> Result<QueryStoreReply, ClientError> {
        if let Some(group) = group {
            validate_group(group).map_err(|err| ClientError::input("group", err))?;
        }
        on_tracker!(self.inner, |conn| tracker::query_store(conn, group))
    }

    /// Uploads `size` bytes from `reader` to the storage at `storage` (`host:port`) without
    /// asking a tracker. `store_path_index` `None` lets the storage choose its store path.
    ///
    /// ```no_run
    /// # async fn demo(client: fdfs_client::Client) -> Result<(), fdfs_client::ClientError> {
    /// let store = client.query_store(None).await?;
    /// let addr = fdfs_client::storage_addr(&store.server);
    /// let id = client
    ///     .upload_reader_to(&addr, Some(store.store_path_index), &b"hello\n"[..], 6, "txt")
    ///     .await?;
    /// # Ok(())
    /// # }
    /// ```
    pub async fn upload_reader_to<R: AsyncRead + Unpin + Send>(
        &self,
        storage: &str,
        store_path_index: Option<u8>,
        mut reader: R,
        size: u64,
        ext: &str,
    ) -> Result<FileId, ClientError> {
        validate_storage(storage)?;
        validate_ext(ext).map_err(|err| ClientError::input("extension", err))?;
        // not idempotent: a retried upload could store the file twice
        let id = on_conn!(self.inner.pool, storage, false, |conn| storage::upload(
            conn,
            false,
            store_path_index,
            ext,
            size,
            &mut reader
        ))?;
        tracing::debug!(%id, size, storage, "uploaded");
        Ok(id)
    }

    /// Streams `length` bytes (0 = to the end) from `offset` of `id` into `writer`, asking
    /// the storage at `storage` directly. Returns the number of bytes written.
    ///
    /// ```no_run
    /// # async fn demo(client: fdfs_client::Client, id: fdfs_client::FileId) -> Result<(), fdfs_client::ClientError> {
    /// let bytes = client
    ///     .download_from("127.0.0.1:23001", &id, 0, 0, &mut tokio::io::sink())
    ///     .await?;
    /// # Ok(())
    /// # }
    /// ```
    pub async fn download_from<W: AsyncWrite + Unpin + Send>(
        &self,
        storage: &str,
        id: &FileId,
        offset: u64,
        length: u64,
        writer: &mut W,
    ) -> Result<u64, ClientError> {
        validate_storage(storage)?;
        on_conn!(self.inner.pool, storage, true, |conn| storage::download(
            conn,
            id,
            offset,
            length,
            &mut *writer
        ))
    }

    /// Deletes `id` on the storage at `storage` directly.
    ///
    /// ```no_run
    /// # async fn demo(client: fdfs_client::Client, id: fdfs_client::FileId) -> Result<(), fdfs_client::ClientError> {
    /// client.delete_from("127.0.0.1:23000", &id).await?;
    /// # Ok(())
    /// # }
    /// ```
    pub async fn delete_from(&self, storage: &str, id: &FileId) -> Result<(), ClientError> {
        validate_storage(storage)?;
        on_conn!(self.inner.pool, storage, false, |conn| storage::delete(
            conn, id
        ))
    }

    /// Like [`file_info`](Self::file_info), asking the storage at `storage` directly: a
    /// storage that does not (yet) have the file answers [`ClientError::NotFound`].
    ///
    /// ```no_run
    /// # async fn demo(client: fdfs_client::Client, id: fdfs_client::FileId) -> Result<(), fdfs_client::ClientError> {
    /// let info = client.file_info_from("127.0.0.1:23001", &id).await?;
    /// println!("{} bytes there", info.size);
    /// # Ok(())
    /// # }
    /// ```
    pub async fn file_info_from(
        &self,
        storage: &str,
        id: &FileId,
    ) -> Result<FileInfo, ClientError> {
        validate_storage(storage)?;
        let (kind, fields) = decode_name(id)?;
        let reply = on_conn!(self.inner.pool, storage, true, |conn| {
            storage::query_file_info(conn, id, 0)
        })?;
        Ok(FileInfo {
            size: reply.file_size,
            create_timestamp: reply.create_timestamp,
            crc32: reply.crc32,
            source_ip: reply.source_ip,
            kind,
            source: fields.source,
        })
    }

    /// SCRUB (fdfs-rs command 220) on the storage at `storage`: starts a scrub of its files
    /// ([`ScrubAction::Start`], a no-op while one runs) or reads the counts of the current or
    /// last one ([`ScrubAction::Status`]). A FastDFS storage answers EINVAL.
    ///
    /// ```no_run
    /// # async fn demo(client: fdfs_client::Client) -> Result<(), fdfs_client::ClientError> {
    /// use fdfs_proto::scrub_msg::ScrubAction;
    /// let report = client.scrub("127.0.0.1:23000", ScrubAction::Start).await?;
    /// println!("started: {}", report.started_now);
    /// # Ok(())
    /// # }
    /// ```
    pub async fn scrub(
        &self,
        storage: &str,
        action: ScrubAction,
    ) -> Result<ScrubReport, ClientError> {
        validate_storage(storage)?;
        let body = on_conn!(self.inner.pool, storage, true, |conn| conn.call(
            Command::Scrub.code(),
            &action.encode(),
            ScrubReport::LEN as u64
        ))?;
        ScrubReport::decode(&body).map_err(ClientError::Protocol)
    }
}

/// The address to connect to for a tracker's answer (`ip:port`, `[v6]:port`), as the direct
/// operations take it.
///
/// ```
/// use fdfs_client::{storage_addr, StorageAddr};
///
/// let server = StorageAddr { ip: "127.0.0.1".into(), port: 23000 };
/// assert_eq!(storage_addr(&server), "127.0.0.1:23000");
/// ```
pub fn storage_addr(server: &fdfs_proto::tracker_msg::StorageAddr) -> String {
    socket_addr(server)
}

fn validate_storage(addr: &str) -> Result<(), ClientError> {
    validate_addr(addr).map_err(|err| match err {
        ClientError::Config(reason) => ClientError::input("storage address", reason),
        other => other,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ClientConfig;

    #[tokio::test]
    async fn bad_storage_addresses_are_refused_before_connecting() {
        let client = Client::new(ClientConfig::new(vec!["127.0.0.1:1".into()])).unwrap();
        let id = FileId::parse("group1/M00/00/00/fwAAH2sDbeGAVWzkAAAABjY6MCA275.txt").unwrap();
        for bad in ["nohost", "h:0", "::1:23000"] {
            let err = client.delete_from(bad, &id).await.unwrap_err();
            assert!(
                matches!(
                    err,
                    ClientError::InvalidInput {
                        what: "storage address",
                        ..
                    }
                ),
                "{bad}: {err}"
            );
        }
        let err = client
            .upload_reader_to("127.0.0.1:1", None, &b""[..], 0, "bad ext")
            .await
            .unwrap_err();
        assert!(matches!(
            err,
            ClientError::InvalidInput {
                what: "extension",
                ..
            }
        ));
    }
}
