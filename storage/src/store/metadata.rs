//! Metadata sidecars (I.3): `<data file>-m` holding the sorted encoded pairs (G), replaced
//! atomically (temp + rename) and present only while the file has metadata.

use std::io;
use std::path::{Path, PathBuf};

use fdfs_proto::file_id::LogicalName;
use fdfs_proto::metadata;
use fdfs_proto::storage_msg::MetadataOp;
use tokio::io::AsyncWriteExt;

use super::write::TempFile;
use super::{Store, StoreError, MAX_SIDECAR};

pub(crate) fn sidecar_path(file: &Path) -> PathBuf {
    let mut name = file.as_os_str().to_owned();
    name.push("-m");
    PathBuf::from(name)
}

impl Store {
    /// The stored metadata bytes; NotFound if the file or its sidecar is missing (F.6).
    pub async fn get_metadata(&self, name: &LogicalName) -> Result<Vec<u8>, StoreError> {
        let path = self.resolve(name)?;
        // disk calls only from here on: one slot for all of them (`gate`)
        let _slot = self.io_slot(name.store_path()).await?;
        self.require_regular(&path).await?;
        let sidecar = sidecar_path(&path);
        let meta = tokio::fs::metadata(&sidecar)
            .await
            .map_err(StoreError::file("reading metadata status"))?;
        if meta.len() > MAX_SIDECAR {
            return Err(StoreError::Io {
                context: "reading metadata",
                source: io::Error::new(io::ErrorKind::InvalidData, "metadata file too large"),
            });
        }
        tokio::fs::read(&sidecar)
            .await
            .map_err(StoreError::file("reading metadata"))
    }

    /// Applies SET_METADATA (F.5): overwrite or merge, kept sorted; overwrite with nothing
    /// deletes the sidecar; merge with nothing (no valid pair) changes nothing.
    pub async fn set_metadata(
        &self,
        name: &LogicalName,
        op: MetadataOp,
        raw: &[u8],
    ) -> Result<(), StoreError> {
        let path = self.resolve(name)?;
        let _guard = self.locks.lock(&name.to_string()).await;
        // disk calls only from here on: one slot for all of them (`gate`)
        let _slot = self.io_slot(name.store_path()).await?;
        self.require_regular(&path).await?;
        let sidecar = sidecar_path(&path);
        let pairs = metadata::normalize(metadata::decode(raw));
        let stored = match op {
            MetadataOp::Overwrite if pairs.is_empty() => {
                return match tokio::fs::remove_file(&sidecar).await {
                    Err(err) if err.kind() != io::ErrorKind::NotFound => {
                        Err(StoreError::io("deleting metadata")(err))
                    }
                    _ => Ok(()),
                };
            }
            MetadataOp::Overwrite => pairs,
            MetadataOp::Merge if pairs.is_empty() => return Ok(()),
            MetadataOp::Merge => {
                let current = match tokio::fs::read(&sidecar).await {
                    Ok(bytes) => metadata::decode(&bytes),
                    Err(err) if err.kind() == io::ErrorKind::NotFound => Vec::new(),
                    Err(err) => return Err(StoreError::io("reading metadata")(err)),
                };
                metadata::merge(current, pairs)
            }
        };
        self.write_sidecar(name.store_path(), &sidecar, &metadata::encode(&stored))
            .await
    }

    async fn write_sidecar(
        &self,
        index: u8,
        sidecar: &Path,
        bytes: &[u8],
    ) -> Result<(), StoreError> {
        let (tmp, mut file) = TempFile::create(self.tmp_dir(index)?, "meta").await?;
        file.write_all(bytes)
            .await
            .map_err(StoreError::io("writing metadata"))?;
        file.flush()
            .await
            .map_err(StoreError::io("writing metadata"))?;
        if self.options.fsync {
            file.sync_all()
                .await
                .map_err(StoreError::io("syncing metadata"))?;
        }
        drop(file);
        tokio::fs::rename(tmp.path(), sidecar)
            .await
            .map_err(StoreError::io("replacing metadata"))?;
        tmp.remove().await;
        if self.options.fsync {
            if let Some(dir) = sidecar.parent() {
                let (dir, dirs) = (dir.to_path_buf(), self.dirs());
                super::blocking("syncing directory", move || dirs.sync(&dir)).await?;
            }
        }
        Ok(())
    }

    /// NotFound unless `path` is an existing regular file (following links). Client paths
    /// hold a slot of the path's store path around it (never a second one: see `gate`).
    pub(crate) async fn require_regular(
        &self,
        path: &Path,
    ) -> Result<std::fs::Metadata, StoreError> {
        let meta = tokio::fs::metadata(path)
            .await
            .map_err(StoreError::file("reading file status"))?;
        if !meta.is_file() {
            return Err(StoreError::NotRegularFile);
        }
        Ok(meta)
    }
}

#[cfg(test)]
mod tests {
    use super::super::test_support::store_in;
    use super::super::NewFile;
    use super::*;

    #[tokio::test]
    async fn overwrite_merge_delete() {
        let dir = tempfile::tempdir().unwrap();
        let store = store_in(dir.path(), 1, 1).await;
        let req = NewFile {
            store_path: None,
            size: 3,
            ext: "jpg",
            appender: false,
        };
        let name = store.write_new_file(&req, &mut &b"abc"[..]).await.unwrap();

        assert!(matches!(
            store.get_metadata(&name).await,
            Err(StoreError::NotFound)
        ));
        store
            .set_metadata(
                &name,
                MetadataOp::Overwrite,
                b"width\x02160\x01height\x0280\x01author\x02me",
            )
            .await
            .unwrap();
        assert_eq!(
            store.get_metadata(&name).await.unwrap(),
            b"author\x02me\x01height\x0280\x01width\x02160"
        );
        store
            .set_metadata(&name, MetadataOp::Merge, b"zeta\x02z\x01width\x02999")
            .await
            .unwrap();
        assert_eq!(
            store.get_metadata(&name).await.unwrap(),
            b"author\x02me\x01height\x0280\x01width\x02999\x01zeta\x02z"
        );
        store
            .set_metadata(&name, MetadataOp::Merge, b"")
            .await
            .unwrap();
        assert_eq!(
            store.get_metadata(&name).await.unwrap(),
            b"author\x02me\x01height\x0280\x01width\x02999\x01zeta\x02z"
        );
        store
            .set_metadata(&name, MetadataOp::Overwrite, b"a\x021")
            .await
            .unwrap();
        assert_eq!(store.get_metadata(&name).await.unwrap(), b"a\x021");
        let sidecar = sidecar_path(&store.resolve(&name).unwrap());
        assert!(sidecar.exists());
        store
            .set_metadata(&name, MetadataOp::Overwrite, b"")
            .await
            .unwrap();
        assert!(!sidecar.exists());
        assert!(matches!(
            store.get_metadata(&name).await,
            Err(StoreError::NotFound)
        ));
        // bytes without a single pair merge nothing: still no metadata (F.6: 2, not empty)
        store
            .set_metadata(&name, MetadataOp::Merge, b"no separator")
            .await
            .unwrap();
        assert!(!sidecar.exists(), "a merge of no pairs made a sidecar");
        // merge into nothing creates the sidecar
        store
            .set_metadata(&name, MetadataOp::Merge, b"k\x02v")
            .await
            .unwrap();
        assert_eq!(store.get_metadata(&name).await.unwrap(), b"k\x02v");
        assert_eq!(
            std::fs::read_dir(dir.path().join("data/.tmp"))
                .unwrap()
                .count(),
            0
        );

        // deleting the file takes the sidecar along
        store.delete(&name).await.unwrap();
        assert!(!sidecar.exists());
        assert!(matches!(
            store.delete(&name).await,
            Err(StoreError::NotFound)
        ));
        assert!(matches!(
            store
                .set_metadata(&name, MetadataOp::Overwrite, b"a\x02b")
                .await,
            Err(StoreError::NotFound)
        ));
    }

    #[tokio::test]
    async fn directories_are_not_files() {
        let dir = tempfile::tempdir().unwrap();
        let store = store_in(dir.path(), 1, 1).await;
        std::fs::create_dir(dir.path().join("data/00/00/adir")).unwrap();
        let name = LogicalName::parse("M00/00/00/adir").unwrap();
        assert!(matches!(
            store.get_metadata(&name).await,
            Err(StoreError::NotRegularFile)
        ));
        assert!(matches!(
            store.open_read(&name).await,
            Err(StoreError::NotRegularFile)
        ));
        assert!(matches!(
            store.delete(&name).await,
            Err(StoreError::NotRegularFile)
        ));
        let other_path = LogicalName::parse("M01/00/00/adir").unwrap();
        assert!(matches!(
            store.open_read(&other_path).await,
            Err(StoreError::Invalid(_))
        ));
    }
}
