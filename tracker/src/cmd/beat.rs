//! STORAGE_BEAT (83): heartbeat with disk usage and, optionally, the storage's counters; the
//! reply always carries the member list.

use std::net::SocketAddr;
use std::time::Instant;

use fdfs_proto::field::FieldReader;
use fdfs_proto::stat::StatBlock;
use fdfs_proto::tracker_msg::{BeatReply, BeatRequest};
use fdfs_proto::{ProtoError, IP_WIDTH_LONG};

use super::CmdError;
use crate::cluster::BeatError;
use crate::service::{unix_now, Tracker};

/// Most store paths a beat may report.
const MAX_PATHS: usize = 256;
/// A count, 256 store paths of {total, free}, a stat block and the listen IP.
pub const MAX_BODY_LEN: usize = 8 + MAX_PATHS * 16 + StatBlock::LEN + IP_WIDTH_LONG;

/// A decoded BEAT body.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Beat {
    pub request: BeatRequest,
    pub stat: Option<StatBlock>,
    /// The IP the storage listens on (empty: all addresses); `None` when not sent.
    pub listen_ip: Option<String>,
}

/// Decodes a BEAT body:
///
/// ```text
/// offset      size    field
/// 0           8       int64 n: number of store paths (0..=256)
/// 8           16 × n  per store path: int64 total_bytes, int64 free_bytes
///                     (bytes 0 .. 8+16n are exactly `fdfs_proto::tracker_msg::BeatRequest`)
/// 8 + 16n     348     optional: the storage's stat block (E.3, `fdfs_proto::stat::StatBlock`):
///                     int32 × 3 connection counters (alloc, current, max), then the 42 int64
///                     counters of E.3 in order; the last two (last_synced_timestamp,
///                     last_heart_beat_time) are set by the tracker and sent as 0
/// 8 + 16n + 348  46   optional, only after the stat block (fdfs-rs): char[46] the IP the
///                     storage listens on, empty when it listens on all addresses; the
///                     tracker compares it with the connection's IP (address mismatch)
/// ```
///
/// So the body is `8 + 16n` bytes (no counters), `8 + 16n + 348` or `8 + 16n + 348 + 46`
/// bytes; any other length is EINVAL.
pub fn decode(body: &[u8]) -> Result<Beat, ProtoError> {
    let count = FieldReader::new(body).i64()?;
    let count = usize::try_from(count)
        .ok()
        .filter(|c| *c <= MAX_PATHS)
        .ok_or_else(|| ProtoError::invalid("store path count", count.to_string()))?;
    let usage_len = 8 + 16 * count;
    let (usage, rest) = body.split_at(usage_len.min(body.len()));
    let (stat, listen_ip) = match rest.len() {
        0 => (None, None),
        StatBlock::LEN => (Some(StatBlock::decode(rest)?), None),
        len if len == StatBlock::LEN + IP_WIDTH_LONG => {
            let (stat, ip) = rest.split_at(StatBlock::LEN);
            let ip = FieldReader::new(ip).fixed_str(IP_WIDTH_LONG, "listen ip")?;
            (Some(StatBlock::decode(stat)?), Some(ip.to_string()))
        }
        _ => {
            return Err(ProtoError::BadLength {
                what: "beat",
                len: body.len() as u64,
            })
        }
    };
    Ok(Beat {
        request: BeatRequest::decode(usage)?,
        stat,
        listen_ip,
    })
}

pub fn handle(tracker: &Tracker, body: &[u8], peer: SocketAddr) -> Result<Vec<u8>, CmdError> {
    let mut cluster = tracker.cluster();
    // Only a joined connection may beat; that is checked before the body is looked at.
    if cluster.session(peer).is_none() {
        return Err(BeatError::NotJoined.into());
    }
    let beat = decode(body)?;
    let members = cluster.report_beat(
        peer,
        beat.request.paths,
        beat.stat,
        Instant::now(),
        unix_now(),
    )?;
    if let Some(ip) = &beat.listen_ip {
        cluster.note_listen_ip(peer, ip);
    }
    Ok(BeatReply {
        members: Some(members),
    }
    .encode())
}

#[cfg(test)]
mod tests {
    use fdfs_proto::tracker_msg::PathUsage;

    use super::*;

    fn usage(n: usize) -> BeatRequest {
        BeatRequest {
            paths: vec![
                PathUsage {
                    total_bytes: 100,
                    free_bytes: 40,
                };
                n
            ],
        }
    }

    #[test]
    fn usage_only_and_with_counters() {
        let plain = usage(2).encode();
        assert_eq!(plain.len(), 40);
        assert_eq!(
            decode(&plain).unwrap(),
            Beat {
                request: usage(2),
                stat: None,
                listen_ip: None,
            }
        );
        let stat = StatBlock {
            connection_current_count: 2,
            success_upload_count: 5,
            ..StatBlock::default()
        };
        let mut body = plain.clone();
        body.extend_from_slice(&stat.encode());
        assert_eq!(body.len(), 40 + 348);
        assert_eq!(decode(&body).unwrap().stat, Some(stat));
        // No paths, counters only.
        let mut body = usage(0).encode();
        body.extend_from_slice(&stat.encode());
        assert_eq!(decode(&body).unwrap().stat, Some(stat));
        // the listen IP comes only after the counters
        let mut ip = [0u8; 46];
        ip[..8].copy_from_slice(b"10.0.0.7");
        body.extend_from_slice(&ip);
        let beat = decode(&body).unwrap();
        assert_eq!(beat.stat, Some(stat));
        assert_eq!(beat.listen_ip.as_deref(), Some("10.0.0.7"));
        let mut without_counters = usage(1).encode();
        without_counters.extend_from_slice(&ip);
        assert!(decode(&without_counters).is_err());
    }

    #[test]
    fn bad_lengths_and_counts() {
        let plain = usage(1).encode();
        assert!(decode(&plain[..20]).is_err());
        assert!(decode(&plain[..4]).is_err());
        assert!(decode(&[]).is_err());
        let mut long = plain.clone();
        long.extend_from_slice(&[0; 347]);
        assert!(decode(&long).is_err());
        long.extend_from_slice(&[0; 2]);
        assert!(decode(&long).is_err());
        let mut negative = plain.clone();
        negative[..8].copy_from_slice(&(-1i64).to_be_bytes());
        assert!(decode(&negative).is_err());
        let mut huge = plain.clone();
        huge[..8].copy_from_slice(&257i64.to_be_bytes());
        assert!(decode(&huge).is_err());
        let max = usage(256).encode();
        let mut body = max.clone();
        body.extend_from_slice(&StatBlock::default().encode());
        body.extend_from_slice(&[0; IP_WIDTH_LONG]);
        assert_eq!(body.len(), MAX_BODY_LEN);
        assert_eq!(decode(&body).unwrap().listen_ip.as_deref(), Some(""));
    }
}
