//! STORAGE_PARAMETER_REQ (75): the tracker's settings as `key=value` lines (D.7).

use std::fmt::Write;

use super::{expect_len, CmdError};
use crate::config::TrackerConfig;
use crate::service::Tracker;

/// The reply text, in FastDFS's key order. Values we implement come from the configuration;
/// trunk mode is off and the rest are FastDFS's defaults.
pub fn parameter_text(config: &TrackerConfig) -> String {
    let values: [(&str, String); 26] = [
        // fdfs-rs names files by numeric storage id (H.2).
        ("use_storage_id", "1".into()),
        ("id_type_in_filename", "id".into()),
        ("trust_storage_server_id", "1".into()),
        ("response_ip_addr_size", fdfs_proto::IP_WIDTH.to_string()),
        ("storage_ip_changed_auto_adjust", "1".into()),
        (
            "storage_sync_file_max_delay",
            config.storage_sync_file_max_delay.as_secs().to_string(),
        ),
        ("store_path", config.store_path.code().to_string()),
        (
            "reserved_storage_space",
            config.reserved_storage_space.to_param_string(),
        ),
        ("use_trunk_file", "0".into()),
        ("slot_min_size", "256".into()),
        ("slot_max_size", (8 << 20).to_string()),
        ("trunk_alloc_alignment_size", "0".into()),
        ("trunk_file_size", (64 << 20).to_string()),
        ("trunk_create_file_advance", "0".into()),
        ("trunk_create_file_time_base", "02:00".into()),
        ("trunk_create_file_interval", "86400".into()),
        ("trunk_create_file_space_threshold", "0".into()),
        ("trunk_init_check_occupying", "0".into()),
        ("trunk_init_reload_from_binlog", "0".into()),
        ("trunk_free_space_merge", "0".into()),
        ("delete_unused_trunk_files", "0".into()),
        ("trunk_compress_binlog_min_interval", "0".into()),
        ("trunk_compress_binlog_interval", "0".into()),
        ("trunk_compress_binlog_time_base", "03:00".into()),
        ("trunk_binlog_max_backups", "0".into()),
        ("store_slave_file_use_link", "0".into()),
    ];
    let mut text = String::new();
    for (key, value) in values {
        // FastDFS ends every line, the last included, with '\n'.
        let _ = writeln!(text, "{key}={value}");
    }
    text
}

pub fn handle(tracker: &Tracker, body: &[u8]) -> Result<Vec<u8>, CmdError> {
    expect_len(body, 0, "parameter request")?;
    Ok(tracker.parameters().as_bytes().to_vec())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_match_the_capture_where_they_should() {
        let text = parameter_text(&TrackerConfig::default());
        let lines: Vec<&str> = text.lines().collect();
        assert_eq!(lines.len(), 26);
        assert_eq!(lines[0], "use_storage_id=1");
        assert_eq!(lines[1], "id_type_in_filename=id");
        assert_eq!(lines[3], "response_ip_addr_size=16");
        assert_eq!(lines[5], "storage_sync_file_max_delay=86400");
        assert_eq!(lines[6], "store_path=0");
        assert_eq!(lines[7], "reserved_storage_space=1.00%");
        assert_eq!(lines[10], "slot_max_size=8388608");
        assert_eq!(lines[25], "store_slave_file_use_link=0");
        assert!(text.ends_with("=0\n"));
    }

    #[test]
    fn configured_values_are_reported() {
        let config: TrackerConfig = toml::from_str(
            "store_path = 2\nreserved_storage_space = \"10GB\"\nstorage_sync_file_max_delay = \"1h\"",
        )
        .unwrap();
        let text = parameter_text(&config);
        assert!(text.contains("\nstore_path=2\n"));
        assert!(text.contains("\nreserved_storage_space=10240MB\n"));
        assert!(text.contains("\nstorage_sync_file_max_delay=3600\n"));
    }
}
