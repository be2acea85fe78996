//! QUERY_STORE_WITHOUT_GROUP_ONE / WITH_GROUP_ONE / WITHOUT_GROUP_ALL / WITH_GROUP_ALL
//! (101, 104, 106, 107; D.1).

use fdfs_proto::tracker_msg::{decode_group, QueryStoreAllReply, QueryStoreReply};
use fdfs_proto::GROUP_NAME_LEN;

use super::{expect_len, CmdError};
use crate::select::choose_upload;
use crate::service::Tracker;

/// Body of 104 and 107: one group name.
pub const GROUP_BODY_LEN: usize = GROUP_NAME_LEN;

pub fn handle(
    tracker: &Tracker,
    body: &[u8],
    with_group: bool,
    all: bool,
) -> Result<Vec<u8>, CmdError> {
    let group = if with_group {
        Some(decode_group(body)?)
    } else {
        expect_len(body, 0, "query store")?;
        None
    };
    let upload = choose_upload(
        &mut tracker.cluster(),
        tracker.policy(),
        group.as_deref(),
        all,
    )?;
    let reply = if all {
        QueryStoreAllReply {
            group: upload.group,
            servers: upload.servers,
            store_path_index: upload.store_path_index,
        }
        .encode()
    } else {
        let server = upload
            .servers
            .into_iter()
            .next()
            .expect("choose_upload returns at least one server");
        QueryStoreReply {
            group: upload.group,
            server,
            store_path_index: upload.store_path_index,
        }
        .encode()
    };
    Ok(reply)
}
