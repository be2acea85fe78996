//! DELETE_STORAGE (93) and DELETE_GROUP (108) (D.5).

use fdfs_proto::tracker_msg::decode_group;
use fdfs_proto::GROUP_NAME_LEN;

use super::list::decode_group_and_id;
use super::CmdError;
use crate::service::Tracker;

pub fn delete_storage(tracker: &Tracker, body: &[u8]) -> Result<Vec<u8>, CmdError> {
    let (group, id) = decode_group_and_id(body, GROUP_NAME_LEN + 1, "delete storage")?;
    tracker
        .cluster()
        .delete_storage(&group, &id)
        .inspect_err(|err| tracing::info!(%group, %id, error = %err, "delete storage refused"))?;
    Ok(Vec::new())
}

pub fn delete_group(tracker: &Tracker, body: &[u8]) -> Result<Vec<u8>, CmdError> {
    let group = decode_group(body)?;
    tracker
        .cluster()
        .delete_group(&group)
        .inspect_err(|err| tracing::info!(%group, error = %err, "delete group refused"))?;
    Ok(Vec::new())
}
