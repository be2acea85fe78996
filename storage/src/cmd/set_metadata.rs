//! SET_METADATA (13, F.5): overwrite or merge the metadata of a file.

use fdfs_proto::storage_msg::SetMetadataRequest;

use super::{check_group, parse_name, replicate, CmdError, Ctx};
use crate::replication::plan::sidecar_name;
use crate::replication::record::Op;
use crate::store::LocalFile;

pub(super) async fn handle(ctx: &Ctx, body: Vec<u8>) -> Result<Vec<u8>, CmdError> {
    // a bad op flag is a decode error: EINVAL, connection closed
    let req = SetMetadataRequest::decode(&body)?;
    check_group(ctx, &req.group)?;
    let name = parse_name(&req.name)?;
    let ticket = ctx.repl.ticket();
    ctx.store.set_metadata(&name, req.op, &req.metadata).await?;
    // the sidecar replicates as a file of its own: rewritten, or gone
    let sidecar = sidecar_name(&name.to_string());
    let op = match fdfs_proto::file_id::LogicalName::parse(&sidecar) {
        Ok(logical) => match ctx.store.local_file(&logical).await? {
            LocalFile::File { .. } => Op::Update { name: sidecar },
            _ => Op::Delete { name: sidecar },
        },
        // a name too long for a sidecar name cannot have one
        Err(_) => return Ok(Vec::new()),
    };
    replicate(ctx, ticket, vec![op]).await?;
    Ok(Vec::new())
}
