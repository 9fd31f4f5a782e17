//! CardDAV (RFC 6352) and CalDAV (RFC 4791) with sync-collection (RFC 6578), over the
//! `groupware` service: `/.well-known/carddav` and `/.well-known/caldav`, the principal
//! `/dav/principal/`, and the homes `/dav/contacts/` and `/dav/calendars/` (`paths`).
//!
//! A front only: it authenticates as `/dav/files/` does (Basic with an app password, over a
//! channel that may carry one), reads the XML (`xml`), asks the service, and writes
//! multistatus (`props`). `dav-server` does not do these REPORTs or collections of objects
//! that are records (docs/decisions.md), so this front is our own.

mod paths;
mod props;
mod reports;
pub mod xml;

use axum::body::Body;
use axum::extract::{Request, State};
use axum::http::{header, HeaderMap, HeaderName, HeaderValue, Method, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::any;
use axum::Router;

use super::auth::ClientIp;
use super::credentials::CredentialsAllowed;
use super::error::{ApiError, ErrorCode};
use super::AppState;
use crate::groupware::{Collection, Entry, Groupware, GroupwareError, Kind, MAX_OBJECT};
use crate::store::keys::AccountId;
use paths::Target;
use props::{Multistatus, Resource};
use xml::{Name, APPLE, CAL, CARD, DAV};

pub fn routes() -> Router<AppState> {
    Router::new()
        .route("/.well-known/carddav", any(well_known_carddav))
        .route("/.well-known/caldav", any(well_known_caldav))
        .route("/dav/principal", any(handle))
        .route("/dav/principal/", any(handle))
        .route("/dav/contacts", any(handle))
        .route("/dav/contacts/", any(handle))
        .route("/dav/contacts/{*rest}", any(handle))
        .route("/dav/calendars", any(handle))
        .route("/dav/calendars/", any(handle))
        .route("/dav/calendars/{*rest}", any(handle))
}

/// RFC 6764: discovery starts here; clients follow the redirect with their credentials.
async fn well_known_carddav() -> Response {
    redirect(paths::home(Kind::Contacts))
}

async fn well_known_caldav() -> Response {
    redirect(paths::home(Kind::Calendar))
}

fn redirect(to: &'static str) -> Response {
    (StatusCode::MOVED_PERMANENTLY, [(header::LOCATION, to)]).into_response()
}

async fn handle(State(app): State<AppState>, _: CredentialsAllowed, ClientIp(ip): ClientIp, req: Request) -> Response {
    let session = match super::dav::authenticate(&app, req.headers(), ip).await {
        Ok(s) => s,
        Err(resp) => return resp,
    };
    match serve(&app, session.account, req).await {
        Ok(resp) | Err(resp) => resp,
    }
}

/// A request of `account`, once authenticated.
async fn serve(app: &AppState, account: AccountId, req: Request) -> Result<Response, Response> {
    let method = req.method().clone();
    let target = paths::target(req.uri().path()).ok_or_else(|| ApiError::not_found().into_response())?;
    let gw = app.groupware.clone();
    let cx = Cx { app, gw, account };
    match method.as_str() {
        "OPTIONS" => Ok(options()),
        "PROPFIND" => cx.propfind(target, req).await,
        "PROPPATCH" => cx.proppatch(target, req).await,
        "MKCOL" | "MKCALENDAR" => cx.make(target, method == "MKCALENDAR", req).await,
        "REPORT" => cx.report(target, req).await,
        "GET" | "HEAD" => cx.get(target, req.headers(), method == Method::HEAD).await,
        "PUT" => cx.put(target, req).await,
        "DELETE" => cx.delete(target, req.headers()).await,
        _ => Err(ApiError::new(ErrorCode::MethodNotAllowed, "this path does not take that method").into_response()),
    }
}

fn options() -> Response {
    let allow = "OPTIONS, GET, HEAD, PUT, DELETE, PROPFIND, PROPPATCH, REPORT, MKCOL, MKCALENDAR";
    let dav = "1, 3, addressbook, calendar-access, extended-mkcol";
    (StatusCode::OK, [(header::ALLOW, allow), (HeaderName::from_static("dav"), dav)]).into_response()
}

/// One request's context: the app, the service, the account.
struct Cx<'a> {
    app: &'a AppState,
    gw: Groupware,
    account: AccountId,
}

/// An XML error body naming the precondition that failed (RFC 4918 16), with a sentence.
fn dav_error(status: StatusCode, ns: &str, condition: &str, inner: &str, message: &str) -> Response {
    let body = format!(
        "<?xml version=\"1.0\" encoding=\"utf-8\"?>\n<d:error xmlns:d=\"DAV:\" xmlns:x=\"{ns}\" xmlns:c=\"urn:cairn\"><x:{condition}>{inner}</x:{condition}><c:message>{}</c:message></d:error>\n",
        xml::escape(message)
    );
    (status, [(header::CONTENT_TYPE, "application/xml; charset=utf-8")], body).into_response()
}

fn kind_ns(kind: Kind) -> &'static str {
    match kind {
        Kind::Contacts => CARD,
        Kind::Calendar => CAL,
    }
}

impl Cx<'_> {
    /// Run service work off the runtime; its failures become DAV answers.
    async fn run<T: Send + 'static>(
        &self,
        kind: Kind,
        f: impl FnOnce(Groupware, AccountId) -> Result<T, GroupwareError> + Send + 'static,
    ) -> Result<T, Response> {
        let (gw, account) = (self.gw.clone(), self.account);
        match tokio::task::spawn_blocking(move || f(gw, account)).await {
            Ok(r) => r.map_err(|e| self.error(kind, e)),
            Err(e) => {
                Err(ApiError::from(crate::error::Error::Internal(format!("a blocking task failed: {e}")))
                    .into_response())
            }
        }
    }

    fn error(&self, kind: Kind, e: GroupwareError) -> Response {
        let msg = e.to_string();
        let ns = kind_ns(kind);
        match e {
            GroupwareError::Card(_) => dav_error(StatusCode::BAD_REQUEST, CARD, "valid-address-data", "", &msg),
            GroupwareError::Calendar(_) => dav_error(StatusCode::BAD_REQUEST, CAL, "valid-calendar-data", "", &msg),
            GroupwareError::UidConflict(ref other) => {
                let href = format!("<d:href>{}</d:href>", xml::escape(other));
                dav_error(StatusCode::CONFLICT, ns, "no-uid-conflict", &href, &msg)
            }
            GroupwareError::TooLarge => dav_error(StatusCode::PAYLOAD_TOO_LARGE, ns, "max-resource-size", "", &msg),
            GroupwareError::NotFound => ApiError::not_found().into_response(),
            GroupwareError::PreconditionFailed => ApiError::new(ErrorCode::PreconditionFailed, msg).into_response(),
            GroupwareError::Exists => dav_error(StatusCode::METHOD_NOT_ALLOWED, DAV, "resource-must-be-null", "", &msg),
            GroupwareError::Forbidden(_) => dav_error(StatusCode::FORBIDDEN, DAV, "need-privileges", "", &msg),
            GroupwareError::UnsupportedComponent(_) => {
                dav_error(StatusCode::FORBIDDEN, CAL, "supported-calendar-component", "", &msg)
            }
            GroupwareError::TokenTooOld => dav_error(StatusCode::FORBIDDEN, DAV, "valid-sync-token", "", &msg),
            GroupwareError::Sync(e) => self.app.refusal_counted_api(ApiError::from(e)).into_response(),
        }
    }

    async fn collection(&self, kind: Kind, segment: &str) -> Result<Collection, Response> {
        let segment = segment.to_string();
        self.run(kind, move |gw, a| gw.collection(&a, kind, &segment)).await
    }

    async fn limit(&self) -> Result<u64, Response> {
        self.app.plan_and_limit(&self.account).await.map(|(_, l)| l).map_err(IntoResponse::into_response)
    }

    async fn propfind(&self, target: Target, req: Request) -> Result<Response, Response> {
        let depth = match req.headers().get("depth").and_then(|v| v.to_str().ok()).map(str::trim) {
            None | Some("0") => 0,
            Some("1") => 1,
            _ => return Err(dav_error(StatusCode::FORBIDDEN, DAV, "propfind-finite-depth", "", "Depth is 0 or 1")),
        };
        let body = read_xml(req).await?;
        let asked = xml::propfind(body.as_ref()).map_err(bad_xml)?;
        let mut ms = Multistatus::default();
        match target {
            Target::Principal => ms.resource(paths::PRINCIPAL, &Resource::Principal, &asked),
            Target::Home(kind) => {
                ms.resource(paths::home(kind), &Resource::Home, &asked);
                if depth == 1 {
                    for c in self.run(kind, move |gw, a| gw.collections(&a, kind)).await? {
                        ms.resource(&paths::collection(kind, &c.segment), &Resource::Collection(&c), &asked);
                    }
                }
            }
            Target::Collection(kind, seg) => {
                let c = self.collection(kind, &seg).await?;
                ms.resource(&paths::collection(kind, &seg), &Resource::Collection(&c), &asked);
                if depth == 1 {
                    let c2 = c.clone();
                    for o in self.run(kind, move |gw, a| gw.objects(&a, &c2)).await? {
                        ms.resource(&paths::object(kind, &seg, &o.name), &Resource::Object(&c, &o), &asked);
                    }
                }
            }
            Target::Object(kind, seg, name) => {
                let c = self.collection(kind, &seg).await?;
                let (c2, n) = (c.clone(), name.clone());
                let o = self.run(kind, move |gw, a| gw.object(&a, &c2, &n)).await?;
                ms.resource(&paths::object(kind, &seg, &name), &Resource::Object(&c, &o), &asked);
            }
        }
        Ok(multistatus(ms.finish(None)))
    }

    async fn proppatch(&self, target: Target, req: Request) -> Result<Response, Response> {
        let path = req.uri().path().to_string();
        let body = read_xml(req).await?.ok_or_else(|| bad_xml(xml::XmlError::Invalid("PROPPATCH needs a body")))?;
        if !body.is(DAV, "propertyupdate") {
            return Err(bad_xml(xml::XmlError::Invalid("a PROPPATCH body is a DAV:propertyupdate")));
        }
        let changes = xml::set_props(&body);
        let Target::Collection(kind, seg) = target else {
            let refused: Vec<(Name, &str)> = changes.into_iter().map(|(n, _)| (n, "403 Forbidden")).collect();
            let mut ms = Multistatus::default();
            ms.patched(&path, &refused);
            return Ok(multistatus(ms.finish(None)));
        };
        let c = self.collection(kind, &seg).await?;
        let mut entry = c.entry.clone();
        let all_known = changes.iter().all(|(n, v)| apply_prop(&mut entry, kind, n, v.as_ref()));
        let results: Vec<(Name, &str)> = changes
            .iter()
            .map(|(n, v)| {
                let known = apply_prop(&mut Entry::default(), kind, n, v.as_ref());
                let status = match (known, all_known) {
                    (true, true) => "200 OK",
                    (true, false) => "424 Failed Dependency",
                    (false, _) => "403 Forbidden",
                };
                (n.clone(), status)
            })
            .collect();
        if all_known {
            let limit = self.limit().await?;
            self.run(kind, move |gw, a| gw.update_collection(&a, &c, entry, limit)).await?;
        }
        let mut ms = Multistatus::default();
        ms.patched(&path, &results);
        Ok(multistatus(ms.finish(None)))
    }

    async fn make(&self, target: Target, mkcalendar: bool, req: Request) -> Result<Response, Response> {
        let Target::Collection(kind, seg) = target else {
            return Err(dav_error(StatusCode::FORBIDDEN, DAV, "need-privileges", "", "collections are made in a home"));
        };
        if mkcalendar && kind != Kind::Calendar {
            return Err(dav_error(
                StatusCode::FORBIDDEN,
                DAV,
                "need-privileges",
                "",
                "calendars are made under /dav/calendars/",
            ));
        }
        let body = read_xml(req).await?;
        let mut entry = Entry::new(kind, &seg);
        if let Some(root) = &body {
            let expected = if mkcalendar { (CAL, "mkcalendar") } else { (DAV, "mkcol") };
            if !root.is(expected.0, expected.1) {
                return Err(bad_xml(xml::XmlError::Invalid(
                    "the body of MKCOL is DAV:mkcol, of MKCALENDAR CALDAV:mkcalendar",
                )));
            }
            for (name, value) in xml::set_props(root) {
                if name == (DAV.to_string(), "resourcetype".to_string()) {
                    let wanted = match kind {
                        Kind::Contacts => (CARD, "addressbook"),
                        Kind::Calendar => (CAL, "calendar"),
                    };
                    if value.as_ref().is_none_or(|v| v.child(wanted.0, wanted.1).is_none()) {
                        return Err(dav_error(
                            StatusCode::FORBIDDEN,
                            DAV,
                            "valid-resourcetype",
                            "",
                            "an address book under /dav/contacts/, a calendar under /dav/calendars/",
                        ));
                    }
                    continue;
                }
                if name == (CAL.to_string(), "supported-calendar-component-set".to_string()) {
                    let set = value.iter().flat_map(|v| &v.children).filter(|c| c.is(CAL, "comp"));
                    let set: Vec<String> = set.filter_map(|c| c.attr("name")).map(str::to_ascii_uppercase).collect();
                    entry.components = (!set.is_empty()).then_some(set);
                    continue;
                }
                // Properties we do not keep (a time zone, ...) are accepted and not stored.
                apply_prop(&mut entry, kind, &name, value.as_ref());
            }
        }
        let limit = self.limit().await?;
        self.run(kind, move |gw, a| gw.create_collection(&a, kind, &seg, entry, limit)).await?;
        Ok(StatusCode::CREATED.into_response())
    }

    async fn report(&self, target: Target, req: Request) -> Result<Response, Response> {
        let body = read_xml(req).await?.ok_or_else(|| bad_xml(xml::XmlError::Invalid("REPORT needs a body")))?;
        let report = xml::report(&body).map_err(bad_xml)?;
        if let (Target::Principal | Target::Home(_), xml::Report::Unsupported((ns, name))) = (&target, &report) {
            if ns == DAV && name == "principal-property-search" {
                // The only principal a client may see is its own (RFC 3744 9.4).
                let mut ms = Multistatus::default();
                let asked = match body.child(DAV, "prop") {
                    Some(p) => xml::PropRequest::Names(p.children.iter().map(xml::Node::key).collect()),
                    None => xml::PropRequest::All,
                };
                ms.resource(paths::PRINCIPAL, &Resource::Principal, &asked);
                return Ok(multistatus(ms.finish(None)));
            }
        }
        let Target::Collection(kind, seg) = target else {
            return Err(dav_error(
                StatusCode::FORBIDDEN,
                DAV,
                "supported-report",
                "",
                "REPORTs are asked of an address book or calendar",
            ));
        };
        let c = self.collection(kind, &seg).await?;
        reports::answer(self, c, report).await
    }

    async fn get(&self, target: Target, headers: &HeaderMap, head: bool) -> Result<Response, Response> {
        let Target::Object(kind, seg, name) = target else {
            return Err(ApiError::new(ErrorCode::MethodNotAllowed, "GET is for objects; use PROPFIND on collections")
                .into_response());
        };
        let c = self.collection(kind, &seg).await?;
        let o = self.run(kind, move |gw, a| gw.object(&a, &c, &name)).await?;
        let etag = crate::drive::etag(o.version);
        if headers
            .get(header::IF_NONE_MATCH)
            .and_then(|h| h.to_str().ok())
            .is_some_and(|l| crate::drive::tag_list_matches(l, o.version))
        {
            return Ok((StatusCode::NOT_MODIFIED, [(header::ETAG, etag)]).into_response());
        }
        let len = o.text.len().to_string();
        let body = if head { Body::empty() } else { Body::from(o.text) };
        let mut resp = (
            StatusCode::OK,
            [(header::ETAG, etag), (header::CONTENT_TYPE, props::content_type(kind).to_string())],
            body,
        )
            .into_response();
        if head {
            resp.headers_mut().insert(header::CONTENT_LENGTH, HeaderValue::from_str(&len).expect("digits"));
        }
        Ok(resp)
    }

    async fn put(&self, target: Target, req: Request) -> Result<Response, Response> {
        let Target::Object(kind, seg, name) = target else {
            return Err(
                ApiError::new(ErrorCode::MethodNotAllowed, "PUT is for objects in a collection").into_response()
            );
        };
        let expect = super::files::write_precondition(req.headers());
        let c = match self.collection(kind, &seg).await {
            Ok(c) => c,
            Err(r) if r.status() == StatusCode::NOT_FOUND => {
                return Err(ApiError::new(ErrorCode::Conflict, "no such address book or calendar").into_response())
            }
            Err(r) => return Err(r),
        };
        let bytes = axum::body::to_bytes(req.into_body(), MAX_OBJECT)
            .await
            .map_err(|_| self.error(kind, GroupwareError::TooLarge))?;
        let text = String::from_utf8(bytes.to_vec()).map_err(|_| {
            let invalid = match kind {
                Kind::Contacts => GroupwareError::Card(crate::groupware::card::CardError::NotVcard),
                Kind::Calendar => GroupwareError::Calendar(crate::groupware::event::CalError::NotVcalendar),
            };
            self.error(kind, invalid)
        })?;
        let limit = self.limit().await?;
        let (view, created) = self.run(kind, move |gw, a| gw.put(&a, &c, &name, &text, expect, limit)).await?;
        let status = if created { StatusCode::CREATED } else { StatusCode::NO_CONTENT };
        Ok((status, [(header::ETAG, crate::drive::etag(view.version))]).into_response())
    }

    async fn delete(&self, target: Target, headers: &HeaderMap) -> Result<Response, Response> {
        let expect = super::files::write_precondition(headers);
        match target {
            Target::Object(kind, seg, name) => {
                let c = self.collection(kind, &seg).await?;
                self.run(kind, move |gw, a| gw.delete(&a, &c, &name, expect)).await?;
            }
            Target::Collection(kind, seg) => {
                let c = self.collection(kind, &seg).await?;
                self.run(kind, move |gw, a| gw.delete_collection(&a, &c)).await?;
            }
            _ => {
                return Err(dav_error(
                    StatusCode::FORBIDDEN,
                    DAV,
                    "need-privileges",
                    "",
                    "the principal and the homes stay",
                ))
            }
        }
        Ok(StatusCode::NO_CONTENT.into_response())
    }
}

/// Set (or, `None`, remove) one property the registry keeps; false for any other.
fn apply_prop(entry: &mut Entry, kind: Kind, (ns, name): &Name, value: Option<&xml::Node>) -> bool {
    let text = value.map(|v| v.text.trim().to_string()).filter(|t| !t.is_empty());
    let slot = match (ns.as_str(), name.as_str(), kind) {
        (DAV, "displayname", _) => &mut entry.displayname,
        (CARD, "addressbook-description", Kind::Contacts) | (CAL, "calendar-description", Kind::Calendar) => {
            &mut entry.description
        }
        (APPLE, "calendar-color", _) => &mut entry.color,
        (APPLE, "calendar-order", _) => &mut entry.order,
        _ => return false,
    };
    *slot = text;
    true
}

fn multistatus(body: String) -> Response {
    (StatusCode::MULTI_STATUS, [(header::CONTENT_TYPE, "application/xml; charset=utf-8")], body).into_response()
}

fn bad_xml(e: xml::XmlError) -> Response {
    ApiError::new(ErrorCode::BadBody, e.to_string()).into_response()
}

/// The XML body of a request, at most `MAX_XML_BODY` bytes (413 past that).
async fn read_xml(req: Request) -> Result<Option<xml::Node>, Response> {
    let bytes = axum::body::to_bytes(req.into_body(), xml::MAX_XML_BODY)
        .await
        .map_err(|_| ApiError::too_large(xml::MAX_XML_BODY as u64).into_response())?;
    xml::parse(&bytes).map_err(bad_xml)
}

/// The seq in a sync token this server gave (`urn:cairn:sync:N`); the empty token is 0.
fn parse_token(token: &str) -> Option<u64> {
    if token.is_empty() {
        return Some(0);
    }
    token.strip_prefix("urn:cairn:sync:")?.parse().ok()
}

#[cfg(test)]
mod tests {
    #[test]
    fn tokens() {
        assert_eq!(super::parse_token(""), Some(0));
        assert_eq!(super::parse_token(&super::props::sync_token(42)), Some(42));
        assert_eq!(super::parse_token("http://x/sync/1"), None);
    }
}
