//! Group and storage stat structures of the list commands (E.1–E.3).
//!
//! LIST_ONE_GROUP (90) and LIST_ALL_GROUPS (91) reply with [`GroupStat`] records (113 bytes),
//! LIST_STORAGE (92) with [`StorageStat`] records (487 bytes with the classic IP width W = 16,
//! 517 with W = 46). Every storage stat embeds the 348-byte [`StatBlock`] of counters, which
//! fdfs-rs storages also append to their BEAT body. These are the 6.15/6.16 layouts; the
//! legacy ones of E.5 are not produced.

use crate::error::ProtoError;
use crate::field::{put_fixed, put_i32, put_i64, FieldReader};
use crate::{GROUP_NAME_STAT_LEN, IP_WIDTH, IP_WIDTH_LONG, STORAGE_ID_LEN, VERSION_LEN};

/// `rw_mode` of a storage that serves reads and writes (E.2).
pub const RW_MODE_BOTH: u8 = 6;

macro_rules! stat_block {
    (
        connections: [$($(#[$cdoc:meta])* $conn:ident),* $(,)?],
        counters: [$($(#[$doc:meta])* $counter:ident),* $(,)?] $(,)?
    ) => {
        /// The 348-byte stat block (E.3): three int32 connection counters, then 42 int64
        /// counters. Counters count operations where the storage was the source (replicated
        /// operations only show in the sync byte counters).
        #[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
        pub struct StatBlock {
            $($(#[$cdoc])* pub $conn: i32,)*
            $($(#[$doc])* pub $counter: i64,)*
        }

        impl StatBlock {
            /// Every field name, in wire order: the three connection counters first.
            pub const FIELD_NAMES: &'static [&'static str] =
                &[$(stringify!($conn),)* $(stringify!($counter),)*];

            /// Every field with its name, in wire order (connection counters widened).
            pub fn fields(&self) -> Vec<(&'static str, i64)> {
                vec![
                    $((stringify!($conn), i64::from(self.$conn)),)*
                    $((stringify!($counter), self.$counter),)*
                ]
            }

            /// Sets the field called `name`. Fails for an unknown name or a connection counter
            /// value outside int32.
            pub fn set(&mut self, name: &str, value: i64) -> Result<(), ProtoError> {
                match name {
                    $(stringify!($conn) => {
                        self.$conn = i32::try_from(value).map_err(|_| {
                            ProtoError::invalid("stat block field", format!("{name} = {value} exceeds int32"))
                        })?;
                    })*
                    $(stringify!($counter) => self.$counter = value,)*
                    _ => {
                        return Err(ProtoError::invalid(
                            "stat block field",
                            format!("unknown field {name}"),
                        ))
                    }
                }
                Ok(())
            }

            pub fn encode_into(&self, out: &mut Vec<u8>) {
                $(put_i32(out, self.$conn);)*
                $(put_i64(out, self.$counter);)*
            }

            pub fn encode(&self) -> Vec<u8> {
                let mut out = Vec::with_capacity(Self::LEN);
                self.encode_into(&mut out);
                out
            }

            /// Reads one block from `reader` (which must hold at least [`Self::LEN`] bytes).
            pub fn read(reader: &mut FieldReader<'_>) -> Result<Self, ProtoError> {
                Ok(StatBlock {
                    $($conn: reader.i32()?,)*
                    $($counter: reader.i64()?,)*
                })
            }
        }

        const _: () = {
            let conns = [$(stringify!($conn)),*].len();
            let counters = [$(stringify!($counter)),*].len();
            assert!(conns == 3 && counters == 42 && conns * 4 + counters * 8 == StatBlock::LEN);
        };
    };
}

stat_block! {
    connections: [
        /// Connections the storage has accepted since it started.
        connection_alloc_count,
        /// Connections open now.
        connection_current_count,
        /// Most connections open at once.
        connection_max_count,
    ],
    counters: [
        total_upload_count,
        success_upload_count,
        total_append_count,
        success_append_count,
        total_modify_count,
        success_modify_count,
        total_truncate_count,
        success_truncate_count,
        total_set_meta_count,
        success_set_meta_count,
        total_delete_count,
        success_delete_count,
        total_download_count,
        success_download_count,
        total_get_meta_count,
        success_get_meta_count,
        total_create_link_count,
        success_create_link_count,
        total_delete_link_count,
        success_delete_link_count,
        total_upload_bytes,
        success_upload_bytes,
        total_append_bytes,
        success_append_bytes,
        total_modify_bytes,
        success_modify_bytes,
        total_download_bytes,
        success_download_bytes,
        total_sync_in_bytes,
        success_sync_in_bytes,
        total_sync_out_bytes,
        success_sync_out_bytes,
        total_file_open_count,
        success_file_open_count,
        total_file_read_count,
        success_file_read_count,
        total_file_write_count,
        success_file_write_count,
        /// Unix time of the last upload, delete or metadata change done as the source.
        last_source_update,
        /// Unix time of the last change received through replication.
        last_sync_update,
        /// Set by the tracker (J.4); 0 in a beat.
        last_synced_timestamp,
        /// Set by the tracker; 0 in a beat.
        last_heart_beat_time,
    ],
}

impl StatBlock {
    pub const LEN: usize = 348;

    /// Decodes a block of exactly [`Self::LEN`] bytes.
    pub fn decode(body: &[u8]) -> Result<Self, ProtoError> {
        if body.len() != Self::LEN {
            return Err(ProtoError::BadLength {
                what: "stat block",
                len: body.len() as u64,
            });
        }
        Self::read(&mut FieldReader::new(body))
    }
}

/// One group of LIST_ONE_GROUP / LIST_ALL_GROUPS (E.1, 113 bytes).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct GroupStat {
    pub name: String,
    /// Disk total of the writable storage with the least free space, in MB.
    pub total_mb: i64,
    /// Free MB of that same storage.
    pub free_mb: i64,
    /// `reserved_storage_space` in MB.
    pub reserved_mb: i64,
    pub trunk_free_mb: i64,
    /// Storages known in the group, in every state.
    pub storage_count: i64,
    pub storage_port: i64,
    pub readable_server_count: i64,
    pub writable_server_count: i64,
    /// Round-robin cursor over the writable storages.
    pub current_write_server: i64,
    pub store_path_count: i64,
    pub subdir_count_per_path: i64,
    /// -1 when trunk files are not used.
    pub current_trunk_file_id: i64,
}

impl GroupStat {
    pub const LEN: usize = GROUP_NAME_STAT_LEN + 12 * 8;

    pub fn encode_into(&self, out: &mut Vec<u8>) {
        put_fixed(out, self.name.as_bytes(), GROUP_NAME_STAT_LEN);
        for value in [
            self.total_mb,
            self.free_mb,
            self.reserved_mb,
            self.trunk_free_mb,
            self.storage_count,
            self.storage_port,
            self.readable_server_count,
            self.writable_server_count,
            self.current_write_server,
            self.store_path_count,
            self.subdir_count_per_path,
            self.current_trunk_file_id,
        ] {
            put_i64(out, value);
        }
    }

    pub fn encode(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(Self::LEN);
        self.encode_into(&mut out);
        out
    }

    /// Decodes one record of exactly [`Self::LEN`] bytes.
    pub fn decode(body: &[u8]) -> Result<Self, ProtoError> {
        if body.len() != Self::LEN {
            return Err(ProtoError::BadLength {
                what: "group stat",
                len: body.len() as u64,
            });
        }
        let mut reader = FieldReader::new(body);
        Ok(GroupStat {
            name: reader
                .fixed_str(GROUP_NAME_STAT_LEN, "group name")?
                .to_string(),
            total_mb: reader.i64()?,
            free_mb: reader.i64()?,
            reserved_mb: reader.i64()?,
            trunk_free_mb: reader.i64()?,
            storage_count: reader.i64()?,
            storage_port: reader.i64()?,
            readable_server_count: reader.i64()?,
            writable_server_count: reader.i64()?,
            current_write_server: reader.i64()?,
            store_path_count: reader.i64()?,
            subdir_count_per_path: reader.i64()?,
            current_trunk_file_id: reader.i64()?,
        })
    }

    /// Decodes a LIST_ALL_GROUPS reply: records back to back, possibly none.
    pub fn decode_list(body: &[u8]) -> Result<Vec<Self>, ProtoError> {
        if !body.len().is_multiple_of(Self::LEN) {
            return Err(ProtoError::BadLength {
                what: "group stat list",
                len: body.len() as u64,
            });
        }
        body.chunks_exact(Self::LEN).map(Self::decode).collect()
    }
}

/// One storage of LIST_STORAGE (E.2): 487 bytes with W = 16, 517 with W = 46.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct StorageStat {
    /// A J.1 status value.
    pub status: u8,
    /// 6 = read+write, 4 = read only, 2 = write only, 0 = none.
    pub rw_mode: u8,
    pub id: String,
    pub ip: String,
    /// Storage it was (or is being) fully synced from; empty if none.
    pub src_id: String,
    pub version: String,
    /// Unix time of the storage's first join.
    pub join_time: i64,
    /// Unix time the storage process started.
    pub up_time: i64,
    pub total_mb: i64,
    pub free_mb: i64,
    pub reserved_mb: i64,
    pub upload_priority: i64,
    pub store_path_count: i64,
    pub subdir_count_per_path: i64,
    pub current_write_path: i64,
    pub storage_port: i64,
    pub stat: StatBlock,
    pub if_trunk_server: bool,
}

impl StorageStat {
    /// Record length with the classic IP width W = 16.
    pub const LEN: usize = Self::len_for(IP_WIDTH);
    /// Record length with W = 46.
    pub const LEN_LONG: usize = Self::len_for(IP_WIDTH_LONG);

    /// The record length for IP width `ip_width` (W).
    pub const fn len_for(ip_width: usize) -> usize {
        2 + STORAGE_ID_LEN + ip_width + STORAGE_ID_LEN + VERSION_LEN + 10 * 8 + StatBlock::LEN + 1
    }

    /// Appends the record with IP width `ip_width` (W: 16 or 46).
    pub fn encode_into(&self, out: &mut Vec<u8>, ip_width: usize) {
        out.push(self.status);
        out.push(self.rw_mode);
        put_fixed(out, self.id.as_bytes(), STORAGE_ID_LEN);
        put_fixed(out, self.ip.as_bytes(), ip_width);
        put_fixed(out, self.src_id.as_bytes(), STORAGE_ID_LEN);
        put_fixed(out, self.version.as_bytes(), VERSION_LEN);
        for value in [
            self.join_time,
            self.up_time,
            self.total_mb,
            self.free_mb,
            self.reserved_mb,
            self.upload_priority,
            self.store_path_count,
            self.subdir_count_per_path,
            self.current_write_path,
            self.storage_port,
        ] {
            put_i64(out, value);
        }
        self.stat.encode_into(out);
        out.push(u8::from(self.if_trunk_server));
    }

    /// The record with the default IP width W = 16.
    pub fn encode(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(Self::LEN);
        self.encode_into(&mut out, IP_WIDTH);
        out
    }

    /// Decodes one record of 487 (W = 16) or 517 (W = 46) bytes.
    pub fn decode(body: &[u8]) -> Result<Self, ProtoError> {
        let ip_width = match body.len() {
            Self::LEN => IP_WIDTH,
            Self::LEN_LONG => IP_WIDTH_LONG,
            len => {
                return Err(ProtoError::BadLength {
                    what: "storage stat",
                    len: len as u64,
                })
            }
        };
        let mut reader = FieldReader::new(body);
        let status = reader.u8()?;
        let rw_mode = reader.u8()?;
        let id = reader.fixed_str(STORAGE_ID_LEN, "storage id")?.to_string();
        let ip = reader.fixed_str(ip_width, "ip address")?.to_string();
        let src_id = reader.fixed_str(STORAGE_ID_LEN, "source id")?.to_string();
        let version = reader.fixed_str(VERSION_LEN, "version")?.to_string();
        Ok(StorageStat {
            status,
            rw_mode,
            id,
            ip,
            src_id,
            version,
            join_time: reader.i64()?,
            up_time: reader.i64()?,
            total_mb: reader.i64()?,
            free_mb: reader.i64()?,
            reserved_mb: reader.i64()?,
            upload_priority: reader.i64()?,
            store_path_count: reader.i64()?,
            subdir_count_per_path: reader.i64()?,
            current_write_path: reader.i64()?,
            storage_port: reader.i64()?,
            stat: StatBlock::read(&mut reader)?,
            if_trunk_server: reader.u8()? != 0,
        })
    }

    /// Decodes a LIST_STORAGE reply, detecting the record size by divisibility as clients do
    /// (487 is tried first). An empty body is an empty list.
    pub fn decode_list(body: &[u8]) -> Result<Vec<Self>, ProtoError> {
        let size = if body.len().is_multiple_of(Self::LEN) {
            Self::LEN
        } else if body.len().is_multiple_of(Self::LEN_LONG) {
            Self::LEN_LONG
        } else {
            return Err(ProtoError::BadLength {
                what: "storage stat list",
                len: body.len() as u64,
            });
        };
        body.chunks_exact(size).map(Self::decode).collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn be64(body: &[u8], offset: usize) -> i64 {
        i64::from_be_bytes(body[offset..offset + 8].try_into().unwrap())
    }

    fn be32(body: &[u8], offset: usize) -> i32 {
        i32::from_be_bytes(body[offset..offset + 4].try_into().unwrap())
    }

    /// A block whose every field holds its own wire index + 1, so offsets are visible.
    fn numbered_block() -> StatBlock {
        let mut block = StatBlock::default();
        for (index, name) in StatBlock::FIELD_NAMES.iter().enumerate() {
            block.set(name, index as i64 + 1).unwrap();
        }
        block
    }

    #[test]
    fn sizes_match_the_spec() {
        assert_eq!(StatBlock::LEN, 348);
        assert_eq!(StatBlock::FIELD_NAMES.len(), 45);
        assert_eq!(GroupStat::LEN, 113);
        assert_eq!(StorageStat::LEN, 487);
        assert_eq!(StorageStat::LEN_LONG, 517);
        assert_eq!(StatBlock::default().encode().len(), 348);
        assert_eq!(GroupStat::default().encode().len(), 113);
        assert_eq!(StorageStat::default().encode().len(), 487);
        let mut long = Vec::new();
        StorageStat::default().encode_into(&mut long, IP_WIDTH_LONG);
        assert_eq!(long.len(), 517);
    }

    #[test]
    fn stat_block_offsets() {
        let block = numbered_block();
        let body = block.encode();
        assert_eq!(be32(&body, 0), 1); // connection alloc_count
        assert_eq!(be32(&body, 4), 2);
        assert_eq!(be32(&body, 8), 3); // connection max_count
        assert_eq!(be64(&body, 12), 4); // total_upload_count
        assert_eq!(block.total_upload_count, 4);
        assert_eq!(be64(&body, 92), block.total_delete_count);
        assert_eq!(be64(&body, 108), block.total_download_count);
        assert_eq!(be64(&body, 172), block.total_upload_bytes);
        assert_eq!(be64(&body, 236), block.total_sync_in_bytes);
        assert_eq!(be64(&body, 268), block.total_file_open_count);
        assert_eq!(be64(&body, 316), block.last_source_update);
        assert_eq!(be64(&body, 324), block.last_sync_update);
        assert_eq!(be64(&body, 332), block.last_synced_timestamp);
        assert_eq!(be64(&body, 340), block.last_heart_beat_time);
        assert_eq!(block.last_heart_beat_time, 45);
        assert_eq!(StatBlock::decode(&body).unwrap(), block);
        assert!(StatBlock::decode(&body[..347]).is_err());
    }

    #[test]
    fn set_checks_names_and_widths() {
        let mut block = StatBlock::default();
        assert!(block.set("no_such_counter", 1).is_err());
        assert!(block
            .set("connection_max_count", i64::from(i32::MAX) + 1)
            .is_err());
        block.set("success_delete_count", 9).unwrap();
        assert_eq!(block.success_delete_count, 9);
        let fields = block.fields();
        assert_eq!(fields.len(), 45);
        assert_eq!(fields[14], ("success_delete_count", 9));
    }

    #[test]
    fn group_stat_offsets() {
        let stat = GroupStat {
            name: "group1".into(),
            total_mb: 258019,
            free_mb: 79762,
            reserved_mb: 2580,
            trunk_free_mb: 0,
            storage_count: 3,
            storage_port: 23000,
            readable_server_count: 2,
            writable_server_count: 2,
            current_write_server: 1,
            store_path_count: 2,
            subdir_count_per_path: 256,
            current_trunk_file_id: -1,
        };
        let body = stat.encode();
        assert_eq!(&body[..7], b"group1\0");
        assert!(body[6..17].iter().all(|&b| b == 0));
        assert_eq!(be64(&body, 17), 258019);
        assert_eq!(be64(&body, 25), 79762);
        assert_eq!(be64(&body, 33), 2580);
        assert_eq!(be64(&body, 49), 3);
        assert_eq!(be64(&body, 57), 23000);
        assert_eq!(be64(&body, 65), 2);
        assert_eq!(be64(&body, 81), 1);
        assert_eq!(be64(&body, 89), 2);
        assert_eq!(be64(&body, 97), 256);
        assert_eq!(be64(&body, 105), -1);
        assert_eq!(GroupStat::decode(&body).unwrap(), stat);
        // A 16-character name fills the field but keeps its terminating NUL (char[17]).
        let long = GroupStat {
            name: "abcdefghijklmnop".into(),
            ..stat
        };
        let body = long.encode();
        assert_eq!(body[16], 0);
        assert_eq!(GroupStat::decode(&body).unwrap().name, "abcdefghijklmnop");
        assert!(GroupStat::decode(&body[..112]).is_err());
        assert_eq!(GroupStat::decode_list(&[]).unwrap(), vec![]);
        assert!(GroupStat::decode_list(&[0; 105]).is_err());
    }

    #[test]
    fn storage_stat_offsets() {
        let stat = StorageStat {
            status: 7,
            rw_mode: RW_MODE_BOTH,
            id: "100001".into(),
            ip: "127.0.0.1".into(),
            src_id: "100002".into(),
            version: "6.16.1".into(),
            join_time: 1_700_000_000,
            up_time: 1_700_000_100,
            total_mb: 1000,
            free_mb: 500,
            reserved_mb: 10,
            upload_priority: 10,
            store_path_count: 2,
            subdir_count_per_path: 256,
            current_write_path: 1,
            storage_port: 23000,
            stat: numbered_block(),
            if_trunk_server: false,
        };
        let body = stat.encode();
        assert_eq!((body[0], body[1]), (7, 6));
        assert_eq!(&body[2..8], b"100001");
        assert_eq!(&body[18..27], b"127.0.0.1");
        assert_eq!(&body[34..40], b"100002");
        assert_eq!(&body[50..56], b"6.16.1");
        assert_eq!(be64(&body, 58), 1_700_000_000);
        assert_eq!(be64(&body, 66), 1_700_000_100);
        assert_eq!(be64(&body, 74), 1000);
        assert_eq!(be64(&body, 82), 500);
        assert_eq!(be64(&body, 90), 10);
        assert_eq!(be64(&body, 106), 2);
        assert_eq!(be64(&body, 114), 256);
        assert_eq!(be64(&body, 122), 1);
        assert_eq!(be64(&body, 130), 23000);
        assert_eq!(&body[138..486], numbered_block().encode().as_slice());
        assert_eq!(body[486], 0);
        assert_eq!(StorageStat::decode(&body).unwrap(), stat);

        let mut long = Vec::new();
        stat.encode_into(&mut long, IP_WIDTH_LONG);
        assert_eq!(&long[18..27], b"127.0.0.1");
        assert_eq!(&long[64..70], b"100002");
        assert_eq!(be64(&long, 160), 23000);
        assert_eq!(StorageStat::decode(&long).unwrap(), stat);
        assert!(StorageStat::decode(&long[..500]).is_err());

        let mut two = body.clone();
        two.extend_from_slice(&body);
        assert_eq!(StorageStat::decode_list(&two).unwrap().len(), 2);
        assert_eq!(StorageStat::decode_list(&long).unwrap(), vec![stat]);
        assert!(StorageStat::decode_list(&two[..600]).is_err());
        assert!(StorageStat::decode_list(&[]).unwrap().is_empty());
    }

    fn text(max: usize) -> impl Strategy<Value = String> {
        proptest::string::string_regex(&format!("[a-z0-9.]{{0,{max}}}")).unwrap()
    }

    fn block() -> impl Strategy<Value = StatBlock> {
        (
            proptest::array::uniform3(any::<i32>()),
            proptest::collection::vec(any::<i64>(), 42),
        )
            .prop_map(|(conns, counters)| {
                let mut block = StatBlock::default();
                let values = conns.iter().map(|&c| i64::from(c)).chain(counters);
                for (name, value) in StatBlock::FIELD_NAMES.iter().zip(values) {
                    block.set(name, value).unwrap();
                }
                block
            })
    }

    proptest! {
        #[test]
        fn stat_block_round_trips(block in block()) {
            prop_assert_eq!(StatBlock::decode(&block.encode()).unwrap(), block);
        }

        #[test]
        fn group_stat_round_trips(
            name in text(16),
            values in proptest::array::uniform12(any::<i64>()),
        ) {
            let [total_mb, free_mb, reserved_mb, trunk_free_mb, storage_count, storage_port,
                readable_server_count, writable_server_count, current_write_server,
                store_path_count, subdir_count_per_path, current_trunk_file_id] = values;
            let stat = GroupStat {
                name, total_mb, free_mb, reserved_mb, trunk_free_mb, storage_count,
                storage_port, readable_server_count, writable_server_count,
                current_write_server, store_path_count, subdir_count_per_path,
                current_trunk_file_id,
            };
            let body = stat.encode();
            prop_assert_eq!(body.len(), GroupStat::LEN);
            prop_assert_eq!(GroupStat::decode(&body).unwrap(), stat);
        }

        #[test]
        fn storage_stat_round_trips(
            status in any::<u8>(),
            rw_mode in any::<u8>(),
            id in text(16),
            ip in text(15),
            src_id in text(16),
            version in text(8),
            values in proptest::array::uniform10(any::<i64>()),
            stat in block(),
            if_trunk_server in any::<bool>(),
            long in any::<bool>(),
        ) {
            let [join_time, up_time, total_mb, free_mb, reserved_mb, upload_priority,
                store_path_count, subdir_count_per_path, current_write_path, storage_port] = values;
            let record = StorageStat {
                status, rw_mode, id, ip, src_id, version, join_time, up_time, total_mb,
                free_mb, reserved_mb, upload_priority, store_path_count, subdir_count_per_path,
                current_write_path, storage_port, stat, if_trunk_server,
            };
            let width = if long { IP_WIDTH_LONG } else { IP_WIDTH };
            let mut body = Vec::new();
            record.encode_into(&mut body, width);
            prop_assert_eq!(body.len(), StorageStat::len_for(width));
            prop_assert_eq!(StorageStat::decode(&body).unwrap(), record);
        }
    }
}
