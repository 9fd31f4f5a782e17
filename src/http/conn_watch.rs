//! The timers a connection needs beyond what hyper gives, so that HTTP/2 keeps HTTP/1.1's
//! promise that every wait on a client ends (`timeouts` has the rest).
//!
//! - A response the client stops reading: under HTTP/2 flow control our socket writes never
//!   wait (the stream's window simply closes), so `timeouts::Watched` sees nothing. Instead
//!   every response body notes when it handed hyper a frame and has not been asked for the next
//!   one; a body left so for `write_stall` closes the connection, which drops the body and what
//!   it held (a reader, a download permit), as `Watched` does for HTTP/1.1.
//! - A connection with no request in flight for `idle`: HTTP/2 has no header timer, and
//!   protocol sniffing (h2c) waits for the first bytes with none, so a silent connection would
//!   hold its slot for good. Closed here.
//!
//! Invariant: a body counts as waiting on the client only between returning a frame and the
//! next poll, and never once it has ended, so a slow disk (the body itself pending) or a
//! finished response can never close a connection.

use std::pin::Pin;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, Weak};
use std::task::{Context, Poll};
use std::time::Duration;

use axum::body::Body;
use bytes::Bytes;
use hyper::body::{Body as HttpBody, Frame, SizeHint};
use tokio::time::Instant;

/// Why the watch closed a connection.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Ended {
    ResponseStalled,
    Idle,
}

/// One connection's requests in flight and response bodies.
pub struct ConnWatch {
    epoch: Instant,
    in_flight: AtomicUsize,
    /// Milliseconds since `epoch` plus one when the last request ended (or the connection
    /// opened); zero while a request is in flight.
    idle_since: AtomicU64,
    /// Each live response body's "waiting on the client since" (same encoding).
    bodies: Mutex<Vec<Weak<AtomicU64>>>,
}

impl ConnWatch {
    pub fn new() -> Arc<Self> {
        Arc::new(ConnWatch {
            epoch: Instant::now(),
            in_flight: AtomicUsize::new(0),
            idle_since: AtomicU64::new(1),
            bodies: Mutex::new(Vec::new()),
        })
    }

    fn now(&self) -> u64 {
        self.epoch.elapsed().as_millis() as u64 + 1
    }

    /// A request begins; it ends when the returned guard (moved into its response body by
    /// `track`) is dropped.
    pub fn begin(self: &Arc<Self>) -> InFlight {
        self.in_flight.fetch_add(1, Ordering::AcqRel);
        self.idle_since.store(0, Ordering::Release);
        InFlight(self.clone())
    }

    /// Wrap a response body so that the watch sees when it waits on the client.
    pub fn track(self: &Arc<Self>, inner: Body, held: InFlight) -> Body {
        let waiting = Arc::new(AtomicU64::new(0));
        {
            let mut bodies = self.bodies.lock().expect("watch poisoned");
            bodies.retain(|w| w.strong_count() > 0);
            bodies.push(Arc::downgrade(&waiting));
        }
        Body::new(Tracked { inner, waiting, watch: self.clone(), _held: held })
    }

    /// Resolves when the connection must be closed.
    pub async fn ended(&self, write_stall: Duration, idle: Duration) -> Ended {
        let tick = (write_stall.min(idle) / 4).max(Duration::from_millis(100));
        let (stall_ms, idle_ms) = (write_stall.as_millis() as u64, idle.as_millis() as u64);
        loop {
            tokio::time::sleep(tick).await;
            let now = self.now();
            let since = self.idle_since.load(Ordering::Acquire);
            if since != 0 && now.saturating_sub(since) >= idle_ms {
                return Ended::Idle;
            }
            let stalled = self.bodies.lock().expect("watch poisoned").iter().any(|w| {
                w.upgrade().is_some_and(|t| {
                    let t = t.load(Ordering::Acquire);
                    t != 0 && now.saturating_sub(t) >= stall_ms
                })
            });
            if stalled {
                return Ended::ResponseStalled;
            }
        }
    }
}

/// A request in flight on its connection.
pub struct InFlight(Arc<ConnWatch>);

impl Drop for InFlight {
    fn drop(&mut self) {
        if self.0.in_flight.fetch_sub(1, Ordering::AcqRel) == 1 {
            self.0.idle_since.store(self.0.now(), Ordering::Release);
        }
    }
}

struct Tracked {
    inner: Body,
    waiting: Arc<AtomicU64>,
    watch: Arc<ConnWatch>,
    _held: InFlight,
}

impl HttpBody for Tracked {
    type Data = Bytes;
    type Error = axum::Error;

    fn poll_frame(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Result<Frame<Bytes>, axum::Error>>> {
        let this = self.get_mut();
        this.waiting.store(0, Ordering::Release);
        let polled = Pin::new(&mut this.inner).poll_frame(cx);
        if matches!(polled, Poll::Ready(Some(Ok(_)))) && !this.inner.is_end_stream() {
            this.waiting.store(this.watch.now(), Ordering::Release);
        }
        polled
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

#[cfg(test)]
mod tests {
    use futures::StreamExt;
    use http_body_util::BodyExt;

    use super::*;

    #[tokio::test(start_paused = true)]
    async fn a_response_nobody_reads_ends_the_connection_and_a_finished_one_does_not() {
        let watch = ConnWatch::new();
        let stream =
            futures::stream::iter([Ok::<_, std::io::Error>(Bytes::from_static(b"a")), Ok(Bytes::from_static(b"b"))]);
        let mut body = watch.track(Body::from_stream(stream), watch.begin());
        let first = body.frame().await.unwrap().unwrap();
        assert_eq!(first.into_data().unwrap(), "a");
        // Nobody asks for the second frame.
        assert_eq!(watch.ended(Duration::from_secs(5), Duration::from_secs(60)).await, Ended::ResponseStalled);

        let watch = ConnWatch::new();
        let body = watch.track(Body::from("whole"), watch.begin());
        let mut s = body.into_data_stream();
        while s.next().await.is_some() {}
        // Still held (kept alive, not dropped), but ended: idle only once it is dropped.
        let ended =
            tokio::time::timeout(Duration::from_secs(30), watch.ended(Duration::from_secs(5), Duration::from_secs(60)));
        assert!(ended.await.is_err(), "a finished body is not a stalled client");
        drop(s);
        assert_eq!(watch.ended(Duration::from_secs(5), Duration::from_secs(60)).await, Ended::Idle);
    }

    #[tokio::test(start_paused = true)]
    async fn a_request_in_flight_is_not_idle() {
        let watch = ConnWatch::new();
        let held = watch.begin();
        let ended = tokio::time::timeout(
            Duration::from_secs(120),
            watch.ended(Duration::from_secs(5), Duration::from_secs(10)),
        );
        assert!(ended.await.is_err());
        drop(held);
        assert_eq!(watch.ended(Duration::from_secs(5), Duration::from_secs(10)).await, Ended::Idle);
    }
}
