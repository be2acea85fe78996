//! Which `data/XX/YY/` directory a new file goes to (I.2).
//!
//! Round robin keeps (high, low, count) and moves to the next directory after
//! `file_distribute_rotate_count` files; the position is saved in
//! `<base_path>/data/storage_stat.toml` each time the directory changes and on shutdown, so a
//! restart continues where it stopped (at most one directory's worth of files off). Hash mode
//! derives the directory from the PJW hash of the provisional name.

use std::io;
use std::path::{Path, PathBuf};
use std::sync::Mutex;

use serde::{Deserialize, Serialize};

use crate::persist;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum DistributeMode {
    RoundRobin { rotate_count: u32 },
    Hash,
}

/// Round-robin position, named as in FastDFS's `storage_stat.dat` (I.5).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct DistState {
    pub dist_path_index_high: u32,
    pub dist_path_index_low: u32,
    pub dist_write_file_count: u32,
}

#[derive(Debug)]
pub struct Distributor {
    mode: DistributeMode,
    subdir_count: u32,
    state: Mutex<DistState>,
    path: PathBuf,
    /// Serialises saves so an older position never overwrites a newer one.
    save_lock: Mutex<()>,
}

/// The state file of a storage.
pub fn state_path(base_path: &Path) -> PathBuf {
    base_path.join("data").join("storage_stat.toml")
}

impl Distributor {
    /// Loads the saved position (blocking). Out-of-range values (after a change of
    /// `subdir_count_per_path`) restart from 00/00.
    pub fn load(path: PathBuf, mode: DistributeMode, subdir_count: u32) -> io::Result<Self> {
        let mut state: DistState = persist::read_toml(&path)?.unwrap_or_default();
        if state.dist_path_index_high >= subdir_count || state.dist_path_index_low >= subdir_count {
            state = DistState::default();
        }
        Ok(Distributor {
            mode,
            subdir_count,
            state: Mutex::new(state),
            path,
            save_lock: Mutex::new(()),
        })
    }

    /// The directory for the next file. `provisional` is the 27-character provisional name
    /// used by hash mode. Returns `(high, low, moved)`; `moved` asks the caller to [`save`].
    ///
    /// [`save`]: Distributor::save
    pub fn next(&self, provisional: &str) -> (u8, u8, bool) {
        match self.mode {
            DistributeMode::Hash => {
                let n = fdfs_proto::name::pjw_hash(provisional.as_bytes()) as u32 & 0xFFFF;
                let high = (n >> 8) % self.subdir_count;
                let low = (n & 0xFF) % self.subdir_count;
                (high as u8, low as u8, false)
            }
            DistributeMode::RoundRobin { rotate_count } => {
                let mut state = self.state.lock().unwrap_or_else(|e| e.into_inner());
                let chosen = (
                    state.dist_path_index_high as u8,
                    state.dist_path_index_low as u8,
                );
                state.dist_write_file_count += 1;
                let mut moved = false;
                if state.dist_write_file_count >= rotate_count {
                    moved = true;
                    state.dist_write_file_count = 0;
                    state.dist_path_index_low += 1;
                    if state.dist_path_index_low >= self.subdir_count {
                        state.dist_path_index_low = 0;
                        state.dist_path_index_high += 1;
                        if state.dist_path_index_high >= self.subdir_count {
                            state.dist_path_index_high = 0;
                        }
                    }
                }
                (chosen.0, chosen.1, moved)
            }
        }
    }

    pub fn current(&self) -> DistState {
        *self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Saves the current position (blocking).
    pub fn save(&self) -> io::Result<()> {
        let _guard = self.save_lock.lock().unwrap_or_else(|e| e.into_inner());
        let state = self.current();
        persist::write_toml(&self.path, &state)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    proptest! {
        #[test]
        fn each_directory_gets_rotate_count_files_in_order(subdirs in 1u32..6, rotate in 1u32..5, files in 0usize..200) {
            let dir = tempfile::tempdir().unwrap();
            let dist = Distributor::load(
                dir.path().join("s.toml"),
                DistributeMode::RoundRobin { rotate_count: rotate },
                subdirs,
            )
            .unwrap();
            for i in 0..files {
                let (high, low, moved) = dist.next("");
                let slot = (i / rotate as usize) % (subdirs * subdirs) as usize;
                prop_assert_eq!(
                    (u32::from(high), u32::from(low)),
                    (slot as u32 / subdirs, slot as u32 % subdirs)
                );
                prop_assert_eq!(moved, (i + 1) % rotate as usize == 0);
            }
        }
    }

    #[test]
    fn round_robin_rotates_and_wraps() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::create_dir_all(dir.path().join("data")).unwrap();
        let path = state_path(dir.path());
        let dist = Distributor::load(
            path.clone(),
            DistributeMode::RoundRobin { rotate_count: 2 },
            2,
        )
        .unwrap();
        let seq: Vec<(u8, u8)> = (0..10)
            .map(|_| {
                let (h, l, _) = dist.next("");
                (h, l)
            })
            .collect();
        assert_eq!(
            seq,
            [
                (0, 0),
                (0, 0),
                (0, 1),
                (0, 1),
                (1, 0),
                (1, 0),
                (1, 1),
                (1, 1),
                (0, 0),
                (0, 0)
            ]
        );
        // one more file, then save and reload: continue in the same directory
        assert_eq!(dist.next(""), (0, 1, false));
        dist.save().unwrap();
        let again =
            Distributor::load(path, DistributeMode::RoundRobin { rotate_count: 2 }, 2).unwrap();
        assert_eq!(again.next(""), (0, 1, true));
        assert_eq!(again.next(""), (1, 0, false));
    }

    #[test]
    fn moved_is_reported_on_directory_change() {
        let dir = tempfile::tempdir().unwrap();
        let dist = Distributor::load(
            dir.path().join("state.toml"),
            DistributeMode::RoundRobin { rotate_count: 3 },
            256,
        )
        .unwrap();
        let moved: Vec<bool> = (0..6).map(|_| dist.next("").2).collect();
        assert_eq!(moved, [false, false, true, false, false, true]);
    }

    #[test]
    fn out_of_range_state_restarts() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("state.toml");
        persist::write_toml(
            &path,
            &DistState {
                dist_path_index_high: 200,
                dist_path_index_low: 3,
                dist_write_file_count: 1,
            },
        )
        .unwrap();
        let dist =
            Distributor::load(path, DistributeMode::RoundRobin { rotate_count: 100 }, 16).unwrap();
        assert_eq!(dist.current(), DistState::default());
    }

    #[test]
    fn hash_mode_uses_pjw() {
        let dir = tempfile::tempdir().unwrap();
        let dist = Distributor::load(dir.path().join("s.toml"), DistributeMode::Hash, 256).unwrap();
        // PJW("fwAAH2sDbeGAVWzkAAAABjY6MCA") = 180771281 = 0x0AC659D1 → n = 0x59D1
        assert_eq!(
            dist.next("fwAAH2sDbeGAVWzkAAAABjY6MCA"),
            (0x59, 0xD1, false)
        );
        let small = Distributor::load(dir.path().join("s.toml"), DistributeMode::Hash, 16).unwrap();
        assert_eq!(
            small.next("fwAAH2sDbeGAVWzkAAAABjY6MCA"),
            (0x59 % 16, 0xD1 % 16, false)
        );
    }
}
