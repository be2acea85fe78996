//! The 10-byte packet header (A.1).

use crate::error::ProtoError;

pub const HEADER_LEN: usize = 10;

/// `pkg_len` (int64 BE, body length), `cmd`, `status`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Header {
    pub pkg_len: i64,
    pub cmd: u8,
    pub status: u8,
}

impl Header {
    pub fn request(cmd: u8, body_len: u64) -> Self {
        Header {
            pkg_len: body_len as i64,
            cmd,
            status: 0,
        }
    }

    pub fn response(status: u8, body_len: u64) -> Self {
        Header {
            pkg_len: body_len as i64,
            cmd: crate::cmd::RESP,
            status,
        }
    }

    pub fn encode(&self) -> [u8; HEADER_LEN] {
        let mut out = [0u8; HEADER_LEN];
        out[..8].copy_from_slice(&self.pkg_len.to_be_bytes());
        out[8] = self.cmd;
        out[9] = self.status;
        out
    }

    pub fn decode(bytes: &[u8; HEADER_LEN]) -> Self {
        let mut len = [0u8; 8];
        len.copy_from_slice(&bytes[..8]);
        Header {
            pkg_len: i64::from_be_bytes(len),
            cmd: bytes[8],
            status: bytes[9],
        }
    }

    /// The body length, refusing the negative lengths a hostile peer can send.
    pub fn body_len(&self) -> Result<u64, ProtoError> {
        u64::try_from(self.pkg_len).map_err(|_| ProtoError::NegativeLength(self.pkg_len))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn query_store_request_bytes() {
        // P.1
        assert_eq!(
            Header::request(101, 0).encode(),
            [0, 0, 0, 0, 0, 0, 0, 0, 0x65, 0]
        );
        // P.1 reply header: len 40, cmd 100
        assert_eq!(
            Header::response(0, 40).encode(),
            [0, 0, 0, 0, 0, 0, 0, 0x28, 0x64, 0]
        );
    }

    #[test]
    fn negative_length_is_refused() {
        let header = Header::decode(&[0xff; 10]);
        assert!(matches!(
            header.body_len(),
            Err(ProtoError::NegativeLength(-1))
        ));
    }

    proptest! {
        #[test]
        fn round_trip(len in any::<i64>(), cmd in any::<u8>(), status in any::<u8>()) {
            let header = Header { pkg_len: len, cmd, status };
            prop_assert_eq!(Header::decode(&header.encode()), header);
        }
    }
}
