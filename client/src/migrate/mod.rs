//! Moving an old image tree into the cluster without breaking its URLs.
//!
//! [`import`](import::import) walks a directory, uploads every file (in parallel, resumable:
//! files already imported with the same size and mtime are skipped, changed ones re-uploaded)
//! and records old URL path → file ID in a [`MigrationMap`]; [`verify`](verify::verify)
//! downloads every mapped file again and compares it with the local one. `fdfs-router`
//! answers the old URLs from the same map.
//!
//! Modules: `key` (old URL paths from file paths), `map` (the redb map and in-memory
//! snapshots), `import`, `verify`, `crc` (CRC32 while streaming).

mod crc;
pub mod import;
pub mod key;
pub mod map;
pub mod verify;

pub use import::{import, ImportOptions, ImportReport};
pub use key::{key_for, normalize_prefix};
pub use map::{Entry, MapError, MigrationMap, Record, Snapshot};
pub use verify::{verify, Mismatch, VerifyReport};

use std::path::PathBuf;

use crate::ClientError;

/// Errors of an import or a verification (per-file failures are reported, not raised).
#[derive(Debug, thiserror::Error)]
pub enum MigrateError {
    #[error(transparent)]
    Map(#[from] MapError),
    #[error("cannot {action} {}: {source}", path.display())]
    Io {
        action: &'static str,
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("invalid prefix {0:?}: it must start with / and contain no . or .. segments")]
    Prefix(String),
    #[error("another fdfs import is running on {}", .0.display())]
    Locked(PathBuf),
    #[error(transparent)]
    Client(#[from] ClientError),
    #[error("background task failed: {0}")]
    Task(String),
}
