//! DELETE_FILE (12, F.4): group + logical name; removes the file and its metadata.

use fdfs_proto::storage_msg::GroupAndName;

use super::{check_group, parse_name, CmdError, Ctx};
use crate::replication::record::Op;
use crate::store::{LocalFile, StoreError};

pub(super) async fn handle(ctx: &Ctx, body: Vec<u8>) -> Result<Vec<u8>, CmdError> {
    let req = GroupAndName::decode(&body)?;
    check_group(ctx, &req.group)?;
    let name = parse_name(&req.name)?;
    let local = {
        // a disk call on the file's store path: one of its slots (store::gate)
        let _slot = ctx.store.io_slot(name.store_path()).await?;
        ctx.store.local_file(&name).await?
    };
    if local == LocalFile::Missing {
        return Err(StoreError::NotFound.into());
    }
    // recorded first: a crash in between deletes the file on the peers, and the client's
    // retry deletes it here; the other order could leave it on the peers for good
    let op = Op::Delete {
        name: name.to_string(),
    };
    let (seq, release) = ctx.repl.record(ctx.repl.ticket(), op).await?;
    let deleted = ctx.store.delete(&name).await;
    drop(release);
    deleted?;
    ctx.repl.confirm(seq).await?;
    Ok(Vec::new())
}
