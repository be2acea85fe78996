//! Host lists (`allow_hosts`, `admin_hosts`, `http_allow_hosts`): which peer addresses a
//! server talks to.
//!
//! An entry is `*` (everyone), a single address (`10.0.0.5`, `::1`) or a CIDR block
//! (`10.0.0.0/8`, `fd00::/8`). Parsing is strict: a prefix longer than the address, a block
//! with host bits set (`10.0.0.1/8`, almost always a typo for `10.0.0.0/8` or `10.0.0.1/32`),
//! a host name or an empty list is an error, so a list never means something other than what
//! its author thought. FastDFS's `10.0.0.[1-15]` ranges are not accepted: write CIDR blocks.

use std::fmt;
use std::net::IpAddr;

/// Why an entry of a host list was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum HostListError {
    #[error("the list is empty, which would refuse every peer; leave the key out to allow all")]
    Empty,
    #[error("entry {entry:?} is not an IP address, a CIDR block or \"*\"")]
    NotAnAddress { entry: String },
    #[error("entry {entry:?}: prefix length {prefix} is above {max}")]
    PrefixTooLong { entry: String, prefix: u8, max: u8 },
    #[error("entry {entry:?} has host bits set; did you mean {suggested}?")]
    HostBits { entry: String, suggested: String },
}

/// One allowed block of addresses.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Block {
    network: IpAddr,
    prefix: u8,
}

impl Block {
    fn contains(&self, ip: IpAddr) -> bool {
        match (self.network, ip) {
            (IpAddr::V4(net), IpAddr::V4(ip)) => {
                let mask = mask32(self.prefix);
                u32::from(ip) & mask == u32::from(net)
            }
            (IpAddr::V6(net), IpAddr::V6(ip)) => {
                let mask = mask128(self.prefix);
                u128::from(ip) & mask == u128::from(net)
            }
            _ => false,
        }
    }
}

fn mask32(prefix: u8) -> u32 {
    u32::MAX.checked_shl(32 - u32::from(prefix)).unwrap_or(0)
}

fn mask128(prefix: u8) -> u128 {
    u128::MAX.checked_shl(128 - u32::from(prefix)).unwrap_or(0)
}

/// A parsed host list. The default allows every peer.
#[derive(Clone, PartialEq, Eq, Default)]
pub struct HostList {
    /// `None`: everyone (the default, or a `*` entry).
    blocks: Option<Vec<Block>>,
}

impl HostList {
    /// The list that allows every peer.
    pub fn allow_all() -> Self {
        HostList { blocks: None }
    }

    /// Whether every peer is allowed.
    pub fn allows_all(&self) -> bool {
        self.blocks.is_none()
    }

    /// Parses a list of entries (see the module docs).
    pub fn parse<S: AsRef<str>>(entries: &[S]) -> Result<Self, HostListError> {
        if entries.is_empty() {
            return Err(HostListError::Empty);
        }
        let mut blocks = Vec::with_capacity(entries.len());
        let mut everyone = false;
        for entry in entries {
            match parse_entry(entry.as_ref())? {
                Some(block) => blocks.push(block),
                None => everyone = true,
            }
        }
        Ok(HostList {
            blocks: (!everyone).then_some(blocks),
        })
    }

    /// Whether `ip` may talk to us. An IPv4 peer seen on a dual-stack socket
    /// (`::ffff:10.0.0.5`) is matched as the IPv4 address it is.
    pub fn allows(&self, ip: IpAddr) -> bool {
        let Some(blocks) = &self.blocks else {
            return true;
        };
        let ip = ip.to_canonical();
        blocks.iter().any(|block| block.contains(ip))
    }
}

/// `Ok(None)` for `*`.
fn parse_entry(entry: &str) -> Result<Option<Block>, HostListError> {
    let text = entry.trim();
    if text == "*" {
        return Ok(None);
    }
    let not_an_address = || HostListError::NotAnAddress {
        entry: entry.to_string(),
    };
    let (addr, prefix) = match text.split_once('/') {
        Some((addr, prefix)) => {
            // digits only: "+8" or " 8" are not prefixes
            if prefix.is_empty() || prefix.len() > 3 || !prefix.bytes().all(|b| b.is_ascii_digit())
            {
                return Err(not_an_address());
            }
            let prefix: u8 = prefix.parse().map_err(|_| not_an_address())?;
            (addr, Some(prefix))
        }
        None => (text, None),
    };
    let network: IpAddr = addr.parse().map_err(|_| not_an_address())?;
    let max = if network.is_ipv4() { 32 } else { 128 };
    let prefix = prefix.unwrap_or(max);
    if prefix > max {
        return Err(HostListError::PrefixTooLong {
            entry: entry.to_string(),
            prefix,
            max,
        });
    }
    let masked = match network {
        IpAddr::V4(ip) => IpAddr::from((u32::from(ip) & mask32(prefix)).to_be_bytes()),
        IpAddr::V6(ip) => IpAddr::from((u128::from(ip) & mask128(prefix)).to_be_bytes()),
    };
    if masked != network {
        return Err(HostListError::HostBits {
            entry: entry.to_string(),
            suggested: format!("{masked}/{prefix} or {network}/{max}"),
        });
    }
    Ok(Some(Block { network, prefix }))
}

impl fmt::Debug for HostList {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(self, f)
    }
}

impl fmt::Display for HostList {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.blocks {
            None => f.write_str("*"),
            Some(blocks) => {
                for (i, block) in blocks.iter().enumerate() {
                    if i > 0 {
                        f.write_str(", ")?;
                    }
                    write!(f, "{}/{}", block.network, block.prefix)?;
                }
                Ok(())
            }
        }
    }
}

impl<'de> serde::Deserialize<'de> for HostList {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let entries = Vec::<String>::deserialize(deserializer)?;
        HostList::parse(&entries).map_err(serde::de::Error::custom)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn list(entries: &[&str]) -> HostList {
        HostList::parse(entries).unwrap()
    }

    fn ip(text: &str) -> IpAddr {
        text.parse().unwrap()
    }

    #[test]
    fn default_and_star_allow_everyone() {
        assert!(HostList::default().allows(ip("203.0.113.9")));
        assert!(HostList::default().allows_all());
        let star = list(&["10.0.0.0/8", "*"]);
        assert!(star.allows_all());
        assert!(star.allows(ip("::1")));
    }

    #[test]
    fn blocks_and_single_addresses() {
        let acl = list(&["10.1.0.0/16", "192.168.7.9", "fd00::/8", "::1"]);
        assert!(acl.allows(ip("10.1.255.3")));
        assert!(!acl.allows(ip("10.2.0.1")));
        assert!(acl.allows(ip("192.168.7.9")));
        assert!(!acl.allows(ip("192.168.7.10")));
        assert!(acl.allows(ip("fd12:3456::1")));
        assert!(!acl.allows(ip("fe80::1")));
        assert!(acl.allows(ip("::1")));
        assert!(!acl.allows(ip("::2")));
        // an IPv4 peer on a dual-stack socket
        assert!(acl.allows(ip("::ffff:10.1.2.3")));
        assert!(!acl.allows(ip("::ffff:10.2.2.3")));
        // families never match each other
        assert!(!list(&["0.0.0.0/0"]).allows(ip("2001:db8::1")));
        assert!(!list(&["::/0"]).allows(ip("127.0.0.1")));
        assert!(list(&["0.0.0.0/0"]).allows(ip("127.0.0.1")));
        assert_eq!(
            acl.to_string(),
            "10.1.0.0/16, 192.168.7.9/32, fd00::/8, ::1/128"
        );
    }

    #[test]
    fn strict_parsing() {
        let refused = [
            ("", "not an IP"),
            ("localhost", "not an IP"),
            ("10.0.0.[1-15]", "not an IP"),
            ("10.0.0.0/", "not an IP"),
            ("10.0.0.0/+8", "not an IP"),
            ("10.0.0.0/8/8", "not an IP"),
            ("10.0.0.0/1000", "not an IP"),
            ("10.0.0.0/33", "above 32"),
            ("::/129", "above 128"),
            ("10.0.0.1/8", "host bits"),
            ("fd00::1/8", "host bits"),
        ];
        for (entry, why) in refused {
            let err = HostList::parse(&[entry]).unwrap_err().to_string();
            assert!(err.contains(why), "{entry:?}: {err}");
        }
        let empty: [&str; 0] = [];
        assert_eq!(HostList::parse(&empty), Err(HostListError::Empty));
    }

    #[test]
    fn deserializes_from_toml() {
        #[derive(serde::Deserialize)]
        struct Conf {
            allow_hosts: HostList,
        }
        let conf: Conf = toml::from_str("allow_hosts = [\"127.0.0.0/8\"]").unwrap();
        assert!(conf.allow_hosts.allows(ip("127.0.0.2")));
        let err = toml::from_str::<Conf>("allow_hosts = [\"127.0.0.1/8\"]")
            .err()
            .unwrap()
            .to_string();
        assert!(
            err.contains("allow_hosts") && err.contains("host bits"),
            "{err}"
        );
    }

    proptest! {
        #[test]
        fn v4_block_matches_like_integer_ranges(net in any::<u32>(), prefix in 0u8..=32, probe in any::<u32>()) {
            let network = net & mask32(prefix);
            let entry = format!("{}/{prefix}", std::net::Ipv4Addr::from(network));
            let acl = list(&[entry.as_str()]);
            let size = 1u64 << (32 - u32::from(prefix));
            let inside = u64::from(probe) >= u64::from(network) && u64::from(probe) < u64::from(network) + size;
            prop_assert_eq!(acl.allows(IpAddr::from(probe.to_be_bytes())), inside);
            prop_assert!(acl.allows(IpAddr::from(network.to_be_bytes())));
        }

        #[test]
        fn v6_block_contains_its_network(net in any::<u128>(), prefix in 0u8..=128, probe in any::<u128>()) {
            let network = net & mask128(prefix);
            let entry = format!("{}/{prefix}", std::net::Ipv6Addr::from(network));
            let acl = list(&[entry.as_str()]);
            // `allows` reads `::ffff:a.b.c.d` as the IPv4 address, which no IPv6 block holds
            let mapped = probe >> 32 == 0xffff;
            let inside = probe & mask128(prefix) == network && !mapped;
            prop_assert_eq!(acl.allows(IpAddr::from(probe.to_be_bytes())), inside);
        }

        #[test]
        fn parse_never_panics(entry in ".{0,40}") {
            let _ = HostList::parse(&[entry]);
        }
    }
}
