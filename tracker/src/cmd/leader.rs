//! SERVER_GET_LEADER (95, D.7). FastDFS's trackers elect a leader among themselves; ours do
//! not need one: every storage reports to every tracker, so each tracker holds the whole
//! cluster state and decides alone. Each answers with its own address, as a lone FastDFS
//! tracker (its own leader) does, so tools that ask find a tracker that can answer
//! everything.

use std::net::SocketAddr;

use super::{expect_len, CmdError};

/// 95: `ip:port` of this tracker as the caller reached it (an IPv6 address in brackets).
pub fn get_leader(body: &[u8], local: SocketAddr) -> Result<Vec<u8>, CmdError> {
    expect_len(body, 0, "get leader")?;
    let addr = SocketAddr::new(local.ip().to_canonical(), local.port());
    Ok(addr.to_string().into_bytes())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn answers_the_address_the_caller_reached() {
        let v4: SocketAddr = "127.0.0.1:22122".parse().unwrap();
        assert_eq!(get_leader(&[], v4).unwrap(), b"127.0.0.1:22122");
        // an IPv4 caller on a dual-stack socket sees its IPv4 address
        let mapped: SocketAddr = "[::ffff:10.0.0.7]:22122".parse().unwrap();
        assert_eq!(get_leader(&[], mapped).unwrap(), b"10.0.0.7:22122");
        let v6: SocketAddr = "[fe80::1]:22122".parse().unwrap();
        assert_eq!(get_leader(&[], v6).unwrap(), b"[fe80::1]:22122");
        assert!(get_leader(&[0], v4).is_err());
    }
}
