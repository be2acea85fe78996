//! Store path preparation: `data/XX/YY/` directories (I.1) and the crash sweep of `data/.tmp/`.

use std::io;
use std::path::Path;

use super::{StorePath, TMP_DIR};

/// Creates `data/` and empties its temp directory (blocking). Anything left in `.tmp` is an
/// upload or metadata write cut short by a crash.
pub(super) fn prepare_store_path(root: &Path) -> io::Result<StorePath> {
    let data = root.join("data");
    std::fs::create_dir_all(&data)?;
    let tmp = data.join(TMP_DIR);
    create_if_missing(&tmp)?;
    let swept = sweep(&tmp)?;
    if swept > 0 {
        tracing::info!(path = %tmp.display(), files = swept, "removed leftover temp files");
    }
    Ok(StorePath {
        data,
        tmp,
        health: Default::default(),
        space: Default::default(),
        journal: None,
        small_writer: None,
    })
}

/// Creates the missing `XX/YY` directories whose `XX` is `first`, `first + step`, ...
/// (blocking; several calls with different `first` share the work). Stops early, without
/// error, when `stop` returns true.
pub(super) fn create_subdirs(
    data: &Path,
    subdir_count: u32,
    first: u32,
    step: u32,
    stop: &dyn Fn() -> bool,
) -> io::Result<()> {
    for high in (first..subdir_count).step_by(step.max(1) as usize) {
        if stop() {
            return Ok(());
        }
        let level1 = data.join(format!("{high:02X}"));
        create_if_missing(&level1)?;
        for low in 0..subdir_count {
            create_if_missing(&level1.join(format!("{low:02X}")))?;
        }
    }
    Ok(())
}

pub(super) fn create_if_missing(dir: &Path) -> io::Result<()> {
    match std::fs::create_dir(dir) {
        Err(err) if err.kind() == io::ErrorKind::AlreadyExists => {
            if dir.is_dir() {
                Ok(())
            } else {
                Err(io::Error::new(
                    io::ErrorKind::AlreadyExists,
                    format!("{} exists and is not a directory", dir.display()),
                ))
            }
        }
        other => other,
    }
}

/// Removes everything inside `dir`; returns how many entries went.
fn sweep(dir: &Path) -> io::Result<usize> {
    let mut count = 0;
    for entry in std::fs::read_dir(dir)? {
        let entry = entry?;
        if entry.file_type()?.is_dir() {
            std::fs::remove_dir_all(entry.path())?;
        } else {
            std::fs::remove_file(entry.path())?;
        }
        count += 1;
    }
    Ok(count)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn creates_all_directories_and_sweeps_tmp() {
        let dir = tempfile::tempdir().unwrap();
        let prepared = prepare_store_path(dir.path()).unwrap();
        create_subdirs(&prepared.data, 16, 0, 1, &|| false).unwrap();
        assert_eq!(prepared.data, dir.path().join("data"));
        let level1: Vec<_> = std::fs::read_dir(&prepared.data)
            .unwrap()
            .map(|e| e.unwrap().file_name().into_string().unwrap())
            .filter(|n| n != TMP_DIR)
            .collect();
        assert_eq!(level1.len(), 16);
        assert!(dir.path().join("data/0F/0F").is_dir());
        assert!(dir.path().join("data/0A/00").is_dir());
        assert!(!dir.path().join("data/10").exists());
        assert!(!dir.path().join("data/0a").exists());

        // leftovers of a crash disappear at the next start, stored files stay
        std::fs::write(prepared.tmp.join("upload.123"), b"partial").unwrap();
        std::fs::create_dir(prepared.tmp.join("odd")).unwrap();
        std::fs::write(dir.path().join("data/00/00/kept"), b"x").unwrap();
        prepare_store_path(dir.path()).unwrap();
        assert_eq!(std::fs::read_dir(&prepared.tmp).unwrap().count(), 0);
        assert!(dir.path().join("data/00/00/kept").exists());
    }

    #[test]
    fn full_size_names_and_shared_work() {
        // 256 per level; workers split the first level by first/step (two of them here, each
        // doing only part of its share to keep the test fast)
        let dir = tempfile::tempdir().unwrap();
        let prepared = prepare_store_path(dir.path()).unwrap();
        create_subdirs(&prepared.data, 256, 0, 255, &|| false).unwrap();
        assert!(dir.path().join("data/00/00").is_dir());
        assert!(dir.path().join("data/00/FF").is_dir());
        assert!(dir.path().join("data/FF/FF").is_dir());
        assert!(!dir.path().join("data/01").exists());
        assert_eq!(
            std::fs::read_dir(dir.path().join("data/FF"))
                .unwrap()
                .count(),
            256
        );
        // a second run over existing directories is fine
        create_subdirs(&prepared.data, 256, 255, 256, &|| false).unwrap();
    }

    #[test]
    fn stops_when_asked() {
        let dir = tempfile::tempdir().unwrap();
        let prepared = prepare_store_path(dir.path()).unwrap();
        create_subdirs(&prepared.data, 16, 0, 1, &|| true).unwrap();
        assert!(!dir.path().join("data/00").exists());
    }

    #[test]
    fn a_file_in_place_of_a_directory_is_an_error() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::create_dir_all(dir.path().join("data")).unwrap();
        std::fs::write(dir.path().join("data/00"), b"x").unwrap();
        assert!(create_subdirs(&dir.path().join("data"), 2, 0, 1, &|| false).is_err());
    }
}
