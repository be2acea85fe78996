//! The disk side of replication: applying a peer's changes (L.4, idempotently: a change that
//! is already there, or cannot start where the peer's copy is, says so instead of failing),
//! describing local files for the sender, and listing a store path for a full copy.
//!
//! Replicated content lands like uploads do: in a temp file, fsynced (or journaled), given the
//! source's mtime, then renamed over the final name, so a reader sees the old file or the new
//! one.

use std::io::{self, SeekFrom, Write as _};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use fdfs_proto::file_id::LogicalName;
use fdfs_proto::name::{classify, FileKind};
use fdfs_proto::sync_msg::FileListEntry;
use tokio::io::{AsyncRead, AsyncSeekExt};

use super::journal::Origin;
use super::metadata::sidecar_path;
use super::slave_mark;
use super::write::{
    blocking_store, read_body, stream_to, write_small_blocking, write_small_unnamed, TempFile,
    SMALL_BODY,
};
use super::{blocking, unix_seconds, Store, StoreError};

/// A stored file opened for copying to a peer, with its size and mtime at that moment.
#[derive(Debug)]
pub struct LocalCopy {
    pub size: u64,
    pub mtime: u32,
    pub content: CopyContent,
    /// A slave shaped like a normal name (it carries the slave mark, see `slave_mark`).
    pub slave: bool,
}

/// The content of a [`LocalCopy`].
#[derive(Debug)]
pub enum CopyContent {
    /// A small file, read whole (fewer bytes than `size` if it shrank meanwhile).
    Read(bytes::Bytes),
    /// A larger file, open for streaming from its start.
    Open(std::fs::File),
}

/// How a replicated change ended on this storage (L.4 answers 0, 17, 2).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Applied {
    /// Done: answer 0.
    Done,
    /// Already there; any content was not needed: answer 17.
    Have,
    /// Cannot start here (file missing, or shorter than the change's start): answer 2, the
    /// sender then sends the whole file.
    Missing,
}

/// What this storage holds under a name, for the sync sender.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum LocalFile {
    Missing,
    File {
        size: u64,
        mtime: u32,
    },
    /// A symbolic link to another logical name of this storage.
    Link {
        target: String,
        /// The link's own mtime (not its target's).
        mtime: u32,
    },
}

fn system_time(mtime: u32) -> SystemTime {
    SystemTime::UNIX_EPOCH + Duration::from_secs(u64::from(mtime))
}

/// Renames, creating the target's directory when it does not exist yet (first start).
fn rename_creating_dir(from: &Path, to: &Path) -> io::Result<()> {
    match std::fs::rename(from, to) {
        Err(err) if err.kind() == io::ErrorKind::NotFound && from.exists() => {
            if let Some(dir) = to.parent() {
                std::fs::create_dir_all(dir)?;
            }
            std::fs::rename(from, to)
        }
        other => other,
    }
}

/// What a received copy is checked against.
#[derive(Clone, Copy, Debug)]
enum Expect {
    /// Nothing: its name records no content (appender and slave names).
    Anything,
    /// This size and CRC32.
    Recorded {
        content: (u64, u32),
        /// Taken from the name, which a slave shaped as a normal name does not match: a
        /// mismatch is accepted (and the copy marked) when the file's master is beside it
        /// ([`Store::beside_its_master`]) or `vouched`.
        slave_shaped: bool,
        /// Its source holds it as such a slave (see [`Store::replica_write_as`]).
        vouched: bool,
    },
}

/// A copy whose size or CRC32 is not what `expect` (from its name) says is
/// [`StoreError::Corrupt`].
fn check_copy(
    name: &LogicalName,
    (want_size, want_crc): (u64, u32),
    size: u64,
    crc: u32,
) -> Result<(), StoreError> {
    if want_size != size || want_crc != crc {
        return Err(StoreError::Corrupt(format!(
            "copy of {name} has {size} bytes and CRC32 {crc:08x}, its name says \
             {want_size} bytes and {want_crc:08x}"
        )));
    }
    Ok(())
}

/// The file a metadata sidecar name (`<file>-m`) belongs to; `None` for other names.
fn sidecar_owner(name: &LogicalName) -> Option<LogicalName> {
    // a normal file with the extension `-m` is not a sidecar
    if fdfs_proto::name::has_normal_suffix(name.base()) {
        return None;
    }
    let text = name.to_string();
    let owner = text.strip_suffix("-m")?;
    LogicalName::parse(owner).ok()
}

/// Whether the directory holding `path` (whose file name is `base`, recording a content of
/// `recorded_size` bytes) holds a file whose slave `base` may be: a regular file sharing its
/// encoded characters (a master and its slaves share them, no two uploads do), of the size
/// they record (a slave's are its master's), whose slave stem (H.9) `base` starts with.
/// Sidecars do not count. A damaged master is not taken for a slave of one of its slaves:
/// a slave has the recorded size only by chance.
fn has_master_beside(path: &Path, base: &str, recorded_size: u64) -> io::Result<bool> {
    let (Some(dir), Some(fields)) = (path.parent(), base.get(..fdfs_proto::name::ENCODED_LEN))
    else {
        return Ok(false);
    };
    for entry in std::fs::read_dir(dir)? {
        let entry = entry?;
        let other = entry.file_name();
        let Some(other) = other.to_str() else {
            continue;
        };
        if other != base
            && !other.ends_with("-m")
            && other.starts_with(fields)
            && fdfs_proto::name::slave_stem(other).is_some_and(|stem| base.starts_with(stem))
            && std::fs::symlink_metadata(entry.path())
                .is_ok_and(|meta| meta.is_file() && meta.len() == recorded_size)
        {
            return Ok(true);
        }
    }
    Ok(false)
}

/// What the name of a stored file says its content is: `Some((size, crc32))` for normal
/// files, `None` for those whose name records no checksum of their content (appender files:
/// not of their current content; slaves, short ones included: their master's).
///
/// A slave whose prefix is all digits can have exactly a normal name's shape (H.8 classifies
/// it as normal too), so content that differs from what this says is damage only when
/// [`Store::beside_its_master`] says no.
pub fn recorded_content(name: &LogicalName) -> Option<(u64, u32)> {
    if !fdfs_proto::name::has_normal_suffix(name.base()) {
        return None;
    }
    let fields = Store::name_fields(name).ok()?;
    match classify(&name.to_string(), &fields) {
        FileKind::Normal => Some((fields.file_size(), fields.crc32)),
        FileKind::Appender | FileKind::Slave | FileKind::Trunk => None,
    }
}

impl Store {
    /// Whether `name` may be a slave shaped like a normal file, whose content is not the one
    /// its name records (see [`recorded_content`]): our copy carries the slave mark (see
    /// `slave_mark`), or its directory holds a master it can be the slave of — and then our
    /// copy, if any, is marked, so that it stays told apart once the master is deleted.
    /// Asked only when the content differs; `false` when the directory cannot be read.
    pub async fn beside_its_master(&self, name: &LogicalName) -> bool {
        let (Ok(path), Some((recorded_size, _))) = (self.resolve(name), recorded_content(name))
        else {
            return false;
        };
        let (base, fsync) = (name.base().to_string(), self.options.fsync);
        blocking("listing a directory", move || {
            if slave_mark::is_marked(&path) {
                return Ok(true);
            }
            let beside = has_master_beside(&path, &base, recorded_size)?;
            if beside {
                // a copy that is there already, from before the marks; none yet is no error
                if let Err(err) = slave_mark::add_to(&path, fsync) {
                    if err.kind() != io::ErrorKind::NotFound {
                        tracing::warn!(path = %path.display(), error = %err, "cannot mark a slave");
                    }
                }
            }
            Ok(beside)
        })
        .await
        .unwrap_or(false)
    }

    /// Whether our copy of `name` is an unmarked regular file of the size its name records:
    /// a normal file as named, which a peer's vouch for a slave must not replace.
    async fn holds_as_named(&self, name: &LogicalName) -> bool {
        let (Ok(path), Some((recorded_size, _))) = (self.resolve(name), recorded_content(name))
        else {
            return false;
        };
        // a file we cannot look at counts as held: a vouch is not taken on a guess
        blocking("looking at a file", move || {
            Ok(match std::fs::symlink_metadata(&path) {
                Ok(meta) => {
                    meta.is_file() && meta.len() == recorded_size && !slave_mark::is_marked(&path)
                }
                Err(err) => err.kind() != io::ErrorKind::NotFound,
            })
        })
        .await
        .unwrap_or(true)
    }

    /// Whether our file `name` carries the slave mark (see `slave_mark`).
    pub async fn is_marked_slave(&self, name: &LogicalName) -> bool {
        let Ok(path) = self.resolve(name) else {
            return false;
        };
        tokio::task::spawn_blocking(move || slave_mark::is_marked(&path))
            .await
            .unwrap_or(false)
    }

    /// A copy of `name` we hold that its source lists as a slave shaped like a normal name
    /// (a pulled `S` line with our size and mtime): marked when its size is not the one its
    /// name records, so it stays told from damage (blocking work on the pool).
    pub async fn mark_held_slave(&self, name: &LogicalName) -> Result<(), StoreError> {
        let (Ok(path), Some((recorded_size, _))) = (self.resolve(name), recorded_content(name))
        else {
            return Ok(());
        };
        let sync = self.options.fsync;
        blocking("marking a slave", move || {
            match std::fs::symlink_metadata(&path) {
                Ok(meta) if meta.is_file() && meta.len() != recorded_size => {
                    slave_mark::add_to(&path, sync)?;
                }
                _ => {}
            }
            Ok(())
        })
        .await
    }

    /// The logical name of a path inside one of our store paths' `data/` directories.
    pub fn logical_of_path(&self, path: &Path) -> Option<String> {
        self.paths.iter().enumerate().find_map(|(index, root)| {
            let rel = path.strip_prefix(&root.data).ok()?.to_str()?;
            let text = format!("M{index:02X}/{rel}");
            LogicalName::parse(&text).ok().map(|_| text)
        })
    }

    /// What is stored under `name` now (links are not followed).
    pub async fn local_file(&self, name: &LogicalName) -> Result<LocalFile, StoreError> {
        let path = self.resolve(name)?;
        let meta = match tokio::fs::symlink_metadata(&path).await {
            Ok(meta) => meta,
            Err(err)
                if err.kind() == io::ErrorKind::NotFound
                    || err.raw_os_error() == Some(libc::ENOTDIR) =>
            {
                return Ok(LocalFile::Missing)
            }
            Err(err) => return Err(StoreError::io("reading file status")(err)),
        };
        if meta.file_type().is_symlink() {
            let target = tokio::fs::read_link(&path)
                .await
                .map_err(StoreError::io("reading link"))?;
            return Ok(match self.logical_of_path(&target) {
                Some(target) => LocalFile::Link {
                    target,
                    mtime: unix_seconds(&meta) as u32,
                },
                None => {
                    tracing::warn!(link = %path.display(), target = %target.display(), "link points outside the store paths, not replicated");
                    LocalFile::Missing
                }
            });
        }
        if !meta.is_file() {
            return Ok(LocalFile::Missing);
        }
        Ok(LocalFile::File {
            size: meta.len(),
            mtime: unix_seconds(&meta) as u32,
        })
    }

    /// [`Store::local_file`] for the subject of a create record: a small ordinary file written
    /// here moments ago is answered from memory (see `recent`) without a trip to the blocking
    /// pool. As with [`Store::open_copy`], a file deleted since still shows as stored: its
    /// delete record follows.
    pub async fn created_file(&self, name: &LogicalName) -> Result<LocalFile, StoreError> {
        if let Some(recent) = self.recent.get(&name.to_string()) {
            return Ok(LocalFile::File {
                size: recent.body.len() as u64,
                mtime: recent.mtime,
            });
        }
        self.local_file(name).await
    }

    /// Opens `name` for copying to a peer in one trip to the blocking pool: open, status,
    /// and for a small file (up to [`SMALL_BODY`]) its content too. A small file written here
    /// moments ago comes from memory instead (see `recent`).
    pub async fn open_copy(&self, name: &LogicalName) -> Result<LocalCopy, StoreError> {
        let path = self.resolve(name)?;
        if let Some(recent) = self.recent.get(&name.to_string()) {
            // only ordinary uploads are kept there, never a slave
            return Ok(LocalCopy {
                size: recent.body.len() as u64,
                mtime: recent.mtime,
                content: CopyContent::Read(recent.body),
                slave: false,
            });
        }
        let slave_shaped = recorded_content(name).is_some();
        let opened = self
            .on_path(name.store_path(), "opening file", move || {
                let file = std::fs::File::open(&path).map_err(StoreError::file("opening file"))?;
                let meta = file.metadata().map_err(StoreError::file("opening file"))?;
                if !meta.is_file() {
                    return Err(StoreError::NotRegularFile);
                }
                let (size, mtime) = (meta.len(), unix_seconds(&meta) as u32);
                let content = if size <= SMALL_BODY {
                    let mut body = Vec::with_capacity(size as usize);
                    io::Read::read_to_end(&mut io::Read::take(&file, size), &mut body)
                        .map_err(StoreError::io("reading file"))?;
                    CopyContent::Read(body.into())
                } else {
                    CopyContent::Open(file)
                };
                Ok(LocalCopy {
                    size,
                    mtime,
                    content,
                    slave: slave_shaped && slave_mark::is_marked(&path),
                })
            })
            .await;
        self.note_result(name.store_path(), opened)
    }

    /// SYNC_CREATE_FILE without content: whether we hold `name` with this size and mtime.
    pub async fn replica_probe(
        &self,
        name: &LogicalName,
        size: u64,
        mtime: u32,
    ) -> Result<Applied, StoreError> {
        Ok(match self.local_file(name).await? {
            LocalFile::File { size: s, mtime: m } if s == size && m == mtime => Applied::Have,
            _ => Applied::Missing,
        })
    }

    /// SYNC_CREATE_FILE (`create`) / SYNC_UPDATE_FILE: stores `size` bytes from `reader` as
    /// `name` with mtime `mtime`, replacing what is there. A create of a file we already hold
    /// with the same size and mtime reads nothing and answers [`Applied::Have`]. A store path
    /// without `size` bytes above its reserve answers [`StoreError::NoSpace`] before reading
    /// anything: the sender keeps the record and tries again later.
    pub async fn replica_write<R: AsyncRead + Unpin + ?Sized>(
        &self,
        name: &LogicalName,
        size: u64,
        mtime: u32,
        reader: &mut R,
        create: bool,
    ) -> Result<Applied, StoreError> {
        self.replica_write_as(name, size, mtime, reader, create, false)
            .await
    }

    /// [`Store::replica_write`], where `slave` says its source holds the file as a slave
    /// shaped like a normal name (its file list or request says so, see `slave_mark`): a
    /// content that differs from what the name records is then stored and marked, even with
    /// its master gone everywhere (never over a copy here that is what its name records).
    pub async fn replica_write_as<R: AsyncRead + Unpin + ?Sized>(
        &self,
        name: &LogicalName,
        size: u64,
        mtime: u32,
        reader: &mut R,
        create: bool,
        vouched_slave: bool,
    ) -> Result<Applied, StoreError> {
        // A metadata sidecar only lives beside its file. Copies of one file and of its
        // sidecar can come from different peers (a joining storage pulls while the source
        // pushes a delete): stored after its file was deleted, a sidecar would stay an orphan
        // here only. Its file's lock is taken first, as a delete of the file takes it.
        let _owner = match sidecar_owner(name) {
            Some(owner) => {
                let guard = self.locks.lock(&owner.to_string()).await;
                if !matches!(self.local_file(&owner).await?, LocalFile::File { .. }) {
                    tracing::debug!(file = %name, "metadata of a file we do not hold: not stored");
                    return Ok(Applied::Have);
                }
                Some(guard)
            }
            None => None,
        };
        let _guard = self.locks.lock(&name.to_string()).await;
        // a vouch speaks for content that differs from what the name records, never over a
        // copy here that is what its name records: that one is not replaced by a mismatch
        let vouched = vouched_slave && !self.holds_as_named(name).await;
        if size <= SMALL_BODY && self.space_admits(name.store_path(), size) {
            return self
                .replace_small(name, size, mtime, reader, create, vouched)
                .await;
        }
        if create && self.replica_probe(name, size, mtime).await? == Applied::Have {
            // the same copy, from before it was marked
            if vouched {
                let (path, sync) = (self.resolve(name)?, self.options.fsync);
                blocking("marking a slave", move || slave_mark::add_to(&path, sync)).await?;
            }
            return Ok(Applied::Have);
        }
        if !self.has_room(name.store_path(), size).await? {
            return Err(StoreError::NoSpace);
        }
        // a damaged copy does not spread: content that is not what the name records is read
        // (the stream stays in step) and dropped
        let expect = match recorded_content(name) {
            Some(content) => Expect::Recorded {
                content,
                slave_shaped: true,
                vouched,
            },
            None => Expect::Anything,
        };
        self.replace_locked(name, size, mtime, reader, expect)
            .await?;
        Ok(Applied::Done)
    }

    /// [`Store::replica_write`] of a small file on a path with room to spare, in one thread
    /// hand-off: the body is read whole and checked first, then one blocking call (on the
    /// journal's writer right after the entry's commit, or on the blocking pool) stores it
    /// ([`SmallCopy::apply`]). The caller holds `name`'s lock.
    async fn replace_small<R: AsyncRead + Unpin + ?Sized>(
        &self,
        name: &LogicalName,
        size: u64,
        mtime: u32,
        reader: &mut R,
        create: bool,
        vouched_slave: bool,
    ) -> Result<Applied, StoreError> {
        let body = read_body(reader, size).await?;
        let mut recorded = recorded_content(name);
        let mut slave = false;
        if let Some(expect) = recorded {
            if let Err(err) = check_copy(name, expect, size, crc32fast::hash(&body)) {
                if !(vouched_slave || self.beside_its_master(name).await) {
                    return Err(err);
                }
                // a slave shaped as a normal name: stored with its own syncs, since a
                // journal replay checks entries against their names, and marked
                recorded = None;
                slave = true;
            }
        }
        let path = self.resolve(name)?;
        let index = name.store_path();
        let dir = self.tmp_dir(index)?.to_path_buf();
        // an ordinary file through the journal: durable once its entry is, written by the
        // journal's writer right after the entry's commit
        let journal = recorded
            .and(self.journal(index))
            .filter(|journal| journal.takes(size));
        let copy = SmallCopy {
            path,
            dir,
            size,
            mtime,
            index,
            create,
            slave,
            counts: self.counts(),
            dirs: self.dirs(),
        };
        let applied = match journal {
            Some(journal) => {
                let slot = self.io_slot(index).await?;
                journal
                    .append_file_then(Origin::Copy, name, mtime, body, move |body| {
                        let _slot = slot;
                        copy.apply(body, false)
                    })
                    .await
                    .and_then(|(_written, applied)| applied)
            }
            None => {
                let fsync = self.options.fsync;
                self.on_small_writer(index, "storing replicated file", move || {
                    copy.apply(body, fsync)
                })
                .await
            }
        };
        self.note_result(index, applied)
    }

    /// Replaces a damaged copy of `name` with `size` bytes from `reader` (a peer's copy),
    /// but only when their CRC32 is `crc32`: a bad peer copy leaves ours as it was
    /// ([`StoreError::Corrupt`]). No reserve check: the file takes the room it had.
    pub async fn repair_write<R: AsyncRead + Unpin + ?Sized>(
        &self,
        name: &LogicalName,
        size: u64,
        mtime: u32,
        crc32: u32,
        reader: &mut R,
    ) -> Result<(), StoreError> {
        let _guard = self.locks.lock(&name.to_string()).await;
        let expect = Expect::Recorded {
            content: (size, crc32),
            slave_shaped: false,
            vouched: false,
        };
        self.replace_locked(name, size, mtime, reader, expect).await
    }

    /// Streams `size` bytes into a temp file, checks them against `expect`, then renames over
    /// `name` (whose lock the caller holds).
    async fn replace_locked<R: AsyncRead + Unpin + ?Sized>(
        &self,
        name: &LogicalName,
        size: u64,
        mtime: u32,
        reader: &mut R,
        expect: Expect,
    ) -> Result<(), StoreError> {
        let path = self.resolve(name)?;
        let index = name.store_path();
        let received = self
            .receive(index, "sync", reader, size, Some(mtime), false)
            .await;
        let received = self.note_result(index, received)?;
        let result = async {
            let slave = match expect {
                Expect::Anything => false,
                Expect::Recorded {
                    content,
                    slave_shaped,
                    vouched,
                } => match check_copy(name, content, size, received.crc32) {
                    Ok(()) => false,
                    Err(_) if slave_shaped && (vouched || self.beside_its_master(name).await) => {
                        true
                    }
                    Err(err) => return Err(err),
                },
            };
            if slave {
                let (tmp, sync) = (received.tmp.path().to_path_buf(), self.options.fsync);
                blocking("marking a slave", move || slave_mark::mark_path(&tmp, sync)).await?;
            }
            let fsync = self.options.fsync;
            let tmp_path = received.tmp.path().to_path_buf();
            let counts = self.counts();
            let dirs = self.dirs();
            blocking_store("storing replicated file", move || {
                let change = counts.begin(index);
                // replacing a file we hold adds none
                let existed = std::fs::symlink_metadata(&path).is_ok();
                rename_creating_dir(&tmp_path, &path)
                    .map_err(StoreError::io("renaming replicated file"))?;
                if let (Some(change), false) = (change, existed) {
                    change.note(&path, 1);
                }
                if fsync {
                    dirs.sync_parent(&path)?;
                }
                Ok(())
            })
            .await
        }
        .await;
        match &result {
            Ok(()) => received.tmp.disarm(),
            Err(_) => received.tmp.remove().await,
        }
        self.note_result(name.store_path(), result)
    }

    /// SYNC_DELETE_FILE: deletes like a client delete (a data file takes its sidecar, a link
    /// its target); [`Applied::Missing`] when there is nothing.
    pub async fn replica_delete(&self, name: &LogicalName) -> Result<Applied, StoreError> {
        match self.delete(name).await {
            Ok(()) => Ok(Applied::Done),
            Err(StoreError::NotFound) => Ok(Applied::Missing),
            Err(err) => Err(err),
        }
    }

    /// SYNC_APPEND_FILE (`append`) / SYNC_MODIFY_FILE: writes `length` bytes at `offset` when
    /// our copy is where the change starts (append: size == offset; modify: size >= offset).
    /// Otherwise nothing is read: [`Applied::Have`] if we already hold that range, else
    /// [`Applied::Missing`].
    pub async fn replica_range<R: AsyncRead + Unpin + ?Sized>(
        &self,
        name: &LogicalName,
        offset: u64,
        length: u64,
        mtime: u32,
        reader: &mut R,
        append: bool,
    ) -> Result<Applied, StoreError> {
        let path = self.resolve(name)?;
        let _guard = self.locks.lock(&name.to_string()).await;
        let mut file = match tokio::fs::OpenOptions::new().write(true).open(&path).await {
            Ok(file) => file,
            Err(err)
                if err.kind() == io::ErrorKind::NotFound
                    || err.raw_os_error() == Some(libc::ENOTDIR) =>
            {
                return Ok(Applied::Missing)
            }
            Err(err) => return Err(StoreError::io("opening file")(err)),
        };
        let size = file
            .metadata()
            .await
            .map_err(StoreError::io("reading file status"))?
            .len();
        let end = offset.saturating_add(length);
        let fits = if append {
            size == offset
        } else {
            size >= offset
        };
        if !fits {
            return Ok(if size >= end {
                Applied::Have
            } else {
                Applied::Missing
            });
        }
        let growth = end.saturating_sub(size);
        if growth > 0 && !self.has_room(name.store_path(), growth).await? {
            return Err(StoreError::NoSpace);
        }
        let written = async {
            file.seek(SeekFrom::Start(offset))
                .await
                .map_err(StoreError::io("seeking in file"))?;
            stream_to(reader, &mut file, length).await?;
            Ok::<(), StoreError>(())
        }
        .await;
        let file = file.into_std().await;
        let fsync = self.options.fsync;
        blocking_store("finishing replicated change", move || {
            if let Err(err) = written {
                // leave the file as it was (as far as its length goes)
                if let Err(undo) = file.set_len(size) {
                    tracing::error!(error = %undo, "cannot roll back failed replicated write");
                }
                return Err(err);
            }
            file.set_modified(system_time(mtime))
                .map_err(StoreError::io("setting mtime"))?;
            if fsync {
                file.sync_all().map_err(StoreError::io("syncing file"))?;
            }
            Ok(Applied::Done)
        })
        .await
    }

    /// SYNC_TRUNCATE_FILE: cuts the file to `new_size` when it is `old_size` long now;
    /// [`Applied::Have`] when it is `new_size` long already. Any other size (or no file) is
    /// [`Applied::Missing`]: our copy went another way, the sender sends the whole file
    /// (FastDFS answers 17 and the copies stay different).
    pub async fn replica_truncate(
        &self,
        name: &LogicalName,
        old_size: u64,
        new_size: u64,
        mtime: u32,
    ) -> Result<Applied, StoreError> {
        let path = self.resolve(name)?;
        let _guard = self.locks.lock(&name.to_string()).await;
        let fsync = self.options.fsync;
        blocking_store("truncating replicated file", move || {
            let file = match std::fs::OpenOptions::new().write(true).open(&path) {
                Ok(file) => file,
                Err(err)
                    if err.kind() == io::ErrorKind::NotFound
                        || err.raw_os_error() == Some(libc::ENOTDIR) =>
                {
                    return Ok(Applied::Missing)
                }
                Err(err) => return Err(StoreError::io("opening file")(err)),
            };
            let size = file
                .metadata()
                .map_err(StoreError::io("reading file status"))?
                .len();
            if size != old_size {
                return Ok(if size == new_size {
                    Applied::Have
                } else {
                    Applied::Missing
                });
            }
            file.set_len(new_size)
                .map_err(StoreError::io("truncating file"))?;
            file.set_modified(system_time(mtime))
                .map_err(StoreError::io("setting mtime"))?;
            if fsync {
                file.sync_all().map_err(StoreError::io("syncing file"))?;
            }
            Ok(Applied::Done)
        })
        .await
    }

    /// SYNC_RENAME_FILE: renames `old` (and its sidecar) to `name`. [`Applied::Have`] when
    /// `name` exists already, [`Applied::Missing`] when `old` does not.
    pub async fn replica_rename(
        &self,
        name: &LogicalName,
        old: &LogicalName,
    ) -> Result<Applied, StoreError> {
        let new_path = self.resolve(name)?;
        let old_path = self.resolve(old)?;
        // two locks, always taken in name order
        let (first, second) = if name.to_string() <= old.to_string() {
            (name, old)
        } else {
            (old, name)
        };
        let _first = self.locks.lock(&first.to_string()).await;
        let _second = if first != second {
            Some(self.locks.lock(&second.to_string()).await)
        } else {
            None
        };
        let fsync = self.options.fsync;
        let counts = self.counts();
        let dirs = self.dirs();
        let (index, old_index) = (name.store_path(), old.store_path());
        blocking_store("renaming replicated file", move || {
            let change = counts.begin(index);
            // a walk never waits for one gate while holding another: two gates are safe
            let old_change = if old_index == index {
                None
            } else {
                counts.begin(old_index)
            };
            if std::fs::symlink_metadata(&new_path).is_ok() {
                return Ok(Applied::Have);
            }
            if std::fs::symlink_metadata(&old_path).is_err() {
                return Ok(Applied::Missing);
            }
            rename_creating_dir(&old_path, &new_path).map_err(StoreError::io("renaming file"))?;
            if let Some(change) = &change {
                change.note(&new_path, 1);
            }
            if let Some(change) = old_change.as_ref().or(change.as_ref()) {
                change.note(&old_path, -1);
            }
            match std::fs::rename(sidecar_path(&old_path), sidecar_path(&new_path)) {
                Err(err) if err.kind() != io::ErrorKind::NotFound => {
                    return Err(StoreError::io("moving metadata")(err))
                }
                _ => {}
            }
            if fsync {
                for dir in [new_path.parent(), old_path.parent()].into_iter().flatten() {
                    dirs.sync(dir)
                        .map_err(StoreError::io("syncing directory"))?;
                }
            }
            Ok(Applied::Done)
        })
        .await
    }

    /// SYNC_CREATE_LINK: makes `name` a symbolic link to our copy of `target`, with the link
    /// itself given mtime `mtime` (the source's link's, which QUERY_FILE_INFO reports there).
    /// [`Applied::Have`] when `name` exists, [`Applied::Missing`] when `target` does not.
    pub async fn replica_link(
        &self,
        name: &LogicalName,
        target: &LogicalName,
        mtime: u32,
    ) -> Result<Applied, StoreError> {
        let link_path = self.resolve(name)?;
        let target_path = self.resolve(target)?;
        let _guard = self.locks.lock(&name.to_string()).await;
        let fsync = self.options.fsync;
        let counts = self.counts();
        let dirs = self.dirs();
        let index = name.store_path();
        blocking_store("linking replicated file", move || {
            let change = counts.begin(index);
            if std::fs::symlink_metadata(&link_path).is_ok() {
                return Ok(Applied::Have);
            }
            if !target_path.is_file() {
                return Ok(Applied::Missing);
            }
            let absolute = std::path::absolute(&target_path)
                .map_err(StoreError::io("resolving link target"))?;
            let mut linked = std::os::unix::fs::symlink(&absolute, &link_path);
            if matches!(&linked, Err(err) if err.kind() == io::ErrorKind::NotFound) {
                if let Some(dir) = link_path.parent() {
                    std::fs::create_dir_all(dir).map_err(StoreError::io("creating directory"))?;
                }
                linked = std::os::unix::fs::symlink(&absolute, &link_path);
            }
            linked.map_err(StoreError::io("creating link"))?;
            if let Err(err) = super::set_link_mtime(&link_path, mtime) {
                // a retry must not find a link with the wrong time and take it as done
                let _ = std::fs::remove_file(&link_path);
                return Err(StoreError::io("setting link mtime")(err));
            }
            if let Some(change) = change {
                change.note(&link_path, 1);
            }
            if fsync {
                dirs.sync_parent(&link_path)?;
            }
            Ok(Applied::Done)
        })
        .await
    }

    /// Writes the list of every file and link of store path `index` (the reply of
    /// FETCH_FILE_LIST) to a temp file; returns it and its length. The caller removes it.
    /// With `slaves`, marked slaves are listed as such (`S` lines, which older storages
    /// cannot read).
    pub(crate) async fn write_file_list(
        &self,
        index: u8,
        slaves: bool,
    ) -> Result<(TempFile, u64), StoreError> {
        let data = self.store_path(index)?.data.clone();
        let (tmp, file) = TempFile::create(self.tmp_dir(index)?, "list").await?;
        let file = file.into_std().await;
        let subdirs = self.options.subdir_count;
        let roots: Vec<(usize, PathBuf)> = self
            .paths
            .iter()
            .enumerate()
            .map(|(i, p)| (i, p.data.clone()))
            .collect();
        let len = blocking("listing files", move || {
            let mut out = io::BufWriter::new(file);
            let mut len = 0u64;
            for high in 0..subdirs {
                for low in 0..subdirs {
                    let rel = format!("{high:02X}/{low:02X}");
                    let entries = match std::fs::read_dir(data.join(&rel)) {
                        Ok(entries) => entries,
                        Err(err) if err.kind() == io::ErrorKind::NotFound => continue,
                        Err(err) => return Err(err),
                    };
                    let mut names: Vec<(String, std::fs::Metadata)> = Vec::new();
                    for entry in entries {
                        let entry = entry?;
                        let Ok(base) = entry.file_name().into_string() else {
                            continue;
                        };
                        let Ok(meta) = std::fs::symlink_metadata(entry.path()) else {
                            continue;
                        };
                        names.push((base, meta));
                    }
                    names.sort_by(|a, b| a.0.cmp(&b.0));
                    for (base, meta) in names {
                        let name = format!("M{index:02X}/{rel}/{base}");
                        if LogicalName::parse(&name).is_err() {
                            continue;
                        }
                        let target = if meta.file_type().is_symlink() {
                            let target = std::fs::read_link(data.join(&rel).join(&base))?;
                            let logical = roots.iter().find_map(|(i, root)| {
                                let rel = target.strip_prefix(root).ok()?.to_str()?;
                                let text = format!("M{i:02X}/{rel}");
                                LogicalName::parse(&text).ok().map(|_| text)
                            });
                            match logical {
                                Some(logical) => Some(logical),
                                None => continue,
                            }
                        } else if meta.is_file() {
                            None
                        } else {
                            continue;
                        };
                        // only a name that records a content can be a marked slave
                        let slave = slaves
                            && target.is_none()
                            && LogicalName::parse(&name)
                                .is_ok_and(|name| recorded_content(&name).is_some())
                            && slave_mark::is_marked(&data.join(&rel).join(&base));
                        let line = FileListEntry {
                            size: if target.is_some() { 0 } else { meta.len() },
                            mtime: unix_seconds(&meta) as u32,
                            name,
                            target,
                            slave,
                        }
                        .encode_line();
                        out.write_all(line.as_bytes())?;
                        len += line.len() as u64;
                    }
                }
            }
            let file = out.into_inner().map_err(|err| err.into_error())?;
            file.sync_all().ok();
            Ok(len)
        })
        .await?;
        Ok((tmp, len))
    }
}

/// Where and how a small file received from a peer is stored (blocking work).
struct SmallCopy {
    path: PathBuf,
    /// The store path's temp directory.
    dir: PathBuf,
    size: u64,
    mtime: u32,
    index: u8,
    /// A create (not a replacement): the same copy found here is [`Applied::Have`].
    create: bool,
    /// A slave shaped like a normal name: it carries the slave mark (see `slave_mark`).
    slave: bool,
    counts: Arc<super::FileCounts>,
    dirs: Arc<super::dirsync::DirSyncer>,
}

impl SmallCopy {
    /// Writes `body` as a new file and links it into place; when the name is taken, looks
    /// at the copy there (a create answers [`Applied::Have`] for the same one) and otherwise
    /// renames a new copy over it.
    fn apply(&self, body: Vec<u8>, fsync: bool) -> Result<Applied, StoreError> {
        let change = self.counts.begin(self.index);
        // A new name (the usual case) takes the file without a temp name, and without a look
        // first: the name's lookup is the link's own. The caller holds the name's lock.
        // a slave's mark is synced with it
        let seal_sync = fsync && !self.slave;
        if let Some(file) = write_small_unnamed(&self.dir, &body, Some(self.mtime), seal_sync)? {
            if self.slave {
                slave_mark::mark(file.file(), fsync).map_err(StoreError::io("marking a slave"))?;
            }
            if file.link(&self.path)? {
                if let Some(change) = change {
                    change.note(&self.path, 1);
                }
                if fsync {
                    self.dirs.sync_parent(&self.path)?;
                }
                return Ok(Applied::Done);
            }
        }
        let existing = std::fs::symlink_metadata(&self.path).ok();
        if let (true, Some(meta)) = (self.create, &existing) {
            if meta.is_file() && meta.len() == self.size && unix_seconds(meta) as u32 == self.mtime
            {
                // the same copy, perhaps from before it was marked
                if self.slave {
                    slave_mark::add_to(&self.path, fsync)
                        .map_err(StoreError::io("marking a slave"))?;
                }
                return Ok(Applied::Have);
            }
        }
        // a copy we hold is replaced at once by a rename
        let (tmp, _) = write_small_blocking(&self.dir, "sync", &body, Some(self.mtime), seal_sync)?;
        if self.slave {
            slave_mark::mark_path(tmp.path(), fsync).map_err(StoreError::io("marking a slave"))?;
        }
        rename_creating_dir(tmp.path(), &self.path)
            .map_err(StoreError::io("renaming replicated file"))?;
        tmp.disarm();
        // replacing a file we hold adds none
        if let (Some(change), None) = (change, &existing) {
            change.note(&self.path, 1);
        }
        if fsync {
            self.dirs.sync_parent(&self.path)?;
        }
        Ok(Applied::Done)
    }
}

#[cfg(test)]
mod tests {
    use super::super::test_support::store_in;
    use super::super::NewFile;
    use super::*;

    fn name(text: &str) -> LogicalName {
        LogicalName::parse(text).unwrap()
    }

    #[test]
    fn a_slave_shaped_as_a_normal_name_is_told_by_its_master_beside_it() {
        let dir = tempfile::tempdir().unwrap();
        let fields = "fwAAH2sDbkqEb2TqAAAAADY6MCA";
        let (master, slave, slave_ext) = (
            format!("{fields}275.jpg"),
            format!("{fields}2751234"),
            format!("{fields}2751.ab"),
        );
        let other = "fwAAH2sDbkqEb2TqAAAAADY6MCB123.jpg";
        for name in [&master, &format!("{master}-m"), &slave, &slave_ext] {
            std::fs::write(dir.path().join(name), b"x").unwrap();
        }
        std::fs::write(dir.path().join(other), b"x").unwrap();
        // the master holds 1 byte, which the names record
        let beside = |base: &str| has_master_beside(&dir.path().join(base), base, 1).unwrap();
        assert!(beside(&slave));
        assert!(beside(&slave_ext));
        // the master and an unrelated file keep the check of their content
        assert!(!beside(&master));
        assert!(!beside(other));
        // a slave whose prefix starts with a dot has a stem the master starts with too: the
        // size its name records tells them apart (the master's 2 bytes)
        let (dotted_master, dotted_slave) = (
            "fwAAH2sDbkqEb2TqAAAAADY6MCC275.txt",
            "fwAAH2sDbkqEb2TqAAAAADY6MCC275.t.x",
        );
        std::fs::write(dir.path().join(dotted_master), b"xx").unwrap();
        std::fs::write(dir.path().join(dotted_slave), b"y").unwrap();
        let beside2 = |base: &str| has_master_beside(&dir.path().join(base), base, 2).unwrap();
        assert!(beside2(dotted_slave));
        assert!(!beside2(dotted_master));
        // a master's sidecar alone is no master
        for gone in [&master, &slave_ext] {
            std::fs::remove_file(dir.path().join(gone)).unwrap();
        }
        assert!(!beside(&slave));
    }

    fn mtime_of(path: &Path) -> u32 {
        unix_seconds(&std::fs::metadata(path).unwrap()) as u32
    }

    #[tokio::test]
    async fn small_files_just_written_are_copied_from_memory() {
        let dir = tempfile::tempdir().unwrap();
        let store = store_in(dir.path(), 1, 4).await;
        // a group with peers (replication says so)
        store.keep_recent_files(true);
        let new = |appender| NewFile {
            store_path: None,
            size: 5,
            ext: "txt",
            appender,
        };
        let plain = store
            .write_new_file(&new(false), &mut &b"hello"[..])
            .await
            .unwrap();
        let appender = store
            .write_new_file(&new(true), &mut &b"hello"[..])
            .await
            .unwrap();
        let plain_path = store.resolve(&plain).unwrap();
        let mtime = mtime_of(&plain_path);
        // gone from the disk, yet the sender still gets what was stored
        std::fs::remove_file(&plain_path).unwrap();
        let copy = store.open_copy(&plain).await.unwrap();
        assert_eq!((copy.size, copy.mtime), (5, mtime));
        assert_eq!(
            store.created_file(&plain).await.unwrap(),
            LocalFile::File { size: 5, mtime }
        );
        assert_eq!(store.local_file(&plain).await.unwrap(), LocalFile::Missing);
        // deleted through the store: forgotten, so a sender sees it gone
        let deleted = store
            .write_new_file(&new(false), &mut &b"bye!!"[..])
            .await
            .unwrap();
        store.delete(&deleted).await.unwrap();
        assert_eq!(
            store.created_file(&deleted).await.unwrap(),
            LocalFile::Missing
        );
        match copy.content {
            CopyContent::Read(body) => assert_eq!(&body[..], b"hello"),
            CopyContent::Open(_) => panic!("a small file is read whole"),
        }
        // an appender's content may change: always read from the disk
        std::fs::remove_file(store.resolve(&appender).unwrap()).unwrap();
        assert!(matches!(
            store.open_copy(&appender).await,
            Err(StoreError::NotFound)
        ));
        assert_eq!(
            store.created_file(&appender).await.unwrap(),
            LocalFile::Missing
        );
    }

    const MASTER: &[u8] = b"the master image";

    /// Uploads `content` as a new `.jpg` file.
    async fn jpg_file(store: &Store, content: &[u8]) -> LogicalName {
        let req = NewFile {
            store_path: None,
            size: content.len() as u64,
            ext: "jpg",
            appender: false,
        };
        store.write_new_file(&req, &mut &content[..]).await.unwrap()
    }

    /// A replicated slave shaped like a normal name is accepted beside its master and
    /// marked, small or large, so it stays readable once the master is deleted; the same
    /// content without a master beside it is refused as damaged.
    #[tokio::test]
    async fn replicated_slaves_shaped_like_normal_names_are_marked() {
        let dir = tempfile::tempdir().unwrap();
        let store = store_in(dir.path(), 1, 1).await;
        let master = jpg_file(&store, MASTER).await;
        let slave_of = |prefix: &str| {
            name(&fdfs_proto::name::slave_name(&master.to_string(), prefix, "").unwrap())
        };
        let big = vec![7u8; 300 * 1024];
        for (slave, body) in [
            (slave_of("1234"), &b"a thumbnail"[..]),
            (slave_of("5678"), &big[..]),
        ] {
            assert!(fdfs_proto::name::has_normal_suffix(slave.base()));
            let applied = store
                .replica_write(&slave, body.len() as u64, 1000, &mut &body[..], true)
                .await
                .unwrap();
            assert_eq!(applied, Applied::Done);
            assert!(
                slave_mark::is_marked(&store.resolve(&slave).unwrap()),
                "{slave}"
            );
        }
        store.delete(&master).await.unwrap();
        assert!(store.beside_its_master(&slave_of("1234")).await);
        let orphan = slave_of("9999");
        let refused = store
            .replica_write(&orphan, 3, 1000, &mut &b"abc"[..], true)
            .await;
        assert!(
            matches!(refused, Err(StoreError::Corrupt(_))),
            "{refused:?}"
        );
        assert!(!store.resolve(&orphan).unwrap().exists());
        // its source vouches for it (a pulled file list): stored and marked
        let applied = store
            .replica_write_as(&orphan, 3, 1000, &mut &b"abc"[..], true, true)
            .await
            .unwrap();
        assert_eq!(applied, Applied::Done);
        assert!(slave_mark::is_marked(&store.resolve(&orphan).unwrap()));
        // and the file list says so for every marked slave, and only for them
        let (list, _) = store.write_file_list(0, true).await.unwrap();
        let text = std::fs::read_to_string(list.path()).unwrap();
        list.remove().await;
        let kinds: Vec<(bool, String)> = text
            .lines()
            .map(|line| FileListEntry::parse_line(line).unwrap())
            .map(|entry| (entry.slave, entry.name))
            .collect();
        let mut expected: Vec<(bool, String)> = ["1234", "5678", "9999"]
            .iter()
            .map(|prefix| (true, slave_of(prefix).to_string()))
            .collect();
        expected.sort_by(|a, b| a.1.cmp(&b.1));
        assert_eq!(kinds, expected);
        // for an older storage: no `S` line
        let (list, _) = store.write_file_list(0, false).await.unwrap();
        let text = std::fs::read_to_string(list.path()).unwrap();
        list.remove().await;
        assert_eq!(text.lines().count(), 3);
        assert!(text.lines().all(|line| line.starts_with("F ")), "{text}");
    }

    /// A peer's vouch for a slave never replaces a copy here that is what its name records,
    /// and marks a copy we already hold (from before the marks) when it answers "have".
    #[tokio::test]
    async fn a_vouch_neither_overwrites_a_healthy_file_nor_skips_marking_a_held_one() {
        let dir = tempfile::tempdir().unwrap();
        let store = store_in(dir.path(), 1, 1).await;
        let healthy = jpg_file(&store, MASTER).await;
        let refused = store
            .replica_write_as(&healthy, 3, 1000, &mut &b"abc"[..], false, true)
            .await;
        assert!(
            matches!(refused, Err(StoreError::Corrupt(_))),
            "{refused:?}"
        );
        let path = store.resolve(&healthy).unwrap();
        assert_eq!(std::fs::read(&path).unwrap(), MASTER);
        assert!(!slave_mark::is_marked(&path));

        // an unmarked slave copy (made before the marks), the same as the peer's
        let slave = name(&fdfs_proto::name::slave_name(&healthy.to_string(), "1234", "").unwrap());
        let slave_path = store.resolve(&slave).unwrap();
        std::fs::write(&slave_path, b"thumb").unwrap();
        let at = std::time::UNIX_EPOCH + Duration::from_secs(1000);
        std::fs::File::options()
            .write(true)
            .open(&slave_path)
            .unwrap()
            .set_modified(at)
            .unwrap();
        let applied = store
            .replica_write_as(&slave, 5, 1000, &mut &b"thumb"[..], true, true)
            .await
            .unwrap();
        assert_eq!(applied, Applied::Have);
        assert!(slave_mark::is_marked(&slave_path));

        // a held copy a pulled list calls a slave: marked when its size is not the recorded
        // one, never when it is what its name records
        let other = name(&fdfs_proto::name::slave_name(&healthy.to_string(), "5678", "").unwrap());
        let other_path = store.resolve(&other).unwrap();
        std::fs::write(&other_path, b"another").unwrap();
        store.mark_held_slave(&other).await.unwrap();
        assert!(slave_mark::is_marked(&other_path));
        store.mark_held_slave(&healthy).await.unwrap();
        assert!(!slave_mark::is_marked(&path));
    }

    fn link_mtime_of(path: &Path) -> u32 {
        unix_seconds(&std::fs::symlink_metadata(path).unwrap()) as u32
    }

    /// A slave stored as a link shows the link's own mtime as its create time
    /// (QUERY_FILE_INFO): a replicated link must get the source's, not the time it was made
    /// here, or the storages disagree whenever replication crosses a second.
    #[tokio::test]
    async fn replicated_links_get_the_source_mtime_not_their_targets() {
        let dir = tempfile::tempdir().unwrap();
        let store = store_in(dir.path(), 1, 2).await;
        let target = name("M00/01/00/content.jpg");
        store
            .replica_write(&target, 5, 1000, &mut &b"thumb"[..], true)
            .await
            .unwrap();
        let link = name("M00/01/00/master_t.jpg");
        let link_path = store.resolve(&link).unwrap();
        assert_eq!(
            store.replica_link(&link, &target, 2000).await.unwrap(),
            Applied::Done
        );
        assert!(std::fs::symlink_metadata(&link_path)
            .unwrap()
            .file_type()
            .is_symlink());
        assert_eq!(link_mtime_of(&link_path), 2000);
        // the target keeps its own
        assert_eq!(mtime_of(&link_path), 1000);
        assert_eq!(
            store.local_file(&link).await.unwrap(),
            LocalFile::Link {
                target: target.to_string(),
                mtime: 2000
            }
        );
        assert_eq!(store.stat(&link).await.unwrap().mtime, 2000);
        // a repeated record finds the link there and leaves it as it is
        assert_eq!(
            store.replica_link(&link, &target, 3000).await.unwrap(),
            Applied::Have
        );
        assert_eq!(link_mtime_of(&link_path), 2000);
        // a link whose directory does not exist yet is stamped too (made on the second try)
        let listed = name("M00/00/03/master_s.jpg");
        assert_eq!(
            store.replica_link(&listed, &target, 4000).await.unwrap(),
            Applied::Done
        );
        assert_eq!(link_mtime_of(&store.resolve(&listed).unwrap()), 4000);
    }

    #[tokio::test]
    async fn replicated_files_land_whole_with_the_source_mtime() {
        let dir = tempfile::tempdir().unwrap();
        let store = store_in(dir.path(), 1, 2).await;
        let file = name("M00/01/00/replicated.txt");
        assert_eq!(
            store.replica_probe(&file, 5, 1000).await.unwrap(),
            Applied::Missing
        );
        let applied = store
            .replica_write(&file, 5, 1000, &mut &b"hello"[..], true)
            .await
            .unwrap();
        assert_eq!(applied, Applied::Done);
        let path = store.resolve(&file).unwrap();
        assert_eq!(std::fs::read(&path).unwrap(), b"hello");
        assert_eq!(mtime_of(&path), 1000);
        assert_eq!(
            store.replica_probe(&file, 5, 1000).await.unwrap(),
            Applied::Have
        );
        assert_eq!(
            store.replica_probe(&file, 5, 1001).await.unwrap(),
            Applied::Missing
        );
        // a second create of the same file changes nothing (a small body is read whole
        // before the check; the caller drops what is left unread either way)
        assert_eq!(
            store
                .replica_write(&file, 5, 1000, &mut &b"world"[..], true)
                .await
                .unwrap(),
            Applied::Have
        );
        assert_eq!(std::fs::read(&path).unwrap(), b"hello");
        // ... and a large one reads nothing
        let big = name("M00/01/00/big.bin");
        let content = vec![7u8; SMALL_BODY as usize + 1];
        let len = content.len() as u64;
        let applied = store
            .replica_write(&big, len, 1000, &mut &content[..], true)
            .await
            .unwrap();
        assert_eq!(applied, Applied::Done);
        let other = vec![8u8; content.len()];
        let mut unread = &other[..];
        assert_eq!(
            store
                .replica_write(&big, len, 1000, &mut unread, true)
                .await
                .unwrap(),
            Applied::Have
        );
        assert_eq!(unread.len(), other.len());
        assert_eq!(
            std::fs::read(store.resolve(&big).unwrap()).unwrap(),
            content
        );
        // an update replaces it
        store
            .replica_write(&file, 6, 2000, &mut &b"world!"[..], false)
            .await
            .unwrap();
        assert_eq!(std::fs::read(&path).unwrap(), b"world!");
        assert_eq!(mtime_of(&path), 2000);
        // a short stream leaves the old file alone
        let err = store
            .replica_write(&file, 10, 3000, &mut &b"abc"[..], false)
            .await
            .unwrap_err();
        assert!(matches!(err, StoreError::ShortBody { .. }));
        assert_eq!(std::fs::read(&path).unwrap(), b"world!");
        assert_eq!(
            std::fs::read_dir(dir.path().join("data/.tmp"))
                .unwrap()
                .count(),
            0
        );
        assert_eq!(store.replica_delete(&file).await.unwrap(), Applied::Done);
        assert_eq!(store.replica_delete(&file).await.unwrap(), Applied::Missing);
    }

    #[tokio::test]
    async fn ranges_apply_only_where_the_copy_is() {
        let dir = tempfile::tempdir().unwrap();
        let store = store_in(dir.path(), 1, 1).await;
        let file = name("M00/00/00/appender");
        store
            .replica_write(&file, 6, 10, &mut &b"hello\n"[..], true)
            .await
            .unwrap();
        let path = store.resolve(&file).unwrap();
        // append at the end
        assert_eq!(
            store
                .replica_range(&file, 6, 6, 20, &mut &b"world\n"[..], true)
                .await
                .unwrap(),
            Applied::Done
        );
        assert_eq!(std::fs::read(&path).unwrap(), b"hello\nworld\n");
        assert_eq!(mtime_of(&path), 20);
        // replayed: already there, nothing read
        let mut unread = &b"world\n"[..];
        assert_eq!(
            store
                .replica_range(&file, 6, 6, 20, &mut unread, true)
                .await
                .unwrap(),
            Applied::Have
        );
        assert_eq!(unread.len(), 6);
        // beyond our end: the sender must send the whole file
        assert_eq!(
            store
                .replica_range(&file, 20, 2, 30, &mut &b"xx"[..], true)
                .await
                .unwrap(),
            Applied::Missing
        );
        // modify inside
        assert_eq!(
            store
                .replica_range(&file, 0, 5, 40, &mut &b"HELLO"[..], false)
                .await
                .unwrap(),
            Applied::Done
        );
        assert_eq!(std::fs::read(&path).unwrap(), b"HELLO\nworld\n");
        // truncate only from the expected size; another size means our copy differs
        assert_eq!(
            store.replica_truncate(&file, 99, 5, 50).await.unwrap(),
            Applied::Missing
        );
        assert_eq!(
            store.replica_truncate(&file, 99, 12, 50).await.unwrap(),
            Applied::Have
        );
        assert_eq!(
            store.replica_truncate(&file, 12, 5, 50).await.unwrap(),
            Applied::Done
        );
        assert_eq!(std::fs::read(&path).unwrap(), b"HELLO");
        assert_eq!(mtime_of(&path), 50);
        let absent = name("M00/00/00/absent");
        assert_eq!(
            store.replica_truncate(&absent, 1, 0, 1).await.unwrap(),
            Applied::Missing
        );
        assert_eq!(
            store
                .replica_range(&absent, 0, 1, 1, &mut &b"x"[..], true)
                .await
                .unwrap(),
            Applied::Missing
        );
    }

    #[tokio::test]
    async fn renames_links_and_listing() {
        let dir = tempfile::tempdir().unwrap();
        let store = store_in(dir.path(), 1, 2).await;
        let old = name("M00/00/01/oldname");
        let new = name("M00/00/01/newname");
        store
            .replica_write(&old, 3, 7, &mut &b"abc"[..], true)
            .await
            .unwrap();
        let meta = name("M00/00/01/oldname-m");
        store
            .replica_write(&meta, 3, 7, &mut &b"k\x02v"[..], false)
            .await
            .unwrap();
        assert_eq!(
            store.replica_rename(&new, &old).await.unwrap(),
            Applied::Done
        );
        assert_eq!(store.local_file(&old).await.unwrap(), LocalFile::Missing);
        assert_eq!(
            store.local_file(&new).await.unwrap(),
            LocalFile::File { size: 3, mtime: 7 }
        );
        assert_eq!(store.get_metadata(&new).await.unwrap(), b"k\x02v");
        assert_eq!(
            store.replica_rename(&new, &old).await.unwrap(),
            Applied::Have
        );
        let other = name("M00/00/01/other");
        assert_eq!(
            store.replica_rename(&other, &old).await.unwrap(),
            Applied::Missing
        );

        let link = name("M00/01/01/link_s");
        assert_eq!(
            store.replica_link(&link, &old, 30).await.unwrap(),
            Applied::Missing
        );
        assert_eq!(
            store.replica_link(&link, &new, 30).await.unwrap(),
            Applied::Done
        );
        assert_eq!(
            store.replica_link(&link, &new, 40).await.unwrap(),
            Applied::Have
        );
        assert_eq!(
            store.local_file(&link).await.unwrap(),
            LocalFile::Link {
                target: new.to_string(),
                mtime: 30
            }
        );

        let (list, len) = store.write_file_list(0, true).await.unwrap();
        let text = std::fs::read_to_string(list.path()).unwrap();
        assert_eq!(text.len() as u64, len);
        let entries: Vec<FileListEntry> = text
            .lines()
            .map(|l| FileListEntry::parse_line(l).unwrap())
            .collect();
        assert_eq!(
            entries,
            [
                FileListEntry {
                    size: 3,
                    mtime: 7,
                    name: new.to_string(),
                    target: None,
                    slave: false,
                },
                FileListEntry {
                    size: 3,
                    mtime: 7,
                    name: "M00/00/01/newname-m".into(),
                    target: None,
                    slave: false,
                },
                FileListEntry {
                    size: 0,
                    mtime: 30,
                    name: link.to_string(),
                    target: Some(new.to_string()),
                    slave: false,
                },
            ]
        );
        list.remove().await;
        // uploads show up as well
        let uploaded = store
            .write_new_file(
                &NewFile {
                    store_path: None,
                    size: 1,
                    ext: "",
                    appender: false,
                },
                &mut &b"x"[..],
            )
            .await
            .unwrap();
        let (list, _) = store.write_file_list(0, true).await.unwrap();
        let text = std::fs::read_to_string(list.path()).unwrap();
        assert!(text.contains(&uploaded.to_string()));
        list.remove().await;
    }
}
