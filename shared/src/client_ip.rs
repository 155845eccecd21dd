//! Who the client is: the TCP peer, or, when the peer is a trusted proxy, the rightmost address
//! of its forwarding chain that is not itself a trusted proxy. Resolved once per request by
//! [`resolve_client`] and read everywhere through [`crate::auth::extract::client_addr`].

use axum::extract::{ConnectInfo, Request};
use axum::http::HeaderMap;
use ipnet::IpNet;
use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;

pub const X_FORWARDED_FOR: &str = "x-forwarded-for";
pub const FORWARDED: &str = "forwarded";

/// The client of a request whose forwarded chain cannot be read: the unspecified address, which
/// no allowed network holds (short of `0.0.0.0/0`, which admits everyone anyway), and which all
/// such requests share in the throttles.
pub const UNUSABLE_CHAIN: IpAddr = IpAddr::V4(std::net::Ipv4Addr::UNSPECIFIED);

/// The client address of one request, as [`resolve_client`] decided it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ClientAddr(pub IpAddr);

/// The proxies (`trusted_proxies`) whose forwarding headers are believed.
#[derive(Clone, Debug, Default)]
pub struct TrustedProxies(Arc<[IpNet]>);

impl TrustedProxies {
    pub fn new(networks: &[IpNet]) -> Self {
        Self(networks.into())
    }

    fn contains(&self, addr: IpAddr) -> bool {
        let addr = addr.to_canonical();
        self.0.iter().any(|net| net.contains(&addr))
    }

    /// The client of a request that arrived from `peer` with `headers`.
    ///
    /// Headers are read only when `peer` is trusted. `X-Forwarded-For` is read when present
    /// (what nginx, HAProxy and cloud load balancers append to), `Forwarded` (RFC 7239) only
    /// otherwise. The chain is walked from the right, skipping trusted hops: each hop appended
    /// the address it heard from, so the first untrusted one is the last the operator's own
    /// infrastructure vouches for; anything left of it is the client's to invent. A chain of
    /// trusted hops only yields its leftmost entry, and a trusted peer that forwards nothing is
    /// the client itself. An entry reached that is not an address (`unknown`, an obfuscated
    /// name, garbage) makes the chain unusable: the client is then [`UNUSABLE_CHAIN`], which no
    /// network check admits, never the proxy (which may well be inside `hq_networks`).
    pub fn resolve(&self, peer: IpAddr, headers: &HeaderMap) -> IpAddr {
        let peer = peer.to_canonical();
        if !self.contains(peer) {
            return peer;
        }
        let chain = if headers.contains_key(X_FORWARDED_FOR) {
            forwarded_for_chain(headers)
        } else {
            forwarded_chain(headers)
        };
        match self.rightmost_untrusted(&chain) {
            Some(Some(client)) => client,
            Some(None) => peer,
            None => UNUSABLE_CHAIN,
        }
    }

    /// The rightmost untrusted hop (or the leftmost of an all-trusted chain); `Some(None)` for
    /// an empty chain, `None` when the walk reaches an entry that is not an address.
    fn rightmost_untrusted(&self, chain: &[Option<IpAddr>]) -> Option<Option<IpAddr>> {
        let mut leftmost = None;
        for hop in chain.iter().rev() {
            let addr = (*hop)?.to_canonical();
            if !self.contains(addr) {
                return Some(Some(addr));
            }
            leftmost = Some(addr);
        }
        Some(leftmost)
    }
}

/// The entries of every `X-Forwarded-For` line in order, `None` where one is not an address.
fn forwarded_for_chain(headers: &HeaderMap) -> Vec<Option<IpAddr>> {
    headers
        .get_all(X_FORWARDED_FOR)
        .iter()
        .flat_map(|line| match line.to_str() {
            Ok(text) => text.split(',').map(parse_node).collect(),
            Err(_) => vec![None],
        })
        .collect()
}

/// The `for=` node of every `Forwarded` element in order, `None` where an element has none or
/// it is not an address. Quoted commas never occur in a valid node, so a plain split keeps a
/// client's garbage on the left from swallowing the elements proxies appended on the right.
fn forwarded_chain(headers: &HeaderMap) -> Vec<Option<IpAddr>> {
    headers
        .get_all(FORWARDED)
        .iter()
        .flat_map(|line| match line.to_str() {
            Ok(text) => text.split(',').map(for_node).collect(),
            Err(_) => vec![None],
        })
        .collect()
}

fn for_node(element: &str) -> Option<IpAddr> {
    element.split(';').find_map(|pair| {
        let (key, value) = pair.split_once('=')?;
        key.trim()
            .eq_ignore_ascii_case("for")
            .then(|| parse_node(value))?
    })
}

/// An address as forwarding headers write it: `192.0.2.1`, `192.0.2.1:4711`, `2001:db8::1`,
/// `[2001:db8::1]`, `"[2001:db8::1]:4711"`.
fn parse_node(node: &str) -> Option<IpAddr> {
    let node = node.trim();
    let node = node
        .strip_prefix('"')
        .and_then(|n| n.strip_suffix('"'))
        .unwrap_or(node);
    if let Ok(addr) = node.parse::<IpAddr>() {
        return Some(addr);
    }
    if let Ok(addr) = node.parse::<SocketAddr>() {
        return Some(addr.ip());
    }
    node.strip_prefix('[')
        .and_then(|n| n.strip_suffix(']'))
        .and_then(|n| n.parse::<std::net::Ipv6Addr>().ok())
        .map(IpAddr::V6)
}

/// Stores the request's [`ClientAddr`] in its extensions, so the login throttle, the network
/// checks, the audit log and the rate limiters all see the same address. A plain request map
/// (`MapRequestLayer` in the pipeline): unlike `from_fn`, it does not clone the services
/// beneath it for every request.
pub fn resolve_client(trusted: &TrustedProxies, mut request: Request) -> Request {
    if let Some(ConnectInfo(peer)) = request.extensions().get::<ConnectInfo<SocketAddr>>() {
        let client = trusted.resolve(peer.ip(), request.headers());
        request.extensions_mut().insert(ClientAddr(client));
    }
    request
}

#[cfg(test)]
mod tests {
    use super::*;
    use axum::http::HeaderValue;

    fn ip(text: &str) -> IpAddr {
        text.parse().expect("address")
    }

    fn headers(pairs: &[(&'static str, &str)]) -> HeaderMap {
        let mut map = HeaderMap::new();
        for (name, value) in pairs {
            map.append(*name, HeaderValue::from_str(value).expect("header value"));
        }
        map
    }

    fn loopback_trusted() -> TrustedProxies {
        TrustedProxies::new(&[
            "127.0.0.0/8".parse().unwrap(),
            "10.0.0.0/8".parse().unwrap(),
        ])
    }

    #[test]
    fn without_trusted_proxies_the_headers_are_ignored() {
        let none = TrustedProxies::default();
        let sent = headers(&[
            (X_FORWARDED_FOR, "203.0.113.9"),
            (FORWARDED, "for=203.0.113.9"),
        ]);
        assert_eq!(none.resolve(ip("127.0.0.1"), &sent), ip("127.0.0.1"));
    }

    #[test]
    fn an_untrusted_peer_is_the_client_whatever_it_forwards() {
        let sent = headers(&[(X_FORWARDED_FOR, "10.1.1.1")]);
        assert_eq!(
            loopback_trusted().resolve(ip("198.51.100.4"), &sent),
            ip("198.51.100.4")
        );
    }

    #[test]
    fn the_rightmost_untrusted_address_is_the_client() {
        let trusted = loopback_trusted();
        let one = headers(&[(X_FORWARDED_FOR, "203.0.113.9")]);
        assert_eq!(trusted.resolve(ip("127.0.0.1"), &one), ip("203.0.113.9"));
        // A client claiming an allowed address on the left is still the address the proxy saw.
        let spoofed = headers(&[(X_FORWARDED_FOR, "10.9.9.9, 198.51.100.7")]);
        assert_eq!(
            trusted.resolve(ip("127.0.0.1"), &spoofed),
            ip("198.51.100.7")
        );
        // Trusted hops (a load balancer in front of a local proxy) are skipped.
        let hops = headers(&[(X_FORWARDED_FOR, "192.0.2.50, 198.51.100.7 , 10.0.0.2")]);
        assert_eq!(trusted.resolve(ip("127.0.0.1"), &hops), ip("198.51.100.7"));
        // Several header lines form one chain, in order.
        let lines = headers(&[
            (X_FORWARDED_FOR, "192.0.2.50"),
            (X_FORWARDED_FOR, "198.51.100.7, 10.0.0.2"),
        ]);
        assert_eq!(trusted.resolve(ip("127.0.0.1"), &lines), ip("198.51.100.7"));
    }

    #[test]
    fn a_chain_of_trusted_hops_only_yields_its_origin() {
        let sent = headers(&[(X_FORWARDED_FOR, "10.0.0.7, 10.0.0.2")]);
        assert_eq!(
            loopback_trusted().resolve(ip("127.0.0.1"), &sent),
            ip("10.0.0.7")
        );
    }

    #[test]
    fn malformed_chains_resolve_to_an_address_no_network_holds() {
        let trusted = loopback_trusted();
        for bad in [
            "",
            "unknown",
            "203.0.113.9, not-an-address",
            "300.1.1.1",
            ",",
        ] {
            let sent = headers(&[(X_FORWARDED_FOR, bad)]);
            assert_eq!(
                trusted.resolve(ip("127.0.0.1"), &sent),
                UNUSABLE_CHAIN,
                "{bad:?}"
            );
        }
        // Garbage left of the client the proxy appended is never reached.
        let sent = headers(&[(X_FORWARDED_FOR, "garbage, 203.0.113.9")]);
        assert_eq!(trusted.resolve(ip("127.0.0.1"), &sent), ip("203.0.113.9"));
        let mut opaque = HeaderMap::new();
        opaque.insert(
            X_FORWARDED_FOR,
            HeaderValue::from_bytes(b"203.0.113.9\xff").expect("opaque bytes"),
        );
        assert_eq!(trusted.resolve(ip("127.0.0.1"), &opaque), UNUSABLE_CHAIN);
        // A trusted peer that forwards nothing is the client itself (a local health check).
        assert_eq!(
            trusted.resolve(ip("127.0.0.1"), &HeaderMap::new()),
            ip("127.0.0.1")
        );
    }

    #[test]
    fn forwarded_for_nodes_are_read_in_every_form() {
        let trusted = loopback_trusted();
        for (value, client) in [
            ("for=203.0.113.9", "203.0.113.9"),
            ("For=\"203.0.113.9:4711\";proto=https", "203.0.113.9"),
            ("for=\"[2001:db8::1]:4711\"", "2001:db8::1"),
            ("for=\"[2001:db8::1]\"", "2001:db8::1"),
            ("proto=https;for=198.51.100.7;by=10.0.0.2", "198.51.100.7"),
            ("for=10.9.9.9, for=198.51.100.7", "198.51.100.7"),
            (
                "for=192.0.2.1, for=198.51.100.7, for=10.0.0.2",
                "198.51.100.7",
            ),
            ("for=\"garbage, for=198.51.100.7", "198.51.100.7"),
        ] {
            let sent = headers(&[(FORWARDED, value)]);
            assert_eq!(
                trusted.resolve(ip("127.0.0.1"), &sent),
                ip(client),
                "{value}"
            );
        }
        for bad in [
            "for=unknown",
            "for=_hidden",
            "proto=https",
            "for=198.51.100.7, by=10.0.0.2",
        ] {
            let sent = headers(&[(FORWARDED, bad)]);
            assert_eq!(
                trusted.resolve(ip("127.0.0.1"), &sent),
                UNUSABLE_CHAIN,
                "{bad}"
            );
        }
    }

    #[test]
    fn x_forwarded_for_wins_over_forwarded() {
        let sent = headers(&[
            (FORWARDED, "for=10.9.9.9"),
            (X_FORWARDED_FOR, "198.51.100.7"),
        ]);
        assert_eq!(
            loopback_trusted().resolve(ip("127.0.0.1"), &sent),
            ip("198.51.100.7")
        );
    }

    #[test]
    fn ipv4_mapped_peers_and_entries_match_ipv4_networks() {
        let trusted = loopback_trusted();
        let sent = headers(&[(X_FORWARDED_FOR, "::ffff:203.0.113.9")]);
        assert_eq!(
            trusted.resolve(ip("::ffff:127.0.0.1"), &sent),
            ip("203.0.113.9")
        );
    }
}
