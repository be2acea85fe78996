//! REGENERATE_APPENDER_FILENAME (38, F.11): the bare appender name; answers group + the new
//! normal name.

use fdfs_proto::storage_msg::{decode_bare_name, UploadReply};

use super::{parse_name, CmdError, Ctx, RecordCreate};

pub(super) async fn handle(ctx: &Ctx, body: Vec<u8>) -> Result<Vec<u8>, CmdError> {
    let name = parse_name(&decode_bare_name(&body)?)?;
    let mut record = RecordCreate::rename_of(ctx, &name);
    let renamed = ctx.store.regenerate_with(&name, &mut record).await?;
    record.finish().await?;
    tracing::debug!(old = %name, new = %renamed, "appender renamed");
    Ok(UploadReply {
        group: ctx.group.clone(),
        name: renamed.to_string(),
    }
    .encode())
}
