//! Binlog records and their on-disk line format (fdfs-rs's own, modelled on L.1/L.2).
//!
//! One record per line:
//!
//! ```text
//! <crc32:8 hex> <seq> <timestamp> <watermark> <op> <name>[ <extra>...]\n
//! ```
//!
//! The CRC32 covers everything after the first space up to (not including) the newline, so a
//! line cut short by a crash, or damaged on disk, is recognised and never misread. `seq`
//! numbers records from 1 without gaps. `timestamp` is the file's mtime after the change
//! (deletes: the clock). `watermark` is the promise made when the record was written: every
//! file this storage created with an mtime below it has its record at or before this one.
//! Ops use the upper-case letters of L.2; names are logical names (`Mxx/XX/YY/name`), which
//! never contain spaces.

use std::fmt::Write as _;

use fdfs_proto::file_id::LogicalName;

/// Longest line accepted when reading: two names and five numbers fit with room to spare.
pub const MAX_LINE: usize = 512;

/// A change accepted from a client.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Op {
    /// `C name`: a new file (upload, appender, slave content).
    Create { name: String },
    /// `U name`: a file rewritten whole (metadata sidecars, `<name>-m`).
    Update { name: String },
    /// `D name`: a file deleted (a data file takes its sidecar along; `<name>-m` alone when
    /// metadata is cleared).
    Delete { name: String },
    /// `A name offset length`: bytes appended at `offset` (the old size).
    Append {
        name: String,
        offset: u64,
        length: u64,
    },
    /// `M name offset length`: bytes overwritten in place.
    Modify {
        name: String,
        offset: u64,
        length: u64,
    },
    /// `T name old_size new_size`.
    Truncate {
        name: String,
        old_size: u64,
        new_size: u64,
    },
    /// `L link target`: a slave stored as a symbolic link (I.4).
    Link { name: String, target: String },
    /// `R new old`: an appender renamed to a normal name (F.11).
    Rename { name: String, old: String },
}

impl Op {
    /// The name the change is about (the new name of a rename, the link of a link).
    pub fn name(&self) -> &str {
        match self {
            Op::Create { name }
            | Op::Update { name }
            | Op::Delete { name }
            | Op::Append { name, .. }
            | Op::Modify { name, .. }
            | Op::Truncate { name, .. }
            | Op::Link { name, .. }
            | Op::Rename { name, .. } => name,
        }
    }

    fn letter(&self) -> char {
        match self {
            Op::Create { .. } => 'C',
            Op::Update { .. } => 'U',
            Op::Delete { .. } => 'D',
            Op::Append { .. } => 'A',
            Op::Modify { .. } => 'M',
            Op::Truncate { .. } => 'T',
            Op::Link { .. } => 'L',
            Op::Rename { .. } => 'R',
        }
    }
}

/// One binlog record.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Record {
    pub seq: u64,
    pub timestamp: u32,
    pub watermark: u32,
    pub op: Op,
}

/// Why a line is not a record.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum RecordError {
    #[error("line has no newline (cut short)")]
    Unterminated,
    #[error("line longer than {MAX_LINE} bytes")]
    TooLong,
    #[error("checksum mismatch")]
    Checksum,
    #[error("malformed record: {0}")]
    Malformed(String),
}

impl Record {
    /// The line for this record, newline included.
    pub fn encode(&self) -> String {
        let mut payload = format!(
            "{} {} {} {} {}",
            self.seq,
            self.timestamp,
            self.watermark,
            self.op.letter(),
            self.op.name()
        );
        match &self.op {
            Op::Create { .. } | Op::Update { .. } | Op::Delete { .. } => {}
            Op::Append { offset, length, .. } | Op::Modify { offset, length, .. } => {
                let _ = write!(payload, " {offset} {length}");
            }
            Op::Truncate {
                old_size, new_size, ..
            } => {
                let _ = write!(payload, " {old_size} {new_size}");
            }
            Op::Link { target, .. } => {
                let _ = write!(payload, " {target}");
            }
            Op::Rename { old, .. } => {
                let _ = write!(payload, " {old}");
            }
        }
        format!("{:08x} {payload}\n", crc32fast::hash(payload.as_bytes()))
    }

    /// Decodes one line, newline included.
    pub fn decode(line: &[u8]) -> Result<Record, RecordError> {
        let Some(body) = line.strip_suffix(b"\n") else {
            return Err(if line.len() > MAX_LINE {
                RecordError::TooLong
            } else {
                RecordError::Unterminated
            });
        };
        if line.len() > MAX_LINE {
            return Err(RecordError::TooLong);
        }
        let text = std::str::from_utf8(body)
            .map_err(|_| RecordError::Malformed("not valid text".into()))?;
        let (crc, payload) = text
            .split_once(' ')
            .ok_or_else(|| RecordError::Malformed("no checksum".into()))?;
        let crc = (crc.len() == 8 && crc.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f')))
            .then(|| u32::from_str_radix(crc, 16).ok())
            .flatten()
            .ok_or_else(|| RecordError::Malformed(format!("bad checksum field {crc:?}")))?;
        if crc32fast::hash(payload.as_bytes()) != crc {
            return Err(RecordError::Checksum);
        }
        parse_payload(payload)
    }
}

fn parse_payload(payload: &str) -> Result<Record, RecordError> {
    let bad = |what: &str| RecordError::Malformed(format!("{what} in {payload:?}"));
    let mut fields = payload.split(' ');
    let mut number = |what: &str| -> Result<u64, RecordError> {
        fields
            .next()
            .and_then(|f| f.parse::<u64>().ok())
            .ok_or_else(|| bad(what))
    };
    let seq = number("sequence")?;
    let timestamp = u32::try_from(number("timestamp")?).map_err(|_| bad("timestamp"))?;
    let watermark = u32::try_from(number("watermark")?).map_err(|_| bad("watermark"))?;
    let letter = fields.next().ok_or_else(|| bad("op"))?;
    let mut name = |what: &str| -> Result<String, RecordError> {
        let text = fields.next().ok_or_else(|| bad(what))?;
        LogicalName::parse(text).map_err(|err| bad(&format!("{what}: {err}")))?;
        Ok(text.to_string())
    };
    let main = name("name")?;
    let op = match letter {
        "C" => Op::Create { name: main },
        "U" => Op::Update { name: main },
        "D" => Op::Delete { name: main },
        "L" => Op::Link {
            name: main,
            target: name("link target")?,
        },
        "R" => Op::Rename {
            name: main,
            old: name("old name")?,
        },
        "A" | "M" | "T" => {
            let mut more = fields.by_ref().map(|f| f.parse::<u64>().ok());
            let (Some(Some(a)), Some(Some(b))) = (more.next(), more.next()) else {
                return Err(bad("range"));
            };
            match letter {
                "A" => Op::Append {
                    name: main,
                    offset: a,
                    length: b,
                },
                "M" => Op::Modify {
                    name: main,
                    offset: a,
                    length: b,
                },
                _ => Op::Truncate {
                    name: main,
                    old_size: a,
                    new_size: b,
                },
            }
        }
        other => return Err(bad(&format!("unknown op {other:?}"))),
    };
    if fields.next().is_some() {
        return Err(bad("trailing fields"));
    }
    if seq == 0 {
        return Err(bad("sequence 0"));
    }
    Ok(Record {
        seq,
        timestamp,
        watermark,
        op,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    const NAME: &str = "M00/00/00/fwAAH2sDbkqEb2TqAAAAADY6MCA662.txt";

    fn record(op: Op) -> Record {
        Record {
            seq: 42,
            timestamp: 1_795_386_954,
            watermark: 1_795_386_950,
            op,
        }
    }

    #[test]
    fn lines_look_like_the_documented_format() {
        let line = record(Op::Append {
            name: NAME.into(),
            offset: 6,
            length: 6,
        })
        .encode();
        let payload = format!("42 1795386954 1795386950 A {NAME} 6 6");
        assert_eq!(
            line,
            format!("{:08x} {payload}\n", crc32fast::hash(payload.as_bytes()))
        );
    }

    #[test]
    fn every_op_round_trips() {
        let other = "M01/0A/FF/other-m";
        let ops = [
            Op::Create { name: NAME.into() },
            Op::Update {
                name: format!("{NAME}-m"),
            },
            Op::Delete { name: NAME.into() },
            Op::Append {
                name: NAME.into(),
                offset: 0,
                length: u64::MAX,
            },
            Op::Modify {
                name: NAME.into(),
                offset: 12,
                length: 3,
            },
            Op::Truncate {
                name: NAME.into(),
                old_size: 15,
                new_size: 8,
            },
            Op::Link {
                name: NAME.into(),
                target: other.into(),
            },
            Op::Rename {
                name: NAME.into(),
                old: other.into(),
            },
        ];
        for op in ops {
            let record = record(op);
            assert_eq!(Record::decode(record.encode().as_bytes()), Ok(record));
        }
    }

    #[test]
    fn damage_is_detected() {
        let line = record(Op::Create { name: NAME.into() }).encode();
        let bytes = line.as_bytes();
        // every cut short of the full line is refused
        for cut in 0..bytes.len() {
            assert!(Record::decode(&bytes[..cut]).is_err(), "cut at {cut}");
        }
        // any single flipped byte in the payload fails the checksum or the parse
        for at in 0..bytes.len() - 1 {
            let mut damaged = bytes.to_vec();
            damaged[at] ^= 0x01;
            assert!(Record::decode(&damaged).is_err(), "flip at {at}");
        }
        assert_eq!(
            Record::decode(&[b'x'; MAX_LINE + 1]),
            Err(RecordError::TooLong)
        );
    }

    #[test]
    fn well_formed_garbage_is_refused() {
        for payload in [
            "0 1 1 C M00/00/00/abcdefgh",
            "1 1 1 X M00/00/00/abcdefgh",
            "1 1 1 C ../../etc/passwd",
            "1 1 1 A M00/00/00/abcdefgh 5",
            "1 1 1 C M00/00/00/abcdefgh extra",
            "1 99999999999 1 C M00/00/00/abcdefgh",
        ] {
            let line = format!("{:08x} {payload}\n", crc32fast::hash(payload.as_bytes()));
            assert!(
                matches!(
                    Record::decode(line.as_bytes()),
                    Err(RecordError::Malformed(_))
                ),
                "{payload}"
            );
        }
    }

    fn arb_name() -> impl Strategy<Value = String> {
        (
            0u8..4,
            0u8..255,
            0u8..255,
            "[A-Za-z0-9_-][A-Za-z0-9_.-]{5,60}",
        )
            .prop_map(|(p, h, l, base)| format!("M{p:02X}/{h:02X}/{l:02X}/{base}"))
    }

    fn arb_op() -> impl Strategy<Value = Op> {
        prop_oneof![
            arb_name().prop_map(|name| Op::Create { name }),
            arb_name().prop_map(|name| Op::Update { name }),
            arb_name().prop_map(|name| Op::Delete { name }),
            (arb_name(), any::<u64>(), any::<u64>()).prop_map(|(name, offset, length)| {
                Op::Append {
                    name,
                    offset,
                    length,
                }
            }),
            (arb_name(), any::<u64>(), any::<u64>()).prop_map(|(name, offset, length)| {
                Op::Modify {
                    name,
                    offset,
                    length,
                }
            }),
            (arb_name(), any::<u64>(), any::<u64>()).prop_map(|(name, old_size, new_size)| {
                Op::Truncate {
                    name,
                    old_size,
                    new_size,
                }
            }),
            (arb_name(), arb_name()).prop_map(|(name, target)| Op::Link { name, target }),
            (arb_name(), arb_name()).prop_map(|(name, old)| Op::Rename { name, old }),
        ]
    }

    proptest! {
        #[test]
        fn any_record_round_trips(seq in 1u64.., timestamp: u32, watermark: u32, op in arb_op()) {
            let record = Record { seq, timestamp, watermark, op };
            let line = record.encode();
            prop_assert!(line.len() <= MAX_LINE);
            prop_assert_eq!(line.matches('\n').count(), 1);
            prop_assert_eq!(Record::decode(line.as_bytes()), Ok(record));
        }

        #[test]
        fn random_bytes_never_decode_as_a_different_record(bytes in proptest::collection::vec(any::<u8>(), 0..200)) {
            // either refused or a line whose checksum genuinely matches
            if let Ok(record) = Record::decode(&bytes) {
                let line = record.encode();
                prop_assert_eq!(line.as_bytes(), &bytes[..]);
            }
        }
    }
}
