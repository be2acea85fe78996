//! APPEND_FILE (24, F.8): name length, append size, name, content (streamed). No group.

use fdfs_proto::server::{reject, Flow, ServerConn};
use fdfs_proto::storage_msg::AppendPrefix;
use fdfs_proto::{Header, ProtoError};

use super::{read_name, respond, Ctx, RecordChange};
use crate::replication::record::Op;

pub(super) async fn handle(
    ctx: &Ctx,
    conn: &mut ServerConn,
    header: Header,
) -> Result<Flow, ProtoError> {
    let len = header.body_len()?;
    if len < AppendPrefix::LEN as u64 {
        return reject(conn).await;
    }
    let mut raw = [0u8; AppendPrefix::LEN];
    conn.read_exact(&mut raw).await?;
    let Ok(prefix) = AppendPrefix::decode(&raw, len) else {
        return reject(conn).await;
    };
    let name = match read_name(conn, prefix.name_len).await? {
        Ok(name) => name,
        Err(err) => return respond(conn, Err(err), false).await,
    };
    crate::stats::note_bytes(prefix.size);
    let size = prefix.size;
    let mut record = RecordChange::new(ctx, |offset| Op::Append {
        name: name.to_string(),
        offset,
        length: size,
    });
    let mut body = conn.body_reader(prefix.size);
    let result = ctx
        .store
        .append_with(&name, prefix.size, &mut body, &mut record)
        .await;
    let consumed = body.limit() == 0;
    let result = match result {
        Ok(_) => record.finish().await,
        Err(err) => Err(err.into()),
    };
    // zero-length appends answer an empty body (not the reference server's echo, O.14)
    respond(conn, result.map(|()| Vec::new()), consumed).await
}
