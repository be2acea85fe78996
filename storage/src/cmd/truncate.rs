//! TRUNCATE_FILE (36, F.10): name length, new size, name. No group.

use fdfs_proto::storage_msg::TruncateRequest;

use super::{parse_name, replicate, CmdError, Ctx};
use crate::replication::record::Op;

pub(super) async fn handle(ctx: &Ctx, body: Vec<u8>) -> Result<Vec<u8>, CmdError> {
    let req = TruncateRequest::decode(&body)?;
    let name = parse_name(&req.name)?;
    let ticket = ctx.repl.ticket();
    let old_size = ctx.store.truncate(&name, req.new_size).await?;
    if old_size != req.new_size {
        let op = Op::Truncate {
            name: name.to_string(),
            old_size,
            new_size: req.new_size,
        };
        replicate(ctx, ticket, vec![op]).await?;
    }
    Ok(Vec::new())
}
