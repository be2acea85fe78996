//! TRUNCATE_FILE (36, F.10): name length, new size, name. No group.

use fdfs_proto::storage_msg::TruncateRequest;

use super::{parse_name, CmdError, Ctx, RecordChange};
use crate::replication::record::Op;

pub(super) async fn handle(ctx: &Ctx, body: Vec<u8>) -> Result<Vec<u8>, CmdError> {
    let req = TruncateRequest::decode(&body)?;
    let name = parse_name(&req.name)?;
    let new_size = req.new_size;
    let mut record = RecordChange::new(ctx, |old_size| Op::Truncate {
        name: name.to_string(),
        old_size,
        new_size,
    });
    ctx.store
        .truncate_with(&name, req.new_size, &mut record)
        .await?;
    record.finish().await?;
    Ok(Vec::new())
}
