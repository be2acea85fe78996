//! The long-lived report connection to each tracker: JOIN (81), then BEAT (83) with the disk
//! usage of every store path, the counters and the IP we listen on every
//! `heart_beat_interval`, each followed by SYNC_REPORT (89) with the replication progress of
//! every peer. The member list carried by each beat reply
//! is kept in [`Members`] (QUERY_FILE_INFO maps storage ids in names to IPs with it, the sync
//! workers follow it). Any failure closes the connection; the link reconnects with a backoff
//! of 1 s doubling to 10 s and joins again.
//!
//! While this storage must copy the group's files first (new, or a wiped store path), the
//! link asks for a source with SYNC_DEST_REQ (87) and keeps the tracker's status for it at
//! WAIT_SYNC / SYNCING / RECOVERY with CHANGE_STATUS (59); once the copy is done it sends
//! CHANGE_STATUS ONLINE, and the next beat makes the storage ACTIVE.

use std::collections::HashMap;
use std::sync::{Arc, RwLock};
use std::time::Duration;

use fdfs_proto::cmd::Command;
use fdfs_proto::conn::Connection;
use fdfs_proto::status;
use fdfs_proto::sync_msg::SyncSource;
use fdfs_proto::tracker_msg::{BeatReply, BeatRequest, JoinReply, JoinRequest, StorageBrief};
use fdfs_proto::ProtoError;
use tokio::net::TcpStream;
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;
use tracing::{debug, error, info, warn};

use crate::replication::Replication;

const MIN_BACKOFF: Duration = Duration::from_secs(1);
/// How long a storage waits for its ACTIVE peers to open their sync connections before it
/// asks to be ACTIVE (see `Replication::wait_for_pushers`).
const PUSHER_WAIT: Duration = Duration::from_secs(5);
const MAX_BACKOFF: Duration = Duration::from_secs(10);
/// Largest beat reply we accept: flags + one brief per storage of a group, with room to spare.
const MAX_BEAT_REPLY: u64 = 1 + StorageBrief::LEN as u64 * 1024;

/// The storages of our group as the trackers last described them.
#[derive(Debug)]
pub struct Members {
    by_tracker: RwLock<HashMap<String, Vec<StorageBrief>>>,
    /// Bumped whenever a list changes.
    version: watch::Sender<u64>,
}

impl Default for Members {
    fn default() -> Self {
        Members {
            by_tracker: RwLock::default(),
            version: watch::Sender::new(0),
        }
    }
}

impl Members {
    /// Replaces what `tracker` told us about the group.
    pub fn update(&self, tracker: &str, members: Vec<StorageBrief>) {
        let mut map = self.by_tracker.write().unwrap_or_else(|e| e.into_inner());
        let previous = map.insert(tracker.to_string(), members.clone());
        drop(map);
        if previous.as_ref() != Some(&members) {
            self.version.send_modify(|v| *v = v.wrapping_add(1));
        }
    }

    /// Notified whenever a member list changes.
    pub fn subscribe(&self) -> watch::Receiver<u64> {
        self.version.subscribe()
    }

    /// The IP of the storage with this id, from any tracker's list.
    pub fn ip_of(&self, id: &str) -> Option<String> {
        let map = self.by_tracker.read().unwrap_or_else(|e| e.into_inner());
        map.values()
            .flatten()
            .find(|brief| brief.id == id && !brief.ip.is_empty())
            .map(|brief| brief.ip.clone())
    }

    /// Every member known, deduplicated by id.
    pub fn all(&self) -> Vec<StorageBrief> {
        let map = self.by_tracker.read().unwrap_or_else(|e| e.into_inner());
        let mut out: Vec<StorageBrief> = Vec::new();
        for brief in map.values().flatten() {
            if !out.iter().any(|known| known.id == brief.id) {
                out.push(brief.clone());
            }
        }
        out.sort_by(|a, b| a.id.cmp(&b.id));
        out
    }
}

/// What every JOIN says about this storage, plus the link's timing.
#[derive(Clone, Debug)]
pub struct LinkSettings {
    pub join: JoinRequest,
    pub heart_beat_interval: Duration,
    pub network_timeout: Duration,
    /// Counters appended to every BEAT (E.3).
    pub stats: Arc<crate::stats::Stats>,
    /// The IP this storage listens on, sent after the counters so the tracker can tell when
    /// it differs from the IP the report connection comes from; empty when listening on all.
    pub listen_ip: String,
}

#[derive(Debug, thiserror::Error)]
enum LinkError {
    #[error("connect failed: {0}")]
    Connect(std::io::Error),
    #[error("timed out")]
    Timeout,
    #[error("{0}")]
    Proto(#[from] ProtoError),
    #[error("join refused with status {status} ({})", status::describe(*status))]
    Refused { status: u8 },
    #[error("cluster authentication failed: {0}")]
    Auth(#[from] fdfs_proto::auth::AuthError),
}

/// Keeps a report connection to `tracker` until `shutdown`.
pub async fn run(
    tracker: String,
    settings: Arc<LinkSettings>,
    repl: Arc<Replication>,
    shutdown: CancellationToken,
) {
    let mut backoff = MIN_BACKOFF;
    loop {
        let mut joined = false;
        let result = session(&tracker, &settings, &repl, &shutdown, &mut joined).await;
        if shutdown.is_cancelled() {
            break;
        }
        if joined {
            backoff = MIN_BACKOFF;
        }
        match result {
            Ok(()) => {}
            Err(LinkError::Refused { status }) => error!(
                %tracker,
                status,
                reason = status::describe(status),
                "tracker refused to let this storage join"
            ),
            Err(err) => {
                warn!(%tracker, error = %err, retry_in = ?backoff, "tracker connection failed")
            }
        }
        tokio::select! {
            _ = shutdown.cancelled() => break,
            _ = tokio::time::sleep(backoff) => {}
        }
        backoff = (backoff * 2).min(MAX_BACKOFF);
    }
    debug!(%tracker, "tracker link stopped");
}

async fn timed<T>(
    limit: Duration,
    work: impl std::future::Future<Output = Result<T, ProtoError>>,
) -> Result<T, LinkError> {
    match tokio::time::timeout(limit, work).await {
        Ok(result) => Ok(result?),
        Err(_) => Err(LinkError::Timeout),
    }
}

async fn session(
    tracker: &str,
    settings: &LinkSettings,
    repl: &Replication,
    shutdown: &CancellationToken,
    joined: &mut bool,
) -> Result<(), LinkError> {
    let limit = settings.network_timeout;
    let stream = tokio::select! {
        _ = shutdown.cancelled() => return Ok(()),
        connected = tokio::time::timeout(limit, TcpStream::connect(tracker)) => match connected {
            Ok(Ok(stream)) => stream,
            Ok(Err(err)) => return Err(LinkError::Connect(err)),
            Err(_) => return Err(LinkError::Timeout),
        },
    };
    let _ = stream.set_nodelay(true);
    let mut conn = Connection::new(stream);
    // with a cluster secret, both sides prove it before JOIN
    let secret = repl.config().cluster_secret.as_ref();
    let purpose = fdfs_proto::auth::Purpose::TrackerLink;
    crate::replication::authenticate(&mut conn, secret, purpose, limit).await?;
    let reply = match timed(
        limit,
        conn.call(Command::StorageJoin.code(), &settings.join.encode(), 64),
    )
    .await
    {
        Err(LinkError::Proto(ProtoError::Status { status })) => {
            return Err(LinkError::Refused { status })
        }
        other => other?,
    };
    let reply = JoinReply::decode(&reply)?;
    *joined = true;
    info!(
        %tracker,
        status = fdfs_proto::tracker_msg::storage_status::name(reply.status),
        "joined tracker"
    );
    let mut phases = repl.subscribe_phase();
    // the status we asked this tracker to show while copying, if any
    let mut announced: Option<u8> = None;
    // whether the peers had their chance to connect before we asked to be ACTIVE
    let mut gated = false;
    loop {
        phases.borrow_and_update();
        copy_handshake(tracker, &mut conn, repl, limit, &mut announced).await?;
        // the reply carries the member list the gate below needs
        report(tracker, &mut conn, repl, limit).await?;
        if !gated && repl.phase().phase == crate::replication::state::Phase::Ready {
            repl.wait_for_pushers(PUSHER_WAIT).await;
            gated = true;
        }
        let usage = repl.store().usage().await;
        // the tracker reads the stat block after the path figures (E.3)
        let mut body = BeatRequest { paths: usage }.encode();
        settings.stats.snapshot().encode_into(&mut body);
        fdfs_proto::field::put_fixed(
            &mut body,
            settings.listen_ip.as_bytes(),
            fdfs_proto::IP_WIDTH_LONG,
        );
        let reply = timed(
            limit,
            conn.call(Command::StorageBeat.code(), &body, MAX_BEAT_REPLY),
        )
        .await?;
        let beat = BeatReply::decode(&reply)?;
        if let Some(list) = beat.members {
            debug!(%tracker, members = list.len(), "member list updated");
            repl.members().update(tracker, list);
        }
        tokio::select! {
            _ = shutdown.cancelled() => {
                // polite goodbye; the tracker marks us offline when the connection closes
                let _ = timed(limit, conn.send_request(Command::Quit.code(), &[])).await;
                return Ok(());
            }
            _ = tokio::time::sleep(settings.heart_beat_interval) => {}
            // a change of the copy phase is told at once
            _ = phases.changed() => {}
        }
    }
}

/// SYNC_REPORT: our peers' replication progress; the reply may carry the member list.
async fn report(
    tracker: &str,
    conn: &mut Connection<TcpStream>,
    repl: &Replication,
    limit: Duration,
) -> Result<(), LinkError> {
    let report = repl.report().encode();
    let reply = timed(
        limit,
        conn.call(Command::SyncReport.code(), &report, MAX_BEAT_REPLY),
    )
    .await?;
    if let Some(list) = BeatReply::decode(&reply)?.members {
        repl.members().update(tracker, list);
    }
    Ok(())
}

/// Tells the tracker where this storage stands with copying the group's files: asks for a
/// source while one is needed, shows WAIT_SYNC / SYNCING / RECOVERY while copying, and ONLINE
/// once done.
async fn copy_handshake(
    tracker: &str,
    conn: &mut Connection<TcpStream>,
    repl: &Replication,
    limit: Duration,
    announced: &mut Option<u8>,
) -> Result<(), LinkError> {
    use crate::replication::state::Phase;
    use fdfs_proto::tracker_msg::storage_status::{INIT, ONLINE};
    let phase = repl.phase();
    match phase.phase {
        Phase::Pending => {
            let body = repl.sync_reason().encode();
            match timed(limit, conn.call(Command::SyncDestReq.code(), &body, 64)).await {
                Ok(reply) => {
                    let source = SyncSource::decode(&reply)?;
                    if let Some(source) = &source {
                        info!(%tracker, source = %source.source_id, "tracker named a copy source");
                    }
                    *announced = if source.is_some() {
                        phase.tracker_status()
                    } else {
                        None
                    };
                    if let Err(err) = repl.source_assigned(source).await {
                        warn!(error = %err, "cannot save the copy state");
                    }
                }
                Err(LinkError::Proto(ProtoError::Status { status: code }))
                    if code == status::EAGAIN =>
                {
                    // no ACTIVE peer to copy from yet; asked again at the next beat
                    debug!(%tracker, "no copy source available yet");
                    *announced = Some(INIT);
                }
                Err(err) => return Err(err),
            }
        }
        Phase::Pulling => {
            let wanted = phase.tracker_status();
            if *announced != wanted {
                if let Some(code) = wanted {
                    change_status(conn, code, limit).await?;
                    *announced = wanted;
                }
            }
        }
        Phase::Ready => {
            if announced.is_some() {
                change_status(conn, ONLINE, limit).await?;
                *announced = None;
            }
        }
    }
    Ok(())
}

async fn change_status(
    conn: &mut Connection<TcpStream>,
    code: u8,
    limit: Duration,
) -> Result<(), LinkError> {
    timed(
        limit,
        conn.call(Command::StorageChangeStatus.code(), &[code], 64),
    )
    .await?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn members_lookup_across_trackers() {
        let members = Members::default();
        let brief = |id: &str, ip: &str| StorageBrief {
            status: 7,
            port: 23000,
            id: id.into(),
            ip: ip.into(),
        };
        members.update("t1:22122", vec![brief("100001", "10.0.0.1")]);
        members.update(
            "t2:22122",
            vec![brief("100002", "10.0.0.2"), brief("100001", "10.0.0.1")],
        );
        assert_eq!(members.ip_of("100001").as_deref(), Some("10.0.0.1"));
        assert_eq!(members.ip_of("100002").as_deref(), Some("10.0.0.2"));
        assert_eq!(members.ip_of("100003"), None);
        assert_eq!(members.all().len(), 2);
        members.update("t2:22122", vec![]);
        assert_eq!(members.ip_of("100002"), None);
    }
}
