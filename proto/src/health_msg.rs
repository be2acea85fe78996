//! STORAGE_HEALTH (fdfs-rs command 200, tracker): what the tracker knows about each storage
//! beyond the 6.16 list replies (90/91/92), whose layouts have no room for it and must stay
//! byte-compatible: the storage's clock offset, the address it says it listens on, another
//! storage registered at the same address, and how far every peer's changes reached it.
//!
//! The request body is empty. A FastDFS tracker answers the unknown code with EINVAL (A.2) and
//! keeps the connection, so a client can ask and fall back to the list replies alone.
//!
//! Reply body:
//!
//! ```text
//! int64       tracker unix time when the reply was built
//! int32       n: number of storage records
//! n records:
//!   char[16]  group
//!   char[16]  storage id
//!   u8        1 if a clock offset was measured, else 0
//!   int64     clock offset in seconds: storage clock − tracker clock, at its last SYNC_REPORT
//!   char[46]  IP the storage says it listens on (empty: all addresses)
//!   char[16]  id of another storage the tracker has at the same ip:port (empty: none)
//!   int32     m: number of peer records
//!   m records (one per storage whose changes this one receives):
//!     char[16]  source storage id
//!     int64     source's binlog records not yet confirmed by this storage
//!     int64     age in seconds of the oldest of them (0 when caught up)
//!     int64     tracker unix time of the source's report
//! ```

use crate::error::ProtoError;
use crate::field::{put_fixed, put_i32, put_i64, FieldReader};
use crate::{GROUP_NAME_LEN, IP_WIDTH_LONG, STORAGE_ID_LEN};

/// Replication lag of one storage behind one source storage.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct PeerLag {
    pub source_id: String,
    pub records_behind: i64,
    pub seconds_behind: i64,
    pub reported: i64,
}

impl PeerLag {
    const LEN: usize = STORAGE_ID_LEN + 8 + 8 + 8;
}

/// The health facts of one storage.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct StorageHealth {
    pub group: String,
    pub id: String,
    /// Storage clock minus tracker clock, seconds; `None` until measured.
    pub clock_skew: Option<i64>,
    /// The IP the storage listens on, as it reported it; empty when it listens on all.
    pub listen_ip: String,
    /// Another storage registered at the same ip:port; empty when none.
    pub same_address_as: String,
    pub peers: Vec<PeerLag>,
}

impl StorageHealth {
    const FIXED_LEN: usize =
        GROUP_NAME_LEN + STORAGE_ID_LEN + 1 + 8 + IP_WIDTH_LONG + STORAGE_ID_LEN + 4;
}

/// The whole STORAGE_HEALTH reply.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct HealthReport {
    pub tracker_time: i64,
    pub storages: Vec<StorageHealth>,
}

/// A count field that must be non-negative and fit in what is left of the body.
fn count(
    reader: &mut FieldReader<'_>,
    item_len: usize,
    what: &'static str,
) -> Result<usize, ProtoError> {
    let n = reader.i32()?;
    usize::try_from(n)
        .ok()
        .filter(|n| n.saturating_mul(item_len) <= reader.remaining())
        .ok_or_else(|| ProtoError::invalid(what, n.to_string()))
}

impl HealthReport {
    pub fn encode(&self) -> Vec<u8> {
        let mut out = Vec::new();
        put_i64(&mut out, self.tracker_time);
        put_i32(&mut out, self.storages.len() as i32);
        for s in &self.storages {
            put_fixed(&mut out, s.group.as_bytes(), GROUP_NAME_LEN);
            put_fixed(&mut out, s.id.as_bytes(), STORAGE_ID_LEN);
            out.push(u8::from(s.clock_skew.is_some()));
            put_i64(&mut out, s.clock_skew.unwrap_or(0));
            put_fixed(&mut out, s.listen_ip.as_bytes(), IP_WIDTH_LONG);
            put_fixed(&mut out, s.same_address_as.as_bytes(), STORAGE_ID_LEN);
            put_i32(&mut out, s.peers.len() as i32);
            for p in &s.peers {
                put_fixed(&mut out, p.source_id.as_bytes(), STORAGE_ID_LEN);
                put_i64(&mut out, p.records_behind);
                put_i64(&mut out, p.seconds_behind);
                put_i64(&mut out, p.reported);
            }
        }
        out
    }

    pub fn decode(body: &[u8]) -> Result<Self, ProtoError> {
        let mut reader = FieldReader::new(body);
        let tracker_time = reader.i64()?;
        let n = count(&mut reader, StorageHealth::FIXED_LEN, "storage count")?;
        let mut storages = Vec::with_capacity(n);
        for _ in 0..n {
            let group = reader.fixed_str(GROUP_NAME_LEN, "group name")?.to_string();
            let id = reader.fixed_str(STORAGE_ID_LEN, "storage id")?.to_string();
            let known = match reader.u8()? {
                0 => false,
                1 => true,
                other => return Err(ProtoError::invalid("clock flag", other.to_string())),
            };
            let skew = reader.i64()?;
            let listen_ip = reader.fixed_str(IP_WIDTH_LONG, "listen ip")?.to_string();
            let same_address_as = reader.fixed_str(STORAGE_ID_LEN, "storage id")?.to_string();
            let m = count(&mut reader, PeerLag::LEN, "peer count")?;
            let mut peers = Vec::with_capacity(m);
            for _ in 0..m {
                peers.push(PeerLag {
                    source_id: reader.fixed_str(STORAGE_ID_LEN, "storage id")?.to_string(),
                    records_behind: reader.i64()?,
                    seconds_behind: reader.i64()?,
                    reported: reader.i64()?,
                });
            }
            storages.push(StorageHealth {
                group,
                id,
                clock_skew: known.then_some(skew),
                listen_ip,
                same_address_as,
                peers,
            });
        }
        reader.finish("storage health")?;
        Ok(HealthReport {
            tracker_time,
            storages,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample() -> HealthReport {
        HealthReport {
            tracker_time: 1_700_000_000,
            storages: vec![
                StorageHealth {
                    group: "group1".into(),
                    id: "100001".into(),
                    clock_skew: Some(-3),
                    listen_ip: "10.0.0.7".into(),
                    same_address_as: String::new(),
                    peers: vec![PeerLag {
                        source_id: "100002".into(),
                        records_behind: 12,
                        seconds_behind: 4,
                        reported: 1_699_999_999,
                    }],
                },
                StorageHealth {
                    group: "group1".into(),
                    id: "100002".into(),
                    same_address_as: "100003".into(),
                    ..StorageHealth::default()
                },
            ],
        }
    }

    #[test]
    fn round_trip_and_layout() {
        let report = sample();
        let body = report.encode();
        assert_eq!(
            body.len(),
            8 + 4 + 2 * StorageHealth::FIXED_LEN + PeerLag::LEN
        );
        // the flag byte of the first record, after group and id
        assert_eq!(body[12 + 32], 1);
        assert_eq!(HealthReport::decode(&body).unwrap(), report);
        let empty = HealthReport::default();
        assert_eq!(HealthReport::decode(&empty.encode()).unwrap(), empty);
    }

    #[test]
    fn bad_bodies_are_errors() {
        let body = sample().encode();
        for len in 0..body.len() {
            assert!(HealthReport::decode(&body[..len]).is_err(), "prefix {len}");
        }
        let mut long = body.clone();
        long.push(0);
        assert!(HealthReport::decode(&long).is_err());
        let mut flag = body.clone();
        flag[12 + 32] = 2;
        assert!(HealthReport::decode(&flag).is_err());
        // counts that promise more than the body holds are refused before allocating
        let mut huge = body.clone();
        huge[8..12].copy_from_slice(&i32::MAX.to_be_bytes());
        assert!(HealthReport::decode(&huge).is_err());
        let mut negative = body;
        negative[8..12].copy_from_slice(&(-1i32).to_be_bytes());
        assert!(HealthReport::decode(&negative).is_err());
    }
}
