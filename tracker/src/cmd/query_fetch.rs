//! QUERY_FETCH_ONE / QUERY_FETCH_ALL / QUERY_UPDATE (102, 105, 103; D.2).

use fdfs_proto::field::FieldReader;
use fdfs_proto::tracker_msg::FetchReply;
use fdfs_proto::{ProtoError, GROUP_NAME_LEN, MAX_NAME_LEN};

use super::CmdError;
use crate::select::{choose_fetch, choose_update, Servers};
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

pub fn fetch(tracker: &Tracker, body: &[u8], all: bool) -> Result<Vec<u8>, CmdError> {
    let (group, name) = decode(body)?;
    let servers = choose_fetch(
        &mut tracker.cluster(),
        tracker.policy(),
        &group,
        &name,
        unix_now(),
        all,
    )?;
    Ok(reply(servers))
}

pub fn update(tracker: &Tracker, body: &[u8]) -> Result<Vec<u8>, CmdError> {
    let (group, name) = decode(body)?;
    let servers = choose_update(&mut tracker.cluster(), tracker.policy(), &group, &name)?;
    Ok(reply(servers))
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
