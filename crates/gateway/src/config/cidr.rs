//! IP networks in CIDR notation (`10.0.0.0/24`, `::1/128`, or a bare address meaning one host)
//! for `allowed_networks`. Small enough not to need a crate: parse, and test membership.

use std::fmt;
use std::net::IpAddr;

use serde::Serialize;

/// An address prefix. Host bits are kept as written; matching masks both sides.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct IpNetwork {
    addr: IpAddr,
    prefix: u8,
}

impl IpNetwork {
    /// Parses `ADDR/PREFIX` or a bare `ADDR` (a /32 or /128).
    pub fn parse(s: &str) -> Result<Self, String> {
        let (a, p) = match s.split_once('/') {
            Some((a, p)) => (a, Some(p)),
            None => (s, None),
        };
        let addr: IpAddr = a
            .parse()
            .map_err(|_| format!("`{s}`: `{a}` is not an IP address"))?;
        let max = if addr.is_ipv4() { 32 } else { 128 };
        let prefix = match p {
            None => max,
            Some(p) => match p.parse::<u8>() {
                Ok(n) if n <= max && !p.starts_with('+') => n,
                _ => return Err(format!("`{s}`: prefix length must be 0..={max}")),
            },
        };
        Ok(IpNetwork { addr, prefix })
    }

    /// Whether `ip` is in this network. IPv4-mapped IPv6 addresses (a dual-stack listener's
    /// view of an IPv4 peer) match IPv4 networks.
    pub fn contains(&self, ip: IpAddr) -> bool {
        match (self.addr, ip.to_canonical()) {
            (IpAddr::V4(n), IpAddr::V4(a)) => {
                let mask = u32::MAX
                    .checked_shl(32 - u32::from(self.prefix))
                    .unwrap_or(0);
                u32::from(n) & mask == u32::from(a) & mask
            }
            (IpAddr::V6(n), IpAddr::V6(a)) => {
                let mask = u128::MAX
                    .checked_shl(128 - u32::from(self.prefix))
                    .unwrap_or(0);
                u128::from(n) & mask == u128::from(a) & mask
            }
            _ => false,
        }
    }
}

impl fmt::Display for IpNetwork {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.addr, self.prefix)
    }
}

impl Serialize for IpNetwork {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    #[test]
    fn membership() {
        let n = IpNetwork::parse("10.0.0.0/24").unwrap();
        assert!(n.contains(ip("10.0.0.1")));
        assert!(n.contains(ip("10.0.0.255")));
        assert!(!n.contains(ip("10.0.1.0")));
        assert!(n.contains(ip("::ffff:10.0.0.7")));
        assert!(!n.contains(ip("::1")));
        let h = IpNetwork::parse("127.0.0.1").unwrap();
        assert!(h.contains(ip("127.0.0.1")) && !h.contains(ip("127.0.0.2")));
        let all = IpNetwork::parse("0.0.0.0/0").unwrap();
        assert!(all.contains(ip("192.0.2.1")));
        let v6 = IpNetwork::parse("2001:db8::/32").unwrap();
        assert!(v6.contains(ip("2001:db8:1::5")) && !v6.contains(ip("2001:db9::1")));
        assert!(IpNetwork::parse("::1/128").unwrap().contains(ip("::1")));
        assert!(IpNetwork::parse("::/0").unwrap().contains(ip("fe80::1")));
        assert_eq!(
            IpNetwork::parse("10.0.0.0/8").unwrap().to_string(),
            "10.0.0.0/8"
        );
    }

    #[test]
    fn bad_networks() {
        for s in [
            "10.0.0.0/33",
            "::/129",
            "10.0.0/8",
            "x/1",
            "10.0.0.0/",
            "10.0.0.0/+8",
            "",
        ] {
            assert!(IpNetwork::parse(s).is_err(), "{s}");
        }
    }
}
