//! Every wait on a client ends. Headers: hyper's `header_read_timeout` (see `serve`). A request
//! body that sends nothing for `body_idle` is ended here with `408`, whatever handler was
//! reading it. A response the client stops reading for `write_stall` gets its connection
//! closed by `Watched`, which drops the response body and with it whatever the download held
//! (a blocking reader, a transfer permit).

use std::future::Future;
use std::io;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use axum::body::Body;
use axum::extract::{Request, State};
use axum::http::{header, HeaderValue};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use bytes::Bytes;
use hyper::body::{Body as HttpBody, Frame, SizeHint};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::time::Sleep;

use super::error::{ApiError, ErrorCode};
use super::AppState;

/// The error a timed-out body yields to whoever reads it; the middleware answers for it.
#[derive(Debug, thiserror::Error)]
#[error("the request body sent nothing for too long")]
pub struct BodyIdle;

/// A request body whose every wait for the next frame is bounded by `idle`.
struct IdleBody {
    inner: Body,
    idle: Duration,
    /// Made at the first wait and reused (reset, not reallocated), since a fast upload waits
    /// between most of its frames.
    timer: Option<Pin<Box<Sleep>>>,
    /// Whether the timer counts the current wait; a frame disarms it.
    armed: bool,
    fired: Arc<AtomicBool>,
}

impl HttpBody for IdleBody {
    type Data = Bytes;
    type Error = axum::Error;

    fn poll_frame(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Result<Frame<Bytes>, axum::Error>>> {
        let this = self.get_mut();
        match Pin::new(&mut this.inner).poll_frame(cx) {
            Poll::Ready(frame) => {
                this.armed = false;
                Poll::Ready(frame)
            }
            Poll::Pending => {
                if !this.armed {
                    let deadline = tokio::time::Instant::now() + this.idle;
                    match &mut this.timer {
                        Some(timer) => timer.as_mut().reset(deadline),
                        None => this.timer = Some(Box::pin(tokio::time::sleep_until(deadline))),
                    }
                    this.armed = true;
                }
                let timer = this.timer.as_mut().expect("armed above");
                if timer.as_mut().poll(cx).is_pending() {
                    return Poll::Pending;
                }
                this.fired.store(true, Ordering::Release);
                Poll::Ready(Some(Err(axum::Error::new(BodyIdle))))
            }
        }
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

/// Bound every body's idle waits; a request whose body timed out is answered `408` (and its
/// connection closed), whatever its handler made of the failed read.
pub async fn body_idle(State(app): State<AppState>, req: Request, next: Next) -> Response {
    let fired = Arc::new(AtomicBool::new(false));
    let idle = app.settings.limits.body_idle();
    let flag = fired.clone();
    let req = req.map(|inner| Body::new(IdleBody { inner, idle, timer: None, armed: false, fired: flag }));
    let resp = next.run(req).await;
    if !fired.load(Ordering::Acquire) {
        return resp;
    }
    let mut resp = ApiError::new(
        ErrorCode::RequestTimeout,
        format!("the request body sent nothing for {} seconds", idle.as_secs()),
    )
    .into_response();
    resp.headers_mut().insert(header::CONNECTION, HeaderValue::from_static("close"));
    resp
}

/// A connection's socket, remembering since when its writes have been refused (the client's
/// receive window is full: it is not reading).
pub struct Watched<T> {
    inner: T,
    stall: Stall,
}

/// Since when a connection's writes wait, shared with its watchdog. Milliseconds since
/// `epoch`, plus one; zero while writes go through.
#[derive(Clone)]
pub struct Stall {
    epoch: Instant,
    since: Arc<AtomicU64>,
}

impl Stall {
    pub fn new() -> Self {
        Stall { epoch: Instant::now(), since: Arc::default() }
    }

    fn now(&self) -> u64 {
        self.epoch.elapsed().as_millis() as u64 + 1
    }

    fn note<T>(&self, polled: &Poll<io::Result<T>>) {
        match polled {
            Poll::Pending => {
                let _ = self.since.compare_exchange(0, self.now(), Ordering::AcqRel, Ordering::Relaxed);
            }
            Poll::Ready(_) => self.since.store(0, Ordering::Release),
        }
    }

    /// Resolves once writes have waited for `limit` without a byte going out.
    pub async fn expired(&self, limit: Duration) {
        let limit_ms = limit.as_millis() as u64;
        loop {
            tokio::time::sleep((limit / 4).max(Duration::from_millis(100))).await;
            let since = self.since.load(Ordering::Acquire);
            if since != 0 && self.now().saturating_sub(since) >= limit_ms {
                return;
            }
        }
    }
}

impl<T> Watched<T> {
    pub fn new(inner: T, stall: Stall) -> Self {
        Watched { inner, stall }
    }
}

impl<T: AsyncRead + Unpin> AsyncRead for Watched<T> {
    fn poll_read(self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &mut ReadBuf<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().inner).poll_read(cx, buf)
    }
}

impl<T: AsyncWrite + Unpin> AsyncWrite for Watched<T> {
    fn poll_write(self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &[u8]) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        let polled = Pin::new(&mut this.inner).poll_write(cx, buf);
        this.stall.note(&polled);
        polled
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        let polled = Pin::new(&mut this.inner).poll_write_vectored(cx, bufs);
        this.stall.note(&polled);
        polled
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        let polled = Pin::new(&mut this.inner).poll_flush(cx);
        this.stall.note(&polled);
        polled
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().inner).poll_shutdown(cx)
    }
}
