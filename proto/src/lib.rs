//! The FastDFS 6.x wire format, shared by both ends of every fdfs-rs connection.
//!
//! This crate knows bytes, not disks or placement policy: the packet header and its bounded
//! decoding ([`header`], [`conn`]), command and status codes ([`cmd`], [`status`]), the
//! fixed-width field encodings ([`field`]), typed request and response bodies
//! ([`tracker_msg`], [`storage_msg`]), file IDs and remote file names ([`file_id`], [`name`]),
//! metadata ([`metadata`]) and the unit strings used by configs ([`units`]).
//!
//! Everything follows `shared/spec/fastdfs-wire.md`; section letters in comments refer to it.

pub mod acl;
pub mod auth;
pub mod cmd;
pub mod conn;
pub mod error;
pub mod field;
pub mod file_id;
pub mod header;
pub mod health_msg;
#[cfg(feature = "server")]
pub mod logging;
#[cfg(feature = "server")]
pub mod memory;
pub mod metadata;
pub mod name;
#[cfg(feature = "server")]
pub mod sample_budget;
pub mod scrub_msg;
#[cfg(feature = "server")]
pub mod server;
pub mod stat;
pub mod status;
pub mod storage_msg;
pub mod sync_msg;
pub mod tracker_msg;
pub mod units;

pub use error::ProtoError;
pub use header::{Header, HEADER_LEN};

/// Version string we report where FastDFS reports its own (`char[8]`).
pub const VERSION: &str = "6.16.1";

/// Width of group name fields in requests and replies (B).
pub const GROUP_NAME_LEN: usize = 16;
/// Width of group name fields in stat structures and the join body (B, O.16).
pub const GROUP_NAME_STAT_LEN: usize = 17;
/// Width of storage id fields.
pub const STORAGE_ID_LEN: usize = 16;
/// Width of the extension field of uploads.
pub const EXT_LEN: usize = 6;
/// Width of the slave prefix field.
pub const PREFIX_LEN: usize = 16;
/// Width of the version field.
pub const VERSION_LEN: usize = 8;
/// The response IP width (B.1) we use: FastDFS's default `W = 16`.
pub const IP_WIDTH: usize = 16;
/// The IP width used by join bodies and storage briefs (always 46).
pub const IP_WIDTH_LONG: usize = 46;
/// Longest logical file name accepted in any request (A.5: < 128).
pub const MAX_NAME_LEN: usize = 127;
/// Default tracker port.
pub const DEFAULT_TRACKER_PORT: u16 = 22122;
/// Default storage port.
pub const DEFAULT_STORAGE_PORT: u16 = 23000;
