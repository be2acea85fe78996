//! The tracker's [`Service`]: framing rules of A.4 around the command handlers in [`crate::cmd`].

use std::sync::{Mutex, MutexGuard, PoisonError};
use std::time::{Duration, Instant};

use fdfs_proto::cmd::Command;
use fdfs_proto::header::Header;
use fdfs_proto::server::{ConnInfo, Flow, ServerConn, Service};
use fdfs_proto::{status, ProtoError};
use tracing::{debug, warn};

use crate::cluster::Cluster;
use crate::cmd;
use crate::config::TrackerConfig;
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
}

impl Tracker {
    pub fn new(config: &TrackerConfig) -> Self {
        Tracker {
            cluster: Mutex::new(Cluster::new()),
            policy: Policy::from(config),
            parameters: cmd::parameter_text(config),
            check_active_interval: config.check_active_interval,
        }
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

    /// Marks storages without a recent heartbeat OFFLINE.
    pub fn expire(&self, now: Instant) {
        self.cluster().expire(now, self.check_active_interval);
    }

    /// Skips a body we will not read and answers EINVAL; the tracker keeps the connection (A.4).
    async fn refuse(conn: &mut ServerConn, len: u64) -> Result<Flow, ProtoError> {
        conn.discard(len).await?;
        conn.send_response(status::EINVAL, &[]).await?;
        Ok(Flow::Continue)
    }
}

impl Service for Tracker {
    async fn call(
        &self,
        conn: &mut ServerConn,
        header: Header,
        info: &ConnInfo,
    ) -> Result<Flow, ProtoError> {
        let len = header.body_len()?;
        if len > MAX_PKG_SIZE {
            warn!(
                len,
                cmd = header.cmd,
                "package larger than the maximum, closing"
            );
            return Ok(Flow::Close);
        }
        let Some((command, max)) = Command::try_from(header.cmd)
            .ok()
            .and_then(|command| Some((command, cmd::max_body(command)?)))
        else {
            debug!(cmd = header.cmd, "command not served by the tracker");
            return Self::refuse(conn, len).await;
        };
        if len > max {
            debug!(?command, len, max, "request body too long");
            return Self::refuse(conn, len).await;
        }
        let body = conn.read_body(len, max).await?;
        match cmd::handle(self, command, &body, info.peer) {
            Ok(reply) => conn.send_response(status::OK, &reply).await?,
            Err(err) => {
                debug!(?command, status = err.status(), error = %err, "request failed");
                conn.send_response(err.status(), &[]).await?;
            }
        }
        Ok(Flow::Continue)
    }

    fn disconnected(&self, info: &ConnInfo) {
        self.cluster().disconnect(info.peer);
    }

    /// The tracker keeps connections open after EINVAL (A.4).
    fn close_after_einval(&self) -> bool {
        false
    }
}
