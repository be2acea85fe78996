//! Micro-benchmarks of the hot pure code: packet headers, the upload and download request
//! bodies, remote name generation and decoding, CRC32 of file content, metadata encoding.
//!
//! `cargo bench -p fdfs-proto` (add `-- <filter>` to run some, e.g. `-- crc32`).

use std::hint::black_box;

use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use fdfs_proto::file_id::{FileId, LogicalName};
use fdfs_proto::header::{Header, HEADER_LEN};
use fdfs_proto::metadata;
use fdfs_proto::name::{self, NameFields, Source};
use fdfs_proto::storage_msg::{DownloadRequest, UploadPrefix};
use rand::SeedableRng;

fn header(c: &mut Criterion) {
    let header = Header::request(11, 4096 + UploadPrefix::LEN as u64);
    let bytes: [u8; HEADER_LEN] = header.encode();
    c.bench_function("header/encode", |b| b.iter(|| black_box(&header).encode()));
    c.bench_function("header/decode", |b| {
        b.iter(|| {
            let decoded = Header::decode(black_box(&bytes));
            decoded.body_len()
        })
    });
}

fn requests(c: &mut Criterion) {
    let prefix = UploadPrefix {
        store_path_index: Some(0),
        file_size: 4096,
        ext: "jpg".into(),
    };
    let encoded = prefix.encode();
    let pkg_len = (UploadPrefix::LEN + 4096) as u64;
    c.bench_function("upload_prefix/encode", |b| {
        b.iter(|| black_box(&prefix).encode())
    });
    c.bench_function("upload_prefix/decode", |b| {
        b.iter(|| UploadPrefix::decode(black_box(&encoded), pkg_len))
    });

    let request = DownloadRequest {
        offset: 0,
        length: 0,
        group: "group1".into(),
        name: "M00/00/00/fwAAH2sDbeGAVWzkAAAABjY6MCA275.txt".into(),
    };
    let encoded = request.encode();
    c.bench_function("download_request/encode", |b| {
        b.iter(|| black_box(&request).encode())
    });
    c.bench_function("download_request/decode", |b| {
        b.iter(|| DownloadRequest::decode(black_box(&encoded)))
    });
}

fn names(c: &mut Criterion) {
    let fields = NameFields {
        source: Source::Id(100_001),
        timestamp: 1_795_386_849,
        size_field: name::size_field(4096, false, 0x5A_5A5A),
        crc32: 0x363A_3020,
    };
    let mut rng = rand::rngs::StdRng::seed_from_u64(1);
    // what a storage does for each upload: fields → 27 base64 characters + random suffix,
    // then the logical name Mxx/XX/YY/NAME
    c.bench_function("name/generate", |b| {
        b.iter(|| {
            let suffix = name::random_suffix("jpg", &mut rng);
            let base = name::base_name(black_box(&fields), &suffix);
            LogicalName::new(0, 0x1F, 0x98, &base)
        })
    });
    c.bench_function("name/fields_encode", |b| {
        b.iter(|| black_box(&fields).encode())
    });
    let logical = LogicalName::new(0, 0x1F, 0x98, &name::base_name(&fields, "275.jpg"))
        .unwrap()
        .to_string();
    c.bench_function("name/fields_decode", |b| {
        b.iter(|| NameFields::from_logical_name(black_box(&logical)))
    });
    let file_id = format!("group1/{logical}");
    c.bench_function("name/file_id_parse", |b| {
        b.iter(|| FileId::parse(black_box(&file_id)))
    });
}

fn crc(c: &mut Criterion) {
    let mut group = c.benchmark_group("crc32");
    for (label, size) in [("4KiB", 4096usize), ("1MiB", 1 << 20)] {
        let data: Vec<u8> = (0..size).map(|i| (i * 31 % 251) as u8).collect();
        group.throughput(Throughput::Bytes(size as u64));
        group.bench_function(label, |b| b.iter(|| crc32fast::hash(black_box(&data))));
    }
    group.finish();
}

fn meta(c: &mut Criterion) {
    let pairs: Vec<metadata::Pair> = [
        ("width", "1920"),
        ("height", "1080"),
        ("author", "someone with a long name"),
        ("camera", "model 42"),
        ("created", "2026-11-22T22:34:09Z"),
    ]
    .iter()
    .map(|(name, value)| (name.as_bytes().to_vec(), value.as_bytes().to_vec()))
    .collect();
    let encoded = metadata::encode(&pairs);
    c.bench_function("metadata/encode", |b| {
        b.iter(|| metadata::encode(black_box(&pairs)))
    });
    c.bench_function("metadata/decode", |b| {
        b.iter(|| metadata::decode(black_box(&encoded)))
    });
    c.bench_function("metadata/merge", |b| {
        b.iter(|| metadata::merge(black_box(pairs.clone()), black_box(pairs[..2].to_vec())))
    });
}

criterion_group!(benches, header, requests, names, crc, meta);
criterion_main!(benches);
