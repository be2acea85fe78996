//! UPLOAD_SLAVE_FILE (21, F.2): a 38-byte prefix, the master name, then the content
//! (streamed). No group.

use fdfs_proto::server::{reject, Flow, ServerConn};
use fdfs_proto::storage_msg::{SlavePrefix, UploadReply};
use fdfs_proto::{Header, ProtoError};

use super::{read_name, replicate, respond, Ctx, RecordCreate};
use crate::replication::record::Op;
use crate::store::LocalFile;

pub(super) async fn handle(
    ctx: &Ctx,
    conn: &mut ServerConn,
    header: Header,
) -> Result<Flow, ProtoError> {
    let len = header.body_len()?;
    if len < SlavePrefix::LEN as u64 {
        return reject(conn).await;
    }
    let mut raw = [0u8; SlavePrefix::LEN];
    conn.read_exact(&mut raw).await?;
    let Ok(prefix) = SlavePrefix::decode(&raw, len) else {
        return reject(conn).await;
    };
    let master = match read_name(conn, prefix.master_name_len).await? {
        Ok(name) => name,
        Err(err) => return respond(conn, Err(err), false).await,
    };
    let mut record = RecordCreate::new(ctx);
    crate::stats::note_bytes(prefix.file_size);
    let mut body = conn.body_reader(prefix.file_size);
    let result = ctx
        .store
        .write_slave_with(
            &master,
            &prefix.prefix,
            &prefix.ext,
            prefix.file_size,
            &mut body,
            &mut record,
        )
        .await;
    let consumed = body.limit() == 0;
    let result = match result {
        Ok(slave) => {
            // a slave stored as a link: its content file was recorded, the link follows, at
            // the link's own mtime (what QUERY_FILE_INFO reports here), which the peers give
            // their links
            let local = match ctx.store.io_slot(slave.store_path()).await {
                Ok(_slot) => ctx.store.local_file(&slave).await,
                Err(err) => Err(err),
            };
            match local {
                Ok(LocalFile::Link { target, mtime }) => {
                    let op = Op::Link {
                        name: slave.to_string(),
                        target,
                    };
                    match record.finish().await {
                        Ok(()) => replicate(ctx, ctx.repl.ticket(), mtime, op)
                            .await
                            .map(|()| slave),
                        Err(err) => Err(err),
                    }
                }
                _ => record.finish().await.map(|()| slave),
            }
        }
        Err(err) => Err(err.into()),
    };
    let result = result.map(|slave| {
        tracing::debug!(%master, %slave, "slave stored");
        UploadReply {
            group: ctx.group.clone(),
            name: slave.to_string(),
        }
        .encode()
    });
    respond(conn, result, consumed).await
}
