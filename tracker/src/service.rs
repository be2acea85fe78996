//! The tracker's [`Service`]: framing rules of A.4 around the command handlers in [`crate::cmd`].

use std::sync::{Mutex, MutexGuard, PoisonError};
use std::time::{Duration, Instant};

use fdfs_proto::cmd::Command;
use fdfs_proto::header::Header;
use fdfs_proto::logging::AccessLog;
use fdfs_proto::server::{ConnInfo, Flow, ServerConn, Service};
use fdfs_proto::{status, ProtoError};
use tracing::{debug, warn};

use crate::cluster::Cluster;
use crate::cmd;
use crate::config::TrackerConfig;
use crate::guard::{Guard, Verdict};
use crate::metrics::Metrics;
use crate::select::Policy;

/// The tracker's maximum package size (A.5): a longer request closes the connection unanswered.
pub const MAX_PKG_SIZE: u64 = 256 * 1024;

/// Shared tracker state: the cluster registry and the settings the commands need.
#[derive(Debug)]
pub struct Tracker {
    cluster: Mutex<Cluster>,
    policy: Policy,
    parameters: String,
    check_active_interval: Duration,
    metrics: Metrics,
    guard: Guard,
    access_log: AccessLog,
}

/// How a request went, for the metrics and the access log.
struct Served {
    flow: Flow,
    status: u8,
    reply_len: usize,
    /// `group/name` of the file a query is about.
    file: Option<String>,
}

impl Served {
    fn refused(flow: Flow) -> Self {
        Served {
            flow,
            status: status::EINVAL,
            reply_len: 0,
            file: None,
        }
    }
}

/// The file ID a QUERY_FETCH/QUERY_UPDATE body names (D.2: char[16] group, then the name).
fn queried_file(command: Command, body: &[u8]) -> Option<String> {
    if !matches!(
        command,
        Command::QueryFetchOne | Command::QueryFetchAll | Command::QueryUpdate
    ) || body.len() <= fdfs_proto::GROUP_NAME_LEN
    {
        return None;
    }
    let (group, name) = body.split_at(fdfs_proto::GROUP_NAME_LEN);
    let group = fdfs_proto::field::fixed_bytes(group);
    Some(format!(
        "{}/{}",
        String::from_utf8_lossy(group),
        String::from_utf8_lossy(name)
    ))
}

/// Seconds since the Unix epoch (0 if the clock is before it).
pub fn unix_now() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_secs()).unwrap_or(i64::MAX))
}

impl Tracker {
    pub fn new(config: &TrackerConfig) -> Self {
        Tracker {
            cluster: Mutex::new(Cluster::new()),
            policy: Policy::from(config),
            parameters: cmd::parameter_text(config),
            check_active_interval: config.check_active_interval,
            metrics: Metrics::new(),
            guard: Guard::new(None, config.admin_hosts.clone()),
            access_log: AccessLog::new(config.access_log),
        }
    }

    /// Makes the access log follow `access_log` (switched on SIGHUP).
    pub fn with_access_log(mut self, access_log: AccessLog) -> Self {
        self.access_log = access_log;
        self
    }

    /// Requires storages to prove `secret` before their commands are served (see
    /// [`crate::guard`]); `None` leaves authentication off.
    pub fn with_secret(mut self, secret: Option<fdfs_proto::auth::ClusterSecret>) -> Self {
        self.guard = Guard::new(secret, self.guard.admin_hosts().clone());
        self
    }

    /// Replaces the registry, e.g. with the state restored at start.
    pub fn restore(&self, cluster: Cluster) {
        *self.cluster() = cluster;
    }

    /// The registry. Held only for the synchronous part of a command, never across `.await`.
    pub fn cluster(&self) -> MutexGuard<'_, Cluster> {
        // The registry stays consistent between statements, so a panicked holder leaves it usable.
        self.cluster.lock().unwrap_or_else(PoisonError::into_inner)
    }

    pub fn policy(&self) -> &Policy {
        &self.policy
    }

    /// The PARAMETER_REQ reply text.
    pub fn parameters(&self) -> &str {
        &self.parameters
    }

    pub fn metrics(&self) -> &Metrics {
        &self.metrics
    }

    /// The `/metrics` page: per-storage gauges refreshed from the registry, then everything
    /// rendered in the Prometheus text format.
    pub fn render_metrics(&self) -> String {
        self.metrics.observe(&self.cluster(), unix_now());
        self.metrics.render()
    }

    /// Marks storages without a recent heartbeat OFFLINE.
    pub fn expire(&self, now: Instant) {
        self.cluster().expire(now, self.check_active_interval);
    }

    /// Skips a body we will not read and answers EINVAL; the tracker keeps the connection (A.4).
    async fn refuse(conn: &mut ServerConn, len: u64) -> Result<Served, ProtoError> {
        conn.discard(len).await?;
        conn.send_response(status::EINVAL, &[]).await?;
        Ok(Served::refused(Flow::Continue))
    }

    /// Serves one request; returns what to do next, the status answered and what the access
    /// log needs.
    async fn serve_request(
        &self,
        conn: &mut ServerConn,
        header: Header,
        command: Command,
        info: &ConnInfo,
    ) -> Result<Served, ProtoError> {
        let len = header.body_len()?;
        if len > MAX_PKG_SIZE {
            warn!(len, ?command, "package larger than the maximum, closing");
            return Ok(Served::refused(Flow::Close));
        }
        let Some(max) = cmd::max_body(command) else {
            debug!(?command, "command not served by the tracker");
            return Self::refuse(conn, len).await;
        };
        if len > max {
            debug!(?command, len, max, "request body too long");
            return Self::refuse(conn, len).await;
        }
        let body = conn.read_body(len, max).await?;
        let result = if cmd::is_async(command) {
            cmd::handle_async(self, command, &body).await
        } else {
            cmd::handle(self, command, &body, info.peer, info.local)
        };
        let file = if self.access_log.enabled() {
            queried_file(command, &body)
        } else {
            None
        };
        let (status, reply_len) = match result {
            Ok(reply) => {
                conn.send_response(status::OK, &reply).await?;
                (status::OK, reply.len())
            }
            Err(err) => {
                debug!(?command, status = err.status(), error = %err, "request failed");
                conn.send_response(err.status(), &[]).await?;
                (err.status(), 0)
            }
        };
        Ok(Served {
            flow: Flow::Continue,
            status,
            reply_len,
            file,
        })
    }
}

impl Service for Tracker {
    async fn call(
        &self,
        conn: &mut ServerConn,
        header: Header,
        info: &ConnInfo,
    ) -> Result<Flow, ProtoError> {
        let started = Instant::now();
        self.metrics.connection_active(info.peer);
        // serve() answers codes outside the Command enum before calling the service.
        let Ok(command) = Command::try_from(header.cmd) else {
            debug!(cmd = header.cmd, "unknown command, closing");
            return Ok(Flow::Close);
        };
        if matches!(command, Command::AuthChallenge | Command::AuthProof) {
            return self
                .guard
                .authenticate(conn, header, info, &self.metrics)
                .await;
        }
        if let Verdict::Refuse {
            status,
            flow,
            reason,
        } = self.guard.check(command, info)
        {
            self.guard
                .note_refusal(&self.metrics, command, info, reason);
            let len = header.body_len()?;
            if len > MAX_PKG_SIZE {
                return Ok(Flow::Close);
            }
            conn.discard(len).await?;
            conn.send_response(status, &[]).await?;
            self.metrics.request(command, status, started.elapsed());
            return Ok(flow);
        }
        let result = self.serve_request(conn, header, command, info).await;
        let status = match &result {
            Ok(served) => served.status,
            Err(err) => err.status(),
        };
        let elapsed = started.elapsed();
        self.metrics.request(command, status, elapsed);
        if self.access_log.enabled() {
            let served = result.as_ref().ok();
            tracing::info!(
                target: "access",
                client = %info.peer,
                command = %crate::metrics::command_label(command),
                file = served.and_then(|s| s.file.as_deref()).unwrap_or("-"),
                status,
                bytes_in = header.pkg_len,
                bytes_out = served.map_or(0, |s| s.reply_len),
                duration_us = elapsed.as_micros() as u64,
                "request"
            );
        }
        result.map(|served| served.flow)
    }

    fn disconnected(&self, info: &ConnInfo) {
        self.metrics.connection_closed(info.peer);
        self.cluster().disconnect(info.peer);
    }

    /// The tracker keeps connections open after EINVAL (A.4).
    fn close_after_einval(&self) -> bool {
        false
    }

    fn refused(&self, _peer: std::net::SocketAddr) {
        self.metrics.refused("allow_hosts");
    }
}
