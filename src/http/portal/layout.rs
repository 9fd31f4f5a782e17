//! The frame every page shares (head, navigation, sign-out) and the headers every page is sent
//! with: a strict Content-Security-Policy (scripts and styles only from this origin, no inline
//! code, no framing), `nosniff`, no referrer, no caching of personal pages.

use axum::http::header::{CACHE_CONTROL, CONTENT_TYPE};
use axum::http::HeaderValue;
use axum::response::{IntoResponse, Response};
use maud::{html, Markup, DOCTYPE};

use super::session::{Web, ANONYMOUS_CSRF};

/// Style attributes and inline scripts are refused too (`style-src 'self'`): the storage bar is
/// SVG geometry, not inline CSS.
pub const CSP: &str = "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self'; \
                       connect-src 'self'; form-action 'self'; base-uri 'none'; frame-ancestors 'none'";

/// The pages a signed-in person moves between: (path, label).
const NAV: &[(&str, &str)] = &[
    ("/portal/account", "Account"),
    ("/portal/security", "Security"),
    ("/portal/storage", "Storage"),
    ("/portal/files", "Files"),
    ("/portal/contacts", "Contacts"),
    ("/portal/calendar", "Calendar"),
    ("/portal/notes", "Notes"),
    ("/portal/backups", "Backups"),
];

/// Add the portal's security headers to a response.
pub fn secure(mut r: Response) -> Response {
    let h = r.headers_mut();
    h.insert("content-security-policy", HeaderValue::from_static(CSP));
    h.insert("x-content-type-options", HeaderValue::from_static("nosniff"));
    h.insert("x-frame-options", HeaderValue::from_static("DENY"));
    h.insert("referrer-policy", HeaderValue::from_static("no-referrer"));
    h.entry(CACHE_CONTROL).or_insert(HeaderValue::from_static("no-store"));
    r
}

/// A whole page. `web` is the signed-in browser (navigation, sign-out, its CSRF token);
/// `current` the navigation entry to mark.
pub fn page(title: &str, web: Option<&Web>, current: &str, content: Markup) -> Response {
    let csrf = web.map_or(ANONYMOUS_CSRF, |w| w.csrf.as_str());
    let markup = html! {
        (DOCTYPE)
        html lang="en" {
            head {
                meta charset="utf-8";
                meta name="viewport" content="width=device-width, initial-scale=1";
                meta name="csrf-token" content=(csrf);
                title { (title) " · cairn" }
                link rel="stylesheet" href="/portal/assets/portal.css";
                script src="/portal/assets/portal.js" defer {}
            }
            body {
                a.skip href="#main" { "Skip to content" }
                header.top {
                    a.brand href="/portal/" { "cairn" }
                    @if web.is_some() {
                        nav aria-label="Sections" {
                            ul {
                                @for (href, label) in NAV {
                                    li {
                                        @if *href == current {
                                            a href=(href) aria-current="page" { (label) }
                                        } @else {
                                            a href=(href) { (label) }
                                        }
                                    }
                                }
                            }
                        }
                        form.signout data-api="POST /portal/session/end" data-then="/portal/signin" {
                            button type="submit" { "Sign out" }
                        }
                    }
                }
                main #main tabindex="-1" {
                    h1 { (title) }
                    (content)
                }
            }
        }
    };
    secure(markup.into_response())
}

/// The status line of a form: where the script writes what happened, read out by screen readers.
pub fn status() -> Markup {
    html! { p.status role="status" aria-live="polite" {} }
}

/// A stored time, shown to the minute with the exact value kept for machines.
pub fn when(at: &str) -> Markup {
    html! { time datetime=(at) { (super::text::short_time(at)) } }
}

/// A static asset compiled into the binary.
pub fn asset(body: &'static str, content_type: &'static str) -> Response {
    let mut r = body.into_response();
    r.headers_mut().insert(CONTENT_TYPE, HeaderValue::from_static(content_type));
    r.headers_mut().insert(CACHE_CONTROL, HeaderValue::from_static("public, max-age=300"));
    secure(r)
}
