//! Disk faults at the store level, provoked for real: a write that the file system refuses
//! midway (here EFBIG past the process's file size limit, `RLIMIT_FSIZE`, which a quota's
//! EDQUOT or a full disk's ENOSPC resemble: the kernel stops the write part way) must leave no
//! temp file and no stored file behind, and answer 28.
//!
//! The limit applies to the whole process, so the test runs itself again as a child process
//! with the limit set (and SIGXFSZ ignored, else the kernel kills the writer instead of
//! failing the write).

use std::os::unix::process::CommandExt;
use std::path::Path;

use fdfs_proto::file_id::LogicalName;
use fdfs_proto::units::ReservedSpace;
use fdfs_storage::cmd::{status_of, CmdError};
use fdfs_storage::store::{DistributeMode, NewFile, Store, StoreError, StoreOptions};

const CHILD_ENV: &str = "FDFS_FSIZE_LIMIT_CHILD";
/// The largest file the child may write.
const LIMIT: u64 = 1 << 20;

/// Files in the temp directory and the data directories (subdir count 2).
fn files_in(data: &Path) -> Vec<std::path::PathBuf> {
    let dirs = [".tmp", "00/00", "00/01", "01/00", "01/01"];
    dirs.iter()
        .filter_map(|dir| std::fs::read_dir(data.join(dir)).ok())
        .flat_map(|entries| entries.map(|entry| entry.unwrap().path()))
        .collect()
}

/// What the child checks, with the limit in force.
async fn writes_past_the_limit(dir: &Path) {
    let store = Store::open(StoreOptions {
        base_path: dir.to_path_buf(),
        store_paths: vec![dir.to_path_buf()],
        subdir_count: 2,
        server_id: 100_001,
        fsync: true,
        distribute: DistributeMode::RoundRobin { rotate_count: 100 },
        reserved: ReservedSpace::Bytes(0),
        slave_use_link: false,
        max_io_per_path: 64,
        io_wait: std::time::Duration::from_secs(30),
        journal_max_file: 64 * 1024,
        journal_checkpoint: std::time::Duration::from_secs(1),
    })
    .await
    .unwrap();
    let data = dir.join("data");
    let stored = || files_in(&data);

    // an upload three times the limit: the disk write fails after 1 MiB
    let content = vec![0x5Au8; 3 * LIMIT as usize];
    let req = NewFile {
        store_path: None,
        size: content.len() as u64,
        ext: "bin",
        appender: false,
    };
    let err = store
        .write_new_file(&req, &mut &content[..])
        .await
        .unwrap_err();
    assert!(err.is_no_space(), "{err}");
    assert!(
        matches!(&err, StoreError::Io { source, .. } if source.raw_os_error() == Some(libc::EFBIG)),
        "{err}"
    );
    assert_eq!(status_of(&CmdError::from(err)), 28);
    assert_eq!(
        stored(),
        Vec::<std::path::PathBuf>::new(),
        "nothing is left"
    );

    // the same for a replicated file
    let name = LogicalName::parse("M00/00/01/fwAAH2sDbiiAR31UAAAAAAAAAAA1921179").unwrap();
    let err = store
        .replica_write(
            &name,
            content.len() as u64,
            1_700_000_000,
            &mut &content[..],
            true,
        )
        .await
        .unwrap_err();
    assert!(err.is_no_space(), "{err}");
    assert_eq!(
        stored(),
        Vec::<std::path::PathBuf>::new(),
        "nothing is left"
    );

    // the store goes on: a file below the limit is stored
    let small = vec![7u8; 100_000];
    let req = NewFile {
        size: small.len() as u64,
        ..req
    };
    let name = store.write_new_file(&req, &mut &small[..]).await.unwrap();
    assert_eq!(std::fs::read(store.resolve(&name).unwrap()).unwrap(), small);
    assert_eq!(stored().len(), 1);
}

#[test]
fn a_write_refused_midway_cleans_up_and_answers_28() {
    if let Some(dir) = std::env::var_os(CHILD_ENV) {
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .enable_all()
            .build()
            .unwrap();
        runtime.block_on(writes_past_the_limit(Path::new(&dir)));
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let mut child = std::process::Command::new(std::env::current_exe().unwrap());
    child
        .args([
            "--exact",
            "a_write_refused_midway_cleans_up_and_answers_28",
            "--test-threads=1",
            "--nocapture",
        ])
        .env(CHILD_ENV, dir.path());
    // SAFETY: only async-signal-safe calls between fork and exec (setrlimit, signal).
    unsafe {
        child.pre_exec(|| {
            let limit = libc::rlimit {
                rlim_cur: LIMIT as libc::rlim_t,
                rlim_max: LIMIT as libc::rlim_t,
            };
            if libc::setrlimit(libc::RLIMIT_FSIZE, &limit) != 0 {
                return Err(std::io::Error::last_os_error());
            }
            // an ignored signal stays ignored across exec: the write fails with EFBIG instead
            libc::signal(libc::SIGXFSZ, libc::SIG_IGN);
            Ok(())
        });
    }
    let output = child.output().unwrap();
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(
        output.status.success(),
        "child failed: {}\n{stdout}\n{}",
        output.status,
        String::from_utf8_lossy(&output.stderr)
    );
    // the child really ran the test (and did not filter it away)
    assert!(stdout.contains("1 passed"), "{stdout}");
}
