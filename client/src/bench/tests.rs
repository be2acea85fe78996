use super::stats::Latencies;
use super::*;

fn summary(ops: u64, errors: &[(&str, u64)]) -> OpSummary {
    let mut stats = OpStats::new();
    for i in 0..ops {
        stats.record_ok(Duration::from_micros(500 + i), 4096);
    }
    for (kind, count) in errors {
        for _ in 0..*count {
            stats.record_error(kind);
        }
    }
    stats.summary(Duration::from_secs(1))
}

fn sample_report() -> Report {
    let upload = summary(10, &[("status_28", 2)]);
    let mut lag = Latencies::new();
    lag.record(Duration::from_millis(12));
    Report {
        mode: "lag".into(),
        ratio: None,
        trackers: vec!["127.0.0.1:22122".into()],
        storage: None,
        group: Some("group1".into()),
        size: "4KiB".into(),
        size_min: 4096,
        size_max: 4096,
        concurrency: 1,
        warmup_s: 0.0,
        elapsed_s: 1.0,
        prepared_files: 0,
        total: upload.clone(),
        ops: BTreeMap::from([("upload".to_string(), upload)]),
        lag: Some(LagReport {
            timeout_s: 2.0,
            poll_ms: 5.0,
            samples: 2,
            samples_without_peers: 0,
            peers: vec![
                PeerLag {
                    peer: "127.0.0.1:23001".into(),
                    samples: 2,
                    replicated: 1,
                    not_replicated: 1,
                    lag_ms: lag.summary(),
                    errors_by_kind: BTreeMap::new(),
                },
                PeerLag {
                    peer: "127.0.0.1:23002".into(),
                    samples: 2,
                    replicated: 0,
                    not_replicated: 2,
                    lag_ms: None,
                    errors_by_kind: BTreeMap::from([("connect".to_string(), 3)]),
                },
            ],
        }),
        cleanup: Cleanup {
            deleted: 10,
            failed: 0,
            kept: 0,
        },
    }
}

#[test]
fn json_shape() {
    let json: serde_json::Value = serde_json::from_str(&sample_report().to_json()).unwrap();
    let object = json.as_object().unwrap();
    for key in [
        "mode",
        "ratio",
        "trackers",
        "storage",
        "group",
        "size",
        "size_min",
        "size_max",
        "concurrency",
        "warmup_s",
        "elapsed_s",
        "prepared_files",
        "total",
        "ops",
        "lag",
        "cleanup",
    ] {
        assert!(object.contains_key(key), "missing {key}: {json}");
    }
    assert_eq!(json["mode"], "lag");
    assert_eq!(json["ratio"], serde_json::Value::Null);
    assert_eq!(json["size_min"], 4096);
    let upload = &json["ops"]["upload"];
    assert_eq!(upload["ops"], 10);
    assert_eq!(upload["errors"], 2);
    assert_eq!(upload["bytes"], 40960);
    assert_eq!(upload["errors_by_kind"]["status_28"], 2);
    assert!(upload["ops_per_s"].as_f64().unwrap() > 9.9);
    assert!(upload["mb_per_s"].is_number());
    for key in ["p50", "p95", "p99", "p99_9", "max", "mean"] {
        let value = upload["latency_ms"][key].as_f64();
        assert!(
            value.is_some_and(|ms| ms > 0.4 && ms < 0.6),
            "{key}: {upload}"
        );
    }
    let peers = json["lag"]["peers"].as_array().unwrap();
    assert_eq!(peers.len(), 2);
    assert_eq!(peers[0]["peer"], "127.0.0.1:23001");
    assert_eq!(peers[0]["not_replicated"], 1);
    assert!((peers[0]["lag_ms"]["p50"].as_f64().unwrap() - 12.0).abs() < 0.1);
    assert_eq!(peers[1]["lag_ms"], serde_json::Value::Null);
    assert_eq!(peers[1]["errors_by_kind"]["connect"], 3);
    assert_eq!(json["cleanup"]["deleted"], 10);
    assert!(!sample_report().to_json().contains('\n'), "one line");
}

#[test]
fn text_rendering() {
    let text = sample_report().to_string();
    assert!(
        text.starts_with(
            "fdfs bench lag: size 4KiB, concurrency 1, via tracker 127.0.0.1:22122, group group1\n"
        ),
        "{text}"
    );
    assert!(text.contains("p99.9 ms"), "{text}");
    assert!(text.contains("upload: status 28 ("), "{text}");
    assert!(
        text.contains("127.0.0.1:23001: 1/2 replicated, lag p50 12."),
        "{text}"
    );
    assert!(text.contains("1 not replicated within 2.0 s"), "{text}");
    assert!(
        text.contains(
            "127.0.0.1:23002: 0/2 replicated; 2 not replicated within 2.0 s; connect × 3"
        ),
        "{text}"
    );
    assert!(text.ends_with("deleted 10 files"), "{text}");
    let mut kept = sample_report();
    kept.cleanup = Cleanup {
        kept: 4,
        ..Cleanup::default()
    };
    kept.lag = None;
    let text = kept.to_string();
    assert!(text.ends_with("kept 4 files (--keep)"), "{text}");
    assert!(!text.contains("replication lag"), "{text}");
}

#[test]
fn config_validation() {
    let ok = BenchConfig::new(Mode::Upload);
    ok.validate().unwrap();
    let check = |change: &dyn Fn(&mut BenchConfig), want: &str| {
        let mut config = BenchConfig::new(Mode::Lag);
        change(&mut config);
        let err = config.validate().unwrap_err().to_string();
        assert!(err.contains(want), "{want}: {err}");
    };
    check(&|c| c.concurrency = 0, "concurrency");
    check(&|c| c.concurrency = MAX_CONCURRENCY + 1, "concurrency");
    check(&|c| c.duration = None, "count, a duration");
    check(&|c| c.count = Some(0), "count must");
    check(&|c| c.duration = Some(Duration::ZERO), "duration must");
    check(&|c| c.storage = Some("127.0.0.1:23000".into()), "--group");
    check(&|c| c.storage = Some("nowhere".into()), "host:port");
    check(&|c| c.group = Some("bad/group".into()), "group");
    check(&|c| c.files = Some(0), "files");
    check(&|c| c.lag_timeout = Duration::ZERO, "lag timeout");
    let mut pinned = BenchConfig::new(Mode::Download);
    pinned.storage = Some("127.0.0.1:23000".into());
    pinned.group = Some("group1".into());
    pinned.count = Some(5);
    pinned.duration = None;
    pinned.validate().unwrap();
}

#[test]
fn default_prepared_files_bound_the_bytes() {
    let mut config = BenchConfig::new(Mode::Download);
    assert_eq!(config.prepared_files(), 100);
    config.size = SizeSpec::fixed(64 << 20);
    assert_eq!(config.prepared_files(), 4);
    config.size = "1MiB..16MiB".parse().unwrap();
    assert_eq!(config.prepared_files(), 16);
    config.files = Some(7);
    assert_eq!(config.prepared_files(), 7);
}
