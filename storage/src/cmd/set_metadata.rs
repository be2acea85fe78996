//! SET_METADATA (13, F.5): overwrite or merge the metadata of a file.

use fdfs_proto::storage_msg::SetMetadataRequest;

use super::{check_group, parse_name, CmdError, Ctx};

pub(super) async fn handle(ctx: &Ctx, body: Vec<u8>) -> Result<Vec<u8>, CmdError> {
    // a bad op flag is a decode error: EINVAL, connection closed
    let req = SetMetadataRequest::decode(&body)?;
    check_group(ctx, &req.group)?;
    let name = parse_name(&req.name)?;
    ctx.store.set_metadata(&name, req.op, &req.metadata).await?;
    Ok(Vec::new())
}
