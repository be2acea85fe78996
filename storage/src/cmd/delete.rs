//! DELETE_FILE (12, F.4): group + logical name; removes the file and its metadata.

use fdfs_proto::storage_msg::GroupAndName;

use super::{check_group, parse_name, replicate, CmdError, Ctx};
use crate::replication::record::Op;

pub(super) async fn handle(ctx: &Ctx, body: Vec<u8>) -> Result<Vec<u8>, CmdError> {
    let req = GroupAndName::decode(&body)?;
    check_group(ctx, &req.group)?;
    let name = parse_name(&req.name)?;
    let ticket = ctx.repl.ticket();
    ctx.store.delete(&name).await?;
    replicate(
        ctx,
        ticket,
        vec![Op::Delete {
            name: name.to_string(),
        }],
    )
    .await?;
    Ok(Vec::new())
}
