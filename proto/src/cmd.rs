//! Command codes (C). Only the codes fdfs-rs sends or answers are named here.

macro_rules! commands {
    ($($name:ident = $code:expr),* $(,)?) => {
        /// A FastDFS command byte.
        #[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
        #[repr(u8)]
        pub enum Command { $($name = $code),* }

        impl TryFrom<u8> for Command {
            type Error = u8;
            fn try_from(code: u8) -> Result<Self, u8> {
                match code {
                    $($code => Ok(Command::$name),)*
                    other => Err(other),
                }
            }
        }
    };
}

commands! {
    ReportServerId = 9,
    UploadFile = 11,
    DeleteFile = 12,
    SetMetadata = 13,
    DownloadFile = 14,
    GetMetadata = 15,
    SyncCreateFile = 16,
    SyncDeleteFile = 17,
    SyncUpdateFile = 18,
    SyncCreateLink = 19,
    CreateLink = 20,
    UploadSlaveFile = 21,
    QueryFileInfo = 22,
    UploadAppenderFile = 23,
    AppendFile = 24,
    SyncAppendFile = 25,
    ModifyFile = 34,
    SyncModifyFile = 35,
    TruncateFile = 36,
    SyncTruncateFile = 37,
    RegenerateAppenderFilename = 38,
    SyncRenameFile = 40,
    StorageChangeStatus = 59,
    StorageGetMyIp = 60,
    FetchStorageIds = 69,
    GetServerId = 70,
    GetStorageStatus = 71,
    ParameterReq = 75,
    ReportStatus = 76,
    ChangelogReq = 77,
    ReportIpChanged = 78,
    SyncDestQuery = 79,
    StorageJoin = 81,
    Quit = 82,
    StorageBeat = 83,
    StorageReportDiskUsage = 84,
    ReplicaChg = 85,
    SyncSrcReq = 86,
    SyncDestReq = 87,
    SyncNotify = 88,
    SyncReport = 89,
    ListOneGroup = 90,
    ListAllGroups = 91,
    ListStorage = 92,
    DeleteStorage = 93,
    GetLeader = 95,
    Resp = 100,
    QueryStoreWithoutGroupOne = 101,
    QueryFetchOne = 102,
    QueryUpdate = 103,
    QueryStoreWithGroupOne = 104,
    QueryFetchAll = 105,
    QueryStoreWithoutGroupAll = 106,
    QueryStoreWithGroupAll = 107,
    DeleteGroup = 108,
    ActiveTest = 111,
    // fdfs-rs's own tracker command, see crate::health_msg
    StorageHealth = 200,
    // fdfs-rs's own storage admin command, see crate::scrub_msg
    Scrub = 220,
    // fdfs-rs extension, cluster-secret authentication (crate::auth): far above every
    // FastDFS code (the highest is 111)
    AuthChallenge = 240,
    AuthProof = 241,
}

impl Command {
    pub fn code(self) -> u8 {
        self as u8
    }
}

/// The command byte of every response.
pub const RESP: u8 = Command::Resp as u8;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn codes_round_trip() {
        for code in 0..=255u8 {
            if let Ok(cmd) = Command::try_from(code) {
                assert_eq!(cmd.code(), code);
            }
        }
        assert_eq!(Command::try_from(11), Ok(Command::UploadFile));
        assert_eq!(Command::try_from(201), Err(201));
    }
}
