//! The forwarding headers a client (or a proxy) sends: `Forwarded`, `X-Forwarded-For`,
//! `X-Forwarded-Proto`; and the DER walk that reads a certificate's expiry. Nothing may panic;
//! from an untrusted peer the headers change nothing; from a trusted one the client is the peer
//! or an address the chain names.
#![no_main]

use std::net::IpAddr;

use http::{HeaderMap, HeaderValue};
use cairn::http::client_addr::{forwarded_chain, parse_forwarded, parse_x_forwarded_for, resolve, TrustedProxies};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let _ = cairn::http::tls::not_after(data);
    let Ok(s) = std::str::from_utf8(data) else { return };
    let _ = parse_forwarded(s);
    let _ = parse_x_forwarded_for(s);
    // The input split in three: one header each.
    let mut parts = s.splitn(3, '\n');
    let mut headers = HeaderMap::new();
    for name in ["forwarded", "x-forwarded-for", "x-forwarded-proto"] {
        if let Some(v) = parts.next().and_then(|p| HeaderValue::from_str(p).ok()) {
            headers.insert(name, v);
        }
    }
    let trusted = TrustedProxies(vec!["10.0.0.0/8".parse().unwrap(), "::1".parse().unwrap()]);
    let outsider: IpAddr = "203.0.113.9".parse().unwrap();
    assert_eq!(resolve(outsider, false, &headers, &trusted).ip, outsider);
    let proxy: IpAddr = "10.0.0.1".parse().unwrap();
    let c = resolve(proxy, false, &headers, &trusted);
    if c.ip != proxy {
        let chain = forwarded_chain(&headers).expect("a client other than the peer came from a readable chain");
        assert!(chain.hops.iter().any(|h| h.addr == Some(c.ip)));
    }
});
