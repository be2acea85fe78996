//! A FastDFS client: upload, download, delete, metadata and file info against fdfs-rs or
//! FastDFS 6.x trackers and storages, plus the `fdfs` command-line tool.
//!
//! Every operation asks a tracker which storage to use (trying the configured trackers in
//! turn) and then talks to that storage, as FastDFS clients do. File bodies are streamed in
//! both directions with bounded buffers; connections are pooled per server and reused only
//! after an exchange that completed cleanly.
//!
//! ```no_run
//! use fdfs_client::{Client, ClientConfig, MetadataOp, UploadOptions};
//!
//! # async fn demo() -> Result<(), fdfs_client::ClientError> {
//! let client = Client::new(ClientConfig::from_file("client.toml")?)?;
//! let id = client.upload_file("photo.jpg", &UploadOptions::default()).await?;
//! client
//!     .set_metadata(&id, &[("width".into(), "160".into())], MetadataOp::Overwrite)
//!     .await?;
//! let bytes = client.download_file(&id, "copy.jpg").await?;
//! println!("{id}: {bytes} bytes");
//! # Ok(())
//! # }
//! ```
//!
//! Modules: [`ClientConfig`] (`config`), [`ClientError`] (`error`), the connection and its
//! pool (`conn`, `pool`), the tracker and storage commands (`tracker`, `storage`), the
//! [`Client`] facade (`client`, with appender and slave files in `appender`, and operations
//! on one given storage in `direct`), and the load generator behind `fdfs bench` ([`bench`]).

#[macro_use]
mod macros;
mod appender;
pub mod bench;
mod client;
mod config;
mod conn;
mod direct;
mod error;
pub mod migrate;
mod pool;
pub mod status;
mod storage;
mod tracker;
mod url;

pub use client::{Client, FileInfo, UploadOptions};
pub use config::ClientConfig;
pub use direct::storage_addr;
pub use error::ClientError;
pub use fdfs_proto::file_id::FileId;
pub use fdfs_proto::name::{FileKind, Source};
pub use fdfs_proto::storage_msg::MetadataOp;
pub use fdfs_proto::tracker_msg::{QueryStoreAllReply, QueryStoreReply, StorageAddr};
pub use url::{http_url, sign_token, token_ts};

/// Parses a file ID (`GROUP/Mxx/XX/YY/NAME`), with an error that shows the expected shape.
///
/// ```
/// let id = fdfs_client::parse_file_id("group1/M00/00/00/fwAAH2sDbeGAVWzkAAAABjY6MCA275.txt")?;
/// assert_eq!(id.group, "group1");
/// assert!(fdfs_client::parse_file_id("group1/nonsense").is_err());
/// # Ok::<(), fdfs_client::ClientError>(())
/// ```
pub fn parse_file_id(text: &str) -> Result<FileId, ClientError> {
    FileId::parse(text).map_err(|err| ClientError::invalid_file_id(text, &err))
}
