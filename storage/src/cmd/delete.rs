//! DELETE_FILE (12, F.4): group + logical name; removes the file and its metadata.

use fdfs_proto::storage_msg::GroupAndName;

use super::{check_group, parse_name, CmdError, Ctx};

pub(super) async fn handle(ctx: &Ctx, body: Vec<u8>) -> Result<Vec<u8>, CmdError> {
    let req = GroupAndName::decode(&body)?;
    check_group(ctx, &req.group)?;
    let name = parse_name(&req.name)?;
    ctx.store.delete(&name).await?;
    Ok(Vec::new())
}
