//! A faulty front for moto: an HTTP proxy on loopback that answers some requests itself with
//! the errors a real object store gives under load or in an outage (`503 SlowDown`,
//! `500 InternalError`) and forwards the rest to moto unchanged.
//!
//! `FailEachOnce` fails the first try of every distinct request (method, path, query, range)
//! and passes the second: every request the server makes meets an error, and a client that
//! retries as S3 asks loses nothing, deterministically (a random fault rate would make a test
//! that sometimes fails). `FailAll` is an outage that only ends when the test says so.
//! `HoldParts` leaves multipart uploads created and never finished.

use std::collections::HashSet;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use axum::body::Body;
use axum::extract::{Request, State};
use axum::http::{header, HeaderMap, StatusCode};
use axum::response::Response;

use super::s3::Moto;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Faults {
    Pass,
    FailEachOnce,
    FailAll,
    /// Multipart parts are taken and never answered: an upload stuck mid-way, for a crash to
    /// cut.
    HoldParts,
}

struct Front {
    moto: String,
    client: reqwest::Client,
    mode: Mutex<Faults>,
    /// Requests failed once already, by what identifies a retry of them.
    tried: Mutex<HashSet<String>>,
    injected: AtomicU64,
}

pub struct FaultyFront {
    pub port: u16,
    front: Arc<Front>,
    rt: Option<tokio::runtime::Runtime>,
}

impl FaultyFront {
    /// In front of `moto`, passing everything until told otherwise. It runs on a runtime of
    /// its own, so that it answers while a test's thread waits on the server.
    pub fn start(moto: &Moto) -> FaultyFront {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        listener.set_nonblocking(true).unwrap();
        let port = listener.local_addr().unwrap().port();
        let front = Arc::new(Front {
            moto: moto.endpoint(),
            client: reqwest::Client::builder().redirect(reqwest::redirect::Policy::none()).build().unwrap(),
            mode: Mutex::new(Faults::Pass),
            tried: Mutex::new(HashSet::new()),
            injected: AtomicU64::new(0),
        });
        let rt = tokio::runtime::Builder::new_multi_thread().worker_threads(1).enable_all().build().unwrap();
        let app = axum::Router::new().fallback(answer).with_state(front.clone());
        rt.spawn(async move {
            let listener = tokio::net::TcpListener::from_std(listener).unwrap();
            axum::serve(listener, app).await.unwrap();
        });
        FaultyFront { port, front, rt: Some(rt) }
    }

    pub fn set(&self, mode: Faults) {
        *self.front.mode.lock().unwrap() = mode;
        self.front.tried.lock().unwrap().clear();
    }

    /// How many answers were errors made up here.
    pub fn injected(&self) -> u64 {
        self.front.injected.load(Ordering::Relaxed)
    }

    pub fn endpoint(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }
}

impl Drop for FaultyFront {
    fn drop(&mut self) {
        if let Some(rt) = self.rt.take() {
            rt.shutdown_background();
        }
    }
}

async fn answer(State(front): State<Arc<Front>>, req: Request) -> Response {
    let (parts, body) = req.into_parts();
    let range = parts.headers.get(header::RANGE).and_then(|v| v.to_str().ok()).unwrap_or("");
    let key = format!("{} {} {range}", parts.method, parts.uri);
    let mode = *front.mode.lock().unwrap();
    if mode == Faults::HoldParts && parts.uri.query().is_some_and(|q| q.contains("partNumber=")) {
        std::future::pending::<()>().await;
    }
    let fail = match mode {
        Faults::Pass | Faults::HoldParts => false,
        Faults::FailAll => true,
        Faults::FailEachOnce => front.tried.lock().unwrap().insert(key),
    };
    let body = axum::body::to_bytes(body, usize::MAX).await.unwrap_or_default();
    if fail {
        let n = front.injected.fetch_add(1, Ordering::Relaxed);
        return made_up_error(n);
    }
    let url = format!("{}{}", front.moto, parts.uri.path_and_query().map_or("/", |p| p.as_str()));
    let mut headers = parts.headers.clone();
    headers.remove(header::HOST);
    let sent = front.client.request(parts.method, url).headers(headers).body(body).send().await;
    let Ok(got) = sent else {
        return made_up_error(front.injected.fetch_add(1, Ordering::Relaxed));
    };
    let status = got.status();
    let mut headers: HeaderMap = got.headers().clone();
    headers.remove(header::TRANSFER_ENCODING);
    headers.remove(header::CONNECTION);
    let bytes = got.bytes().await.unwrap_or_default();
    let mut resp = Response::new(Body::from(bytes));
    *resp.status_mut() = status;
    *resp.headers_mut() = headers;
    resp
}

/// Throttling and server errors by turns, with the bodies S3 sends for them.
fn made_up_error(n: u64) -> Response {
    let (status, code, message) = if n.is_multiple_of(2) {
        (StatusCode::SERVICE_UNAVAILABLE, "SlowDown", "Please reduce your request rate.")
    } else {
        (StatusCode::INTERNAL_SERVER_ERROR, "InternalError", "We encountered an internal error. Please try again.")
    };
    let xml = format!(
        "<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n<Error><Code>{code}</Code><Message>{message}</Message></Error>"
    );
    let mut resp = Response::new(Body::from(xml));
    *resp.status_mut() = status;
    resp.headers_mut().insert(header::CONTENT_TYPE, "application/xml".parse().unwrap());
    resp
}
