//! QUERY_FETCH_ONE / QUERY_FETCH_ALL / QUERY_UPDATE (102, 105, 103; D.2).

use std::time::Duration;

use fdfs_proto::cmd::Command;
use fdfs_proto::conn::Connection;
use fdfs_proto::field::FieldReader;
use fdfs_proto::storage_msg::{GroupAndName, FILE_INFO_NO_CRC, FILE_INFO_SILENT};
use fdfs_proto::tracker_msg::{FetchReply, StorageAddr};
use fdfs_proto::{Header, ProtoError, GROUP_NAME_LEN, MAX_NAME_LEN};
use tokio::net::TcpStream;
use tracing::debug;

use super::CmdError;
use crate::select::{choose_fetch, choose_update, Fetch, SelectError, Servers};
use crate::service::{unix_now, Tracker};

/// Shortest file name a query may carry (A.5).
const MIN_NAME_LEN: usize = 22;
/// Longest body: group + the longest name.
pub const MAX_BODY_LEN: usize = GROUP_NAME_LEN + MAX_NAME_LEN;

/// Group name and logical file name of a query body.
fn decode(body: &[u8]) -> Result<(String, String), ProtoError> {
    let range = GROUP_NAME_LEN + MIN_NAME_LEN..=MAX_BODY_LEN;
    if !range.contains(&body.len()) {
        return Err(ProtoError::BadLength {
            what: "file query",
            len: body.len() as u64,
        });
    }
    let mut reader = FieldReader::new(body);
    let group = reader.fixed_str(GROUP_NAME_LEN, "group name")?.to_string();
    let name = reader.rest_str("file name")?.to_string();
    Ok((group, name))
}

fn reply(servers: Servers) -> Vec<u8> {
    FetchReply {
        group: servers.group,
        servers: servers.servers,
    }
    .encode()
}

/// How long QUERY_UPDATE waits for an away source before answering EAGAIN, and how often it
/// looks again meanwhile.
const SOURCE_WAIT: Duration = Duration::from_secs(3);
const SOURCE_POLL: Duration = Duration::from_millis(100);

/// How long a storage may take to say whether it holds a file.
const ASK_TIMEOUT: Duration = Duration::from_secs(2);

/// QUERY_FETCH_ONE / QUERY_FETCH_ALL (`command` 102 / 105) and QUERY_UPDATE (103). When no
/// readable storage is known to hold the file, candidates are asked (QUERY_FILE_INFO, flags
/// 3) before anyone is named: a client is never sent to a storage that lacks the file.
pub async fn handle(tracker: &Tracker, command: Command, body: &[u8]) -> Result<Vec<u8>, CmdError> {
    let (group, name) = decode(body)?;
    let waiting_since = tokio::time::Instant::now();
    let plan = loop {
        let chosen = {
            let mut cluster = tracker.cluster();
            match command {
                Command::QueryUpdate => {
                    choose_update(&mut cluster, tracker.policy(), &group, &name, unix_now())
                }
                _ => choose_fetch(
                    &mut cluster,
                    tracker.policy(),
                    &group,
                    &name,
                    unix_now(),
                    command == Command::QueryFetchAll,
                ),
            }
        };
        match chosen {
            // a source restarting (or not yet back after our own restart) is usually back
            // within a heartbeat: wait a little before telling the client to try again
            Err(SelectError::SourceAway(_)) if waiting_since.elapsed() < SOURCE_WAIT => {
                tokio::time::sleep(SOURCE_POLL).await;
            }
            other => break other?,
        }
    };
    match plan {
        Fetch::Servers(servers) => Ok(reply(servers)),
        Fetch::Ask {
            group,
            candidates,
            all,
            otherwise,
        } => {
            let mut holders = Vec::new();
            for candidate in candidates {
                if holds_file(&candidate, &group, &name).await {
                    holders.push(candidate);
                    if !all {
                        break;
                    }
                }
            }
            debug!(%group, %name, holders = holders.len(), "asked storages for a file");
            if holders.is_empty() {
                return match otherwise {
                    Some(servers) => Ok(reply(servers)),
                    None => Err(SelectError::NoServer(group).into()),
                };
            }
            Ok(reply(Servers {
                group,
                servers: holders,
            }))
        }
    }
}

/// QUERY_FILE_INFO with flags 3 (no CRC, silent): status 0 = the storage holds the file.
async fn holds_file(storage: &StorageAddr, group: &str, name: &str) -> bool {
    let body = GroupAndName {
        group: group.to_string(),
        name: name.to_string(),
    }
    .encode();
    let asked = async {
        let stream = TcpStream::connect((storage.ip.as_str(), storage.port)).await?;
        let _ = stream.set_nodelay(true);
        let mut conn = Connection::new(stream);
        let header = Header {
            pkg_len: body.len() as i64,
            cmd: Command::QueryFileInfo.code(),
            status: FILE_INFO_NO_CRC | FILE_INFO_SILENT,
        };
        conn.send(header, &body).await?;
        let held = match conn.read_response(256).await {
            Ok(_) => true,
            Err(ProtoError::Status { .. }) => false,
            Err(err) => return Err(err),
        };
        let _ = conn.send_request(Command::Quit.code(), &[]).await;
        Ok::<bool, ProtoError>(held)
    };
    match tokio::time::timeout(ASK_TIMEOUT, asked).await {
        Ok(Ok(held)) => held,
        Ok(Err(err)) => {
            debug!(%storage, error = %err, "cannot ask a storage about a file");
            false
        }
        Err(_) => {
            debug!(%storage, "a storage did not say in time whether it holds a file");
            false
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn body_bounds() {
        let mut body = fdfs_proto::tracker_msg::encode_group("group1");
        body.extend_from_slice(&[b'a'; 21]);
        assert!(decode(&body).is_err());
        body.push(b'a');
        let (group, name) = decode(&body).unwrap();
        assert_eq!((group.as_str(), name.len()), ("group1", 22));
        body.resize(GROUP_NAME_LEN + 127, b'a');
        assert!(decode(&body).is_ok());
        body.push(b'a');
        assert!(decode(&body).is_err());
    }
}
