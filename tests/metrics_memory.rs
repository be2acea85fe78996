//! Request latencies are folded into their histogram buckets as they come, so the memory the
//! metrics of either daemon hold does not grow with the number of requests between two
//! scrapes (a storage nobody scrapes used to keep every sample). Own test binary with one
//! test: it counts every allocation of the process.

use std::alloc::{GlobalAlloc, Layout, System};
use std::sync::atomic::{AtomicIsize, Ordering::Relaxed};
use std::time::Duration;

use fdfs_proto::cmd::Command;
use fdfs_proto::logging::AccessLog;
use fdfs_proto::server::ConnInfo;
use fdfs_storage::stats::Outcome;

/// Bytes currently allocated through the global allocator.
static LIVE: AtomicIsize = AtomicIsize::new(0);

struct Counting;

// SAFETY: every call is forwarded to System unchanged; only the sizes are counted.
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        let ptr = unsafe { System.alloc(layout) };
        if !ptr.is_null() {
            LIVE.fetch_add(layout.size() as isize, Relaxed);
        }
        ptr
    }

    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        let ptr = unsafe { System.alloc_zeroed(layout) };
        if !ptr.is_null() {
            LIVE.fetch_add(layout.size() as isize, Relaxed);
        }
        ptr
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        unsafe { System.dealloc(ptr, layout) };
        LIVE.fetch_sub(layout.size() as isize, Relaxed);
    }

    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        let new = unsafe { System.realloc(ptr, layout, new_size) };
        if !new.is_null() {
            LIVE.fetch_add(new_size as isize - layout.size() as isize, Relaxed);
        }
        new
    }
}

#[global_allocator]
static ALLOCATOR: Counting = Counting;

/// Bytes the metrics kept while `record(n)` answered n more requests, after a first round
/// created their registry entries.
fn growth(record: impl Fn(u64)) -> isize {
    record(5_000);
    let before = LIVE.load(Relaxed);
    record(200_000);
    LIVE.load(Relaxed) - before
}

/// The value of the first line of `text` starting with `prefix` and containing `label`.
fn value(text: &str, prefix: &str, label: &str) -> Option<f64> {
    text.lines()
        .find(|l| l.starts_with(prefix) && l.contains(label))
        .and_then(|l| l.rsplit(' ').next())
        .and_then(|v| v.parse().ok())
}

// 200,000 samples held as they came took 3.2 MB; folded every 1,024 they stay far below.
const BOUND: isize = 256 * 1024;

#[test]
fn request_latencies_do_not_pile_up_between_scrapes() {
    let tracker = fdfs_tracker::metrics::Metrics::new();
    let grown = growth(|n| {
        for i in 0..n {
            tracker.request(
                Command::QueryStoreWithoutGroupOne,
                0,
                Duration::from_micros(50 + i % 200),
            );
        }
    });
    assert!(grown < BOUND, "tracker metrics grew by {grown} bytes");
    // nothing was lost by folding early
    let text = tracker.render();
    let count = value(
        &text,
        "fdfs_tracker_request_duration_seconds_count",
        "query_store_without_group_one",
    );
    assert_eq!(count, Some(205_000.0), "{text}");

    let storage = fdfs_storage::metrics::Metrics::new(AccessLog::new(false), "group1");
    let info = ConnInfo::new(
        "127.0.0.1:4000".parse().unwrap(),
        "127.0.0.1:23000".parse().unwrap(),
        tokio_util::sync::CancellationToken::new(),
    );
    let ok = Outcome {
        status: Some(0),
        bytes: Some(4096),
        ..Outcome::default()
    };
    let grown = growth(|n| {
        for i in 0..n {
            storage.request(
                Command::DownloadFile,
                ok,
                40,
                Duration::from_micros(50 + i % 200),
                &info,
            );
        }
    });
    assert!(grown < BOUND, "storage metrics grew by {grown} bytes");
    let text = storage.render();
    let count = value(
        &text,
        "fdfs_storage_request_duration_seconds_count",
        "download_file",
    );
    assert_eq!(count, Some(205_000.0), "{text}");
}
