//! SET_METADATA (13, F.5): overwrite or merge the metadata of a file.

use fdfs_proto::storage_msg::SetMetadataRequest;

use fdfs_proto::metadata;
use fdfs_proto::storage_msg::MetadataOp;

use super::{check_group, parse_name, CmdError, Ctx};
use crate::replication::plan::sidecar_name;
use crate::replication::record::Op;

pub(super) async fn handle(ctx: &Ctx, body: Vec<u8>) -> Result<Vec<u8>, CmdError> {
    // a bad op flag is a decode error: EINVAL, connection closed
    let req = SetMetadataRequest::decode(&body)?;
    check_group(ctx, &req.group)?;
    let name = parse_name(&req.name)?;
    // the sidecar replicates as a file of its own: rewritten, or gone
    let sidecar = sidecar_name(&name.to_string());
    if fdfs_proto::file_id::LogicalName::parse(&sidecar).is_err() {
        // a name too long for a sidecar name cannot have one
        ctx.store.set_metadata(&name, req.op, &req.metadata).await?;
        return Ok(Vec::new());
    }
    let pairs = metadata::normalize(metadata::decode(&req.metadata));
    let op = match req.op {
        MetadataOp::Overwrite if pairs.is_empty() => Op::Delete { name: sidecar },
        // merging nothing changes nothing
        MetadataOp::Merge if pairs.is_empty() => {
            ctx.store.set_metadata(&name, req.op, &req.metadata).await?;
            return Ok(Vec::new());
        }
        _ => Op::Update { name: sidecar },
    };
    // Recorded first, as deletes are: a kill after the sidecar changed but before its record
    // would leave this storage's metadata different from its peers' for good. A record whose
    // change never happened is harmless: the peers get the sidecar as it is here (a delete
    // left undone is finished at the next start).
    let (seq, release) = ctx.repl.record(ctx.repl.ticket(), op).await?;
    let changed = ctx.store.set_metadata(&name, req.op, &req.metadata).await;
    drop(release);
    changed?;
    ctx.repl.confirm(seq).await?;
    Ok(Vec::new())
}
