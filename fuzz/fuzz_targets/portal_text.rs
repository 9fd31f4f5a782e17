//! What the web portal reads from requests with its own code: the `Cookie` header, the
//! download name of a bridged path, the CSRF rule's headers (`Origin`, `Sec-Fetch-Site`,
//! `Host`, the token), and the synced records' payloads it shows. Nothing may panic, and the
//! CSRF rule must never pass a state-changing request without the session's token.
#![no_main]

use cairn::http::portal::{bridge, session, text};
use http::header::{COOKIE, HOST, ORIGIN};
use http::{HeaderValue, Request};
use libfuzzer_sys::fuzz_target;

const TOKEN: &str = "0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef";

fuzz_target!(|data: &[u8]| {
    let Ok(s) = std::str::from_utf8(data) else { return };
    if let Ok(v) = HeaderValue::from_str(s) {
        let mut h = http::HeaderMap::new();
        h.insert(COOKIE, v);
        if let Some(t) = session::cookie_value(&h) {
            assert!(!t.is_empty() && !t.contains(';'));
        }
    }
    assert!(!bridge::percent_decoded(s).contains('/'));
    let encoded = text::encode_path(s);
    assert!(encoded.bytes().all(|b| b.is_ascii_alphanumeric() || b"-._~%/".contains(&b)));

    // Four header values, newline-separated: Origin, Sec-Fetch-Site, Host, CSRF token.
    let mut parts = s.splitn(4, '\n');
    let (origin, site, host, token) = (parts.next(), parts.next(), parts.next(), parts.next());
    let mut req = Request::builder().method("POST").uri("/portal/api/v1/account");
    for (name, v) in [(ORIGIN.as_str(), origin), ("sec-fetch-site", site), (HOST.as_str(), host), (session::CSRF_HEADER, token)] {
        if let Some(v) = v.filter(|v| !v.is_empty()).and_then(|v| HeaderValue::from_str(v).ok()) {
            req = req.header(name, v);
        }
    }
    if let Ok(req) = req.body(()) {
        let (p, _) = req.into_parts();
        if session::check_csrf(&p, Some(TOKEN)).is_ok() {
            assert_eq!(token, Some(session::csrf_token(TOKEN).as_str()), "passed without the token");
        }
    }

    if let Ok(v) = serde_json::from_str::<serde_json::Value>(s) {
        for shown in [text::contact("id", &v), text::event("id", &v), text::note("id", &v)] {
            assert!(!shown.title.is_empty());
            let _ = shown.matches(s);
        }
    }
});
