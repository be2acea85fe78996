//! MODIFY_FILE (34, F.9): name length, offset, size, name, content (streamed). No group.

use fdfs_proto::server::{reject, Flow, ServerConn};
use fdfs_proto::storage_msg::ModifyPrefix;
use fdfs_proto::{Header, ProtoError};

use super::{read_name, respond, Ctx, RecordChange};
use crate::replication::record::Op;

pub(super) async fn handle(
    ctx: &Ctx,
    conn: &mut ServerConn,
    header: Header,
) -> Result<Flow, ProtoError> {
    let len = header.body_len()?;
    if len < ModifyPrefix::LEN as u64 {
        return reject(conn).await;
    }
    let mut raw = [0u8; ModifyPrefix::LEN];
    conn.read_exact(&mut raw).await?;
    let Ok(prefix) = ModifyPrefix::decode(&raw, len) else {
        return reject(conn).await;
    };
    let name = match read_name(conn, prefix.name_len).await? {
        Ok(name) => name,
        Err(err) => return respond(conn, Err(err), false).await,
    };
    crate::stats::note_bytes(prefix.size);
    let (offset, length) = (prefix.offset, prefix.size);
    let mut record = RecordChange::new(ctx, |_| Op::Modify {
        name: name.to_string(),
        offset,
        length,
    });
    let mut body = conn.body_reader(prefix.size);
    let result = ctx
        .store
        .modify_with(&name, prefix.offset, prefix.size, &mut body, &mut record)
        .await;
    let consumed = body.limit() == 0;
    let result = match result {
        Ok(()) => record.finish().await,
        Err(err) => Err(err.into()),
    };
    respond(conn, result.map(|()| Vec::new()), consumed).await
}
