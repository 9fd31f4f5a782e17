//! Answers given before the request body was read to its end say `Connection: close`.
//!
//! A handler may refuse a request without reading its body (a bad hash, a precondition, a
//! quota refused on the declared length). hyper then closes an HTTP/1.1 connection rather than
//! read the rest, but says nothing: a client that pools connections sends its next request on
//! that one and meets a reset (the keep-alive race several tests hit). With the header, the
//! client knows not to reuse it. HTTP/2 needs none of this: a stream ends alone.

use std::pin::Pin;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::task::{Context, Poll};

use axum::body::Body;
use axum::extract::Request;
use axum::http::{header, HeaderValue, Version};
use axum::middleware::Next;
use axum::response::Response;
use bytes::Bytes;
use http_body::{Body as HttpBody, Frame, SizeHint};

pub async fn close_if_unread(req: Request, next: Next) -> Response {
    let h = req.headers();
    let has_body = h.get(header::CONTENT_LENGTH).is_some_and(|v| v.as_bytes() != b"0")
        || h.contains_key(header::TRANSFER_ENCODING);
    if !has_body || req.version() >= Version::HTTP_2 {
        return next.run(req).await;
    }
    let ended = Arc::new(AtomicBool::new(false));
    let (parts, body) = req.into_parts();
    let body = Body::new(Watched { inner: body, ended: ended.clone() });
    let mut resp = next.run(Request::from_parts(parts, body)).await;
    if !ended.load(Ordering::Acquire) {
        resp.headers_mut().insert(header::CONNECTION, HeaderValue::from_static("close"));
    }
    resp
}

/// A request body that notes when it has been read to its end.
struct Watched {
    inner: Body,
    ended: Arc<AtomicBool>,
}

impl HttpBody for Watched {
    type Data = Bytes;
    type Error = axum::Error;

    fn poll_frame(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Result<Frame<Bytes>, axum::Error>>> {
        let polled = Pin::new(&mut self.inner).poll_frame(cx);
        if matches!(polled, Poll::Ready(None)) || self.inner.is_end_stream() {
            self.ended.store(true, Ordering::Release);
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
