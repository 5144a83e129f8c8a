//! CIDR allowlists (IPv4 and IPv6) and the real client address behind trusted proxies.

use std::net::{IpAddr, Ipv6Addr, SocketAddr};
use std::str::FromStr;

/// An IPv4 or IPv6 network.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Cidr {
    /// IPv4 network and mask.
    V4 {
        /// Network address.
        net: u32,
        /// Mask.
        mask: u32,
    },
    /// IPv6 network and mask.
    V6 {
        /// Network address.
        net: u128,
        /// Mask.
        mask: u128,
    },
}

impl FromStr for Cidr {
    type Err = String;

    /// Parses `addr/len` or a single address. Host bits must be zero: `10.0.0.1/8` is refused
    /// because it usually means the writer had a different network in mind.
    fn from_str(s: &str) -> Result<Cidr, String> {
        let (addr, len) = match s.split_once('/') {
            Some((a, l)) => (a, Some(l)),
            None => (s, None),
        };
        let ip: IpAddr = addr
            .trim()
            .parse()
            .map_err(|_| format!("`{addr}` is not an IPv4 or IPv6 address"))?;
        let max = if ip.is_ipv4() { 32 } else { 128 };
        let len: u32 = match len {
            None => max,
            Some(l) => l
                .trim()
                .parse()
                .ok()
                .filter(|l| *l <= max)
                .ok_or_else(|| format!("prefix length `{l}` must be 0 to {max}"))?,
        };
        let cidr = match ip {
            IpAddr::V4(v4) => {
                let mask = u32::MAX.checked_shl(32 - len).unwrap_or(0);
                Cidr::V4 {
                    net: u32::from(v4),
                    mask,
                }
            }
            IpAddr::V6(v6) => {
                let mask = u128::MAX.checked_shl(128 - len).unwrap_or(0);
                Cidr::V6 {
                    net: u128::from(v6),
                    mask,
                }
            }
        };
        let host_bits = match cidr {
            Cidr::V4 { net, mask } => net & !mask != 0,
            Cidr::V6 { net, mask } => net & !mask != 0,
        };
        if host_bits {
            return Err(format!(
                "`{s}` has host bits set; the network is {}",
                cidr.network_string(len)
            ));
        }
        Ok(cidr)
    }
}

impl Cidr {
    fn network_string(&self, len: u32) -> String {
        match *self {
            Cidr::V4 { net, mask } => format!("{}/{len}", std::net::Ipv4Addr::from(net & mask)),
            Cidr::V6 { net, mask } => format!("{}/{len}", Ipv6Addr::from(net & mask)),
        }
    }

    /// Whether `ip` is inside the network. IPv4-mapped IPv6 addresses (`::ffff:a.b.c.d`)
    /// match IPv4 networks, so dual-stack listeners cannot sidestep an IPv4 list.
    pub fn contains(&self, ip: IpAddr) -> bool {
        let ip = canonical(ip);
        match (*self, ip) {
            (Cidr::V4 { net, mask }, IpAddr::V4(a)) => u32::from(a) & mask == net,
            (Cidr::V6 { net, mask }, IpAddr::V6(a)) => u128::from(a) & mask == net,
            _ => false,
        }
    }
}

fn canonical(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V6(v6) => v6.to_ipv4_mapped().map_or(ip, IpAddr::V4),
        v4 => v4,
    }
}

/// A list of allowed networks; an empty list allows everyone.
#[derive(Debug, Clone, Default)]
pub struct Allowlist(Vec<Cidr>);

impl Allowlist {
    /// Parses each entry; `field` prefixes the index in errors.
    ///
    /// # Errors
    /// The first invalid entry as `(index, message)`.
    pub fn parse(entries: &[String]) -> Result<Allowlist, (usize, String)> {
        entries
            .iter()
            .enumerate()
            .map(|(i, s)| s.parse().map_err(|e| (i, e)))
            .collect::<Result<_, _>>()
            .map(Allowlist)
    }

    /// Whether the list restricts anything.
    pub fn is_restricted(&self) -> bool {
        !self.0.is_empty()
    }

    /// Whether `ip` may call. An unknown address is allowed only by an empty list.
    pub fn allows(&self, ip: Option<IpAddr>) -> bool {
        match ip {
            _ if self.0.is_empty() => true,
            Some(ip) => self.0.iter().any(|c| c.contains(ip)),
            None => false,
        }
    }
}

/// The real client address.
///
/// `peer` is Envoy's `source.address` and `xff` the `x-forwarded-for` values in order. With
/// `trusted_hops == 0` the peer is the client. Otherwise the header is read the way it was
/// built: Envoy (with `use_remote_address: true`) appended its direct TCP peer as the last
/// entry, and before that each of the N trusted proxies appended the address it saw; the
/// client is the N-th entry left of Envoy's. Entries further left were written by the client
/// and are never used, so a spoofed header cannot widen access. This does not depend on the
/// listener's own `xff_num_trusted_hops` (which rewrites `source.address`).
pub fn client_address<'a>(
    peer: Option<IpAddr>,
    xff: impl Iterator<Item = &'a str>,
    trusted_hops: u8,
) -> Option<IpAddr> {
    if trusted_hops == 0 {
        return peer;
    }
    let entries: Vec<&str> = xff
        .flat_map(|v| v.split(','))
        .map(str::trim)
        .filter(|s| !s.is_empty())
        .collect();
    let Some((direct, recorded)) = entries.split_last() else {
        return peer;
    };
    match recorded.len().checked_sub(usize::from(trusted_hops)) {
        Some(i) => parse_addr(recorded[i]),
        // Fewer proxies than configured: every recorded entry was written by a trusted proxy,
        // and the leftmost is the closest we know to the client; none means a direct call.
        None => parse_addr(recorded.first().unwrap_or(direct)),
    }
}

fn parse_addr(s: &str) -> Option<IpAddr> {
    s.parse::<IpAddr>()
        .ok()
        .or_else(|| s.parse::<SocketAddr>().ok().map(|a| a.ip()))
        .map(canonical)
}

/// Parses Envoy's `source.address` property (`ip:port`, `[v6]:port`).
pub fn parse_peer(s: &str) -> Option<IpAddr> {
    parse_addr(s)
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    #[test]
    fn cidr_membership() {
        let c: Cidr = "10.1.0.0/16".parse().unwrap();
        assert!(c.contains(ip("10.1.255.255")));
        assert!(!c.contains(ip("10.2.0.0")));
        assert!(c.contains(ip("::ffff:10.1.2.3")));
        let c: Cidr = "2001:db8::/32".parse().unwrap();
        assert!(c.contains(ip("2001:db8:ffff::1")));
        assert!(!c.contains(ip("2001:db9::1")));
        assert!(!c.contains(ip("10.1.2.3")));
        let all: Cidr = "0.0.0.0/0".parse().unwrap();
        assert!(all.contains(ip("255.255.255.255")));
        let one: Cidr = "192.0.2.7".parse().unwrap();
        assert!(one.contains(ip("192.0.2.7")) && !one.contains(ip("192.0.2.8")));
    }

    #[test]
    fn cidr_errors_are_precise() {
        assert_eq!(
            "10.0.0.1/8".parse::<Cidr>().unwrap_err(),
            "`10.0.0.1/8` has host bits set; the network is 10.0.0.0/8"
        );
        assert!("10.0.0.0/33"
            .parse::<Cidr>()
            .unwrap_err()
            .contains("0 to 32"));
        assert!("nope/8"
            .parse::<Cidr>()
            .unwrap_err()
            .contains("not an IPv4"));
        assert!("::/129".parse::<Cidr>().is_err());
    }

    #[test]
    fn allowlist_fails_closed_on_unknown_address() {
        let empty = Allowlist::default();
        assert!(empty.allows(None));
        let l = Allowlist::parse(&["127.0.0.0/8".into()]).unwrap();
        assert!(l.allows(Some(ip("127.0.0.9"))));
        assert!(!l.allows(Some(ip("128.0.0.1"))));
        assert!(!l.allows(None));
        assert_eq!(
            Allowlist::parse(&["1.1.1.1".into(), "x".into()])
                .unwrap_err()
                .0,
            1
        );
    }

    #[test]
    fn client_address_ignores_spoofed_entries() {
        let peer = Some(ip("10.0.0.5")); // the load balancer
                                         // No trusted hops: the peer, whatever the header says.
        assert_eq!(client_address(peer, ["6.6.6.6"].into_iter(), 0), peer);
        // Envoy's source.address may already be rewritten: only the header counts.
        let rewritten = Some(ip("203.0.113.9"));
        assert_eq!(
            client_address(rewritten, ["6.6.6.6, 203.0.113.9, 10.0.0.5"].into_iter(), 2),
            Some(ip("6.6.6.6"))
        );
        // One trusted LB: it appended the client; Envoy appended the LB (the peer).
        let xff = ["6.6.6.6, 203.0.113.9, 10.0.0.5"];
        assert_eq!(
            client_address(peer, xff.into_iter(), 1),
            Some(ip("203.0.113.9"))
        );
        // Two trusted proxies, split across two headers.
        let xff = ["6.6.6.6, 203.0.113.9", "10.0.0.4, 10.0.0.5"];
        assert_eq!(
            client_address(peer, xff.into_iter(), 2),
            Some(ip("203.0.113.9"))
        );
        // Fewer entries than hops: the leftmost one a trusted proxy wrote.
        assert_eq!(
            client_address(peer, ["203.0.113.9, 10.0.0.5"].into_iter(), 3),
            Some(ip("203.0.113.9"))
        );
        assert_eq!(client_address(peer, ["10.0.0.5"].into_iter(), 1), peer);
        assert_eq!(client_address(peer, std::iter::empty(), 1), peer);
        // Garbage is unknown, never the peer.
        assert_eq!(
            client_address(peer, ["junk, 10.0.0.5"].into_iter(), 1),
            None
        );
        assert_eq!(parse_peer("[::1]:4000"), Some(ip("::1")));
        assert_eq!(parse_peer("127.0.0.1:80"), Some(ip("127.0.0.1")));
    }

    proptest! {
        #[test]
        fn spoofed_prefix_never_changes_the_client(spoof in proptest::collection::vec(any::<u32>(), 0..5), hops in 1u8..4) {
            let peer = Some(ip("10.0.0.1"));
            let trusted: Vec<String> = (0..hops).map(|i| format!("198.51.100.{i}")).collect();
            let mut base = trusted.clone();
            base.push("10.0.0.1".into());
            let honest = client_address(peer, [base.join(", ")].iter().map(String::as_str), hops - 1);
            let mut spoofed: Vec<String> = spoof.iter().map(|n| std::net::Ipv4Addr::from(*n).to_string()).collect();
            spoofed.extend(base);
            let with_spoof = client_address(peer, [spoofed.join(", ")].iter().map(String::as_str), hops - 1);
            prop_assert_eq!(honest, with_spoof);
        }

        #[test]
        fn v4_cidr_round_trip(a in any::<u32>(), len in 0u32..=32) {
            let mask = u32::MAX.checked_shl(32 - len).unwrap_or(0);
            let net = std::net::Ipv4Addr::from(a & mask);
            let c: Cidr = format!("{net}/{len}").parse().unwrap();
            prop_assert!(c.contains(IpAddr::V4(std::net::Ipv4Addr::from(a))));
        }
    }
}
