//! Storage commands used by clients (F), one exchange each on a given connection. Content is
//! streamed from readers and into writers; only bounded replies are buffered.

use fdfs_proto::cmd::Command;
use fdfs_proto::file_id::LogicalName;
use fdfs_proto::storage_msg::{
    AppendPrefix, DownloadRequest, FileInfoReply, GroupAndName, MetadataOp, ModifyPrefix,
    SetMetadataRequest, SlavePrefix, TruncateRequest, UploadPrefix, UploadReply,
};
use fdfs_proto::{ProtoError, GROUP_NAME_LEN, IP_WIDTH_LONG, MAX_NAME_LEN};
use tokio::io::{AsyncRead, AsyncWrite};

use crate::conn::Conn;
use crate::error::ClientError;
use crate::FileId;

/// Upload and regenerate replies: group + logical name (A.5: < 128 bytes).
const MAX_UPLOAD_REPLY: u64 = (GROUP_NAME_LEN + MAX_NAME_LEN) as u64;
/// QUERY_FILE_INFO reply: 40 bytes (W = 16) or 70 (W = 46).
const MAX_FILE_INFO_REPLY: u64 = (24 + IP_WIDTH_LONG) as u64;
/// Stored metadata is written by requests that fit the storage buffer (256 KiB by default);
/// merges can grow it, so allow well beyond that while still bounding the allocation.
const MAX_METADATA_REPLY: u64 = 4 << 20;

/// UPLOAD_FILE (11) or UPLOAD_APPENDER_FILE (23) of `size` bytes from `reader`; a store path
/// index of `None` (sent as 0xFF) lets the storage choose.
pub(crate) async fn upload<R: AsyncRead + Unpin>(
    conn: &mut Conn,
    appender: bool,
    store_path_index: Option<u8>,
    ext: &str,
    size: u64,
    reader: &mut R,
) -> Result<FileId, ClientError> {
    let cmd = if appender {
        Command::UploadAppenderFile
    } else {
        Command::UploadFile
    };
    let prefix = UploadPrefix {
        store_path_index,
        file_size: size,
        ext: ext.to_string(),
    };
    conn.send_streamed(cmd.code(), &prefix.encode(), size, reader)
        .await?;
    read_file_id(conn).await
}

/// UPLOAD_SLAVE_FILE (21): `size` bytes from `reader` stored as a slave of `master`.
pub(crate) async fn upload_slave<R: AsyncRead + Unpin>(
    conn: &mut Conn,
    master: &FileId,
    prefix: &str,
    ext: &str,
    size: u64,
    reader: &mut R,
) -> Result<FileId, ClientError> {
    let master_name = master.name.to_string();
    let mut head = SlavePrefix {
        master_name_len: master_name.len() as u64,
        file_size: size,
        prefix: prefix.to_string(),
        ext: ext.to_string(),
    }
    .encode();
    head.extend_from_slice(master_name.as_bytes());
    conn.send_streamed(Command::UploadSlaveFile.code(), &head, size, reader)
        .await?;
    read_file_id(conn).await
}

/// DOWNLOAD_FILE (14): `length` bytes (0 = to the end) from `offset` into `writer`.
pub(crate) async fn download<W: AsyncWrite + Unpin>(
    conn: &mut Conn,
    id: &FileId,
    offset: u64,
    length: u64,
    writer: &mut W,
) -> Result<u64, ClientError> {
    for (what, value) in [("offset", offset), ("length", length)] {
        if i64::try_from(value).is_err() {
            return Err(ClientError::input(what, format!("{value} is too large")));
        }
    }
    let request = DownloadRequest {
        offset,
        length,
        group: id.group.clone(),
        name: id.name.to_string(),
    };
    conn.send(Command::DownloadFile.code(), 0, &request.encode())
        .await?;
    // the server clamps to what remains but never sends more than asked (F.3)
    let max = (length > 0).then_some(length);
    conn.read_reply_into(max, writer).await
}

/// DELETE_FILE (12).
pub(crate) async fn delete(conn: &mut Conn, id: &FileId) -> Result<(), ClientError> {
    conn.call_empty(Command::DeleteFile.code(), &group_and_name(id))
        .await
}

/// SET_METADATA (13) with already encoded metadata (G).
pub(crate) async fn set_metadata(
    conn: &mut Conn,
    id: &FileId,
    metadata: &[u8],
    op: MetadataOp,
) -> Result<(), ClientError> {
    let request = SetMetadataRequest {
        op,
        group: id.group.clone(),
        name: id.name.to_string(),
        metadata: metadata.to_vec(),
    };
    conn.call_empty(Command::SetMetadata.code(), &request.encode())
        .await
}

/// GET_METADATA (15): the stored metadata bytes.
pub(crate) async fn get_metadata(conn: &mut Conn, id: &FileId) -> Result<Vec<u8>, ClientError> {
    conn.call(
        Command::GetMetadata.code(),
        &group_and_name(id),
        MAX_METADATA_REPLY,
    )
    .await
}

/// QUERY_FILE_INFO (22); `flags` go in the header status byte (A.3).
pub(crate) async fn query_file_info(
    conn: &mut Conn,
    id: &FileId,
    flags: u8,
) -> Result<FileInfoReply, ClientError> {
    conn.send(Command::QueryFileInfo.code(), flags, &group_and_name(id))
        .await?;
    let body = conn.read_reply(MAX_FILE_INFO_REPLY).await?;
    FileInfoReply::decode(&body).map_err(ClientError::Protocol)
}

/// APPEND_FILE (24): `size` bytes from `reader` at the end of appender `id`.
pub(crate) async fn append<R: AsyncRead + Unpin>(
    conn: &mut Conn,
    id: &FileId,
    size: u64,
    reader: &mut R,
) -> Result<(), ClientError> {
    let name = id.name.to_string();
    let mut head = AppendPrefix {
        name_len: name.len() as u64,
        size,
    }
    .encode();
    head.extend_from_slice(name.as_bytes());
    conn.send_streamed(Command::AppendFile.code(), &head, size, reader)
        .await?;
    conn.read_empty_reply().await
}

/// MODIFY_FILE (34): overwrite `size` bytes at `offset` of appender `id`.
pub(crate) async fn modify<R: AsyncRead + Unpin>(
    conn: &mut Conn,
    id: &FileId,
    offset: u64,
    size: u64,
    reader: &mut R,
) -> Result<(), ClientError> {
    if i64::try_from(offset).is_err() {
        return Err(ClientError::input(
            "offset",
            format!("{offset} is too large"),
        ));
    }
    let name = id.name.to_string();
    let mut head = ModifyPrefix {
        name_len: name.len() as u64,
        offset,
        size,
    }
    .encode();
    head.extend_from_slice(name.as_bytes());
    conn.send_streamed(Command::ModifyFile.code(), &head, size, reader)
        .await?;
    conn.read_empty_reply().await
}

/// TRUNCATE_FILE (36): set the length of appender `id`.
pub(crate) async fn truncate(
    conn: &mut Conn,
    id: &FileId,
    new_size: u64,
) -> Result<(), ClientError> {
    if i64::try_from(new_size).is_err() {
        return Err(ClientError::input(
            "size",
            format!("{new_size} is too large"),
        ));
    }
    let request = TruncateRequest {
        new_size,
        name: id.name.to_string(),
    };
    conn.call_empty(Command::TruncateFile.code(), &request.encode())
        .await
}

/// REGENERATE_APPENDER_FILENAME (38): turn appender `id` into a normal file; its new ID.
pub(crate) async fn regenerate(conn: &mut Conn, id: &FileId) -> Result<FileId, ClientError> {
    conn.send(
        Command::RegenerateAppenderFilename.code(),
        0,
        id.name.to_string().as_bytes(),
    )
    .await?;
    read_file_id(conn).await
}

fn group_and_name(id: &FileId) -> Vec<u8> {
    GroupAndName {
        group: id.group.clone(),
        name: id.name.to_string(),
    }
    .encode()
}

/// Reads an upload-style reply (group + logical name) and validates it as a file ID.
async fn read_file_id(conn: &mut Conn) -> Result<FileId, ClientError> {
    let body = conn.read_reply(MAX_UPLOAD_REPLY).await?;
    decode_file_id(&body)
}

fn decode_file_id(body: &[u8]) -> Result<FileId, ClientError> {
    let reply = UploadReply::decode(body).map_err(ClientError::Protocol)?;
    let name = LogicalName::parse(&reply.name).map_err(ClientError::Protocol)?;
    FileId::new(&reply.group, name).map_err(|err: ProtoError| ClientError::Protocol(err))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn upload_replies_become_file_ids() {
        let reply = UploadReply {
            group: "group1".into(),
            name: "M00/00/00/fwAAH2sDbeGAVWzkAAAABjY6MCA275.txt".into(),
        };
        let id = decode_file_id(&reply.encode()).unwrap();
        assert_eq!(
            id.to_string(),
            "group1/M00/00/00/fwAAH2sDbeGAVWzkAAAABjY6MCA275.txt"
        );
        let bad = UploadReply {
            group: "group1".into(),
            name: "M00/00/00/../../etc/passwd".into(),
        };
        assert!(matches!(
            decode_file_id(&bad.encode()),
            Err(ClientError::Protocol(_))
        ));
        let bad_group = UploadReply {
            group: "gr/p".into(),
            name: "M00/00/00/fwAAH2sDbeGAVWzkAAAABjY6MCA275.txt".into(),
        };
        assert!(decode_file_id(&bad_group.encode()).is_err());
        assert!(decode_file_id(b"group1").is_err());
    }
}
