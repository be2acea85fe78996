//! QUERY_FILE_INFO (22, F.7): size, mtime, CRC32 and source IP of a stored file. Request flags
//! come in the header status byte (A.3).

use fdfs_proto::name::{classify, FileKind, Source};
use fdfs_proto::storage_msg::{FileInfoReply, GroupAndName, FILE_INFO_NO_CRC};

use super::{check_group, parse_name, CmdError, Ctx};
use crate::store::Store;

pub(super) async fn handle(ctx: &Ctx, body: Vec<u8>, flags: u8) -> Result<Vec<u8>, CmdError> {
    let req = GroupAndName::decode(&body)?;
    check_group(ctx, &req.group)?;
    let name = parse_name(&req.name)?;
    // existence first: a missing file is 2 even when its name is too short to decode
    let stat = ctx.store.stat(&name).await?;
    let fields = Store::name_fields(&name)?;
    let crc32 = match classify(&name.to_string(), &fields) {
        FileKind::Normal | FileKind::Trunk => fields.crc32,
        FileKind::Appender | FileKind::Slave if flags & FILE_INFO_NO_CRC != 0 => 0,
        FileKind::Appender | FileKind::Slave => ctx.store.content_crc(&name).await?,
    };
    let source_ip = match fields.source {
        Source::Ip(ip) => ip.to_string(),
        Source::Id(id) => ctx.members.ip_of(&id.to_string()).unwrap_or_default(),
    };
    Ok(FileInfoReply {
        file_size: stat.size,
        create_timestamp: stat.mtime,
        crc32,
        source_ip,
    }
    .encode())
}
