//! Scrubbing: finding silent corruption and repairing it from a peer.
//!
//! A scrub walks every healthy store path's `data/XX/YY/` directories and re-reads each
//! normal file, comparing its size and CRC32 with the ones recorded in its name (H.2). Names
//! of appender files record no CRC32 of their current content, and slave names carry their
//! master's, so both are skipped (counted as such), as are links (their target is checked
//! under its own name). A damaged copy is downloaded again from an ACTIVE peer of the group
//! (DOWNLOAD_FILE, as a copying storage does) into a temp file and only renamed over ours
//! when its CRC32 is the recorded one; with no good copy anywhere the file stays as it is and
//! counts as unrepairable.
//!
//! Scrubs start on request (SCRUB, `fdfs scrub`), at full speed, or every `scrub_interval`
//! (config), limited to `scrub_rate` bytes per second. One runs at a time. A download that
//! finds a file of the wrong size has that one file repaired right away.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use fdfs_proto::cmd::Command;
use fdfs_proto::file_id::LogicalName;
use fdfs_proto::scrub_msg::ScrubReport;
use fdfs_proto::storage_msg::{FileInfoReply, GroupAndName, FILE_INFO_NO_CRC};
use fdfs_proto::tracker_msg::storage_status;
use fdfs_proto::{status, Header, ProtoError};
use tokio::io::AsyncReadExt;
use tokio_util::sync::CancellationToken;
use tracing::{debug, error, info, warn};

use crate::replication::{pull, Replication};
use crate::store::{LocalFile, Store, StoreError, IO_BUFFER};

/// Totals since the storage started, for the metrics.
#[derive(Debug, Default)]
pub struct ScrubTotals {
    pub checked: AtomicU64,
    pub corrupt: AtomicU64,
    pub repaired: AtomicU64,
    pub unrepairable: AtomicU64,
    pub bytes: AtomicU64,
}

#[derive(Debug)]
pub struct Scrubber {
    repl: Arc<Replication>,
    running: AtomicBool,
    /// The current or last run.
    report: Mutex<ScrubReport>,
    totals: ScrubTotals,
    /// Files a download found damaged whose repair is under way.
    repairing: Mutex<std::collections::HashSet<String>>,
    stop: CancellationToken,
}

/// How one file came out.
enum Verdict {
    Good,
    Skipped,
    /// Damaged: why, and what its name records.
    Damaged {
        why: String,
        size: u64,
        crc32: u32,
        mtime: u32,
    },
}

fn unix_now() -> i64 {
    crate::clock::unix_now()
}

pub use crate::store::recorded_content as recorded;

impl Scrubber {
    pub fn new(repl: Arc<Replication>, stop: CancellationToken) -> Arc<Scrubber> {
        Arc::new(Scrubber {
            repl,
            running: AtomicBool::new(false),
            report: Mutex::new(ScrubReport::default()),
            totals: ScrubTotals::default(),
            repairing: Mutex::default(),
            stop,
        })
    }

    fn store(&self) -> &Arc<Store> {
        self.repl.store()
    }

    /// The current or last run.
    pub fn report(&self) -> ScrubReport {
        let mut report = *self.report.lock().unwrap_or_else(PoisonError::into_inner);
        report.running = self.running.load(Ordering::Acquire);
        report
    }

    pub fn totals(&self) -> &ScrubTotals {
        &self.totals
    }

    fn update(&self, change: impl FnOnce(&mut ScrubReport)) {
        change(&mut self.report.lock().unwrap_or_else(PoisonError::into_inner));
    }

    /// Starts a scrub in the background unless one runs; `rate` limits it to that many bytes
    /// per second. The report says whether this call started it.
    pub fn start(self: &Arc<Self>, rate: Option<u64>) -> ScrubReport {
        if self.running.swap(true, Ordering::AcqRel) {
            return self.report();
        }
        self.update(|r| {
            *r = ScrubReport {
                started_at: unix_now(),
                ..ScrubReport::default()
            }
        });
        let this = self.clone();
        tokio::spawn(async move {
            this.run(rate).await;
        });
        ScrubReport {
            started_now: true,
            ..self.report()
        }
    }

    /// One scrub of every healthy store path (`running` is already set).
    async fn run(&self, rate: Option<u64>) {
        let started = Instant::now();
        info!(rate = ?rate, "scrub started");
        let mut throttle = Throttle::new(rate);
        for index in 0..self.store().store_path_count() {
            let index = index as u8;
            if self.stop.is_cancelled() {
                break;
            }
            if !self.store().path_healthy(index) {
                warn!(store_path = index, "store path is bad: not scrubbed");
                continue;
            }
            if let Err(err) = self.scrub_path(index, &mut throttle).await {
                warn!(store_path = index, error = %err, "scrub of store path stopped early");
                self.store().suspect(index);
            }
        }
        self.update(|r| r.finished_at = unix_now());
        self.running.store(false, Ordering::Release);
        let report = self.report();
        let elapsed = started.elapsed();
        info!(
            checked = report.checked,
            corrupt = report.corrupt,
            repaired = report.repaired,
            unrepairable = report.unrepairable,
            skipped = report.skipped,
            ?elapsed,
            "scrub finished"
        );
        if report.unrepairable > 0 {
            error!(
                files = report.unrepairable,
                "scrub found damaged files without a good copy on any peer (named above)"
            );
        }
    }

    /// Every `XX/YY` directory of one store path.
    async fn scrub_path(&self, index: u8, throttle: &mut Throttle) -> Result<(), StoreError> {
        let data = self.store().data_dir(index)?.to_path_buf();
        let subdirs = self.store().options().subdir_count;
        for high in 0..subdirs {
            for low in 0..subdirs {
                if self.stop.is_cancelled() {
                    return Ok(());
                }
                let dir = data.join(format!("{high:02X}")).join(format!("{low:02X}"));
                let names = crate::store::blocking("listing a data directory", move || {
                    match std::fs::read_dir(&dir) {
                        Ok(entries) => {
                            let mut names = Vec::new();
                            for entry in entries {
                                if let Some(name) = entry?.file_name().to_str() {
                                    names.push(name.to_string());
                                }
                            }
                            Ok(names)
                        }
                        // not created yet
                        Err(err) if err.kind() == std::io::ErrorKind::NotFound => Ok(Vec::new()),
                        Err(err) => Err(err),
                    }
                })
                .await?;
                for base in names {
                    // metadata sidecars
                    if base.ends_with("-m") {
                        continue;
                    }
                    let text = format!("M{index:02X}/{high:02X}/{low:02X}/{base}");
                    let Ok(name) = LogicalName::parse(&text) else {
                        continue;
                    };
                    self.scrub_file(&name, throttle).await;
                }
            }
        }
        Ok(())
    }

    /// Checks one file and repairs it when damaged.
    async fn scrub_file(&self, name: &LogicalName, throttle: &mut Throttle) {
        let verdict = match self.check(name, throttle).await {
            Ok(verdict) => verdict,
            Err(err) => {
                warn!(file = %name, error = %err, "cannot scrub file");
                self.update(|r| r.skipped += 1);
                return;
            }
        };
        match verdict {
            Verdict::Good => {
                self.update(|r| r.checked += 1);
                self.totals.checked.fetch_add(1, Ordering::Relaxed);
            }
            Verdict::Skipped => self.update(|r| r.skipped += 1),
            Verdict::Damaged {
                why,
                size,
                crc32,
                mtime,
            } => {
                self.update(|r| {
                    r.checked += 1;
                    r.corrupt += 1;
                });
                self.totals.checked.fetch_add(1, Ordering::Relaxed);
                self.totals.corrupt.fetch_add(1, Ordering::Relaxed);
                error!(file = %name, %why, "damaged file found");
                if self.repair(name, size, crc32, mtime).await {
                    self.update(|r| r.repaired += 1);
                    self.totals.repaired.fetch_add(1, Ordering::Relaxed);
                } else {
                    self.update(|r| r.unrepairable += 1);
                    self.totals.unrepairable.fetch_add(1, Ordering::Relaxed);
                }
            }
        }
    }

    /// Reads the file and compares it with its name.
    async fn check(
        &self,
        name: &LogicalName,
        throttle: &mut Throttle,
    ) -> Result<Verdict, StoreError> {
        let Some((size, crc32)) = recorded(name) else {
            return Ok(Verdict::Skipped);
        };
        let mtime = match self.store().local_file(name).await? {
            LocalFile::File { mtime, .. } => mtime,
            // links, and files gone since the directory was listed
            LocalFile::Missing | LocalFile::Link { .. } => return Ok(Verdict::Skipped),
        };
        let (mut file, on_disk) = match self.store().open_read(name).await {
            Ok(opened) => opened,
            Err(StoreError::NotFound | StoreError::NotRegularFile) => return Ok(Verdict::Skipped),
            Err(err) => return Err(err),
        };
        let mut hasher = crc32fast::Hasher::new();
        let mut buf = vec![0u8; IO_BUFFER];
        let mut read = 0u64;
        loop {
            let n = match file.read(&mut buf).await {
                Ok(n) => n,
                // an unreadable file is as damaged as one with wrong bytes
                Err(err) if err.raw_os_error() == Some(libc::EIO) => {
                    self.store().suspect(name.store_path());
                    return Ok(Verdict::Damaged {
                        why: format!("read error after {read} bytes: {err}"),
                        size,
                        crc32,
                        mtime,
                    });
                }
                Err(err) => return Err(StoreError::io("reading file")(err)),
            };
            if n == 0 {
                break;
            }
            hasher.update(&buf[..n]);
            read += n as u64;
            self.totals.bytes.fetch_add(n as u64, Ordering::Relaxed);
            self.update(|r| r.bytes += n as i64);
            throttle.take(n as u64, &self.stop).await;
        }
        let got = hasher.finalize();
        let why = if read != size || on_disk != size {
            Some(format!("{read} bytes on disk, its name says {size}"))
        } else if got != crc32 {
            Some(format!("CRC32 {got:08x}, its name says {crc32:08x}"))
        } else {
            None
        };
        // a slave shaped as a normal name holds its own content, not the recorded one
        if why.is_some() && self.store().beside_its_master(name).await {
            return Ok(Verdict::Skipped);
        }
        Ok(match why {
            Some(why) => Verdict::Damaged {
                why,
                size,
                crc32,
                mtime,
            },
            None => Verdict::Good,
        })
    }

    /// Replaces our copy with the first good one an ACTIVE peer has; whether that worked.
    async fn repair(&self, name: &LogicalName, size: u64, crc32: u32, mtime: u32) -> bool {
        let self_id = self.repl.config().self_id.clone();
        let peers: Vec<_> = self
            .repl
            .members()
            .all()
            .into_iter()
            .filter(|m| m.id != self_id && m.status == storage_status::ACTIVE && m.port > 0)
            .collect();
        for peer in &peers {
            let addr = format!("{}:{}", peer.ip, peer.port);
            match self.repair_from(&addr, name, size, crc32, mtime).await {
                Ok(true) => {
                    info!(file = %name, peer = %peer.id, "damaged file repaired from peer");
                    return true;
                }
                Ok(false) => debug!(file = %name, peer = %peer.id, "peer has no good copy"),
                Err(err) => {
                    warn!(file = %name, peer = %peer.id, error = %err, "repair from peer failed")
                }
            }
        }
        error!(file = %name, peers = peers.len(), "no peer has a good copy of the damaged file");
        false
    }

    /// `Ok(false)` when the peer does not hold a good copy.
    async fn repair_from(
        &self,
        addr: &str,
        name: &LogicalName,
        size: u64,
        crc32: u32,
        mtime: u32,
    ) -> Result<bool, pull::PullError> {
        let mut conn = pull::connect(&self.repl, addr).await?;
        let text = name.to_string();
        // the peer's mtime, so the copies agree again for the sync probes (size + mtime); ours
        // may have moved with the damage
        let query = GroupAndName {
            group: self.repl.config().group.clone(),
            name: text.clone(),
        }
        .encode();
        let limit = self.repl.config().network_timeout;
        let info = tokio::time::timeout(limit, async {
            conn.send(
                Header {
                    pkg_len: query.len() as i64,
                    cmd: Command::QueryFileInfo.code(),
                    status: FILE_INFO_NO_CRC,
                },
                &query,
            )
            .await?;
            conn.read_response(70).await
        })
        .await
        .map_err(|_| pull::PullError::Timeout)?;
        let mtime = match info {
            Ok(body) => FileInfoReply::decode(&body)
                .map(|info| u32::try_from(info.create_timestamp).unwrap_or(mtime))
                .unwrap_or(mtime),
            Err(ProtoError::Status {
                status: status::ENOENT,
            }) => return Ok(false),
            Err(err) => return Err(err.into()),
        };
        let Some(len) = pull::request_file(&self.repl, &mut conn, &text).await? else {
            return Ok(false);
        };
        if len != size {
            // the connection is dropped with the unread content
            return Ok(false);
        }
        // at least 1 MiB/s, as for replication
        let limit = self.repl.config().network_timeout + Duration::from_secs(len >> 20);
        let mut body = conn.body_reader(len);
        let written = tokio::time::timeout(
            limit,
            self.store()
                .repair_write(name, size, mtime, crc32, &mut body),
        )
        .await
        .map_err(|_| pull::PullError::Timeout)?;
        match written {
            Ok(()) => Ok(true),
            Err(StoreError::Corrupt(_)) => Ok(false),
            Err(err) => Err(err.into()),
        }
    }

    /// A download found `name` of the wrong size: repair it in the background (once, however
    /// many downloads find it meanwhile).
    pub fn repair_soon(self: &Arc<Self>, name: &LogicalName) {
        let Some((size, crc32)) = recorded(name) else {
            return;
        };
        let key = name.to_string();
        if !self
            .repairing
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .insert(key.clone())
        {
            // every download of it until the repair is done ends up here
            return;
        }
        let this = self.clone();
        let name = name.clone();
        tokio::spawn(async move {
            // still damaged? (a download that raced an earlier repair finds it repaired.)
            // Counted once repaired; a failure is left for a scrub to count, downloads keep
            // trying meanwhile
            if let Ok(LocalFile::File { mtime, size: now }) = this.store().local_file(&name).await {
                if now != size && this.repair(&name, size, crc32, mtime).await {
                    this.totals.corrupt.fetch_add(1, Ordering::Relaxed);
                    this.totals.repaired.fetch_add(1, Ordering::Relaxed);
                }
            }
            this.repairing
                .lock()
                .unwrap_or_else(PoisonError::into_inner)
                .remove(&key);
        });
    }

    /// Scrubs every `interval` at `rate` bytes per second until the storage stops.
    pub async fn run_periodic(self: Arc<Self>, interval: Duration, rate: Option<u64>) {
        loop {
            tokio::select! {
                _ = self.stop.cancelled() => return,
                _ = tokio::time::sleep(interval) => {}
            }
            self.start(rate);
        }
    }
}

/// Keeps a scrub's reading at `rate` bytes per second.
struct Throttle {
    rate: Option<u64>,
    since: Instant,
    bytes: u64,
}

impl Throttle {
    fn new(rate: Option<u64>) -> Self {
        Throttle {
            rate: rate.filter(|&r| r > 0),
            since: Instant::now(),
            bytes: 0,
        }
    }

    async fn take(&mut self, bytes: u64, stop: &CancellationToken) {
        let Some(rate) = self.rate else {
            return;
        };
        self.bytes += bytes;
        let due = Duration::from_secs_f64(self.bytes as f64 / rate as f64);
        if let Some(wait) = due.checked_sub(self.since.elapsed()) {
            tokio::select! {
                _ = stop.cancelled() => {}
                _ = tokio::time::sleep(wait) => {}
            }
        }
        // start over now and then so a long pause does not allow a burst afterwards
        if self.since.elapsed() > Duration::from_secs(10) {
            self.since = Instant::now();
            self.bytes = 0;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_normal_names_record_their_content() {
        // encoded fields of a normal, non-appender file
        let fields = fdfs_proto::name::NameFields {
            source: fdfs_proto::name::Source::Id(100_001),
            timestamp: 1_700_000_000,
            size_field: fdfs_proto::name::size_field(4096, false, 0),
            crc32: 0xDEAD_BEEF,
        }
        .encode();
        let name = |base: String| LogicalName::parse(&format!("M00/00/00/{base}")).unwrap();
        assert_eq!(
            recorded(&name(format!("{fields}123.jpg"))),
            Some((4096, 0xDEAD_BEEF))
        );
        assert_eq!(
            recorded(&name(format!("{fields}1234567"))),
            Some((4096, 0xDEAD_BEEF))
        );
        // slaves: of a master without extension, cut short, or with a prefix
        assert_eq!(recorded(&name(format!("{fields}123_s"))), None);
        assert_eq!(recorded(&name(format!("{fields}1234567_s"))), None);
        assert_eq!(recorded(&name(format!("{fields}123_150x150.jpg"))), None);
    }
}
