//! Where reusable credentials may travel: a password in `Authorization: Basic` (app passwords,
//! for WebDAV clients) or a session cookie (a web portal) must never cross a network in clear.
//!
//! Invariant: such credentials are accepted only over TLS, from a loopback peer, or through a
//! trusted proxy that says (or that the operator says) the client's own connection was TLS.
//! A proxy that reports `http` is believed too, and refused. Bearer tokens of the API are not
//! held to this: clients get them over whatever channel they signed in on, and the API has
//! always been served plain behind TLS-terminating proxies.
//!
//! `/dav/` takes `CredentialsAllowed` before it reads Basic credentials; the web portal reads
//! its cookie only where `allows` says so (`portal::session`).

use axum::extract::FromRequestParts;
use axum::http::request::Parts;

use super::client_addr::{Client, Scheme};
use super::error::{ApiError, ErrorCode};
use super::AppState;

/// The operator's word on the plain listener.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct CredentialPolicy {
    /// Every trusted proxy terminates TLS: its requests count as TLS unless it says otherwise
    /// (`X-Forwarded-Proto: http`, `Forwarded: proto=http`).
    pub proxy_terminates_tls: bool,
}

impl CredentialPolicy {
    /// Whether a password or a cookie may be read from this request.
    pub fn allows(&self, c: &Client) -> bool {
        if c.tls {
            return true;
        }
        if c.proxied {
            return match c.forwarded_scheme {
                Some(Scheme::Https) => true,
                Some(Scheme::Http) => false,
                None => self.proxy_terminates_tls,
            };
        }
        c.peer.is_loopback()
    }

    pub fn check(&self, c: &Client) -> Result<(), ApiError> {
        if self.allows(c) {
            Ok(())
        } else {
            Err(ApiError::new(
                ErrorCode::TlsRequired,
                "passwords and cookies are accepted over HTTPS only; use the TLS listener",
            ))
        }
    }
}

/// A request whose channel may carry a password or a cookie; `403 tls_required` otherwise.
/// A request without a `Client` (a router driven in-process) is refused.
#[derive(Clone, Copy, Debug)]
pub struct CredentialsAllowed;

impl FromRequestParts<AppState> for CredentialsAllowed {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, app: &AppState) -> Result<Self, ApiError> {
        let client = parts.extensions.get::<Client>().ok_or_else(|| {
            ApiError::new(ErrorCode::TlsRequired, "the channel of this request is unknown; use the TLS listener")
        })?;
        app.settings.credentials.check(client)?;
        Ok(CredentialsAllowed)
    }
}

#[cfg(test)]
mod tests {
    use std::net::IpAddr;

    use super::*;

    fn client(peer: &str, tls: bool, proxied: bool, scheme: Option<Scheme>) -> Client {
        let peer: IpAddr = peer.parse().unwrap();
        Client { ip: peer, peer, tls, proxied, forwarded_scheme: scheme }
    }

    #[test]
    fn plain_http_from_afar_is_refused_and_tls_is_not() {
        let p = CredentialPolicy::default();
        assert!(!p.allows(&client("203.0.113.9", false, false, None)));
        assert!(p.allows(&client("203.0.113.9", true, false, None)));
        assert!(p.allows(&client("127.0.0.1", false, false, None)));
        assert!(p.allows(&client("::1", false, false, None)));
        assert_eq!(p.check(&client("192.0.2.1", false, false, None)).unwrap_err().code, ErrorCode::TlsRequired);
    }

    #[test]
    fn a_trusted_proxy_is_believed_either_way() {
        let p = CredentialPolicy::default();
        assert!(p.allows(&client("10.0.0.1", false, true, Some(Scheme::Https))));
        assert!(!p.allows(&client("10.0.0.1", false, true, Some(Scheme::Http))));
        assert!(!p.allows(&client("10.0.0.1", false, true, None)), "unsaid is not TLS");
        assert!(!p.allows(&client("127.0.0.1", false, true, Some(Scheme::Http))), "a local proxy serving plain HTTP");
        let terminating = CredentialPolicy { proxy_terminates_tls: true };
        assert!(terminating.allows(&client("10.0.0.1", false, true, None)));
        assert!(!terminating.allows(&client("10.0.0.1", false, true, Some(Scheme::Http))));
        assert!(!terminating.allows(&client("203.0.113.9", false, false, None)), "only for the proxies");
    }
}
