//! Per-peer mark files (L.5): `<base_path>/data/sync/<peer id>.mark`, how far a peer has
//! confirmed our binlog and for which of its data generations. Replaced atomically; a stale
//! mark only means records are sent again, which receivers take idempotently.

use std::io;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use super::binlog::Position;

#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Mark {
    /// Next record to send: binlog file index and offset.
    pub binlog_index: u32,
    pub binlog_offset: u64,
    /// Sequence number of the last record the peer confirmed (0 = none).
    pub acked_seq: u64,
    /// Watermark of that record.
    pub watermark: u32,
    /// The peer's data generation the position is valid for (0 = never connected).
    pub peer_generation: u64,
    /// Records sent and confirmed since the mark was created, and how many were skipped.
    pub synced_records: u64,
    pub skipped_records: u64,
}

impl Mark {
    pub fn position(&self) -> Position {
        Position {
            index: self.binlog_index,
            offset: self.binlog_offset,
        }
    }

    /// Back to the start of the binlog for a peer with new data.
    pub fn restart(&mut self, generation: u64) {
        *self = Mark {
            peer_generation: generation,
            ..Mark::default()
        };
    }
}

pub fn path(dir: &Path, peer_id: &str) -> PathBuf {
    dir.join(format!("{peer_id}.mark"))
}

/// The peer's mark, or a fresh one (start of the binlog) if there is none.
pub fn load(dir: &Path, peer_id: &str) -> io::Result<Mark> {
    Ok(crate::persist::read_toml(&path(dir, peer_id))?.unwrap_or_default())
}

pub fn save(dir: &Path, peer_id: &str, mark: &Mark) -> io::Result<()> {
    crate::persist::write_toml(&path(dir, peer_id), mark)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn marks_round_trip_and_default_to_the_start() {
        let dir = tempfile::tempdir().unwrap();
        assert_eq!(load(dir.path(), "100002").unwrap(), Mark::default());
        let mark = Mark {
            binlog_index: 2,
            binlog_offset: 2712,
            acked_seq: 43,
            watermark: 1_795_386_966,
            peer_generation: i64::MAX as u64,
            synced_records: 40,
            skipped_records: 3,
        };
        save(dir.path(), "100002", &mark).unwrap();
        assert_eq!(load(dir.path(), "100002").unwrap(), mark);
        assert_eq!(mark.position().offset, 2712);
        let mut restarted = mark.clone();
        restarted.restart(9);
        assert_eq!(restarted.position(), Position::default());
        assert_eq!(restarted.peer_generation, 9);
        assert_eq!(restarted.acked_seq, 0);
    }
}
