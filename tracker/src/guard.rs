//! Who may send what to the tracker (on top of `allow_hosts`, which the accept loop applies):
//!
//! - with a cluster secret set, the commands only storages send (JOIN, BEAT, the sync and
//!   status reports) are refused with EACCES (13, "not logged in") and the connection closed
//!   until the peer has proved the secret with AUTH_CHALLENGE/AUTH_PROOF (`fdfs_proto::auth`);
//! - the admin commands (DELETE_STORAGE, DELETE_GROUP) are refused with EPERM (1) unless the
//!   peer is in `admin_hosts`.
//!
//! Client commands are never affected.

use fdfs_proto::acl::HostList;
use fdfs_proto::auth::{ClusterSecret, Purpose};
use fdfs_proto::cmd::Command;
use fdfs_proto::header::Header;
use fdfs_proto::server::{self, AdminHosts, ConnInfo, Flow, ServerConn, WarnLimiter};
use fdfs_proto::{status, ProtoError};
use tracing::{debug, info, warn};

use crate::metrics::Metrics;

/// What the guard decided about a request.
#[derive(Debug, PartialEq, Eq)]
pub enum Verdict {
    Serve,
    /// Answer `status` (after skipping the body) and keep or close the connection.
    Refuse {
        status: u8,
        flow: Flow,
        reason: &'static str,
    },
}

#[derive(Debug)]
pub struct Guard {
    secret: Option<ClusterSecret>,
    /// Shared with the storage's SCRUB (fdfs_proto::server::AdminHosts).
    admin_hosts: AdminHosts,
    /// One WARN a minute per kind of refusal, so one kind cannot hide another.
    auth_warnings: WarnLimiter,
    unauthenticated_warnings: WarnLimiter,
}

/// Commands only a storage sends to a tracker (K.2, K.3).
pub fn storage_only(command: Command) -> bool {
    use Command::*;
    matches!(
        command,
        StorageJoin
            | StorageBeat
            | StorageReportDiskUsage
            | ReplicaChg
            | SyncSrcReq
            | SyncDestReq
            | SyncNotify
            | SyncReport
            | SyncDestQuery
            | StorageChangeStatus
            | ReportStatus
            | ChangelogReq
            | ReportIpChanged
    )
}

/// Commands that change the registry on an operator's behalf (D.5).
pub fn admin_only(command: Command) -> bool {
    matches!(command, Command::DeleteStorage | Command::DeleteGroup)
}

impl Guard {
    pub fn new(secret: Option<ClusterSecret>, admin_hosts: HostList) -> Self {
        Guard {
            secret,
            admin_hosts: AdminHosts::new(admin_hosts),
            auth_warnings: WarnLimiter::default(),
            unauthenticated_warnings: WarnLimiter::default(),
        }
    }

    pub fn admin_hosts(&self) -> &HostList {
        self.admin_hosts.hosts()
    }

    pub fn check(&self, command: Command, info: &ConnInfo) -> Verdict {
        if self.secret.is_some() && storage_only(command) && !info.is_authenticated() {
            return Verdict::Refuse {
                status: status::EACCES,
                flow: Flow::Close,
                reason: "not_authenticated",
            };
        }
        if admin_only(command) && !self.admin_hosts.allows(info) {
            return Verdict::Refuse {
                status: status::EPERM,
                flow: Flow::Continue,
                reason: "admin_hosts",
            };
        }
        Verdict::Serve
    }

    /// Logs a refusal (WARN at most once a minute, DEBUG otherwise) and counts it.
    pub fn note_refusal(
        &self,
        metrics: &Metrics,
        command: Command,
        info: &ConnInfo,
        reason: &'static str,
    ) {
        metrics.refused(reason);
        if reason == "admin_hosts" {
            self.admin_hosts.log_refusal(info, command);
            return;
        }
        let why = "storage command before proving the cluster secret";
        match self.unauthenticated_warnings.check() {
            Some(suppressed) => warn!(peer = %info.peer, ?command, suppressed, "{why}"),
            None => debug!(peer = %info.peer, ?command, "{why}"),
        }
    }

    /// AUTH_CHALLENGE: runs the whole exchange (it reads the AUTH_PROOF itself). Without a
    /// secret the tracker does not know the command: EINVAL, connection kept (A.4).
    pub async fn authenticate(
        &self,
        conn: &mut ServerConn,
        header: Header,
        info: &ConnInfo,
        metrics: &Metrics,
    ) -> Result<Flow, ProtoError> {
        let Some(secret) = &self.secret else {
            conn.discard(header.body_len()?).await?;
            conn.send_response(status::EINVAL, &[]).await?;
            return Ok(Flow::Continue);
        };
        match server::authenticate(conn, header, secret, Purpose::TrackerLink, info).await? {
            Ok(()) => {
                info!(peer = %info.peer, "storage proved the cluster secret");
                Ok(Flow::Continue)
            }
            Err(err) => {
                metrics.refused("auth_failed");
                match self.auth_warnings.check() {
                    Some(suppressed) => warn!(
                        peer = %info.peer,
                        error = %err,
                        suppressed,
                        "storage failed cluster authentication (wrong or missing cluster_secret?), closing"
                    ),
                    None => {
                        debug!(peer = %info.peer, error = %err, "storage failed cluster authentication")
                    }
                }
                Ok(Flow::Close)
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn info(peer: &str) -> ConnInfo {
        ConnInfo::new(
            peer.parse().unwrap(),
            "127.0.0.1:22122".parse().unwrap(),
            tokio_util::sync::CancellationToken::new(),
        )
    }

    #[test]
    fn storage_commands_need_the_secret_when_one_is_set() {
        let secret = ClusterSecret::new(b"0123456789abcdef".to_vec()).unwrap();
        let open = Guard::new(None, HostList::allow_all());
        let closed = Guard::new(Some(secret), HostList::allow_all());
        let conn = info("127.0.0.1:5000");
        assert_eq!(open.check(Command::StorageJoin, &conn), Verdict::Serve);
        assert!(matches!(
            closed.check(Command::StorageJoin, &conn),
            Verdict::Refuse {
                status: 13,
                flow: Flow::Close,
                ..
            }
        ));
        // clients are unaffected
        for client in [
            Command::QueryStoreWithoutGroupOne,
            Command::QueryFetchOne,
            Command::ListAllGroups,
            Command::ParameterReq,
        ] {
            assert_eq!(closed.check(client, &conn), Verdict::Serve, "{client:?}");
        }
        conn.set_authenticated();
        assert_eq!(closed.check(Command::StorageBeat, &conn), Verdict::Serve);
    }

    #[test]
    fn admin_commands_follow_admin_hosts() {
        let guard = Guard::new(None, HostList::parse(&["10.0.0.0/8"]).unwrap());
        assert!(matches!(
            guard.check(Command::DeleteStorage, &info("127.0.0.1:1")),
            Verdict::Refuse {
                status: 1,
                flow: Flow::Continue,
                ..
            }
        ));
        assert!(matches!(
            guard.check(Command::DeleteGroup, &info("127.0.0.1:1")),
            Verdict::Refuse { status: 1, .. }
        ));
        assert_eq!(
            guard.check(Command::DeleteStorage, &info("10.1.1.1:1")),
            Verdict::Serve
        );
        assert_eq!(
            guard.check(Command::ListStorage, &info("127.0.0.1:1")),
            Verdict::Serve
        );
    }
}
