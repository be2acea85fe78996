//! UPLOAD_FILE (11) and UPLOAD_APPENDER_FILE (23), F.1: a 15-byte prefix, then the content,
//! streamed to disk.

use fdfs_proto::server::{reject, Flow, ServerConn};
use fdfs_proto::storage_msg::{UploadPrefix, UploadReply};
use fdfs_proto::{Header, ProtoError};
use tracing::debug;

use super::{respond, Ctx, RecordCreate};
use crate::store::NewFile;

pub(super) async fn handle(
    ctx: &Ctx,
    conn: &mut ServerConn,
    header: Header,
    appender: bool,
) -> Result<Flow, ProtoError> {
    let len = header.body_len()?;
    if len < UploadPrefix::LEN as u64 {
        return reject(conn).await;
    }
    let mut raw = [0u8; UploadPrefix::LEN];
    conn.read_exact(&mut raw).await?;
    let prefix = match UploadPrefix::decode(&raw, len) {
        Ok(prefix) => prefix,
        Err(err) => {
            debug!(error = %err, "bad upload prefix");
            return reject(conn).await;
        }
    };
    let req = NewFile {
        // the tracker may not have heard yet that a store path failed: the storage picks a
        // healthy one then, and the name tells the client where the file went
        store_path: prefix
            .store_path_index
            .filter(|&index| ctx.store.path_healthy(index) || index >= path_count(ctx)),
        size: prefix.file_size,
        ext: &prefix.ext,
        appender,
    };
    let mut record = RecordCreate::new(ctx);
    crate::stats::note_bytes(prefix.file_size);
    let mut body = conn.body_reader(prefix.file_size);
    let result = ctx
        .store
        .write_new_file_with(&req, &mut body, &mut record)
        .await;
    let consumed = body.limit() == 0;
    let result = match result {
        Ok(name) => record.finish().await.map(|()| name),
        Err(err) => Err(err.into()),
    };
    let result = result.map(|name| {
        debug!(file = %name, size = prefix.file_size, appender, "stored");
        UploadReply {
            group: ctx.group.clone(),
            name: name.to_string(),
        }
        .encode()
    });
    respond(conn, result, consumed).await
}

fn path_count(ctx: &Ctx) -> u8 {
    u8::try_from(ctx.store.store_path_count()).unwrap_or(u8::MAX)
}
