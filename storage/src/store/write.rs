//! Writing new files (H.7): stream into a temp file while computing CRC32, fsync, then link it
//! under a final name built from its mtime, size and CRC, refusing to replace an existing name.
//! Small files are written without any name ([`UnnamedFile`]) until that link.

use std::io;
use std::path::{Path, PathBuf};

use fdfs_proto::file_id::LogicalName;
use fdfs_proto::name::{self, NameFields, Source};
use rand::Rng;
use tokio::fs::File;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWriteExt};

use super::journal::Origin;
use super::recent::RecentFile;
use super::slave_mark;
use super::{blocking, Store, StoreError, IO_BUFFER};

/// Attempts at finding an unused final name before giving up (H.7).
pub(crate) const NAME_ATTEMPTS: usize = 10;

/// A new upload: where it may go and what it is.
#[derive(Clone, Debug)]
pub struct NewFile<'a> {
    /// `None` = let the storage choose (0xFF).
    pub store_path: Option<u8>,
    pub size: u64,
    pub ext: &'a str,
    pub appender: bool,
}

/// Where a new file goes and how its final name is built.
struct Placement {
    index: u8,
    high: u8,
    low: u8,
    appender: bool,
    suffix: String,
}

impl Placement {
    /// A candidate final name (random bits in the size field differ between calls).
    fn name(
        &self,
        source: Source,
        size: u64,
        mtime: u32,
        crc32: u32,
    ) -> Result<LogicalName, StoreError> {
        let fields = NameFields {
            source,
            timestamp: mtime,
            size_field: name::size_field(size, self.appender, rand::thread_rng().gen()),
            crc32,
        };
        LogicalName::new(
            self.index,
            self.high,
            self.low,
            &name::base_name(&fields, &self.suffix),
        )
        .map_err(|err| StoreError::Invalid(err.to_string()))
    }
}

/// A temp file that is deleted unless [`TempFile::disarm`] is called.
#[derive(Debug)]
pub(crate) struct TempFile {
    path: PathBuf,
    armed: bool,
}

impl TempFile {
    /// Creates a fresh, empty temp file in `dir`.
    pub(crate) async fn create(
        dir: &Path,
        kind: &'static str,
    ) -> Result<(TempFile, File), StoreError> {
        let dir = dir.to_path_buf();
        let (tmp, file) = blocking_store("creating temp file", move || {
            TempFile::create_blocking(&dir, kind)
        })
        .await?;
        Ok((tmp, File::from_std(file)))
    }

    /// [`TempFile::create`] for code already on the blocking pool.
    pub(crate) fn create_blocking(
        dir: &Path,
        kind: &str,
    ) -> Result<(TempFile, std::fs::File), StoreError> {
        for _ in 0..NAME_ATTEMPTS {
            let path = dir.join(format!("{kind}.{:016x}", rand::thread_rng().gen::<u64>()));
            match std::fs::OpenOptions::new()
                .write(true)
                .create_new(true)
                .open(&path)
            {
                Ok(file) => return Ok((TempFile { path, armed: true }, file)),
                Err(err) if err.kind() == io::ErrorKind::AlreadyExists => continue,
                Err(err) => return Err(StoreError::io("creating temp file")(err)),
            }
        }
        Err(StoreError::NameCollision)
    }

    /// The temp name is gone (renamed or removed by the caller): nothing left to clean up.
    pub(crate) fn disarm(mut self) {
        self.armed = false;
    }

    pub(crate) fn path(&self) -> &Path {
        &self.path
    }

    /// Removes the file now (errors are logged: the next start sweeps it anyway).
    pub(crate) async fn remove(mut self) {
        self.armed = false;
        if let Err(err) = tokio::fs::remove_file(&self.path).await {
            if err.kind() != io::ErrorKind::NotFound {
                tracing::warn!(path = %self.path.display(), error = %err, "cannot remove temp file");
            }
        }
    }
}

impl Drop for TempFile {
    fn drop(&mut self) {
        if !self.armed {
            return;
        }
        let path = std::mem::take(&mut self.path);
        let remove = move || {
            if let Err(err) = std::fs::remove_file(&path) {
                if err.kind() != io::ErrorKind::NotFound {
                    tracing::warn!(path = %path.display(), error = %err, "cannot remove temp file");
                }
            }
        };
        // dropped on an async thread when a request is cancelled: do not block it
        match tokio::runtime::Handle::try_current() {
            Ok(handle) => {
                handle.spawn_blocking(remove);
            }
            Err(_) => remove(),
        }
    }
}

/// Copies exactly `expected` bytes from `reader` to `file` with a bounded buffer, returning
/// their CRC32. A stream that ends early is [`StoreError::ShortBody`].
pub(crate) async fn stream_to<R: AsyncRead + Unpin + ?Sized>(
    reader: &mut R,
    file: &mut File,
    expected: u64,
) -> Result<u32, StoreError> {
    let mut buf = vec![
        0u8;
        IO_BUFFER
            .min(usize::try_from(expected).unwrap_or(IO_BUFFER))
            .max(1)
    ];
    let mut hasher = crc32fast::Hasher::new();
    let mut total = 0u64;
    while total < expected {
        let want = buf
            .len()
            .min(usize::try_from(expected - total).unwrap_or(usize::MAX));
        // fill the buffer before writing: fewer, larger disk writes
        let mut filled = 0;
        while filled < want {
            let n = reader
                .read(&mut buf[filled..want])
                .await
                .map_err(StoreError::Body)?;
            if n == 0 {
                break;
            }
            filled += n;
        }
        if filled > 0 {
            hasher.update(&buf[..filled]);
            file.write_all(&buf[..filled])
                .await
                .map_err(StoreError::io("writing file"))?;
            total += filled as u64;
        }
        if filled < want {
            return Err(StoreError::ShortBody {
                expected,
                got: total,
            });
        }
    }
    file.flush().await.map_err(StoreError::io("writing file"))?;
    Ok(hasher.finalize())
}

/// Creates a missing data directory (first start, or removed) and makes its entry in the
/// parent durable: a file linked into it is synced with its own directory only.
fn create_data_dir(dir: &Path) -> Result<(), StoreError> {
    std::fs::create_dir_all(dir).map_err(StoreError::io("creating data directory"))?;
    // data/XX/YY: both levels may be new
    let mut parent = dir.parent();
    for _ in 0..2 {
        let Some(up) = parent else { break };
        crate::persist::sync_dir(up).map_err(StoreError::io("syncing directory"))?;
        parent = up.parent();
    }
    Ok(())
}

/// Told the final name of a new file just before the file appears under it. Replication
/// records the file in its binlog there, so a crash can leave a record without its file
/// (skipped by the peers) but never a file the peers will not hear about.
pub trait BeforeLink: Send {
    fn before_link(
        &mut self,
        name: &LogicalName,
    ) -> impl std::future::Future<Output = Result<(), StoreError>> + Send;

    /// [`BeforeLink::before_link`] for a file its store path's journal makes durable: a crash
    /// that loses what the hook records leaves the journal entry, whose replay hands the file
    /// to [`super::Store::take_replayed_uploads`], so the record need not be durable yet.
    fn before_journaled_link(
        &mut self,
        name: &LogicalName,
    ) -> impl std::future::Future<Output = Result<(), StoreError>> + Send {
        self.before_link(name)
    }
}

/// Told, with the file's lock held, that a checked change of an existing file (append,
/// modify, truncate) is about to touch it, and the file's length before it. Replication
/// records the change there: a crash can then leave a record of a change that did not (or
/// only partly) happen, which the peers replay from the file as it is, but never a change
/// the peers will not hear about.
pub trait BeforeChange: Send {
    fn before_change(
        &mut self,
        old_len: u64,
    ) -> impl std::future::Future<Output = Result<(), StoreError>> + Send;
}

/// No hook.
pub struct NoHook;

impl BeforeLink for NoHook {
    async fn before_link(&mut self, _name: &LogicalName) -> Result<(), StoreError> {
        Ok(())
    }
}

impl BeforeChange for NoHook {
    async fn before_change(&mut self, _old_len: u64) -> Result<(), StoreError> {
        Ok(())
    }
}

/// Links `tmp` as `path`, creating a missing data directory; `false` when `path` exists.
pub(crate) fn link_once(tmp: &Path, path: &Path) -> Result<bool, StoreError> {
    let mut linked = std::fs::hard_link(tmp, path);
    if matches!(&linked, Err(err) if err.kind() == io::ErrorKind::NotFound) {
        if let Some(dir) = path.parent() {
            create_data_dir(dir)?;
        }
        linked = std::fs::hard_link(tmp, path);
    }
    match linked {
        Ok(()) => Ok(true),
        Err(err) if err.kind() == io::ErrorKind::AlreadyExists => Ok(false),
        Err(err) => Err(StoreError::io("linking file under its final name")(err)),
    }
}

impl Store {
    /// Stores a new file whose `req.size` bytes come from `reader` (F.1, H.7); returns its
    /// logical name. Space is checked before anything is read.
    pub async fn write_new_file<R: AsyncRead + Unpin + ?Sized>(
        &self,
        req: &NewFile<'_>,
        reader: &mut R,
    ) -> Result<LogicalName, StoreError> {
        self.write_new_file_with(req, reader, &mut NoHook).await
    }

    /// [`Store::write_new_file`], telling `hook` the final name before the file appears.
    pub async fn write_new_file_with<R: AsyncRead + Unpin + ?Sized, H: BeforeLink>(
        &self,
        req: &NewFile<'_>,
        reader: &mut R,
        hook: &mut H,
    ) -> Result<LogicalName, StoreError> {
        name::validate_ext(req.ext).map_err(|err| StoreError::Invalid(err.to_string()))?;
        let index = self.choose_store_path(req.store_path, req.size).await?;
        let suffix = name::random_suffix(req.ext, &mut rand::thread_rng());
        let source = Source::Id(self.options.server_id);
        // provisional name (H.7 step 1): only the hash directory mode looks at it
        let provisional = {
            let mut rng = rand::thread_rng();
            NameFields {
                source,
                timestamp: unix_now(),
                size_field: name::size_field(req.size, req.appender, rng.gen()),
                crc32: rng.gen(),
            }
            .encode()
        };
        let (high, low, moved) = self.distributor.next(&provisional);
        if moved {
            let distributor = self.distributor.clone();
            if let Err(err) =
                blocking("saving distribution state", move || distributor.save()).await
            {
                tracing::warn!(error = %err, "cannot save distribution state");
            }
        }

        let placed = Placement {
            index,
            high,
            low,
            appender: req.appender,
            suffix,
        };
        // a disk error has the store path probed (store::health)
        if req.size <= SMALL_BODY {
            let stored = self.store_small(reader, req.size, placed, hook).await;
            return self.note_result(index, stored);
        }
        let received = self
            .receive(index, "upload", reader, req.size, None, false)
            .await;
        let received = self.note_result(index, received)?;
        let linked = self.name_and_link(received, req.size, placed, hook).await;
        self.note_result(index, linked)
    }

    /// A small new file in one thread hand-off: the body is read whole first, so its CRC32 —
    /// and, with the mtime given now, its final name — is known before anything touches the
    /// disk; `hook` records the name, then one blocking call writes, syncs and links the
    /// file. Each thread hand-off costs more than the I/O of a small file. With a journal,
    /// the file is made durable by its journal entry instead of its own syncs, and written by
    /// the journal's writer right after the entry's commit.
    async fn store_small<R: AsyncRead + Unpin + ?Sized, H: BeforeLink>(
        &self,
        reader: &mut R,
        size: u64,
        placed: Placement,
        hook: &mut H,
    ) -> Result<LogicalName, StoreError> {
        let mut body = read_body(reader, size).await?;
        let crc32 = crc32fast::hash(&body);
        let mtime = unix_now();
        let source = Source::Id(self.options.server_id);
        let index = placed.index;
        let (dir, data) = (
            self.tmp_dir(index)?.to_path_buf(),
            self.store_path(index)?.data.clone(),
        );
        // an ordinary file's content never changes: its journal entry can restore it
        let journal = match placed.appender {
            false => self.journal(index).filter(|journal| journal.takes(size)),
            true => None,
        };
        for _ in 0..NAME_ATTEMPTS {
            let logical = placed.name(source, size, mtime, crc32)?;
            let path = data.join(logical.data_relative_path());
            let (dir, counts, dirs) = (dir.clone(), self.counts(), self.dirs());
            let (linked, back) = match journal {
                // Durable through its entry: the journal's writer writes and links the file
                // without syncs right after the entry's commit. The record is not waited for:
                // after a crash the entry's replay records the file again.
                Some(journal) => {
                    hook.before_journaled_link(&logical).await?;
                    // the path's cap on disk work covers the writer's too: a hung disk holds
                    // at most `store_path_max_io` small files of this path in memory
                    let slot = self.io_slot(index).await?;
                    let (_written, stored) = journal
                        .append_file_then(Origin::Upload, &logical, mtime, body, move |body| {
                            let _slot = slot;
                            write_and_link_small(
                                index, &dir, &path, body, mtime, false, &counts, &dirs,
                            )
                        })
                        .await?;
                    stored?
                }
                None => {
                    hook.before_link(&logical).await?;
                    let fsync = self.options.fsync;
                    self.on_small_writer(index, "storing file", move || {
                        write_and_link_small(index, &dir, &path, body, mtime, fsync, &counts, &dirs)
                    })
                    .await?
                }
            };
            if !linked {
                body = back;
                continue;
            }
            // an appender's content changes; an ordinary file's never does
            if !placed.appender {
                let file = RecentFile {
                    body: back.into(),
                    mtime,
                };
                self.recent.insert(logical.to_string(), file);
            }
            return Ok(logical);
        }
        Err(StoreError::NameCollision)
    }

    /// Finds a free final name for a received file and links it there, telling `hook` each
    /// name just before the file appears under it.
    async fn name_and_link<H: BeforeLink>(
        &self,
        received: Received,
        size: u64,
        placed: Placement,
        hook: &mut H,
    ) -> Result<LogicalName, StoreError> {
        let Received { tmp, crc32, mtime } = received;
        let source = Source::Id(self.options.server_id);
        let index = placed.index;
        let data = self.store_path(index)?.data.clone();
        for _ in 0..NAME_ATTEMPTS {
            let logical = placed.name(source, size, mtime, crc32)?;
            // No look before the record: a name taken meanwhile (random bits in the size field
            // make that rare) leaves a record of a file that is not ours, which is harmless.
            hook.before_link(&logical).await?;
            let path = data.join(logical.data_relative_path());
            if self.link_received(&tmp, index, path).await? {
                tmp.disarm();
                return Ok(logical);
            }
        }
        tmp.remove().await;
        Err(StoreError::NameCollision)
    }

    /// Links a received file under its final `path` (a new name on store path `index`), syncs
    /// the directory and drops the temp name, in one trip to the blocking pool. `false` when
    /// `path` exists; the temp file is then still there.
    pub(crate) async fn link_received(
        &self,
        tmp: &TempFile,
        index: u8,
        path: PathBuf,
    ) -> Result<bool, StoreError> {
        let tmp_path = tmp.path().to_path_buf();
        let fsync = self.options.fsync;
        let counts = self.counts();
        let dirs = self.dirs();
        self.on_path(index, "storing file", move || {
            link_and_sync(&tmp_path, index, &path, &counts, &dirs, fsync)
        })
        .await
    }

    /// Receives exactly `size` bytes from `reader` into a new temp file on store path `index`,
    /// gives it `mtime` when one is set (replicas keep their source's), marks it as a slave
    /// shaped like a normal name when `slave` says so (see `slave_mark`), syncs it when
    /// configured, and returns it with its CRC32 and mtime. On any error the temp file is gone.
    pub(crate) async fn receive<R: AsyncRead + Unpin + ?Sized>(
        &self,
        index: u8,
        kind: &'static str,
        reader: &mut R,
        size: u64,
        mtime: Option<u32>,
        slave: bool,
    ) -> Result<Received, StoreError> {
        let dir = self.tmp_dir(index)?.to_path_buf();
        let fsync = self.options.fsync;
        if size <= SMALL_BODY {
            let body = read_body(reader, size).await?;
            let crc32 = crc32fast::hash(&body);
            return self
                .on_path(index, "storing file", move || {
                    let (tmp, mtime) =
                        write_small_blocking(&dir, kind, &body, mtime, fsync && !slave)?;
                    if slave {
                        slave_mark::mark_path(tmp.path(), fsync)
                            .map_err(StoreError::io("marking a slave"))?;
                    }
                    Ok(Received { tmp, crc32, mtime })
                })
                .await;
        }
        let (tmp, file) = self
            .on_path(index, "creating temp file", move || {
                TempFile::create_blocking(&dir, kind)
            })
            .await?;
        let streamed = self.stream_to_path(index, reader, file, size).await;
        let (file, crc32) = match streamed {
            Ok(done) => done,
            Err(err) => {
                tmp.remove().await;
                return Err(err);
            }
        };
        // the mark syncs the file with it, so that a slave is synced once
        let sealed = move || {
            let mtime = seal(&file, mtime, fsync && !slave)?;
            if slave {
                slave_mark::mark(&file, fsync).map_err(StoreError::io("marking a slave"))?;
            }
            Ok(mtime)
        };
        match self.on_path(index, "syncing file", sealed).await {
            Ok(mtime) => Ok(Received { tmp, crc32, mtime }),
            Err(err) => {
                tmp.remove().await;
                Err(err)
            }
        }
    }
}

impl Store {
    /// Copies exactly `expected` bytes from `reader` into `file` at its current position,
    /// returning the file and their CRC32. Each disk write runs on the blocking pool holding
    /// a slot of store path `index` (`gate`), and the next chunk is read from the network
    /// while the previous one is written. A stream that ends early is
    /// [`StoreError::ShortBody`] (what arrived is written first).
    pub(crate) async fn stream_to_path<R: AsyncRead + Unpin + ?Sized>(
        &self,
        index: u8,
        reader: &mut R,
        file: std::fs::File,
        expected: u64,
    ) -> Result<(std::fs::File, u32), StoreError> {
        type Written = (std::fs::File, Vec<u8>, io::Result<()>);
        let cap = IO_BUFFER
            .min(usize::try_from(expected).unwrap_or(IO_BUFFER))
            .max(1);
        let mut hasher = crc32fast::Hasher::new();
        let mut total = 0u64;
        let mut file = Some(file);
        let mut next = vec![0u8; cap];
        let mut spare: Option<Vec<u8>> = None;
        let mut writing: Option<tokio::task::JoinHandle<Written>> = None;
        loop {
            let want = cap.min(usize::try_from(expected - total).unwrap_or(usize::MAX));
            let mut filled = 0;
            while filled < want {
                let n = reader
                    .read(&mut next[filled..want])
                    .await
                    .map_err(StoreError::Body)?;
                if n == 0 {
                    break;
                }
                filled += n;
            }
            hasher.update(&next[..filled]);
            // one write in flight at a time: the file's position stays in order
            if let Some(previous) = writing.take() {
                let (done, buf, result) = previous
                    .await
                    .map_err(|join| StoreError::io("writing file")(io::Error::other(join)))?;
                result.map_err(StoreError::io("writing file"))?;
                file = Some(done);
                spare = Some(buf);
            }
            if filled > 0 {
                let slot = self.io_slot(index).await?;
                let target = file.take().expect("no write in flight");
                let buf =
                    std::mem::replace(&mut next, spare.take().unwrap_or_else(|| vec![0u8; cap]));
                writing = Some(tokio::task::spawn_blocking(move || {
                    let _slot = slot;
                    let result = std::io::Write::write_all(&mut &target, &buf[..filled]);
                    (target, buf, result)
                }));
                total += filled as u64;
            }
            if filled < want || total == expected {
                if let Some(last) = writing.take() {
                    let (done, _, result) = last
                        .await
                        .map_err(|join| StoreError::io("writing file")(io::Error::other(join)))?;
                    result.map_err(StoreError::io("writing file"))?;
                    file = Some(done);
                }
                if filled < want {
                    return Err(StoreError::ShortBody {
                        expected,
                        got: total,
                    });
                }
                let file = file.take().expect("every write finished");
                return Ok((file, hasher.finalize()));
            }
        }
    }
}

/// Bodies up to this size are read whole before anything touches the disk, then created,
/// written, synced and stat'ed in one trip to the blocking pool: for a small file a thread
/// hand-off per step costs more than the I/O itself. Memory stays bounded: one such buffer per
/// connection at a time, the size of the streaming buffer.
pub(crate) const SMALL_BODY: u64 = IO_BUFFER as u64;

/// A temp file holding a complete body (synced when configured).
pub(crate) struct Received {
    pub(crate) tmp: TempFile,
    pub(crate) crc32: u32,
    pub(crate) mtime: u32,
}

/// Reads exactly `size` (at most [`SMALL_BODY`]) bytes; a stream that ends early is
/// [`StoreError::ShortBody`].
pub(crate) async fn read_body<R: AsyncRead + Unpin + ?Sized>(
    reader: &mut R,
    size: u64,
) -> Result<Vec<u8>, StoreError> {
    debug_assert!(size <= SMALL_BODY);
    let size_usize = size as usize;
    // read into spare capacity: no zeroing of a buffer that is overwritten at once
    let mut body = Vec::with_capacity(size_usize);
    while body.len() < size_usize {
        let spare = size_usize - body.len();
        let n = reader
            .read_buf(&mut bytes::BufMut::limit(&mut body, spare))
            .await
            .map_err(StoreError::Body)?;
        if n == 0 {
            return Err(StoreError::ShortBody {
                expected: size,
                got: body.len() as u64,
            });
        }
    }
    Ok(body)
}

/// Writes a whole small body into a new temp file in `dir`, then seals it (blocking);
/// returns the temp file and its mtime.
pub(crate) fn write_small_blocking(
    dir: &Path,
    kind: &str,
    body: &[u8],
    mtime: Option<u32>,
    fsync: bool,
) -> Result<(TempFile, u32), StoreError> {
    let (tmp, mut file) = TempFile::create_blocking(dir, kind)?;
    std::io::Write::write_all(&mut file, body).map_err(StoreError::io("writing file"))?;
    let mtime = seal(&file, mtime, fsync)?;
    Ok((tmp, mtime))
}

/// Links a received temp file under its final `path` (a new name on store path `index`),
/// makes the link durable and drops the temp name (blocking). `false` when `path` exists;
/// the temp file is then still there.
fn link_and_sync(
    tmp_path: &Path,
    index: u8,
    path: &Path,
    counts: &super::FileCounts,
    dirs: &super::dirsync::DirSyncer,
    fsync: bool,
) -> Result<bool, StoreError> {
    if !publish(index, path, counts, dirs, fsync, || {
        link_once(tmp_path, path)
    })? {
        return Ok(false);
    }
    // the content lives on under its final name; a leftover temp name is swept at start
    if let Err(err) = std::fs::remove_file(tmp_path) {
        tracing::warn!(path = %tmp_path.display(), error = %err, "cannot remove temp file");
    }
    Ok(true)
}

/// Makes a written file appear under the new name `path` on store path `index` with `link`
/// (false: `path` exists, nothing changed), counts it, and syncs the directory when
/// configured (blocking).
fn publish(
    index: u8,
    path: &Path,
    counts: &super::FileCounts,
    dirs: &super::dirsync::DirSyncer,
    fsync: bool,
    link: impl FnOnce() -> Result<bool, StoreError>,
) -> Result<bool, StoreError> {
    let change = counts.begin(index);
    if !link()? {
        return Ok(false);
    }
    if let Some(change) = change {
        change.note(path, 1);
    }
    if fsync {
        dirs.sync_parent(path)?;
    }
    Ok(true)
}

/// Writes a new small file and links it under `path` (blocking); `false` when the name is
/// taken (the next attempt writes a fresh file), with the content given back either way.
#[allow(clippy::too_many_arguments)]
fn write_and_link_small(
    index: u8,
    dir: &Path,
    path: &Path,
    body: Vec<u8>,
    mtime: u32,
    fsync: bool,
    counts: &super::FileCounts,
    dirs: &super::dirsync::DirSyncer,
) -> Result<(bool, Vec<u8>), StoreError> {
    if let Some(file) = write_small_unnamed(dir, &body, Some(mtime), fsync)? {
        let linked = publish(index, path, counts, dirs, fsync, || file.link(path))?;
        return Ok((linked, body));
    }
    let (tmp, _) = write_small_blocking(dir, "upload", &body, Some(mtime), fsync)?;
    let linked = link_and_sync(tmp.path(), index, path, counts, dirs, fsync)?;
    if !linked {
        if let Err(err) = std::fs::remove_file(tmp.path()) {
            tracing::warn!(error = %err, "cannot remove temp file");
        }
    }
    tmp.disarm();
    Ok((linked, body))
}

/// [`write_small_blocking`] into an [`UnnamedFile`]; `None` when the file system cannot make
/// one (the caller then uses a temp name).
pub(crate) fn write_small_unnamed(
    dir: &Path,
    body: &[u8],
    mtime: Option<u32>,
    fsync: bool,
) -> Result<Option<UnnamedFile>, StoreError> {
    let Some(mut file) = UnnamedFile::create(dir).map_err(StoreError::io("creating file"))? else {
        return Ok(None);
    };
    std::io::Write::write_all(&mut file.0, body).map_err(StoreError::io("writing file"))?;
    seal(&file.0, mtime, fsync)?;
    Ok(Some(file))
}

/// A new file without a name (`O_TMPFILE` in a store path's temp directory) until it is
/// complete: linking it under its final name is its only directory change (no temp name to
/// add and remove), and a crash before that leaves nothing behind (the file system frees it).
pub(crate) struct UnnamedFile(std::fs::File);

impl UnnamedFile {
    /// `Ok(None)` when the file system of `dir` (or the kernel) cannot make unnamed files, or
    /// `/proc` (through which one is linked) is missing.
    pub(crate) fn create(dir: &Path) -> io::Result<Option<UnnamedFile>> {
        use std::os::unix::fs::OpenOptionsExt as _;
        static PROC_FDS: std::sync::OnceLock<bool> = std::sync::OnceLock::new();
        if !*PROC_FDS.get_or_init(|| Path::new("/proc/self/fd").is_dir()) {
            return Ok(None);
        }
        match std::fs::OpenOptions::new()
            .write(true)
            .custom_flags(libc::O_TMPFILE)
            .open(dir)
        {
            Ok(file) => Ok(Some(UnnamedFile(file))),
            // EISDIR: a kernel without O_TMPFILE; EOPNOTSUPP: a file system without it
            Err(err) if matches!(err.raw_os_error(), Some(libc::EISDIR | libc::EOPNOTSUPP)) => {
                Ok(None)
            }
            Err(err) => Err(err),
        }
    }

    /// The open file.
    pub(crate) fn file(&self) -> &std::fs::File {
        &self.0
    }

    /// Gives the file the name `path` (creating its data directory if missing); `false` when
    /// `path` exists.
    pub(crate) fn link(&self, path: &Path) -> Result<bool, StoreError> {
        let mut linked = self.link_at(path);
        if matches!(&linked, Err(err) if err.kind() == io::ErrorKind::NotFound) {
            if let Some(dir) = path.parent() {
                create_data_dir(dir)?;
            }
            linked = self.link_at(path);
        }
        match linked {
            Ok(()) => Ok(true),
            Err(err) if err.kind() == io::ErrorKind::AlreadyExists => Ok(false),
            Err(err) => Err(StoreError::io("linking file under its final name")(err)),
        }
    }

    fn link_at(&self, path: &Path) -> io::Result<()> {
        use std::os::fd::AsRawFd as _;
        use std::os::unix::ffi::OsStrExt as _;
        let from = std::ffi::CString::new(format!("/proc/self/fd/{}", self.0.as_raw_fd()))
            .map_err(io::Error::other)?;
        let to = std::ffi::CString::new(path.as_os_str().as_bytes())
            .map_err(|_| io::Error::new(io::ErrorKind::InvalidInput, "path contains NUL"))?;
        // SAFETY: both are valid NUL-terminated strings alive for the call. AT_SYMLINK_FOLLOW
        // links the file /proc/self/fd/N stands for, not the /proc entry.
        let rc = unsafe {
            libc::linkat(
                libc::AT_FDCWD,
                from.as_ptr(),
                libc::AT_FDCWD,
                to.as_ptr(),
                libc::AT_SYMLINK_FOLLOW,
            )
        };
        if rc != 0 {
            return Err(io::Error::last_os_error());
        }
        Ok(())
    }
}

/// Sets the mtime (when given), syncs (when configured) and returns the file's mtime.
fn seal(file: &std::fs::File, mtime: Option<u32>, fsync: bool) -> Result<u32, StoreError> {
    // a shifted test clock stands for a skewed host, whose kernel stamps its own time
    let set = mtime.or_else(crate::clock::shifted_mtime);
    if let Some(mtime) = set {
        let at = std::time::UNIX_EPOCH + std::time::Duration::from_secs(u64::from(mtime));
        file.set_modified(at)
            .map_err(StoreError::io("setting mtime"))?;
    }
    if fsync {
        file.sync_all().map_err(StoreError::io("syncing file"))?;
    }
    match set {
        // whole seconds, as set: no need to ask
        Some(mtime) => Ok(mtime),
        None => {
            let meta = file
                .metadata()
                .map_err(StoreError::io("reading file status"))?;
            Ok(super::unix_seconds(&meta) as u32)
        }
    }
}

/// Runs blocking work that reports [`StoreError`]s itself.
pub(crate) async fn blocking_store<T, F>(context: &'static str, work: F) -> Result<T, StoreError>
where
    F: FnOnce() -> Result<T, StoreError> + Send + 'static,
    T: Send + 'static,
{
    tokio::task::spawn_blocking(work)
        .await
        .unwrap_or_else(|join| {
            Err(StoreError::Io {
                context,
                source: io::Error::other(join.to_string()),
            })
        })
}

pub(crate) fn unix_now() -> u32 {
    crate::clock::unix_now_u32()
}

#[cfg(test)]
mod tests {
    use super::super::test_support::store_in;
    use super::*;
    use fdfs_proto::name::{classify, FileKind};

    /// Files under `dir`, the journal's segments aside.
    fn files_under(dir: &Path) -> Vec<PathBuf> {
        let mut out = Vec::new();
        let mut stack = vec![dir.to_path_buf()];
        while let Some(d) = stack.pop() {
            for entry in std::fs::read_dir(&d).unwrap() {
                let entry = entry.unwrap();
                if entry.file_name() == super::super::journal::JOURNAL_DIR {
                    continue;
                }
                if entry.file_type().unwrap().is_dir() {
                    stack.push(entry.path());
                } else {
                    out.push(entry.path());
                }
            }
        }
        out
    }

    #[tokio::test]
    async fn written_file_gets_a_decodable_final_name() {
        let dir = tempfile::tempdir().unwrap();
        let store = store_in(dir.path(), 1, 4).await;
        let content = b"hello world, fastdfs!\n";
        let before = unix_now();
        let req = NewFile {
            store_path: None,
            size: content.len() as u64,
            ext: "txt",
            appender: false,
        };
        let logical = store.write_new_file(&req, &mut &content[..]).await.unwrap();
        let text = logical.to_string();
        assert_eq!(text.len(), 44);
        assert!(text.starts_with("M00/00/00/"));
        assert!(text.ends_with(".txt"));
        let fields = NameFields::from_logical_name(&text).unwrap();
        assert_eq!(fields.source, Source::Id(100_001));
        assert_eq!(fields.file_size(), 22);
        assert_eq!(fields.crc32, 0x8036_CEA3);
        assert_eq!(classify(&text, &fields), FileKind::Normal);
        let path = store.resolve(&logical).unwrap();
        assert_eq!(std::fs::read(&path).unwrap(), content);
        let mtime = super::super::unix_seconds(&std::fs::metadata(&path).unwrap());
        assert_eq!(u64::from(fields.timestamp), mtime);
        assert!(fields.timestamp >= before.saturating_sub(1));
        // nothing left in the temp directory
        assert_eq!(
            std::fs::read_dir(dir.path().join("data/.tmp"))
                .unwrap()
                .count(),
            0
        );
    }

    /// A binlog stand-in: notes whether the name had appeared when it was told of it, and
    /// fails when told to.
    struct RecordWitness {
        store: std::sync::Arc<Store>,
        fail: bool,
        seen: Vec<(LogicalName, bool)>,
    }

    impl RecordWitness {
        fn new(store: &std::sync::Arc<Store>, fail: bool) -> Self {
            RecordWitness {
                store: store.clone(),
                fail,
                seen: Vec::new(),
            }
        }
    }

    impl BeforeLink for RecordWitness {
        async fn before_link(&mut self, name: &LogicalName) -> Result<(), StoreError> {
            let exists = self.store.resolve(name)?.exists();
            self.seen.push((name.clone(), exists));
            if self.fail {
                return Err(StoreError::io("writing the binlog")(io::Error::other(
                    "test: record refused",
                )));
            }
            Ok(())
        }
    }

    #[tokio::test]
    async fn a_small_file_appears_only_after_its_record_and_never_without_it() {
        let dir = tempfile::tempdir().unwrap();
        let store = std::sync::Arc::new(store_in(dir.path(), 1, 2).await);
        let content = b"recorded before it has a name";
        let req = NewFile {
            store_path: None,
            size: content.len() as u64,
            ext: "jpg",
            appender: false,
        };
        let mut record = RecordWitness::new(&store, false);
        let name = store
            .write_new_file_with(&req, &mut &content[..], &mut record)
            .await
            .unwrap();
        assert_eq!(record.seen, [(name.clone(), false)]);
        assert_eq!(
            std::fs::read(store.resolve(&name).unwrap()).unwrap(),
            content
        );

        let mut refused = RecordWitness::new(&store, true);
        let err = store
            .write_new_file_with(&req, &mut &content[..], &mut refused)
            .await
            .unwrap_err();
        assert!(err.to_string().contains("binlog"), "{err}");
        let [(never, seen)] = &refused.seen[..] else {
            panic!("one record attempt expected: {:?}", refused.seen)
        };
        assert!(!seen);
        assert!(!store.resolve(never).unwrap().exists());
        // the first file is the only one anywhere under data/ (the temp directory included)
        assert_eq!(
            files_under(&dir.path().join("data")),
            [store.resolve(&name).unwrap()]
        );
    }

    #[tokio::test]
    async fn appender_and_empty_files() {
        let dir = tempfile::tempdir().unwrap();
        let store = store_in(dir.path(), 1, 2).await;
        let req = NewFile {
            store_path: Some(0),
            size: 6,
            ext: "",
            appender: true,
        };
        let logical = store
            .write_new_file(&req, &mut &b"hello\n"[..])
            .await
            .unwrap();
        let text = logical.to_string();
        let fields = NameFields::from_logical_name(&text).unwrap();
        assert!(fields.is_appender());
        assert_eq!(fields.crc32, 0x363A_3020);
        assert_eq!(classify(&text, &fields), FileKind::Appender);
        assert!(text[37..].bytes().all(|b| b.is_ascii_digit()));

        let req = NewFile {
            store_path: None,
            size: 0,
            ext: "",
            appender: false,
        };
        let empty = store.write_new_file(&req, &mut &b""[..]).await.unwrap();
        let fields = NameFields::from_logical_name(&empty.to_string()).unwrap();
        assert_eq!((fields.file_size(), fields.crc32), (0, 0));
        assert_eq!(
            std::fs::metadata(store.resolve(&empty).unwrap())
                .unwrap()
                .len(),
            0
        );
    }

    #[tokio::test]
    async fn short_stream_leaves_no_file() {
        let dir = tempfile::tempdir().unwrap();
        let store = store_in(dir.path(), 1, 2).await;
        let req = NewFile {
            store_path: None,
            size: 1000,
            ext: "bin",
            appender: false,
        };
        let err = store
            .write_new_file(&req, &mut &[7u8; 999][..])
            .await
            .unwrap_err();
        assert!(
            matches!(
                err,
                StoreError::ShortBody {
                    expected: 1000,
                    got: 999
                }
            ),
            "{err}"
        );
        assert!(files_under(&dir.path().join("data"))
            .iter()
            .all(|p| p.ends_with("storage_stat.toml")));
    }

    #[tokio::test]
    async fn dropped_write_leaves_no_file() {
        // a request cancelled mid-body (connection timeout) drops the future
        let dir = tempfile::tempdir().unwrap();
        let store = store_in(dir.path(), 1, 2).await;
        let (mut tx, mut rx) = tokio::io::duplex(1024);
        tx.write_all(&[1u8; 512]).await.unwrap();
        let req = NewFile {
            store_path: None,
            size: 4096,
            ext: "",
            appender: false,
        };
        let write = store.write_new_file(&req, &mut rx);
        let cancelled = tokio::time::timeout(std::time::Duration::from_millis(200), write).await;
        assert!(cancelled.is_err());
        let tmp = dir.path().join("data/.tmp");
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(5);
        while std::fs::read_dir(&tmp).unwrap().count() > 0 {
            assert!(
                std::time::Instant::now() < deadline,
                "temp file not removed"
            );
            tokio::time::sleep(std::time::Duration::from_millis(10)).await;
        }
        drop(tx);
    }

    #[tokio::test]
    async fn store_path_choice_and_space() {
        let dir = tempfile::tempdir().unwrap();
        let store = store_in(dir.path(), 2, 1).await;
        let mut seen = Vec::new();
        for _ in 0..4 {
            let req = NewFile {
                store_path: None,
                size: 1,
                ext: "",
                appender: false,
            };
            seen.push(
                store
                    .write_new_file(&req, &mut &b"x"[..])
                    .await
                    .unwrap()
                    .store_path(),
            );
        }
        assert_eq!(seen, [0, 1, 0, 1]);
        let req = NewFile {
            store_path: Some(2),
            size: 1,
            ext: "",
            appender: false,
        };
        assert!(matches!(
            store.write_new_file(&req, &mut &b"x"[..]).await,
            Err(StoreError::Invalid(_))
        ));
        // a file larger than the disk can never fit
        let req = NewFile {
            store_path: None,
            size: u64::MAX / 2,
            ext: "",
            appender: false,
        };
        assert!(matches!(
            store.write_new_file(&req, &mut &b""[..]).await,
            Err(StoreError::NoSpace)
        ));
    }

    /// J.3: with several store paths an absolute reserve is shared out over them, as
    /// FastDFS's storage does: each path keeps reserve / paths.
    #[tokio::test]
    async fn each_store_path_keeps_its_share_of_an_absolute_reserve() {
        let dir = tempfile::tempdir().unwrap();
        let free = super::super::space::disk_usage(dir.path())
            .unwrap()
            .free_bytes;
        let open = |reserved: u64| {
            let (a, b) = (dir.path().join("a"), dir.path().join("b"));
            Store::open(super::super::StoreOptions {
                base_path: dir.path().to_path_buf(),
                store_paths: vec![a, b],
                subdir_count: 1,
                server_id: 1,
                fsync: false,
                distribute: super::super::DistributeMode::Hash,
                reserved: fdfs_proto::units::ReservedSpace::Bytes(reserved),
                slave_use_link: false,
                max_io_per_path: 64,
                io_wait: std::time::Duration::from_secs(30),
                journal_max_file: 64 * 1024,
                journal_checkpoint: std::time::Duration::from_secs(1),
            })
        };
        let req = NewFile {
            store_path: Some(1),
            size: 1,
            ext: "",
            appender: false,
        };
        // 1.5 × the free space: each path keeps 0.75 × and has room (wide margins: other
        // tests write on the same file system meanwhile)
        let store = open(free / 2 * 3).await.unwrap();
        store.write_new_file(&req, &mut &b"x"[..]).await.unwrap();
        // 3 × the free space: each path keeps 1.5 ×
        let store = open(free * 3).await.unwrap();
        assert!(matches!(
            store.write_new_file(&req, &mut &b"x"[..]).await,
            Err(StoreError::NoSpace)
        ));
    }

    #[tokio::test]
    async fn small_bodies_are_read_whole_into_a_buffer_of_their_size() {
        use tokio::io::AsyncReadExt as _;
        let (a, b) = (vec![1u8; 70_000], vec![2u8; 30_000]);
        // two reads, and more behind the body that must stay unread
        let mut reader = (&a[..]).chain(&b[..]).chain(&b"next"[..]);
        let body = read_body(&mut reader, 100_000).await.unwrap();
        assert_eq!(body.len(), 100_000);
        assert_eq!(body.capacity(), 100_000);
        assert!(body[..70_000].iter().all(|&x| x == 1) && body[70_000..].iter().all(|&x| x == 2));
        let mut rest = Vec::new();
        reader.read_to_end(&mut rest).await.unwrap();
        assert_eq!(rest, b"next");
        let short = read_body(&mut &b"abc"[..], 5).await;
        assert!(matches!(
            short,
            Err(StoreError::ShortBody {
                expected: 5,
                got: 3
            })
        ));
        assert!(read_body(&mut &b""[..], 0).await.unwrap().is_empty());
    }

    #[tokio::test]
    async fn full_reserve_refuses_uploads() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(super::super::StoreOptions {
            base_path: dir.path().to_path_buf(),
            store_paths: vec![dir.path().to_path_buf()],
            subdir_count: 1,
            server_id: 1,
            fsync: false,
            distribute: super::super::DistributeMode::Hash,
            reserved: fdfs_proto::units::ReservedSpace::Ratio(1.0),
            slave_use_link: false,
            max_io_per_path: 64,
            io_wait: std::time::Duration::from_secs(30),
            journal_max_file: 64 * 1024,
            journal_checkpoint: std::time::Duration::from_secs(1),
        })
        .await
        .unwrap();
        let req = NewFile {
            store_path: Some(0),
            size: 1,
            ext: "",
            appender: false,
        };
        assert!(matches!(
            store.write_new_file(&req, &mut &b"x"[..]).await,
            Err(StoreError::NoSpace)
        ));
    }

    #[tokio::test]
    async fn round_robin_directories_for_new_files() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(super::super::StoreOptions {
            base_path: dir.path().to_path_buf(),
            store_paths: vec![dir.path().to_path_buf()],
            subdir_count: 2,
            server_id: 7,
            fsync: false,
            distribute: super::super::DistributeMode::RoundRobin { rotate_count: 1 },
            reserved: fdfs_proto::units::ReservedSpace::Bytes(0),
            slave_use_link: false,
            max_io_per_path: 64,
            io_wait: std::time::Duration::from_secs(30),
            journal_max_file: 64 * 1024,
            journal_checkpoint: std::time::Duration::from_secs(1),
        })
        .await
        .unwrap();
        let mut dirs = Vec::new();
        for _ in 0..5 {
            let req = NewFile {
                store_path: None,
                size: 1,
                ext: "",
                appender: false,
            };
            let name = store.write_new_file(&req, &mut &b"x"[..]).await.unwrap();
            dirs.push((name.dir_high(), name.dir_low()));
        }
        assert_eq!(dirs, [(0, 0), (0, 1), (1, 0), (1, 1), (0, 0)]);
        // the position was saved when the directory changed
        let saved = std::fs::read_to_string(dir.path().join("data/storage_stat.toml")).unwrap();
        assert!(saved.contains("dist_path_index_low = 1"), "{saved}");
    }

    #[tokio::test]
    async fn writes_create_missing_directories() {
        let dir = tempfile::tempdir().unwrap();
        let store = super::super::test_support::open_store_in(dir.path(), 1, 256).await;
        assert!(!dir.path().join("data/00/00").exists());
        let req = NewFile {
            store_path: None,
            size: 2,
            ext: "",
            appender: false,
        };
        let name = store.write_new_file(&req, &mut &b"hi"[..]).await.unwrap();
        assert_eq!(std::fs::read(store.resolve(&name).unwrap()).unwrap(), b"hi");
    }

    proptest::proptest! {
        #![proptest_config(proptest::prelude::ProptestConfig::with_cases(12))]
        #[test]
        fn any_content_round_trips_through_its_name(
            content in proptest::collection::vec(proptest::prelude::any::<u8>(), 0..300_000),
            ext in "[A-Za-z0-9]{0,6}",
            appender in proptest::prelude::any::<bool>(),
        ) {
            let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
            runtime.block_on(async {
                let dir = tempfile::tempdir().unwrap();
                let store = store_in(dir.path(), 1, 1).await;
                let req = NewFile { store_path: None, size: content.len() as u64, ext: &ext, appender };
                let logical = store.write_new_file(&req, &mut &content[..]).await.unwrap();
                let text = logical.to_string();
                assert_eq!(text.len(), 44);
                let fields = NameFields::from_logical_name(&text).unwrap();
                assert_eq!(fields.crc32, crc32fast::hash(&content));
                assert_eq!(fields.is_appender(), appender);
                if !appender {
                    assert_eq!(fields.file_size(), content.len() as u64);
                }
                if ext.is_empty() {
                    assert!(text[37..].bytes().all(|b| b.is_ascii_digit()));
                } else {
                    assert!(text.ends_with(&format!(".{ext}")));
                }
                assert_eq!(std::fs::read(store.resolve(&logical).unwrap()).unwrap(), content);
            });
        }
    }

    #[test]
    fn link_refuses_existing_names() {
        let dir = tempfile::tempdir().unwrap();
        let tmp = dir.path().join("tmp");
        std::fs::write(&tmp, b"new").unwrap();
        let taken = dir.path().join("taken");
        std::fs::write(&taken, b"old").unwrap();
        let free = dir.path().join("free");
        assert!(!link_once(&tmp, &taken).unwrap());
        assert!(link_once(&tmp, &free).unwrap());
        assert_eq!(std::fs::read(&taken).unwrap(), b"old");
        assert_eq!(std::fs::read(&free).unwrap(), b"new");
    }

    #[test]
    fn unnamed_files_appear_only_under_their_final_name() {
        let dir = tempfile::tempdir().unwrap();
        let tmp = dir.path().join("tmp");
        std::fs::create_dir(&tmp).unwrap();
        let Some(file) = write_small_unnamed(&tmp, b"content", Some(1_000_000_000), true).unwrap()
        else {
            panic!("the test's file system cannot make O_TMPFILE files");
        };
        // written and synced, yet under no name
        assert_eq!(std::fs::read_dir(&tmp).unwrap().count(), 0);
        let taken = dir.path().join("taken");
        std::fs::write(&taken, b"old").unwrap();
        assert!(!file.link(&taken).unwrap());
        assert_eq!(std::fs::read(&taken).unwrap(), b"old");
        // a missing data directory is created
        let free = dir.path().join("data/00/01/free");
        assert!(file.link(&free).unwrap());
        assert_eq!(std::fs::read(&free).unwrap(), b"content");
        let meta = std::fs::metadata(&free).unwrap();
        assert_eq!(super::super::unix_seconds(&meta), 1_000_000_000);
        assert_eq!(std::fs::read_dir(&tmp).unwrap().count(), 0);

        // one never linked leaves nothing behind
        drop(write_small_unnamed(&tmp, b"lost", None, false).unwrap());
        assert_eq!(std::fs::read_dir(&tmp).unwrap().count(), 0);
    }
}
