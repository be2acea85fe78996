//! SCRUB (fdfs-rs command 220, storage): start a scrub of a storage's files or read how the
//! current or last one went. A scrub re-reads every normal file, checks its size and CRC32
//! against the ones recorded in its name (H.2) and repairs a damaged copy from a peer.
//!
//! Request body: one byte, [`ScrubAction`] (0 = status only, 1 = start). Reply body
//! ([`ScrubReport`], 80 bytes):
//!
//! ```text
//! u8      1 while a scrub runs
//! u8      1 if this request started it
//! char[6] reserved (zero)
//! int64   unix time the current or last scrub started (0: never)
//! int64   unix time it finished (0: running or never)
//! int64   files checked (size and CRC32 compared)
//! int64   files found damaged
//! int64   damaged files repaired from a peer
//! int64   damaged files no peer had a good copy of
//! int64   files skipped (appender and slave files: their names record no CRC32 of their
//!         content; links; files that vanished while being read)
//! int64   bytes read
//! ```
//!
//! A FastDFS storage answers the unknown code with EINVAL.

use crate::error::ProtoError;
use crate::field::{put_i64, FieldReader};

/// The fdfs-rs command code of SCRUB.
pub const SCRUB: u8 = crate::cmd::Command::Scrub as u8;

/// What a SCRUB request asks for.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ScrubAction {
    Status = 0,
    Start = 1,
}

impl ScrubAction {
    pub fn encode(self) -> Vec<u8> {
        vec![self as u8]
    }

    pub fn decode(body: &[u8]) -> Result<Self, ProtoError> {
        match body {
            [0] => Ok(ScrubAction::Status),
            [1] => Ok(ScrubAction::Start),
            [_] => Err(ProtoError::invalid("scrub action", "unknown action")),
            _ => Err(ProtoError::invalid(
                "scrub request",
                format!("body of {} bytes, expected 1", body.len()),
            )),
        }
    }
}

/// The counts of the current or last scrub.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct ScrubReport {
    pub running: bool,
    /// This request started the scrub.
    pub started_now: bool,
    pub started_at: i64,
    pub finished_at: i64,
    pub checked: i64,
    pub corrupt: i64,
    pub repaired: i64,
    pub unrepairable: i64,
    pub skipped: i64,
    pub bytes: i64,
}

impl ScrubReport {
    pub const LEN: usize = 8 + 8 * 8;

    pub fn encode(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(Self::LEN);
        out.push(u8::from(self.running));
        out.push(u8::from(self.started_now));
        out.extend_from_slice(&[0u8; 6]);
        for value in [
            self.started_at,
            self.finished_at,
            self.checked,
            self.corrupt,
            self.repaired,
            self.unrepairable,
            self.skipped,
            self.bytes,
        ] {
            put_i64(&mut out, value);
        }
        out
    }

    pub fn decode(body: &[u8]) -> Result<Self, ProtoError> {
        if body.len() != Self::LEN {
            return Err(ProtoError::invalid(
                "scrub report",
                format!("body of {} bytes, expected {}", body.len(), Self::LEN),
            ));
        }
        let mut reader = FieldReader::new(body);
        let running = reader.u8()? != 0;
        let started_now = reader.u8()? != 0;
        reader.bytes(6)?;
        Ok(ScrubReport {
            running,
            started_now,
            started_at: reader.i64()?,
            finished_at: reader.i64()?,
            checked: reader.i64()?,
            corrupt: reader.i64()?,
            repaired: reader.i64()?,
            unrepairable: reader.i64()?,
            skipped: reader.i64()?,
            bytes: reader.i64()?,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn report_round_trips() {
        let report = ScrubReport {
            running: true,
            started_now: false,
            started_at: 1_700_000_000,
            finished_at: 0,
            checked: 12,
            corrupt: 3,
            repaired: 2,
            unrepairable: 1,
            skipped: 4,
            bytes: 1 << 40,
        };
        let bytes = report.encode();
        assert_eq!(bytes.len(), ScrubReport::LEN);
        assert_eq!(ScrubReport::decode(&bytes).unwrap(), report);
        assert!(ScrubReport::decode(&bytes[1..]).is_err());
        assert!(ScrubReport::decode(&[]).is_err());
    }

    #[test]
    fn actions() {
        for action in [ScrubAction::Status, ScrubAction::Start] {
            assert_eq!(ScrubAction::decode(&action.encode()).unwrap(), action);
        }
        assert!(ScrubAction::decode(&[2]).is_err());
        assert!(ScrubAction::decode(&[]).is_err());
        assert!(ScrubAction::decode(&[1, 0]).is_err());
    }
}
