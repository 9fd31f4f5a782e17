//! Who the client is when a reverse proxy stands between it and us.
//!
//! Invariants: forwarding headers (`Forwarded`, RFC 7239; `X-Forwarded-For` and
//! `X-Forwarded-Proto`) are read only when the connection's peer is in the operator's list of
//! trusted proxies; from anyone else they change nothing. The client is the right-most address
//! of the chain that is not a trusted proxy: every address to its right was written by a proxy
//! we trust, while anything to its left was written by the client itself and may be forged. A
//! header we cannot parse, or an `unknown`/obfuscated hop, stops the walk at the last address
//! we could vouch for (a proxy's own), never at something the client wrote.
//!
//! The parsers here read bytes any client can send; `fuzz/fuzz_targets/forwarded_headers.rs`
//! drives them.

use std::fmt;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::str::FromStr;

use axum::http::HeaderMap;
use serde::{Deserialize, Deserializer};

/// One trusted network: an address and a prefix length (`10.0.0.0/8`, `::1`, `fd00::/8`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Cidr {
    net: IpAddr,
    bits: u8,
}

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
#[error("not an address or CIDR: {0:?} (use 10.0.0.0/8, 192.0.2.7 or ::1)")]
pub struct BadCidr(String);

impl FromStr for Cidr {
    type Err = BadCidr;
    fn from_str(s: &str) -> Result<Self, BadCidr> {
        let bad = || BadCidr(s.to_string());
        let (addr, bits) = match s.trim().split_once('/') {
            Some((a, b)) => (a, Some(b.parse::<u8>().map_err(|_| bad())?)),
            None => (s.trim(), None),
        };
        let net: IpAddr = addr.parse().map_err(|_| bad())?;
        let net = net.to_canonical();
        let max = if net.is_ipv4() { 32 } else { 128 };
        let bits = bits.unwrap_or(max);
        if bits > max {
            return Err(bad());
        }
        Ok(Cidr { net, bits })
    }
}

impl fmt::Display for Cidr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.net, self.bits)
    }
}

impl<'de> Deserialize<'de> for Cidr {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        String::deserialize(d)?.parse().map_err(serde::de::Error::custom)
    }
}

impl Cidr {
    pub fn contains(&self, ip: IpAddr) -> bool {
        match (self.net, ip.to_canonical()) {
            (IpAddr::V4(net), IpAddr::V4(ip)) => {
                prefix_eq(u128::from(u32::from(net)) << 96, u128::from(u32::from(ip)) << 96, self.bits)
            }
            (IpAddr::V6(net), IpAddr::V6(ip)) => prefix_eq(u128::from(net), u128::from(ip), self.bits),
            _ => false,
        }
    }
}

/// Whether the top `bits` bits of two left-aligned addresses agree.
fn prefix_eq(a: u128, b: u128, bits: u8) -> bool {
    bits == 0 || (a ^ b) >> (128 - u32::from(bits)) == 0
}

/// The peers whose forwarding headers we believe. Empty: nobody's.
#[derive(Clone, Debug, Default, Deserialize, PartialEq, Eq)]
#[serde(transparent)]
pub struct TrustedProxies(pub Vec<Cidr>);

impl TrustedProxies {
    pub fn contains(&self, ip: IpAddr) -> bool {
        self.0.iter().any(|c| c.contains(ip))
    }
}

/// The scheme a client used to reach the first proxy, as that proxy reported it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Scheme {
    Http,
    Https,
}

impl Scheme {
    fn parse(s: &str) -> Option<Scheme> {
        if s.eq_ignore_ascii_case("https") {
            Some(Scheme::Https)
        } else if s.eq_ignore_ascii_case("http") {
            Some(Scheme::Http)
        } else {
            None
        }
    }
}

/// What we know of a request's client, put in the request's extensions by `serve`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Client {
    /// The client's address: the peer's, or, from a trusted proxy, the forwarded one.
    pub ip: IpAddr,
    /// The connection's own peer.
    pub peer: IpAddr,
    /// The connection to us is TLS.
    pub tls: bool,
    /// The peer is a trusted proxy.
    pub proxied: bool,
    /// The scheme the client used to reach the proxy, if a trusted proxy said so.
    pub forwarded_scheme: Option<Scheme>,
}

/// One hop of a forwarding chain: the address a proxy saw (`None`: `unknown` or obfuscated)
/// and, from `Forwarded`, the scheme it was reached by.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Hop {
    pub addr: Option<IpAddr>,
    pub scheme: Option<Scheme>,
}

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
#[error("unreadable forwarding header")]
pub struct BadForwarding;

/// Longest chain we read: past this many hops the header is treated as unreadable. Real chains
/// have a handful; the 32 KiB header limit already bounds the work.
pub const MAX_HOPS: usize = 64;

/// Work out the client of a request whose connection came from `peer`.
pub fn resolve(peer: IpAddr, tls: bool, headers: &HeaderMap, trusted: &TrustedProxies) -> Client {
    let peer = peer.to_canonical();
    let mut client = Client { ip: peer, peer, tls, proxied: false, forwarded_scheme: None };
    if !trusted.contains(peer) {
        return client;
    }
    client.proxied = true;
    let Ok(chain) = forwarded_chain(headers) else {
        return client;
    };
    // Walk from the nearest hop outwards while each address is a proxy we trust.
    for hop in chain.hops.iter().rev() {
        match hop.addr {
            Some(ip) if trusted.contains(ip) => client.ip = ip,
            Some(ip) => {
                client.ip = ip;
                client.forwarded_scheme = hop.scheme.or(chain.edge_scheme);
                return client;
            }
            None => return client,
        }
    }
    client
}

/// A request's forwarding chain, left (furthest) to right (nearest).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Chain {
    pub hops: Vec<Hop>,
    /// A lone `X-Forwarded-Proto` value on a chain of several hops: what the edge proxy wrote
    /// (`proxy_set_header X-Forwarded-Proto $scheme`), the scheme of the client's own
    /// connection, whichever hop turns out to be the client.
    pub edge_scheme: Option<Scheme>,
}

/// The chain a request carries: `Forwarded` if present, else `X-Forwarded-For` with
/// `X-Forwarded-Proto`. Several header lines of one name are one list (RFC 9110 5.3).
pub fn forwarded_chain(headers: &HeaderMap) -> Result<Chain, BadForwarding> {
    let joined = |name: &str| -> Result<Option<String>, BadForwarding> {
        let mut out: Option<String> = None;
        for v in headers.get_all(name) {
            let s = v.to_str().map_err(|_| BadForwarding)?;
            match &mut out {
                Some(o) => {
                    o.push(',');
                    o.push_str(s);
                }
                None => out = Some(s.to_string()),
            }
        }
        Ok(out)
    };
    if let Some(f) = joined("forwarded")? {
        return Ok(Chain { hops: parse_forwarded(&f)?, edge_scheme: None });
    }
    let Some(xff) = joined("x-forwarded-for")? else {
        return Ok(Chain::default());
    };
    let mut chain = Chain {
        hops: parse_x_forwarded_for(&xff)?.into_iter().map(|addr| Hop { addr, scheme: None }).collect(),
        edge_scheme: None,
    };
    if let Some(proto) = joined("x-forwarded-proto")? {
        let schemes = parse_x_forwarded_proto(&proto)?;
        // One value per hop lines up with the addresses; a lone value is the edge proxy's.
        // Anything else cannot be matched to a hop and is ignored.
        if schemes.len() == chain.hops.len() {
            chain.hops.iter_mut().zip(schemes).for_each(|(h, s)| h.scheme = s);
        } else if let [s] = schemes.as_slice() {
            chain.edge_scheme = *s;
        }
    }
    Ok(chain)
}

/// `X-Forwarded-For: client, proxy1, proxy2`: addresses, optionally with a port
/// (`192.0.2.1:4711`, `[2001:db8::1]:4711`), or `unknown`.
pub fn parse_x_forwarded_for(value: &str) -> Result<Vec<Option<IpAddr>>, BadForwarding> {
    let items = list_items(value)?;
    items
        .into_iter()
        .map(|item| if item.eq_ignore_ascii_case("unknown") { Ok(None) } else { parse_node_addr(item).map(Some) })
        .collect()
}

fn parse_x_forwarded_proto(value: &str) -> Result<Vec<Option<Scheme>>, BadForwarding> {
    Ok(list_items(value)?.into_iter().map(Scheme::parse).collect())
}

/// A comma-separated list's items, trimmed; empty items (`a,,b`) are skipped as RFC 9110
/// allows, but a list of nothing but commas and blanks, or of too many items, is refused.
fn list_items(value: &str) -> Result<Vec<&str>, BadForwarding> {
    let items: Vec<&str> = value.split(',').map(str::trim).filter(|s| !s.is_empty()).collect();
    if items.is_empty() || items.len() > MAX_HOPS {
        return Err(BadForwarding);
    }
    Ok(items)
}

/// An address as a forwarding header writes it: bare, with a port, IPv6 in brackets with or
/// without a port.
fn parse_node_addr(s: &str) -> Result<IpAddr, BadForwarding> {
    if let Ok(ip) = s.parse::<IpAddr>() {
        return Ok(ip.to_canonical());
    }
    if let Some(rest) = s.strip_prefix('[') {
        let (inside, after) = rest.split_once(']').ok_or(BadForwarding)?;
        let ip: Ipv6Addr = inside.parse().map_err(|_| BadForwarding)?;
        if !(after.is_empty() || after.strip_prefix(':').is_some_and(valid_port)) {
            return Err(BadForwarding);
        }
        return Ok(IpAddr::V6(ip).to_canonical());
    }
    let (host, port) = s.rsplit_once(':').ok_or(BadForwarding)?;
    let ip: Ipv4Addr = host.parse().map_err(|_| BadForwarding)?;
    if !valid_port(port) {
        return Err(BadForwarding);
    }
    Ok(IpAddr::V4(ip))
}

/// RFC 7239's node-port: a number, or an obfuscated `_name`.
fn valid_port(p: &str) -> bool {
    p.parse::<u16>().is_ok() || obfuscated(p)
}

fn obfuscated(s: &str) -> bool {
    s.len() > 1
        && s.starts_with('_')
        && s.bytes().skip(1).all(|b| b.is_ascii_alphanumeric() || b == b'.' || b == b'_' || b == b'-')
}

/// `Forwarded: for=192.0.2.60;proto=https, for="[2001:db8::1]:4711"` (RFC 7239). Each element
/// is one hop; of its pairs only `for` and `proto` matter here (`by` and `host` are checked for
/// form and dropped). An element without `for` is a hop we know nothing of (`None`).
pub fn parse_forwarded(value: &str) -> Result<Vec<Hop>, BadForwarding> {
    let mut hops = Vec::new();
    let mut rest = value;
    loop {
        let mut hop = Hop { addr: None, scheme: None };
        let mut any_pair = false;
        loop {
            rest = rest.trim_start_matches([' ', '\t']);
            if rest.starts_with(',') || rest.is_empty() {
                if any_pair {
                    return Err(BadForwarding); // a `;` with no pair after it
                }
                break;
            }
            let (name, after) = take_token(rest).ok_or(BadForwarding)?;
            let after = after.strip_prefix('=').ok_or(BadForwarding)?;
            let (v, after) = take_value(after)?;
            rest = after.trim_start_matches([' ', '\t']);
            any_pair = true;
            if name.eq_ignore_ascii_case("for") {
                hop.addr = parse_forwarded_node(&v)?;
            } else if name.eq_ignore_ascii_case("proto") {
                hop.scheme = Scheme::parse(&v);
            }
            match rest.strip_prefix(';') {
                Some(r) => rest = r,
                None => break,
            }
        }
        if any_pair {
            hops.push(hop);
            if hops.len() > MAX_HOPS {
                return Err(BadForwarding);
            }
        }
        rest = rest.trim_start_matches([' ', '\t']);
        match rest.strip_prefix(',') {
            Some(r) => rest = r,
            None if rest.is_empty() => break,
            None => return Err(BadForwarding),
        }
    }
    if hops.is_empty() {
        return Err(BadForwarding);
    }
    Ok(hops)
}

/// `for`'s node: an address (with a port or not), `unknown`, or an obfuscated `_name`.
fn parse_forwarded_node(v: &str) -> Result<Option<IpAddr>, BadForwarding> {
    if v.eq_ignore_ascii_case("unknown") || obfuscated(v) {
        return Ok(None);
    }
    // RFC 7239 wants IPv6 bracketed (and so quoted); a bare IPv6 is read too, leniently.
    if v.contains(':') && !v.starts_with('[') {
        if let Ok(ip) = v.parse::<Ipv6Addr>() {
            return Ok(Some(IpAddr::V6(ip).to_canonical()));
        }
    }
    parse_node_addr(v).map(Some)
}

fn is_tchar(b: u8) -> bool {
    b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b)
}

/// A token (RFC 9110 5.6.2) at the start of `s`, and what follows it.
fn take_token(s: &str) -> Option<(&str, &str)> {
    let end = s.bytes().position(|b| !is_tchar(b)).unwrap_or(s.len());
    (end > 0).then(|| s.split_at(end))
}

/// A token or a quoted-string (with its escapes undone) at the start of `s`, and what follows.
fn take_value(s: &str) -> Result<(String, &str), BadForwarding> {
    let Some(quoted) = s.strip_prefix('"') else {
        let (t, rest) = take_token(s).ok_or(BadForwarding)?;
        return Ok((t.to_string(), rest));
    };
    let mut out = String::new();
    let mut chars = quoted.char_indices();
    while let Some((i, c)) = chars.next() {
        match c {
            '"' => return Ok((out, &quoted[i + 1..])),
            '\\' => out.push(chars.next().ok_or(BadForwarding)?.1),
            c if c == '\t' || (' '..='~').contains(&c) => out.push(c),
            _ => return Err(BadForwarding),
        }
    }
    Err(BadForwarding)
}

#[cfg(test)]
mod tests {
    use axum::http::HeaderValue;

    use super::*;

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    fn trusted(list: &[&str]) -> TrustedProxies {
        TrustedProxies(list.iter().map(|s| s.parse().unwrap()).collect())
    }

    fn headers(pairs: &[(&'static str, &str)]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for (k, v) in pairs {
            h.append(*k, HeaderValue::from_str(v).unwrap());
        }
        h
    }

    #[test]
    fn cidrs_parse_and_match() {
        let c: Cidr = "10.0.0.0/8".parse().unwrap();
        assert!(c.contains(ip("10.200.1.2")));
        assert!(!c.contains(ip("11.0.0.1")));
        assert!(c.contains(ip("::ffff:10.1.2.3")), "IPv4-mapped addresses are IPv4");
        let one: Cidr = "192.0.2.7".parse().unwrap();
        assert!(one.contains(ip("192.0.2.7")) && !one.contains(ip("192.0.2.8")));
        let v6: Cidr = "2001:db8::/32".parse().unwrap();
        assert!(v6.contains(ip("2001:db8:1::5")) && !v6.contains(ip("2001:db9::1")));
        assert!(!v6.contains(ip("10.0.0.1")));
        let all: Cidr = "0.0.0.0/0".parse().unwrap();
        assert!(all.contains(ip("203.0.113.9")));
        for bad in ["10.0.0.0/33", "::/129", "nonsense", "10.0.0/8", "1.2.3.4/x", ""] {
            assert!(bad.parse::<Cidr>().is_err(), "{bad}");
        }
    }

    #[test]
    fn an_untrusted_peer_changes_nothing() {
        let h = headers(&[("x-forwarded-for", "1.2.3.4"), ("forwarded", "for=5.6.7.8;proto=https")]);
        let c = resolve(ip("203.0.113.5"), false, &h, &trusted(&["10.0.0.0/8"]));
        assert_eq!(c.ip, ip("203.0.113.5"));
        assert!(!c.proxied);
        assert_eq!(c.forwarded_scheme, None);
    }

    #[test]
    fn the_right_most_untrusted_address_is_the_client() {
        let t = trusted(&["10.0.0.0/8"]);
        // The client forged "6.6.6.6" in front; the edge proxy appended what it saw.
        let h = headers(&[("x-forwarded-for", "6.6.6.6, 198.51.100.7, 10.0.0.2")]);
        assert_eq!(resolve(ip("10.0.0.1"), false, &h, &t).ip, ip("198.51.100.7"));
        let h = headers(&[("forwarded", "for=6.6.6.6, for=198.51.100.7;proto=https, for=10.0.0.2;proto=http")]);
        let c = resolve(ip("10.0.0.1"), false, &h, &t);
        assert_eq!((c.ip, c.forwarded_scheme), (ip("198.51.100.7"), Some(Scheme::Https)));
        // Every hop trusted: the left-most is the best we know.
        let h = headers(&[("x-forwarded-for", "10.9.9.9, 10.0.0.2")]);
        assert_eq!(resolve(ip("10.0.0.1"), false, &h, &t).ip, ip("10.9.9.9"));
        // No header: the proxy itself.
        assert_eq!(resolve(ip("10.0.0.1"), false, &HeaderMap::new(), &t).ip, ip("10.0.0.1"));
    }

    #[test]
    fn forwarded_wins_over_x_forwarded_for_and_lines_join() {
        let t = trusted(&["127.0.0.1"]);
        let h = headers(&[("x-forwarded-for", "1.1.1.1"), ("forwarded", "for=2.2.2.2")]);
        assert_eq!(resolve(ip("127.0.0.1"), false, &h, &t).ip, ip("2.2.2.2"));
        let h = headers(&[("x-forwarded-for", "3.3.3.3"), ("x-forwarded-for", "4.4.4.4")]);
        assert_eq!(resolve(ip("127.0.0.1"), false, &h, &t).ip, ip("4.4.4.4"));
    }

    #[test]
    fn garbage_and_unknown_stop_at_the_last_trusted_address() {
        let t = trusted(&["10.0.0.0/8"]);
        for bad in ["1.2.3.4, not-an-ip", ",,,", "1.2.3.4:99999"] {
            let h = headers(&[("x-forwarded-for", bad)]);
            assert_eq!(resolve(ip("10.0.0.1"), false, &h, &t).ip, ip("10.0.0.1"), "{bad}");
        }
        let h = headers(&[("forwarded", "for=1.2.3.4, for=unknown, for=10.0.0.3")]);
        assert_eq!(resolve(ip("10.0.0.1"), false, &h, &t).ip, ip("10.0.0.3"));
        let h = headers(&[("forwarded", "for=\"unterminated")]);
        assert_eq!(resolve(ip("10.0.0.1"), false, &h, &t).ip, ip("10.0.0.1"));
    }

    #[test]
    fn forwarded_syntax_of_rfc_7239() {
        let hops = parse_forwarded(
            "for=\"_gazonk\", For=\"[2001:db8:cafe::17]:4711\", for=192.0.2.60;proto=http;by=203.0.113.43, for=\"198.51.100.17:80\";host=\"ex\\\"ample\"",
        )
        .unwrap();
        let addrs: Vec<_> = hops.iter().map(|h| h.addr).collect();
        assert_eq!(addrs, [None, Some(ip("2001:db8:cafe::17")), Some(ip("192.0.2.60")), Some(ip("198.51.100.17"))]);
        assert_eq!(hops[2].scheme, Some(Scheme::Http));
        for bad in ["", "for", "for=", "for=1.2.3.4;", "=x", "for=1.2.3.4 junk", "for=\"a\u{1}\""] {
            assert!(parse_forwarded(bad).is_err(), "{bad:?}");
        }
        let long = vec!["for=1.2.3.4"; MAX_HOPS + 1].join(",");
        assert!(parse_forwarded(&long).is_err());
    }

    #[test]
    fn x_forwarded_proto_lines_up_with_the_hops() {
        let t = trusted(&["10.0.0.0/8"]);
        let h = headers(&[("x-forwarded-for", "198.51.100.7"), ("x-forwarded-proto", "https")]);
        assert_eq!(resolve(ip("10.0.0.1"), false, &h, &t).forwarded_scheme, Some(Scheme::Https));
        let h = headers(&[("x-forwarded-for", "198.51.100.7, 10.0.0.2"), ("x-forwarded-proto", "https, http")]);
        assert_eq!(resolve(ip("10.0.0.1"), false, &h, &t).forwarded_scheme, Some(Scheme::Https));
        // A forged entry in front, and the edge proxy's lone value: it is the client's scheme.
        let h = headers(&[("x-forwarded-for", "6.6.6.6, 198.51.100.7"), ("x-forwarded-proto", "https")]);
        let c = resolve(ip("10.0.0.1"), false, &h, &t);
        assert_eq!((c.ip, c.forwarded_scheme), (ip("198.51.100.7"), Some(Scheme::Https)));
        let h = headers(&[("x-forwarded-for", "6.6.6.6, 198.51.100.7"), ("x-forwarded-proto", "https, http, http")]);
        assert_eq!(resolve(ip("10.0.0.1"), false, &h, &t).forwarded_scheme, None, "unmatched lists say nothing");
    }
}
