//! TRUNCATE_FILE (36, F.10): name length, new size, name. No group.

use fdfs_proto::storage_msg::TruncateRequest;

use super::{parse_name, CmdError, Ctx};

pub(super) async fn handle(ctx: &Ctx, body: Vec<u8>) -> Result<Vec<u8>, CmdError> {
    let req = TruncateRequest::decode(&body)?;
    let name = parse_name(&req.name)?;
    ctx.store.truncate(&name, req.new_size).await?;
    Ok(Vec::new())
}
