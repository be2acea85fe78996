//! How each benchmarked operation reaches a storage: through a tracker, as FastDFS clients do
//! (query, then the storage command), or straight to one pinned storage. Also the upload
//! content: a reader over a shared block of random bytes, so no buffer grows with the file
//! size.

use std::io;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use rand::{Rng, RngCore};
use tokio::io::{AsyncRead, ReadBuf};

use crate::{storage_addr, Client, ClientError, FileId};

/// Size of the random block upload content is cut from.
const PAYLOAD_BLOCK: usize = 1 << 20;

/// Where operations go.
#[derive(Clone, Debug)]
pub(crate) struct Route {
    /// `host:port` of the pinned storage; `None` = ask a tracker for every operation.
    pub(crate) storage: Option<String>,
    /// Group to upload to (104 instead of 101); required with a pinned storage.
    pub(crate) group: Option<String>,
    payload: Payload,
}

impl Route {
    pub(crate) fn new(storage: Option<String>, group: Option<String>) -> Self {
        Route {
            storage,
            group,
            payload: Payload::random(),
        }
    }

    /// Uploads `size` bytes; returns the new file and the storage that took it.
    pub(crate) async fn upload(
        &self,
        client: &Client,
        size: u64,
        rng: &mut impl Rng,
    ) -> Result<(FileId, String), ClientError> {
        let reader = self.payload.reader(rng.gen_range(0..PAYLOAD_BLOCK), size);
        match &self.storage {
            Some(addr) => {
                let id = client
                    .upload_reader_to(addr, None, reader, size, "")
                    .await?;
                Ok((id, addr.clone()))
            }
            None => {
                let store = client.query_store(self.group.as_deref()).await?;
                let addr = storage_addr(&store.server);
                let id = client
                    .upload_reader_to(&addr, Some(store.store_path_index), reader, size, "")
                    .await?;
                Ok((id, addr))
            }
        }
    }

    /// Downloads a whole file and discards it; returns its length.
    pub(crate) async fn download(&self, client: &Client, id: &FileId) -> Result<u64, ClientError> {
        let mut sink = tokio::io::sink();
        match &self.storage {
            Some(addr) => client.download_from(addr, id, 0, 0, &mut sink).await,
            None => client.download_to_writer(id, 0, 0, &mut sink).await,
        }
    }

    pub(crate) async fn delete(&self, client: &Client, id: &FileId) -> Result<(), ClientError> {
        match &self.storage {
            Some(addr) => client.delete_from(addr, id).await,
            None => client.delete(id).await,
        }
    }
}

/// A block of random bytes shared by every task.
#[derive(Clone, Debug)]
struct Payload(Arc<[u8]>);

impl Payload {
    fn random() -> Self {
        let mut block = vec![0u8; PAYLOAD_BLOCK];
        rand::thread_rng().fill_bytes(&mut block);
        Payload(block.into())
    }

    /// `size` bytes of the block from `start`, wrapping around: different starts give
    /// different content (and CRCs) without copying the block.
    fn reader(&self, start: usize, size: u64) -> PayloadReader {
        PayloadReader {
            block: self.0.clone(),
            pos: start % self.0.len(),
            remaining: size,
        }
    }
}

struct PayloadReader {
    block: Arc<[u8]>,
    pos: usize,
    remaining: u64,
}

impl AsyncRead for PayloadReader {
    fn poll_read(
        mut self: Pin<&mut Self>,
        _cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = &mut *self;
        let available = this.block.len() - this.pos;
        let n = buf
            .remaining()
            .min(available)
            .min(usize::try_from(this.remaining).unwrap_or(usize::MAX));
        buf.put_slice(&this.block[this.pos..this.pos + n]);
        this.pos = (this.pos + n) % this.block.len();
        this.remaining -= n as u64;
        Poll::Ready(Ok(()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::AsyncReadExt;

    #[tokio::test]
    async fn payload_wraps_and_ends() {
        let payload = Payload((0u8..10).collect::<Vec<u8>>().into());
        let mut out = Vec::new();
        payload.reader(7, 25).read_to_end(&mut out).await.unwrap();
        let want: Vec<u8> = (0..25).map(|i| ((7 + i) % 10) as u8).collect();
        assert_eq!(out, want);
        let mut empty = Vec::new();
        payload.reader(3, 0).read_to_end(&mut empty).await.unwrap();
        assert!(empty.is_empty());
        let block = Payload::random();
        assert_eq!(block.0.len(), PAYLOAD_BLOCK);
        let mut big = Vec::new();
        block
            .reader(PAYLOAD_BLOCK - 1, 3 * PAYLOAD_BLOCK as u64)
            .read_to_end(&mut big)
            .await
            .unwrap();
        assert_eq!(big.len(), 3 * PAYLOAD_BLOCK);
        assert_eq!(big[1..PAYLOAD_BLOCK + 1], block.0[..]);
    }
}
