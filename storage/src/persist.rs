//! Small state files under `<base_path>/data/`, always replaced atomically (temp + rename) so a
//! crash leaves either the old or the new content, never a torn file.

use std::io::{self, Write};
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

/// Writes `content` to `path` through a sibling temp file and a rename (blocking).
pub fn write_atomic(path: &Path, content: &[u8], fsync: bool) -> io::Result<()> {
    let mut tmp_name = path.as_os_str().to_owned();
    tmp_name.push(".tmp");
    let tmp = PathBuf::from(tmp_name);
    {
        let mut file = std::fs::File::create(&tmp)?;
        file.write_all(content)?;
        if fsync {
            file.sync_all()?;
        }
    }
    std::fs::rename(&tmp, path)?;
    if fsync {
        if let Some(dir) = path.parent() {
            sync_dir(dir)?;
        }
    }
    Ok(())
}

/// Makes a rename or link inside `dir` durable.
pub fn sync_dir(dir: &Path) -> io::Result<()> {
    std::fs::File::open(dir)?.sync_all()
}

/// Reads a TOML state file; `None` when it does not exist yet.
pub fn read_toml<T: for<'de> Deserialize<'de>>(path: &Path) -> io::Result<Option<T>> {
    match std::fs::read_to_string(path) {
        Ok(text) => toml::from_str(&text).map(Some).map_err(|err| {
            io::Error::new(
                io::ErrorKind::InvalidData,
                format!("{}: {err}", path.display()),
            )
        }),
        Err(err) if err.kind() == io::ErrorKind::NotFound => Ok(None),
        Err(err) => Err(err),
    }
}

pub fn write_toml<T: Serialize>(path: &Path, value: &T) -> io::Result<()> {
    let text = toml::to_string(value).map_err(io::Error::other)?;
    write_atomic(path, text.as_bytes(), true)
}

#[derive(Debug, Serialize, Deserialize)]
struct JoinState {
    join_time: i64,
}

/// The unix time of this storage's first start, created on first call and kept afterwards
/// (`<base_path>/data/storage_join.toml`); reported in every JOIN (K.3).
pub fn load_or_init_join_time(base_path: &Path, now: i64) -> io::Result<i64> {
    let dir = base_path.join("data");
    std::fs::create_dir_all(&dir)?;
    let path = dir.join("storage_join.toml");
    if let Some(state) = read_toml::<JoinState>(&path)? {
        return Ok(state.join_time);
    }
    write_toml(&path, &JoinState { join_time: now })?;
    Ok(now)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn join_time_is_kept_across_restarts() {
        let dir = tempfile::tempdir().unwrap();
        assert_eq!(load_or_init_join_time(dir.path(), 1000).unwrap(), 1000);
        assert_eq!(load_or_init_join_time(dir.path(), 2000).unwrap(), 1000);
        assert!(!dir.path().join("data/storage_join.toml.tmp").exists());
    }

    #[test]
    fn corrupt_state_is_an_error() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::create_dir_all(dir.path().join("data")).unwrap();
        std::fs::write(
            dir.path().join("data/storage_join.toml"),
            "join_time = \"x\"",
        )
        .unwrap();
        assert!(load_or_init_join_time(dir.path(), 1).is_err());
    }
}
