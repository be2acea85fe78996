//! `Client`: the operations of a FastDFS client, each routed as FastDFS clients do (F.13):
//! ask a tracker which storage to use, then talk to that storage.

use std::fmt;
use std::path::Path;
use std::sync::atomic::AtomicUsize;
use std::sync::Arc;

use fdfs_proto::file_id::validate_group;
use fdfs_proto::metadata;
use fdfs_proto::name::{classify, validate_ext, NameFields};
use fdfs_proto::storage_msg::MetadataOp;
use fdfs_proto::tracker_msg::{QueryStoreAllReply, StorageAddr};
use tokio::io::{AsyncRead, AsyncWrite, AsyncWriteExt};

use crate::config::ClientConfig;
use crate::error::ClientError;
use crate::pool::Pool;
use crate::{storage, tracker, FileId, FileKind, Source};

/// Options of an upload.
///
/// ```
/// use fdfs_client::UploadOptions;
///
/// let options = UploadOptions {
///     ext: "jpg".into(),
///     group: Some("group1".into()),
///     metadata: vec![("width".into(), "160".into())],
/// };
/// assert!(UploadOptions::default().metadata.is_empty());
/// # let _ = options;
/// ```
#[derive(Clone, Debug, Default)]
pub struct UploadOptions {
    /// File extension without the dot (0..6 characters of `[A-Za-z0-9_.-]`); empty = none.
    pub ext: String,
    /// Store in this group (tracker command 104) instead of letting the tracker choose (101).
    pub group: Option<String>,
    /// Metadata set right after the upload; if that fails the file is deleted again.
    pub metadata: Vec<(String, String)>,
}

/// What [`Client::file_info`] learns about a file: the storage's answer (size, mtime, CRC32,
/// source IP) and what its name says (kind and source).
#[derive(Clone, Debug)]
pub struct FileInfo {
    /// Current size on the storage.
    pub size: u64,
    /// The file's modification time on the storage (unix seconds).
    pub create_timestamp: u64,
    /// CRC32 of the content (from the name for normal files, computed for appender/slave).
    pub crc32: u32,
    /// IP address of the storage that took the upload, as the storage reports it.
    pub source_ip: String,
    /// Normal, appender, slave or trunk, decoded from the name.
    pub kind: FileKind,
    /// The storage id or IP written into the name.
    pub source: Source,
}

/// A FastDFS client: cheap to clone (the connection pool is shared), safe to use from many
/// tasks at once.
///
/// ```no_run
/// use fdfs_client::{Client, ClientConfig, UploadOptions};
///
/// # async fn demo() -> Result<(), fdfs_client::ClientError> {
/// let client = Client::new(ClientConfig::new(vec!["127.0.0.1:22122".into()]))?;
/// let options = UploadOptions { ext: "txt".into(), ..Default::default() };
/// let id = client.upload_bytes(b"hello\n", &options).await?;
/// assert_eq!(client.download_bytes(&id, 0, 0).await?, b"hello\n");
/// client.delete(&id).await?;
/// # Ok(())
/// # }
/// ```
#[derive(Clone)]
pub struct Client {
    pub(crate) inner: Arc<Inner>,
}

pub(crate) struct Inner {
    pub(crate) config: ClientConfig,
    pub(crate) pool: Pool,
    pub(crate) next_tracker: AtomicUsize,
}

impl fmt::Debug for Client {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Client")
            .field("tracker_servers", &self.inner.config.tracker_servers)
            .finish_non_exhaustive()
    }
}

impl Client {
    /// A client for the trackers of `config`. No connection is made until the first request.
    ///
    /// ```no_run
    /// let config = fdfs_client::ClientConfig::from_file("client.toml")?;
    /// let client = fdfs_client::Client::new(config)?;
    /// # Ok::<(), fdfs_client::ClientError>(())
    /// ```
    pub fn new(config: ClientConfig) -> Result<Self, ClientError> {
        config.validate()?;
        let pool = Pool::new(&config);
        Ok(Client {
            inner: Arc::new(Inner {
                config,
                pool,
                next_tracker: AtomicUsize::new(0),
            }),
        })
    }

    /// The configuration this client runs with.
    pub fn config(&self) -> &ClientConfig {
        &self.inner.config
    }

    /// Uploads `data` and returns the new file's ID.
    ///
    /// ```no_run
    /// # async fn demo(client: fdfs_client::Client) -> Result<(), fdfs_client::ClientError> {
    /// use fdfs_client::UploadOptions;
    /// let options = UploadOptions {
    ///     ext: "txt".into(),
    ///     metadata: vec![("author".into(), "me".into())],
    ///     ..Default::default()
    /// };
    /// let id = client.upload_bytes(b"hello\n", &options).await?;
    /// println!("{id}");
    /// # Ok(())
    /// # }
    /// ```
    pub async fn upload_bytes(
        &self,
        data: &[u8],
        options: &UploadOptions,
    ) -> Result<FileId, ClientError> {
        let mut reader = data;
        self.upload(false, &mut reader, data.len() as u64, options)
            .await
    }

    /// Uploads a local file, streaming it. When `options.ext` is empty the extension comes
    /// from the file name if it is a valid FastDFS extension (else the file gets none).
    ///
    /// ```no_run
    /// # async fn demo(client: fdfs_client::Client) -> Result<(), fdfs_client::ClientError> {
    /// let id = client.upload_file("photo.jpg", &Default::default()).await?;
    /// # Ok(())
    /// # }
    /// ```
    pub async fn upload_file(
        &self,
        path: impl AsRef<Path>,
        options: &UploadOptions,
    ) -> Result<FileId, ClientError> {
        let (mut file, size, options) = open_upload(path.as_ref(), options).await?;
        self.upload(false, &mut file, size, &options).await
    }

    /// Uploads exactly `size` bytes read from `reader`, streaming them with a bounded buffer.
    /// A reader that ends early fails the upload.
    ///
    /// ```no_run
    /// # async fn demo(client: fdfs_client::Client) -> Result<(), fdfs_client::ClientError> {
    /// let file = tokio::fs::File::open("big.iso").await?;
    /// let size = file.metadata().await?.len();
    /// let id = client.upload_reader(file, size, &Default::default()).await?;
    /// # Ok(())
    /// # }
    /// ```
    pub async fn upload_reader<R: AsyncRead + Unpin + Send>(
        &self,
        mut reader: R,
        size: u64,
        options: &UploadOptions,
    ) -> Result<FileId, ClientError> {
        self.upload(false, &mut reader, size, options).await
    }

    /// Downloads `length` bytes (0 = to the end) from `offset` into memory. Prefer
    /// [`download_to_writer`](Self::download_to_writer) or
    /// [`download_file`](Self::download_file) for large files.
    ///
    /// ```no_run
    /// # async fn demo(client: fdfs_client::Client) -> Result<(), fdfs_client::ClientError> {
    /// let id = fdfs_client::parse_file_id("group1/M00/00/00/fwAAH2sDbeGAVWzkAAAABjY6MCA275.txt")?;
    /// let first_bytes = client.download_bytes(&id, 0, 5).await?;
    /// # Ok(())
    /// # }
    /// ```
    pub async fn download_bytes(
        &self,
        id: &FileId,
        offset: u64,
        length: u64,
    ) -> Result<Vec<u8>, ClientError> {
        let mut data = Vec::new();
        self.download_to_writer(id, offset, length, &mut data)
            .await?;
        Ok(data)
    }

    /// Streams `length` bytes (0 = to the end) from `offset` into `writer`; returns the number
    /// of bytes written.
    ///
    /// ```no_run
    /// # async fn demo(client: fdfs_client::Client, id: fdfs_client::FileId) -> Result<(), fdfs_client::ClientError> {
    /// let mut out = tokio::io::stdout();
    /// let written = client.download_to_writer(&id, 0, 0, &mut out).await?;
    /// # Ok(())
    /// # }
    /// ```
    pub async fn download_to_writer<W: AsyncWrite + Unpin + Send>(
        &self,
        id: &FileId,
        offset: u64,
        length: u64,
        writer: &mut W,
    ) -> Result<u64, ClientError> {
        let server = on_tracker!(self.inner, |conn| tracker::query_fetch(conn, id))?;
        let addr = socket_addr(&server);
        let written = on_conn!(self.inner.pool, addr.as_str(), true, |conn| {
            storage::download(conn, id, offset, length, &mut *writer)
        })?;
        tracing::debug!(%id, bytes = written, "downloaded");
        Ok(written)
    }

    /// Downloads the whole file to `path`: it is written to a temporary file beside `path`
    /// and renamed over it once complete, so `path` never holds a partial download.
    ///
    /// ```no_run
    /// # async fn demo(client: fdfs_client::Client, id: fdfs_client::FileId) -> Result<(), fdfs_client::ClientError> {
    /// let size = client.download_file(&id, "/tmp/copy.txt").await?;
    /// # Ok(())
    /// # }
    /// ```
    pub async fn download_file(
        &self,
        id: &FileId,
        path: impl AsRef<Path>,
    ) -> Result<u64, ClientError> {
        self.download_file_range(id, 0, 0, path).await
    }

    /// Like [`download_file`](Self::download_file) for `length` bytes (0 = to the end) from
    /// `offset`.
    ///
    /// ```no_run
    /// # async fn demo(client: fdfs_client::Client, id: fdfs_client::FileId) -> Result<(), fdfs_client::ClientError> {
    /// let size = client.download_file_range(&id, 1024, 4096, "/tmp/part.bin").await?;
    /// # Ok(())
    /// # }
    /// ```
    pub async fn download_file_range(
        &self,
        id: &FileId,
        offset: u64,
        length: u64,
        path: impl AsRef<Path>,
    ) -> Result<u64, ClientError> {
        let path = path.as_ref();
        let file_err = |action, source| ClientError::File {
            action,
            path: path.to_path_buf(),
            source,
        };
        let dir = match path.parent() {
            Some(dir) if !dir.as_os_str().is_empty() => dir,
            _ => Path::new("."),
        };
        let temp = tempfile::Builder::new()
            .prefix(".fdfs-download-")
            .suffix(".part")
            .tempfile_in(dir)
            .map_err(|source| ClientError::File {
                action: "create a temporary file in",
                path: dir.to_path_buf(),
                source,
            })?;
        let mut file = tokio::fs::File::from_std(
            temp.as_file()
                .try_clone()
                .map_err(|err| file_err("write", err))?,
        );
        let written = self
            .download_to_writer(id, offset, length, &mut file)
            .await?;
        file.flush().await.map_err(|err| file_err("write", err))?;
        drop(file);
        // on failure the temporary file is removed when `temp` drops
        temp.persist(path)
            .map_err(|err| file_err("rename a temporary file to", err.error))?;
        Ok(written)
    }

    /// Deletes a file (and its metadata).
    ///
    /// ```no_run
    /// # async fn demo(client: fdfs_client::Client, id: fdfs_client::FileId) -> Result<(), fdfs_client::ClientError> {
    /// match client.delete(&id).await {
    ///     Ok(()) | Err(fdfs_client::ClientError::NotFound) => {}
    ///     Err(err) => return Err(err),
    /// }
    /// # Ok(())
    /// # }
    /// ```
    pub async fn delete(&self, id: &FileId) -> Result<(), ClientError> {
        let addr = self.update_server(id).await?;
        on_conn!(self.inner.pool, addr.as_str(), false, |conn| {
            storage::delete(conn, id)
        })?;
        tracing::debug!(%id, "deleted");
        Ok(())
    }

    /// Asks the storage for a file's size, mtime, CRC32 and source IP (QUERY_FILE_INFO);
    /// kind and source are decoded from the name.
    ///
    /// ```no_run
    /// # async fn demo(client: fdfs_client::Client, id: fdfs_client::FileId) -> Result<(), fdfs_client::ClientError> {
    /// let info = client.file_info(&id).await?;
    /// println!("{} bytes, crc32 {:08x}, {}", info.size, info.crc32, info.kind.as_str());
    /// # Ok(())
    /// # }
    /// ```
    pub async fn file_info(&self, id: &FileId) -> Result<FileInfo, ClientError> {
        let (kind, fields) = decode_name(id)?;
        let server = on_tracker!(self.inner, |conn| tracker::query_fetch(conn, id))?;
        let addr = socket_addr(&server);
        let reply = on_conn!(self.inner.pool, addr.as_str(), true, |conn| {
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

    /// The metadata of a file, sorted by name. A file that never had metadata gives
    /// [`ClientError::NotFound`] (F.6).
    ///
    /// ```no_run
    /// # async fn demo(client: fdfs_client::Client, id: fdfs_client::FileId) -> Result<(), fdfs_client::ClientError> {
    /// for (name, value) in client.get_metadata(&id).await? {
    ///     println!("{name}={value}");
    /// }
    /// # Ok(())
    /// # }
    /// ```
    pub async fn get_metadata(&self, id: &FileId) -> Result<Vec<(String, String)>, ClientError> {
        let addr = self.update_server(id).await?;
        let raw = on_conn!(self.inner.pool, addr.as_str(), true, |conn| {
            storage::get_metadata(conn, id)
        })?;
        Ok(metadata::decode(&raw)
            .into_iter()
            .map(|(name, value)| {
                (
                    String::from_utf8_lossy(&name).into_owned(),
                    String::from_utf8_lossy(&value).into_owned(),
                )
            })
            .collect())
    }

    /// Replaces ([`MetadataOp::Overwrite`]) or merges into ([`MetadataOp::Merge`]) the
    /// metadata of a file. Overwriting with no pairs removes the metadata.
    ///
    /// ```no_run
    /// # async fn demo(client: fdfs_client::Client, id: fdfs_client::FileId) -> Result<(), fdfs_client::ClientError> {
    /// use fdfs_client::MetadataOp;
    /// client.set_metadata(&id, &[("width".into(), "160".into())], MetadataOp::Merge).await?;
    /// # Ok(())
    /// # }
    /// ```
    pub async fn set_metadata(
        &self,
        id: &FileId,
        pairs: &[(String, String)],
        op: MetadataOp,
    ) -> Result<(), ClientError> {
        let encoded = encode_metadata(pairs)?;
        let addr = self.update_server(id).await?;
        on_conn!(self.inner.pool, addr.as_str(), false, |conn| {
            storage::set_metadata(conn, id, &encoded, op)
        })
    }

    /// The storages that take uploads now (ACTIVE, with free space), in `group` or in the
    /// group the tracker would choose (106/107).
    ///
    /// ```no_run
    /// # async fn demo(client: fdfs_client::Client) -> Result<(), fdfs_client::ClientError> {
    /// let reply = client.query_store_all(Some("group1")).await?;
    /// for server in &reply.servers {
    ///     println!("{server}");
    /// }
    /// # Ok(())
    /// # }
    /// ```
    pub async fn query_store_all(
        &self,
        group: Option<&str>,
    ) -> Result<QueryStoreAllReply, ClientError> {
        if let Some(group) = group {
            validate_group(group).map_err(|err| ClientError::input("group", err))?;
        }
        on_tracker!(self.inner, |conn| tracker::query_store_all(conn, group))
    }

    /// Uploads a normal or appender file: tracker 101/104, then storage 11/23 with the store
    /// path the tracker chose, then SET_METADATA on the same connection if asked.
    pub(crate) async fn upload<R: AsyncRead + Unpin + Send>(
        &self,
        appender: bool,
        reader: &mut R,
        size: u64,
        options: &UploadOptions,
    ) -> Result<FileId, ClientError> {
        validate_ext(&options.ext).map_err(|err| ClientError::input("extension", err))?;
        let group = options.group.as_deref();
        if let Some(group) = group {
            validate_group(group).map_err(|err| ClientError::input("group", err))?;
        }
        let metadata = if options.metadata.is_empty() {
            None
        } else {
            Some(encode_metadata(&options.metadata)?)
        };
        let store = on_tracker!(self.inner, |conn| tracker::query_store(conn, group))?;
        let addr = socket_addr(&store.server);
        let pool = &self.inner.pool;
        let mut conn = pool.get(&addr).await?;
        let uploaded = storage::upload(
            &mut conn,
            appender,
            Some(store.store_path_index),
            &options.ext,
            size,
            reader,
        )
        .await;
        let id = match uploaded {
            Ok(id) => id,
            Err(err) => {
                pool.put(conn);
                return Err(err);
            }
        };
        tracing::debug!(%id, size, storage = %addr, "uploaded");
        let Some(metadata) = metadata else {
            pool.put(conn);
            return Ok(id);
        };
        let result = storage::set_metadata(&mut conn, &id, &metadata, MetadataOp::Overwrite).await;
        pool.put(conn);
        if let Err(err) = result {
            // the caller asked for a file with metadata: do not leave one without
            let cleanup = on_conn!(pool, addr.as_str(), false, |conn| storage::delete(
                conn, &id
            ));
            if let Err(cleanup_err) = cleanup {
                tracing::warn!(%id, error = %cleanup_err, "could not delete the file after its metadata failed");
            }
            return Err(err);
        }
        Ok(id)
    }

    /// The storage to send updates of `id` to (tracker 103).
    /// While the file's source storage is away (restarting, or not yet back with a tracker
    /// that restarted) trackers answer EAGAIN rather than name another writer: ask again for
    /// up to [`UPDATE_SOURCE_WAIT`].
    pub(crate) async fn update_server(&self, id: &FileId) -> Result<String, ClientError> {
        let deadline = tokio::time::Instant::now() + UPDATE_SOURCE_WAIT;
        let mut pause = std::time::Duration::from_millis(100);
        loop {
            match on_tracker!(self.inner, |conn| tracker::query_update(conn, id)) {
                Err(ClientError::Status(fdfs_proto::status::EAGAIN))
                    if tokio::time::Instant::now() + pause < deadline =>
                {
                    tracing::debug!(%id, "source storage away, asking again");
                    tokio::time::sleep(pause).await;
                    pause = (pause * 2).min(std::time::Duration::from_secs(1));
                }
                other => return other.map(|server| socket_addr(&server)),
            }
        }
    }
}

/// How long an update waits for its file's source storage to come back (see
/// [`Client::update_server`]).
const UPDATE_SOURCE_WAIT: std::time::Duration = std::time::Duration::from_secs(20);

/// Opens a local file for upload: its size, and the options with the extension taken from
/// the file name when none was given.
async fn open_upload(
    path: &Path,
    options: &UploadOptions,
) -> Result<(tokio::fs::File, u64, UploadOptions), ClientError> {
    let (file, size) = open_local(path).await?;
    let mut options = options.clone();
    if options.ext.is_empty() {
        options.ext = ext_from_path(path).unwrap_or_default();
    }
    Ok((file, size, options))
}

/// Opens a regular local file for reading; returns it with its size.
pub(crate) async fn open_local(path: &Path) -> Result<(tokio::fs::File, u64), ClientError> {
    let file_err = |source| ClientError::File {
        action: "open",
        path: path.to_path_buf(),
        source,
    };
    let file = tokio::fs::File::open(path).await.map_err(file_err)?;
    let meta = file.metadata().await.map_err(file_err)?;
    if !meta.is_file() {
        return Err(file_err(std::io::Error::new(
            std::io::ErrorKind::InvalidInput,
            "not a regular file",
        )));
    }
    Ok((file, meta.len()))
}

/// The extension of a local file name, if FastDFS accepts it as an upload extension.
pub(crate) fn ext_from_path(path: &Path) -> Option<String> {
    let ext = path.extension()?.to_str()?;
    (!ext.is_empty() && validate_ext(ext).is_ok()).then(|| ext.to_string())
}

/// Validates and encodes metadata pairs (G).
fn encode_metadata(pairs: &[(String, String)]) -> Result<Vec<u8>, ClientError> {
    let mut raw = Vec::with_capacity(pairs.len());
    for (name, value) in pairs {
        metadata::validate_pair(name.as_bytes(), value.as_bytes())
            .map_err(|err| ClientError::input("metadata", format!("{name:?}: {err}")))?;
        raw.push((name.as_bytes().to_vec(), value.as_bytes().to_vec()));
    }
    Ok(metadata::encode(&raw))
}

/// Decodes the 20 bytes of a name and classifies it (H.2, H.8).
pub(crate) fn decode_name(id: &FileId) -> Result<(FileKind, NameFields), ClientError> {
    let logical = id.name.to_string();
    let fields = NameFields::from_logical_name(&logical)
        .map_err(|err| ClientError::invalid_file_id(&id.to_string(), &err))?;
    Ok((classify(&logical, &fields), fields))
}

/// `ip:port` to connect to, with brackets around IPv6 addresses.
pub(crate) fn socket_addr(server: &StorageAddr) -> String {
    if server.ip.contains(':') {
        format!("[{}]:{}", server.ip, server.port)
    } else {
        format!("{}:{}", server.ip, server.port)
    }
}

/// The cause of a connection failure in a few words ("connection refused").
pub(crate) fn short_cause(err: &ClientError) -> String {
    match err {
        ClientError::Connect { source, .. } | ClientError::Io(source) => {
            if source.raw_os_error().is_some() {
                source.kind().to_string()
            } else {
                source.to_string()
            }
        }
        other => other.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn extensions_from_file_names() {
        assert_eq!(
            ext_from_path(Path::new("a/photo.jpg")).as_deref(),
            Some("jpg")
        );
        assert_eq!(
            ext_from_path(Path::new("archive.tar.gz")).as_deref(),
            Some("gz")
        );
        assert_eq!(ext_from_path(Path::new("README")), None);
        assert_eq!(ext_from_path(Path::new("data.toolongext")), None);
        assert_eq!(ext_from_path(Path::new("odd.a b")), None);
        assert_eq!(ext_from_path(Path::new(".hidden")), None);
    }

    #[test]
    fn metadata_is_validated_and_encoded() {
        let pairs = vec![
            ("width".to_string(), "160".to_string()),
            ("empty".to_string(), String::new()),
        ];
        assert_eq!(
            encode_metadata(&pairs).unwrap(),
            b"width\x02160\x01empty\x02"
        );
        for bad in [("", "v"), ("a\x01b", "v"), ("n", "v\x02")] {
            let err = encode_metadata(&[(bad.0.into(), bad.1.into())]).unwrap_err();
            assert!(matches!(err, ClientError::InvalidInput { .. }), "{err}");
        }
        let long = "x".repeat(65);
        assert!(encode_metadata(&[(long, "v".into())]).is_err());
    }

    proptest::proptest! {
        /// Whatever the pairs, encoding either refuses them or produces what the storage
        /// decodes back to the same pairs.
        #[test]
        fn metadata_round_trips_or_is_refused(
            pairs in proptest::collection::vec(("\\PC{0,70}", "\\PC{0,260}"), 0..6)
        ) {
            if let Ok(encoded) = encode_metadata(&pairs) {
                let decoded: Vec<(String, String)> = metadata::decode(&encoded)
                    .into_iter()
                    .map(|(n, v)| (String::from_utf8(n).unwrap(), String::from_utf8(v).unwrap()))
                    .collect();
                proptest::prop_assert_eq!(decoded, pairs);
            }
        }
    }

    #[test]
    fn names_decode_locally() {
        let id = FileId::parse("group2/M00/1F/98/oYYBAGsDbvqAM2mPAAAABjY6MCA581.txt").unwrap();
        let (kind, fields) = decode_name(&id).unwrap();
        assert_eq!(kind, FileKind::Normal);
        assert_eq!(fields.source, Source::Id(100_001));
        let short = FileId::parse("group1/M00/00/00/abcdefgh").unwrap();
        assert!(matches!(
            decode_name(&short),
            Err(ClientError::InvalidFileId(_))
        ));
    }

    #[test]
    fn addresses_and_causes() {
        let v4 = StorageAddr {
            ip: "127.0.0.1".into(),
            port: 23000,
        };
        assert_eq!(socket_addr(&v4), "127.0.0.1:23000");
        let v6 = StorageAddr {
            ip: "::1".into(),
            port: 23000,
        };
        assert_eq!(socket_addr(&v6), "[::1]:23000");
        let refused = ClientError::Connect {
            addr: "x".into(),
            source: std::io::Error::from_raw_os_error(111),
        };
        assert_eq!(short_cause(&refused), "connection refused");
    }

    fn assert_send<T: Send>(_: T) {}

    /// Callers spawn these futures: they must stay `Send`.
    #[test]
    fn futures_are_send() {
        let client = Client::new(ClientConfig::new(vec!["127.0.0.1:22122".into()])).unwrap();
        let id = FileId::parse("group1/M00/00/00/fwAAH2sDbeGAVWzkAAAABjY6MCA275.txt").unwrap();
        let options = UploadOptions::default();
        let mut sink = Vec::new();
        assert_send(client.upload_bytes(b"x", &options));
        assert_send(client.upload_file("x", &options));
        assert_send(client.upload_reader(&b"x"[..], 1, &options));
        assert_send(client.download_bytes(&id, 0, 0));
        assert_send(client.download_to_writer(&id, 0, 0, &mut sink));
        assert_send(client.download_file(&id, "x"));
        assert_send(client.delete(&id));
        assert_send(client.file_info(&id));
        assert_send(client.get_metadata(&id));
        assert_send(client.set_metadata(&id, &[], MetadataOp::Merge));
        assert_send(client.query_store_all(None));
    }

    #[test]
    fn new_validates_the_config() {
        assert!(matches!(
            Client::new(ClientConfig::new(Vec::new())),
            Err(ClientError::Config(_))
        ));
        let client = Client::new(ClientConfig::new(vec!["127.0.0.1:22122".into()])).unwrap();
        assert!(format!("{client:?}").contains("127.0.0.1:22122"));
    }
}
