//! Storage binlog lines (`fdfs_storage::replication::record`), as read back from disk after
//! a crash or damage. The first byte picks the mode: 0 feeds the rest as a raw line; any other
//! value treats the rest as the payload and writes a correct checksum and newline around it,
//! so the fuzzer gets past the CRC into the field parser.
#![no_main]

use fdfs_proto::file_id::LogicalName;
use fdfs_storage::replication::record::{Op, Record, MAX_LINE};
use libfuzzer_sys::fuzz_target;

fn names(op: &Op) -> Vec<&str> {
    match op {
        Op::Link { name, target } => vec![name, target],
        Op::Rename { name, old } => vec![name, old],
        other => vec![other.name()],
    }
}

fuzz_target!(|data: &[u8]| {
    let Some((&mode, rest)) = data.split_first() else {
        return;
    };
    let line = if mode == 0 {
        rest.to_vec()
    } else {
        let mut line = format!("{:08x} ", crc32fast::hash(rest)).into_bytes();
        line.extend_from_slice(rest);
        line.push(b'\n');
        line
    };
    let Ok(record) = Record::decode(&line) else {
        return;
    };
    assert!(line.len() <= MAX_LINE && line.ends_with(b"\n"));
    assert!(record.seq > 0);
    for name in names(&record.op) {
        LogicalName::parse(name).expect("decoded records only hold valid logical names");
    }
    let encoded = record.encode();
    assert!(
        encoded.len() <= line.len(),
        "canonical form is never longer"
    );
    assert_eq!(Record::decode(encoded.as_bytes()).unwrap(), record);
});
