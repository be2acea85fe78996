//! REGENERATE_APPENDER_FILENAME (38, F.11): the bare appender name; answers group + the new
//! normal name.

use fdfs_proto::storage_msg::{decode_bare_name, UploadReply};

use super::{parse_name, replicate, CmdError, Ctx};
use crate::replication::record::Op;

pub(super) async fn handle(ctx: &Ctx, body: Vec<u8>) -> Result<Vec<u8>, CmdError> {
    let name = parse_name(&decode_bare_name(&body)?)?;
    let ticket = ctx.repl.ticket();
    let renamed = ctx.store.regenerate(&name).await?;
    let op = Op::Rename {
        name: renamed.to_string(),
        old: name.to_string(),
    };
    replicate(ctx, ticket, vec![op]).await?;
    tracing::debug!(old = %name, new = %renamed, "appender renamed");
    Ok(UploadReply {
        group: ctx.group.clone(),
        name: renamed.to_string(),
    }
    .encode())
}
