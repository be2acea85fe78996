//! Memory per connection stays bounded whatever the file size: a large upload and download
//! are streamed, so the process's peak resident size grows by far less than the file.
//! (Own test binary, so no other test shares the process while it measures.)

mod common;

use common::*;
use fdfs_proto::name::NameFields;
use fdfs_proto::Header;
use tokio::io::AsyncReadExt;

const SIZE: u64 = 256 << 20;
const CHUNK: usize = 1 << 20;

/// Peak resident set size of this process in KiB.
fn peak_rss_kib() -> u64 {
    let status = std::fs::read_to_string("/proc/self/status").unwrap();
    status
        .lines()
        .find_map(|line| line.strip_prefix("VmHWM:"))
        .and_then(|rest| rest.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap()
}

fn chunk(index: u64) -> Vec<u8> {
    (0..CHUNK)
        .map(|i| (index as usize * 31 + i * 7 % 251) as u8)
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn large_files_are_streamed() {
    let server = TestServer::start("fsync = false").await;
    let mut conn = server.connect().await;
    let before = peak_rss_kib();

    let mut prefix = upload_prefix(None, SIZE, "bin");
    let header = Header::request(11, prefix.len() as u64 + SIZE);
    let mut head = header.encode().to_vec();
    head.append(&mut prefix);
    conn.write_all(&head).await.unwrap();
    let mut crc = crc32fast::Hasher::new();
    for index in 0..SIZE / CHUNK as u64 {
        let data = chunk(index);
        crc.update(&data);
        conn.write_all(&data).await.unwrap();
    }
    conn.flush().await.unwrap();
    let reply = conn.read_response(1024).await.unwrap();
    let name = fdfs_proto::storage_msg::UploadReply::decode(&reply)
        .unwrap()
        .name;
    let expected_crc = crc.finalize();
    let fields = NameFields::from_logical_name(&name).unwrap();
    assert_eq!(fields.file_size(), SIZE);
    assert_eq!(fields.crc32, expected_crc);

    conn.send_request(14, &download_body("group1", &name, 0, 0))
        .await
        .unwrap();
    let len = conn.read_response_header().await.unwrap();
    assert_eq!(len, SIZE);
    let mut body = conn.body_reader(len);
    let mut crc = crc32fast::Hasher::new();
    let mut buf = vec![0u8; CHUNK];
    let mut total = 0u64;
    loop {
        let n = body.read(&mut buf).await.unwrap();
        if n == 0 {
            break;
        }
        crc.update(&buf[..n]);
        total += n as u64;
    }
    assert_eq!(total, SIZE);
    assert_eq!(crc.finalize(), expected_crc);

    let growth_mib = (peak_rss_kib().saturating_sub(before)) / 1024;
    assert!(
        growth_mib < 64,
        "peak RSS grew by {growth_mib} MiB for a {} MiB file",
        SIZE >> 20
    );
    server.stop().await;
}
