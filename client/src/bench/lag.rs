//! `lag` mode: upload a file, then ask every other storage of its group directly until each
//! serves the whole file; the time from the upload's acknowledgement to the first complete
//! answer is that peer's replication lag. A peer that never gets the file within the timeout
//! is counted as "not replicated", so a cluster without replication ends the run instead of
//! hanging it.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use rand::rngs::StdRng;
use rand::SeedableRng;
use serde::Serialize;

use super::load::Schedule;
use super::progress::Live;
use super::route::Route;
use super::size::SizeSpec;
use super::stats::{error_kind, Latencies, LatencyMs, OpStats};
use crate::{storage_addr, Client, ClientError, FileId};

/// What the lag samplers share.
pub(crate) struct LagRun {
    pub(crate) size: SizeSpec,
    pub(crate) route: Route,
    pub(crate) schedule: Schedule,
    pub(crate) timeout: Duration,
    pub(crate) poll: Duration,
    pub(crate) live: Arc<Live>,
}

/// Lag of one peer over the samples it took part in.
#[derive(Clone, Debug)]
pub(crate) struct PeerStats {
    lag: Latencies,
    not_replicated: u64,
    errors: BTreeMap<String, u64>,
}

impl PeerStats {
    fn new() -> Self {
        PeerStats {
            lag: Latencies::new(),
            not_replicated: 0,
            errors: BTreeMap::new(),
        }
    }

    fn merge(&mut self, other: &PeerStats) {
        self.lag.merge(&other.lag);
        self.not_replicated += other.not_replicated;
        for (kind, count) in &other.errors {
            *self.errors.entry(kind.clone()).or_default() += count;
        }
    }

    pub(crate) fn summary(&self, peer: &str) -> PeerLag {
        PeerLag {
            peer: peer.to_string(),
            samples: self.lag.len() + self.not_replicated,
            replicated: self.lag.len(),
            not_replicated: self.not_replicated,
            lag_ms: self.lag.summary(),
            errors_by_kind: self.errors.clone(),
        }
    }
}

/// The lag figures of one peer in a [`Report`](super::Report).
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct PeerLag {
    /// The peer storage, `ip:port` as the tracker lists it.
    pub peer: String,
    /// Uploads (to another storage of the group) this peer was polled for.
    pub samples: u64,
    /// Samples the peer served in full within the timeout.
    pub replicated: u64,
    /// Samples the peer did not serve in full within the timeout.
    pub not_replicated: u64,
    /// Lag of the replicated samples; `None` if none was.
    pub lag_ms: Option<LatencyMs>,
    /// Failed polls by kind (a missing file is not an error: it is what polling waits out).
    pub errors_by_kind: BTreeMap<String, u64>,
}

/// Lag section of a report.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct LagReport {
    /// How long each peer was polled before counting it as not replicated.
    pub timeout_s: f64,
    /// Pause between two polls of a peer.
    pub poll_ms: f64,
    /// Uploads whose peers were polled.
    pub samples: u64,
    /// Uploads whose group had no other storage to poll.
    pub samples_without_peers: u64,
    pub peers: Vec<PeerLag>,
}

/// What one sampler task did.
pub(crate) struct SamplerResult {
    pub(crate) upload: OpStats,
    pub(crate) peers: BTreeMap<String, PeerStats>,
    pub(crate) samples: u64,
    pub(crate) samples_without_peers: u64,
    pub(crate) uploaded: Vec<FileId>,
}

impl SamplerResult {
    pub(crate) fn merge(&mut self, other: SamplerResult) {
        self.upload.merge(&other.upload);
        for (peer, stats) in &other.peers {
            self.peers
                .entry(peer.clone())
                .or_insert_with(PeerStats::new)
                .merge(stats);
        }
        self.samples += other.samples;
        self.samples_without_peers += other.samples_without_peers;
        self.uploaded.extend(other.uploaded);
    }

    pub(crate) fn empty() -> Self {
        SamplerResult {
            upload: OpStats::new(),
            peers: BTreeMap::new(),
            samples: 0,
            samples_without_peers: 0,
            uploaded: Vec::new(),
        }
    }
}

/// How polling one peer for one file ended.
#[derive(Debug, PartialEq)]
enum PeerOutcome {
    /// Served in full; the lag counts from the upload's acknowledgement to the sending of
    /// the query that found the whole file.
    Replicated(Duration),
    NotReplicated,
}

/// Uploads and polls, one sample after the other, until the schedule says stop.
pub(crate) async fn sampler(run: Arc<LagRun>, client: Client) -> SamplerResult {
    let mut rng = StdRng::from_entropy();
    let mut result = SamplerResult::empty();
    while let Some(measured) = run.schedule.next() {
        let size = run.size.sample(&mut rng);
        let started = Instant::now();
        let (id, source) = match run.route.upload(&client, size, &mut rng).await {
            Ok(uploaded) => uploaded,
            Err(err) => {
                run.live.error();
                if measured {
                    result.upload.record_error(&error_kind(&err));
                }
                // a refused upload returns at once: do not spin on it
                tokio::time::sleep(run.poll).await;
                continue;
            }
        };
        let acked = Instant::now();
        run.live.ok(size);
        result.uploaded.push(id.clone());
        if !measured {
            continue;
        }
        result.upload.record_ok(acked - started, size);
        let peers = match client.query_store_all(Some(&id.group)).await {
            Ok(reply) => reply
                .servers
                .iter()
                .map(storage_addr)
                .filter(|peer| *peer != source)
                .collect::<Vec<_>>(),
            Err(err) => {
                tracing::warn!(error = %err, "cannot list the storages of the group");
                result
                    .upload
                    .record_error(&format!("list_peers_{}", error_kind(&err)));
                continue;
            }
        };
        result.samples += 1;
        if peers.is_empty() {
            result.samples_without_peers += 1;
            continue;
        }
        let mut polls = tokio::task::JoinSet::new();
        for peer in peers {
            let client = client.clone();
            let id = id.clone();
            let (timeout, poll) = (run.timeout, run.poll);
            polls.spawn(async move {
                let mut stats = PeerStats::new();
                match poll_peer(&client, &peer, &id, size, acked, timeout, poll, &mut stats).await {
                    PeerOutcome::Replicated(lag) => stats.lag.record(lag),
                    PeerOutcome::NotReplicated => stats.not_replicated += 1,
                }
                (peer, stats)
            });
        }
        while let Some(joined) = polls.join_next().await {
            let (peer, stats) = match joined {
                Ok(done) => done,
                Err(join_err) => std::panic::resume_unwind(join_err.into_panic()),
            };
            result
                .peers
                .entry(peer)
                .or_insert_with(PeerStats::new)
                .merge(&stats);
        }
    }
    result
}

/// Asks `peer` for the file's size (QUERY_FILE_INFO) until it is complete, then confirms
/// with a DOWNLOAD that the whole file is served; gives up `timeout` after `acked`.
#[allow(clippy::too_many_arguments)]
async fn poll_peer(
    client: &Client,
    peer: &str,
    id: &FileId,
    size: u64,
    acked: Instant,
    timeout: Duration,
    poll: Duration,
    stats: &mut PeerStats,
) -> PeerOutcome {
    let mut note = |err: &ClientError| {
        if !matches!(err, ClientError::NotFound) {
            *stats.errors.entry(error_kind(err)).or_default() += 1;
        }
    };
    loop {
        let sent = Instant::now();
        match client.file_info_from(peer, id).await {
            Ok(info) if info.size == size => {
                let mut sink = tokio::io::sink();
                match client.download_from(peer, id, 0, 0, &mut sink).await {
                    Ok(served) if served == size => {
                        return PeerOutcome::Replicated(sent.saturating_duration_since(acked))
                    }
                    Ok(_) => {}
                    Err(err) => note(&err),
                }
            }
            // still being copied
            Ok(_) => {}
            Err(err) => note(&err),
        }
        let waited = acked.elapsed();
        if waited >= timeout {
            return PeerOutcome::NotReplicated;
        }
        tokio::time::sleep(poll.min(timeout - waited)).await;
    }
}
