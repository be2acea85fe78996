//! Files this storage does not have (M.2 step 5): which storages of the group may have them,
//! and talking HTTP to those storages (proxying or probing before a redirect).
//!
//! Candidates are the group members the trackers report ACTIVE, the file's source storage
//! (from the id in its name, H.2) first: it has the file unless it was deleted, while the
//! others may still be waiting for replication. Peers are asked with `redirect=1`, so a peer
//! that does not have the file answers 404 itself instead of bouncing the request on.

use std::time::Duration;

use bytes::Bytes;
use fdfs_proto::name::Source;
use fdfs_proto::tracker_msg::{storage_status, StorageBrief};
use http_body_util::{BodyExt, Empty};
use hyper::body::Incoming;
use hyper::header::{self, HeaderMap, HeaderName};
use hyper::{Method, Request, Response, StatusCode};
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;
use tracing::debug;

use super::body::{Body, IdleTimeout};
use super::settings::HttpSettings;

/// A storage that may serve the file.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Candidate {
    pub id: String,
    /// HTTP "host:port".
    pub addr: String,
    pub is_source: bool,
}

/// Where to look for a file that is not here.
#[derive(Debug, PartialEq, Eq)]
pub struct Plan {
    /// The name says this storage created the file: if it is gone, it was deleted.
    pub source_is_self: bool,
    pub candidates: Vec<Candidate>,
}

/// Orders the ACTIVE members of the group (never this storage) for a file from `source`.
pub fn plan(settings: &HttpSettings, source: Source, members: &[StorageBrief]) -> Plan {
    let own_id = settings.server_id.to_string();
    let source_id = match source {
        Source::Id(id) => Some(id.to_string()),
        // names from IP-addressed clusters: the source is the one member with that address
        Source::Ip(ip) => {
            let ip = ip.to_string();
            let mut with_ip = members.iter().filter(|m| m.ip == ip);
            match (with_ip.next(), with_ip.next()) {
                (Some(only), None) => Some(only.id.clone()),
                _ => None,
            }
        }
    };
    let source_is_self = source_id.as_deref() == Some(own_id.as_str());
    let mut candidates: Vec<Candidate> = members
        .iter()
        .filter(|m| m.status == storage_status::ACTIVE && m.id != own_id)
        .filter_map(|m| {
            Some(Candidate {
                id: m.id.clone(),
                addr: settings.peer_http_addr(&m.id, &m.ip, m.port)?,
                is_source: source_id.as_deref() == Some(m.id.as_str()),
            })
        })
        .collect();
    // stable: the source first, the others in id order
    candidates.sort_by_key(|c| (!c.is_source, c.id.clone()));
    Plan {
        source_is_self,
        candidates,
    }
}

/// What a peer said.
pub enum Fetch {
    Answer(Response<Incoming>),
    /// The peer does not have it either.
    NotFound,
    /// Down, unreachable, too slow or failing (5xx).
    Unreachable,
}

/// Request headers passed on to a peer (everything that changes the answer).
const FORWARDED: [HeaderName; 7] = [
    header::RANGE,
    header::IF_RANGE,
    header::IF_NONE_MATCH,
    header::IF_MODIFIED_SINCE,
    header::IF_MATCH,
    header::IF_UNMODIFIED_SINCE,
    header::REFERER,
];

/// Response headers that describe one connection, not the content (RFC 9110 §7.6.1).
const HOP_BY_HOP: [HeaderName; 6] = [
    header::CONNECTION,
    header::TRANSFER_ENCODING,
    header::TE,
    header::TRAILER,
    header::UPGRADE,
    header::PROXY_AUTHENTICATE,
];

/// HTTP client for peers, with pooled connections.
pub struct PeerClient {
    client: Client<HttpConnector, Empty<Bytes>>,
    timeout: Duration,
}

impl PeerClient {
    pub fn new(timeout: Duration) -> PeerClient {
        let mut connector = HttpConnector::new();
        connector.set_connect_timeout(Some(timeout.min(Duration::from_secs(5))));
        connector.set_nodelay(true);
        let client = Client::builder(TokioExecutor::new())
            .pool_idle_timeout(Duration::from_secs(30))
            .pool_max_idle_per_host(32)
            .build(connector);
        PeerClient { client, timeout }
    }

    /// Sends `method path?query` to `addr` with the client's relevant headers.
    pub async fn fetch(
        &self,
        addr: &str,
        method: &Method,
        path_and_query: &str,
        headers: Option<&HeaderMap>,
    ) -> Fetch {
        let uri = format!("http://{addr}{path_and_query}");
        let mut request = Request::builder().method(method.clone()).uri(&uri);
        if let Some(headers) = headers {
            for name in &FORWARDED {
                for value in headers.get_all(name) {
                    request = request.header(name, value);
                }
            }
        }
        let request = match request.body(Empty::new()) {
            Ok(request) => request,
            Err(err) => {
                debug!(%uri, error = %err, "cannot build the peer request");
                return Fetch::Unreachable;
            }
        };
        match tokio::time::timeout(self.timeout, self.client.request(request)).await {
            Err(_) => {
                debug!(%uri, "peer timed out");
                Fetch::Unreachable
            }
            Ok(Err(err)) => {
                debug!(%uri, error = %err, "peer unreachable");
                Fetch::Unreachable
            }
            Ok(Ok(response)) if response.status() == StatusCode::NOT_FOUND => Fetch::NotFound,
            Ok(Ok(response)) if response.status().is_server_error() => {
                debug!(%uri, status = %response.status(), "peer failed");
                Fetch::Unreachable
            }
            Ok(Ok(response)) => Fetch::Answer(response),
        }
    }

    /// A peer's answer as ours: same status, content headers and streamed body.
    pub fn relay(&self, response: Response<Incoming>) -> Response<Body> {
        let (mut parts, incoming) = response.into_parts();
        for name in &HOP_BY_HOP {
            parts.headers.remove(name);
        }
        parts.headers.remove("keep-alive");
        Response::from_parts(parts, IdleTimeout::new(incoming, self.timeout).boxed())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::StorageConfig;
    use std::net::Ipv4Addr;

    fn settings(extra: &str) -> HttpSettings {
        let config = StorageConfig::from_toml(&format!(
            "group_name = \"group1\"\nserver_id = 100001\nbase_path = \"/tmp/x\"\n\
             tracker_servers = [\"127.0.0.1:22122\"]\n{extra}"
        ))
        .unwrap();
        HttpSettings::from_config(&config).unwrap()
    }

    fn brief(id: &str, ip: &str, status: u8) -> StorageBrief {
        StorageBrief {
            status,
            port: 23000,
            id: id.into(),
            ip: ip.into(),
        }
    }

    #[test]
    fn source_first_then_other_active_members() {
        let s = settings("");
        let members = [
            brief("100001", "10.0.0.1", storage_status::ACTIVE),
            brief("100002", "10.0.0.2", storage_status::ACTIVE),
            brief("100003", "10.0.0.3", storage_status::ACTIVE),
            brief("100004", "10.0.0.4", storage_status::OFFLINE),
        ];
        let plan = plan(&s, Source::Id(100_003), &members);
        assert!(!plan.source_is_self);
        let order: Vec<(&str, &str, bool)> = plan
            .candidates
            .iter()
            .map(|c| (c.id.as_str(), c.addr.as_str(), c.is_source))
            .collect();
        assert_eq!(
            order,
            [
                ("100003", "10.0.0.3:8888", true),
                ("100002", "10.0.0.2:8888", false)
            ]
        );
        assert!(super::plan(&s, Source::Id(100_001), &members).source_is_self);
        // the source is down: only the others remain
        let down = super::plan(&s, Source::Id(100_004), &members);
        assert!(down.candidates.iter().all(|c| !c.is_source));
        assert_eq!(down.candidates.len(), 2);
    }

    #[test]
    fn ip_sources_and_static_peers() {
        let s = settings("http_peers = { \"100002\" = \"127.0.0.1:9000\" }");
        let members = [
            brief("100001", "10.0.0.1", storage_status::ACTIVE),
            brief("100002", "10.0.0.2", storage_status::ACTIVE),
        ];
        let plan = plan(&s, Source::Ip(Ipv4Addr::new(10, 0, 0, 2)), &members);
        assert_eq!(
            plan.candidates,
            [Candidate {
                id: "100002".into(),
                addr: "127.0.0.1:9000".into(),
                is_source: true
            }]
        );
        // an ambiguous address picks no source
        let shared = [
            brief("100002", "127.0.0.1", storage_status::ACTIVE),
            brief("100003", "127.0.0.1", storage_status::ACTIVE),
        ];
        let plan = super::plan(&s, Source::Ip(Ipv4Addr::LOCALHOST), &shared);
        assert!(plan.candidates.iter().all(|c| !c.is_source));
    }
}
