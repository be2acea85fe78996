//! Files on this storage's disks: opening them safely, and answering GET/HEAD for an open
//! file with its validators, conditional requests and byte ranges.
//!
//! The path always comes from a validated [`LogicalName`](fdfs_proto::file_id::LogicalName)
//! below `<store>/data/XX/YY/`. Symbolic links (slave links, I.4) are followed only when
//! their target stays inside the same `data/` directory; metadata sidecars (`<name>-m`) are
//! never served. Open and `fstat` run on the server threads (see [`open`]); content comes from
//! the page cache without blocking when it is there, else from the blocking pool.

use std::collections::HashMap;
use std::fs::{File, OpenOptions};
use std::io::{self, Read};
use std::os::unix::fs::{MetadataExt, OpenOptionsExt};
use std::path::Path;
use std::sync::{Arc, Mutex};

use bytes::Bytes;
use hyper::header::{
    HeaderValue, ACCEPT_RANGES, CACHE_CONTROL, CONTENT_DISPOSITION, CONTENT_LENGTH, CONTENT_RANGE,
    CONTENT_TYPE, ETAG, LAST_MODIFIED, X_CONTENT_TYPE_OPTIONS,
};
use hyper::{Response, StatusCode};

use super::body::{self, Body, FileBody, Part, CHUNK};
use super::conditional::{self, ETag, SLAVE_CRC_LIMIT};
use super::nowait;
use super::range::{self, ByteRange, Ranges};

/// What a request says about conditions and ranges (header values that are not text are
/// treated as absent).
#[derive(Debug, Default)]
pub struct Conditions {
    pub head: bool,
    pub range: Option<String>,
    pub if_range: Option<String>,
    pub if_none_match: Option<String>,
    pub if_modified_since: Option<String>,
}

/// An open regular file.
#[derive(Debug)]
pub struct LocalFile {
    pub file: Arc<File>,
    pub size: u64,
    pub mtime: u64,
    /// The whole content, when the file is small enough to read at once.
    pub content: Option<Bytes>,
    /// CRC32 of the content, when asked for and affordable.
    pub crc: Option<u32>,
    version: FileVersion,
}

/// Result of looking for a file locally.
#[derive(Debug)]
pub enum Lookup {
    Found(LocalFile),
    /// Not here (it may be on a peer).
    Missing,
    /// Here but not servable: a metadata sidecar, a directory, a link leaving the store.
    Refused,
}

/// Identity and version of a file: device, inode, size, mtime seconds and nanoseconds.
type FileVersion = (u64, u64, u64, i64, i64);

/// Content CRCs of files whose name does not carry one (slaves), keyed by identity and
/// version, so each version is read once. Bounded: emptied when full.
#[derive(Debug, Default)]
pub struct CrcCache {
    map: Mutex<HashMap<FileVersion, u32>>,
}

const CRC_CACHE_ENTRIES: usize = 8192;

impl CrcCache {
    fn get(&self, key: &FileVersion) -> Option<u32> {
        let map = self.map.lock().unwrap_or_else(|e| e.into_inner());
        map.get(key).copied()
    }

    fn put(&self, key: FileVersion, crc: u32) {
        let mut map = self.map.lock().unwrap_or_else(|e| e.into_inner());
        if map.len() >= CRC_CACHE_ENTRIES {
            map.clear();
        }
        map.insert(key, crc);
    }
}

/// Opens and stats `path`; `data_root` is the `<store>/data` directory it must stay in.
///
/// This runs on the server threads, as nginx does without `aio threads`: for the files a site
/// serves, the directory entries and inodes are cached and these calls do not wait for the
/// disk. The content is read by [`LocalFile::load`], which does not block either.
pub fn open(path: &Path, data_root: &Path) -> io::Result<Lookup> {
    if let Some(base) = path.file_name().and_then(|n| n.to_str()) {
        if let Some(owner) = base.strip_suffix("-m") {
            if path.with_file_name(owner).is_file() {
                return Ok(Lookup::Refused);
            }
        }
    }
    let file = match OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_NOFOLLOW)
        .open(path)
    {
        Ok(file) => file,
        Err(err) if err.raw_os_error() == Some(libc::ELOOP) => {
            let target = std::fs::canonicalize(path)?;
            let root = std::fs::canonicalize(data_root)?;
            if !target.starts_with(&root) {
                tracing::warn!(path = %path.display(), target = %target.display(), "symbolic link leaves the store path, not served");
                return Ok(Lookup::Refused);
            }
            File::open(&target)?
        }
        Err(err)
            if err.kind() == io::ErrorKind::NotFound
                || err.raw_os_error() == Some(libc::ENOTDIR) =>
        {
            return Ok(Lookup::Missing)
        }
        Err(err) => return Err(err),
    };
    let meta = file.metadata()?;
    if !meta.is_file() {
        return Ok(Lookup::Refused);
    }
    Ok(Lookup::Found(LocalFile {
        file: Arc::new(file),
        size: meta.len(),
        mtime: u64::try_from(meta.mtime()).unwrap_or(0),
        version: (
            meta.dev(),
            meta.ino(),
            meta.len(),
            meta.mtime(),
            meta.mtime_nsec(),
        ),
        content: None,
        crc: None,
    }))
}

impl LocalFile {
    /// Reads the whole content when the file is at most [`CHUNK`] bytes (`read_small`), and
    /// the content CRC (`want_crc`, files up to [`SLAVE_CRC_LIMIT`], cached in `crcs`). Page
    /// cache hits are read in place; everything else goes to the blocking pool.
    pub async fn load(
        &mut self,
        read_small: bool,
        want_crc: bool,
        crcs: &Arc<CrcCache>,
    ) -> io::Result<()> {
        if read_small && self.size <= CHUNK as u64 {
            let len = self.size as usize;
            self.content = match nowait::read_exact_at(&self.file, 0, len) {
                Some(bytes) => Some(bytes),
                None => {
                    let file = self.file.clone();
                    Some(blocking(move || body::read_exact_at(&file, 0, len)).await?)
                }
            };
        }
        if want_crc && self.size <= SLAVE_CRC_LIMIT {
            let crc = match (crcs.get(&self.version), &self.content) {
                (Some(crc), _) => crc,
                (None, content) => {
                    let crc = match content {
                        Some(bytes) => crc32fast::hash(bytes),
                        None => {
                            let (file, size) = (self.file.clone(), self.size);
                            blocking(move || crc_of(&file, size)).await?
                        }
                    };
                    crcs.put(self.version, crc);
                    crc
                }
            };
            self.crc = Some(crc);
        }
        Ok(())
    }
}

async fn blocking<T: Send + 'static>(
    work: impl FnOnce() -> io::Result<T> + Send + 'static,
) -> io::Result<T> {
    tokio::task::spawn_blocking(work)
        .await
        .unwrap_or_else(|err| Err(io::Error::other(err)))
}

fn crc_of(file: &File, size: u64) -> io::Result<u32> {
    let mut hasher = crc32fast::Hasher::new();
    let mut buf = vec![0u8; CHUNK];
    let mut reader = file.take(size);
    loop {
        let n = reader.read(&mut buf)?;
        if n == 0 {
            break;
        }
        hasher.update(&buf[..n]);
    }
    Ok(hasher.finalize())
}

/// How a file is presented.
#[derive(Debug)]
pub struct Representation {
    /// None for fallback files (default image, token failure image): no validators.
    pub etag: Option<ETag>,
    pub last_modified: Option<u64>,
    pub content_type: HeaderValue,
    pub cache_control: HeaderValue,
    pub disposition: Option<String>,
}

/// Answers a GET/HEAD for an open file: 304, 200, 206 (single or multipart) or 416.
pub fn respond(cond: &Conditions, file: LocalFile, rep: Representation) -> Response<Body> {
    let mut builder = Response::builder()
        .header(ACCEPT_RANGES, "bytes")
        .header(CACHE_CONTROL, rep.cache_control.clone())
        .header(X_CONTENT_TYPE_OPTIONS, "nosniff");
    if let Some(etag) = &rep.etag {
        builder = builder.header(ETAG, etag.header());
    }
    if let Some(lm) = rep.last_modified {
        builder = builder.header(LAST_MODIFIED, conditional::http_date(lm));
    }
    if let (Some(etag), Some(lm)) = (&rep.etag, rep.last_modified) {
        if conditional::not_modified(
            cond.if_none_match.as_deref(),
            cond.if_modified_since.as_deref(),
            etag,
            lm,
        ) {
            return finish(builder.status(StatusCode::NOT_MODIFIED), body::empty());
        }
    }
    let ranges = match &cond.range {
        Some(header) if range_allowed(cond, &rep) => range::parse(header, file.size),
        _ => Ranges::Whole,
    };
    if let Some(disposition) = &rep.disposition {
        builder = builder.header(CONTENT_DISPOSITION, disposition.as_str());
    }
    match ranges {
        Ranges::Whole => {
            let builder = builder
                .status(StatusCode::OK)
                .header(CONTENT_TYPE, rep.content_type)
                .header(CONTENT_LENGTH, file.size);
            let body = match (&cond.head, file.content) {
                (true, _) => body::empty(),
                (false, Some(content)) => body::full(content),
                (false, None) => body_of(
                    file.file,
                    vec![Part::File {
                        offset: 0,
                        len: file.size,
                    }],
                ),
            };
            finish(builder, body)
        }
        Ranges::Unsatisfiable => finish(
            builder
                .status(StatusCode::RANGE_NOT_SATISFIABLE)
                .header(CONTENT_RANGE, format!("bytes */{}", file.size))
                .header(CONTENT_LENGTH, 0),
            body::empty(),
        ),
        Ranges::Partial(ranges) if ranges.len() == 1 => {
            let r = ranges[0];
            let builder = builder
                .status(StatusCode::PARTIAL_CONTENT)
                .header(CONTENT_TYPE, rep.content_type)
                .header(CONTENT_RANGE, r.content_range(file.size))
                .header(CONTENT_LENGTH, r.len());
            let body = match (&cond.head, file.content) {
                (true, _) => body::empty(),
                (false, Some(content)) => {
                    body::full(content.slice(r.start as usize..=r.end as usize))
                }
                (false, None) => body_of(
                    file.file,
                    vec![Part::File {
                        offset: r.start,
                        len: r.len(),
                    }],
                ),
            };
            finish(builder, body)
        }
        Ranges::Partial(ranges) => {
            let boundary = boundary();
            let parts = multipart(&ranges, file.size, &rep.content_type, &boundary);
            let len: u64 = parts
                .iter()
                .map(|p| match p {
                    Part::Literal(b) => b.len() as u64,
                    Part::File { len, .. } => *len,
                })
                .sum();
            let builder = builder
                .status(StatusCode::PARTIAL_CONTENT)
                .header(
                    CONTENT_TYPE,
                    format!("multipart/byteranges; boundary={boundary}"),
                )
                .header(CONTENT_LENGTH, len);
            let body = if cond.head {
                body::empty()
            } else {
                body_of(file.file, parts)
            };
            finish(builder, body)
        }
    }
}

/// `If-Range` lets the range through only when the validator still matches.
fn range_allowed(cond: &Conditions, rep: &Representation) -> bool {
    match &cond.if_range {
        None => true,
        Some(value) => match (&rep.etag, rep.last_modified) {
            (Some(etag), Some(lm)) => conditional::if_range_holds(value, etag, lm),
            _ => false,
        },
    }
}

fn body_of(file: Arc<File>, parts: Vec<Part>) -> Body {
    use http_body_util::BodyExt;
    FileBody::new(file, parts).boxed()
}

fn finish(builder: hyper::http::response::Builder, body: Body) -> Response<Body> {
    builder.body(body).unwrap_or_else(|err| {
        tracing::error!(error = %err, "cannot build a response");
        let mut response = Response::new(body::empty());
        *response.status_mut() = StatusCode::INTERNAL_SERVER_ERROR;
        response
    })
}

fn boundary() -> String {
    use rand::Rng;
    let value: u64 = rand::thread_rng().gen();
    format!("fdfs{value:016x}")
}

/// The parts of a `multipart/byteranges` body (RFC 9110 §14.6).
fn multipart(
    ranges: &[ByteRange],
    size: u64,
    content_type: &HeaderValue,
    boundary: &str,
) -> Vec<Part> {
    let content_type = content_type.to_str().unwrap_or(super::mime::DEFAULT_TYPE);
    let mut parts = Vec::with_capacity(ranges.len() * 2 + 1);
    for r in ranges {
        let head = format!(
            "\r\n--{boundary}\r\nContent-Type: {content_type}\r\nContent-Range: {}\r\n\r\n",
            r.content_range(size)
        );
        parts.push(Part::Literal(Bytes::from(head)));
        parts.push(Part::File {
            offset: r.start,
            len: r.len(),
        });
    }
    parts.push(Part::Literal(Bytes::from(format!(
        "\r\n--{boundary}--\r\n"
    ))));
    parts
}

#[cfg(test)]
mod tests {
    use super::*;
    use http_body_util::BodyExt;
    use std::io::Write;

    fn local(content: &[u8], keep_content: bool) -> LocalFile {
        let mut tmp = tempfile::tempfile().unwrap();
        tmp.write_all(content).unwrap();
        LocalFile {
            file: Arc::new(tmp),
            size: content.len() as u64,
            mtime: 1000,
            content: keep_content.then(|| Bytes::copy_from_slice(content)),
            crc: None,
            version: (0, 0, 0, 0, 0),
        }
    }

    fn rep() -> Representation {
        Representation {
            etag: Some(ETag::from_crc(7, 10)),
            last_modified: Some(1_795_386_849),
            content_type: HeaderValue::from_static("text/plain"),
            cache_control: HeaderValue::from_static("public"),
            disposition: None,
        }
    }

    async fn body_bytes(response: Response<Body>) -> Vec<u8> {
        response
            .into_body()
            .collect()
            .await
            .unwrap()
            .to_bytes()
            .to_vec()
    }

    #[tokio::test]
    async fn whole_single_and_multi() {
        for keep in [true, false] {
            let resp = respond(&Conditions::default(), local(b"0123456789", keep), rep());
            assert_eq!(resp.status(), 200);
            assert_eq!(resp.headers()[CONTENT_LENGTH], "10");
            assert_eq!(resp.headers()[ETAG], "\"00000007-a\"");
            assert_eq!(body_bytes(resp).await, b"0123456789");

            let cond = Conditions {
                range: Some("bytes=2-4".into()),
                ..Conditions::default()
            };
            let resp = respond(&cond, local(b"0123456789", keep), rep());
            assert_eq!(resp.status(), 206);
            assert_eq!(resp.headers()[CONTENT_RANGE], "bytes 2-4/10");
            assert_eq!(body_bytes(resp).await, b"234");
        }
        let cond = Conditions {
            range: Some("bytes=0-1,-2".into()),
            ..Conditions::default()
        };
        let resp = respond(&cond, local(b"0123456789", false), rep());
        assert_eq!(resp.status(), 206);
        let ct = resp.headers()[CONTENT_TYPE].to_str().unwrap().to_string();
        let boundary = ct.strip_prefix("multipart/byteranges; boundary=").unwrap();
        let len: usize = resp.headers()[CONTENT_LENGTH]
            .to_str()
            .unwrap()
            .parse()
            .unwrap();
        let body = String::from_utf8(body_bytes(resp).await).unwrap();
        assert_eq!(body.len(), len);
        assert_eq!(
            body,
            format!(
                "\r\n--{boundary}\r\nContent-Type: text/plain\r\nContent-Range: bytes 0-1/10\r\n\r\n01\
                 \r\n--{boundary}\r\nContent-Type: text/plain\r\nContent-Range: bytes 8-9/10\r\n\r\n89\
                 \r\n--{boundary}--\r\n"
            )
        );
    }

    #[tokio::test]
    async fn conditionals_and_errors() {
        let cond = Conditions {
            if_none_match: Some("\"00000007-a\"".into()),
            ..Conditions::default()
        };
        let resp = respond(&cond, local(b"0123456789", true), rep());
        assert_eq!(resp.status(), 304);
        assert_eq!(resp.headers()[ETAG], "\"00000007-a\"");
        assert!(body_bytes(resp).await.is_empty());

        let cond = Conditions {
            range: Some("bytes=10-".into()),
            ..Conditions::default()
        };
        let resp = respond(&cond, local(b"0123456789", true), rep());
        assert_eq!(resp.status(), 416);
        assert_eq!(resp.headers()[CONTENT_RANGE], "bytes */10");

        // a stale If-Range gets the whole file
        let cond = Conditions {
            range: Some("bytes=0-0".into()),
            if_range: Some("\"stale\"".into()),
            ..Conditions::default()
        };
        let resp = respond(&cond, local(b"0123456789", true), rep());
        assert_eq!(resp.status(), 200);

        let cond = Conditions {
            head: true,
            ..Conditions::default()
        };
        let resp = respond(&cond, local(b"0123456789", false), rep());
        assert_eq!(resp.status(), 200);
        assert_eq!(resp.headers()[CONTENT_LENGTH], "10");
        assert!(body_bytes(resp).await.is_empty());
    }

    #[tokio::test]
    async fn open_refuses_sidecars_links_out_and_directories() {
        let dir = tempfile::tempdir().unwrap();
        let data = dir.path().join("data");
        let sub = data.join("00/00");
        std::fs::create_dir_all(&sub).unwrap();
        std::fs::write(sub.join("file.txt"), b"hello\n").unwrap();
        std::fs::write(sub.join("file.txt-m"), b"meta").unwrap();
        std::fs::write(dir.path().join("secret"), b"secret").unwrap();
        std::os::unix::fs::symlink(dir.path().join("secret"), sub.join("out")).unwrap();
        std::os::unix::fs::symlink(sub.join("file.txt"), sub.join("in")).unwrap();
        std::fs::create_dir(sub.join("adir")).unwrap();

        let found = |name: &str| open(&sub.join(name), &data).unwrap();
        for (read, crc) in [(true, true), (false, true), (true, false)] {
            match found("file.txt") {
                Lookup::Found(mut f) => {
                    // a fresh cache: the CRC comes from the content or the disk
                    let crcs = Arc::new(CrcCache::default());
                    f.load(read, crc, &crcs).await.unwrap();
                    assert_eq!(f.size, 6);
                    let content = read.then_some(&b"hello\n"[..]);
                    assert_eq!(f.content.as_deref(), content);
                    assert_eq!(f.crc, crc.then_some(0x363A3020));
                }
                other => panic!("{other:?}"),
            }
        }
        assert!(matches!(found("file.txt-m"), Lookup::Refused));
        assert!(matches!(found("out"), Lookup::Refused));
        assert!(matches!(found("in"), Lookup::Found(_)));
        assert!(matches!(found("adir"), Lookup::Refused));
        assert!(matches!(found("nothing"), Lookup::Missing));
        // a sidecar-looking name without its owner is an ordinary (missing) file
        assert!(matches!(found("orphan-m"), Lookup::Missing));
    }
}
