//! Per-file locks: operations that change an existing file (append, modify, truncate,
//! regenerate, delete, metadata updates) hold the lock of its logical name, so they never
//! interleave. Entries live only while someone holds or waits for them.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use tokio::sync::OwnedMutexGuard;

#[derive(Debug, Default)]
pub struct FileLocks {
    map: Mutex<HashMap<String, Arc<tokio::sync::Mutex<()>>>>,
}

/// Held while a file is being changed; released (and the entry dropped if unused) on drop.
#[derive(Debug)]
pub struct FileGuard<'a> {
    locks: &'a FileLocks,
    key: String,
    guard: Option<OwnedMutexGuard<()>>,
}

impl FileLocks {
    pub async fn lock(&self, key: &str) -> FileGuard<'_> {
        let mutex = {
            let mut map = self.map.lock().unwrap_or_else(|e| e.into_inner());
            map.entry(key.to_string()).or_default().clone()
        };
        let guard = mutex.lock_owned().await;
        FileGuard {
            locks: self,
            key: key.to_string(),
            guard: Some(guard),
        }
    }

    /// Number of names currently locked or waited for.
    pub fn len(&self) -> usize {
        self.map.lock().unwrap_or_else(|e| e.into_inner()).len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

impl Drop for FileGuard<'_> {
    fn drop(&mut self) {
        drop(self.guard.take());
        let mut map = self.locks.map.lock().unwrap_or_else(|e| e.into_inner());
        // Only the map holds the mutex now: nobody holds or waits for it.
        if map
            .get(&self.key)
            .is_some_and(|m| Arc::strong_count(m) == 1)
        {
            map.remove(&self.key);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[tokio::test]
    async fn same_name_is_exclusive_other_names_are_not() {
        let locks = Arc::new(FileLocks::default());
        let first = locks.lock("a").await;
        let _other = locks.lock("b").await;
        let waiter = {
            let locks = locks.clone();
            tokio::spawn(async move {
                let _g = locks.lock("a").await;
            })
        };
        tokio::task::yield_now().await;
        assert!(!waiter.is_finished());
        drop(first);
        tokio::time::timeout(Duration::from_secs(5), waiter)
            .await
            .unwrap()
            .unwrap();
        assert_eq!(locks.len(), 1);
        drop(_other);
        assert!(locks.is_empty());
    }
}
