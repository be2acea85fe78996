//! GET_METADATA (15, F.6): group + logical name; the stored metadata bytes.

use fdfs_proto::storage_msg::GroupAndName;

use super::{check_group, parse_name, CmdError, Ctx};

pub(super) async fn handle(ctx: &Ctx, body: Vec<u8>) -> Result<Vec<u8>, CmdError> {
    let req = GroupAndName::decode(&body)?;
    check_group(ctx, &req.group)?;
    let name = parse_name(&req.name)?;
    Ok(ctx.store.get_metadata(&name).await?)
}
