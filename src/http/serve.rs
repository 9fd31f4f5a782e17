//! The accept loop: hyper connections over the axum router, with graceful shutdown.
//!
//! Hand-rolled rather than `axum::serve` for knobs that one lacks: the header buffer size
//! (so that the 32 KiB header limit is answered by our JSON 431, not a bare hyper error), a
//! bounded wait for open requests at shutdown, a cap on open connections, and closing a
//! connection whose client stops reading its response (`timeouts::Watched`).

use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use axum::extract::ConnectInfo;
use hyper::server::conn::http1;
use hyper_util::rt::{TokioIo, TokioTimer};
use hyper_util::server::graceful::GracefulShutdown;
use hyper_util::service::TowerToHyperService;
use tokio::net::TcpListener;
use tokio::sync::Semaphore;
use tower::ServiceExt;

use super::timeouts::{Stall, Watched};
use super::{router, AppState};

/// Header fields hyper parses before it gives up with a bare 431 of its own. Our JSON 431 is
/// for blocks over `max_header_bytes` (32 KiB), so hyper must never stop first on a block under
/// that: 2048 fields of 16 bytes each is 32 KiB. Higher costs a bigger allocation on every
/// request (two arrays of this many entries, 64 KiB each at 2048), so this is where we stop.
const MAX_HEADER_COUNT: usize = 2048;

pub async fn serve(app: AppState, listener: TcpListener, shutdown: impl Future<Output = ()>) {
    let grace = Duration::from_secs(app.settings.shutdown_grace_secs);
    let header_room = (app.settings.max_header_bytes * 4).max(64 * 1024);
    let write_stall = app.settings.limits.write_stall();
    let header_read = Duration::from_secs(app.settings.limits.header_read_secs);
    // Past this many open connections the loop stops accepting until one closes: the kernel's
    // backlog holds the rest, and the process keeps descriptors for packs and the database.
    let connections = Arc::new(Semaphore::new(app.settings.limits.max_connections));
    let service = router(app);
    let graceful = GracefulShutdown::new();
    // HTTP/1.1 only. Through hyper-util's version sniffing a connection that sent nothing (or
    // half an HTTP/2 preface) waited with no timer at all, and HTTP/2's flow control lets a
    // client stop reading without ever making our writes wait, out of `Watched`'s sight: each
    // held a connection slot, and a download its permit, for good.
    let mut builder = http1::Builder::new();
    builder
        .max_buf_size(header_room)
        .max_headers(MAX_HEADER_COUNT)
        .timer(TokioTimer::new())
        .header_read_timeout(header_read);
    tokio::pin!(shutdown);
    loop {
        let slot = tokio::select! {
            slot = connections.clone().acquire_owned() => slot.expect("the semaphore is never closed"),
            () = &mut shutdown => break,
        };
        let (stream, peer) = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok(conn) => conn,
                Err(e) => {
                    // Out of file descriptors and the like: back off rather than spin.
                    tracing::warn!(error = %e, "accept failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
            () = &mut shutdown => break,
        };
        // Responses stream headers and body in separate writes; without NODELAY a small body
        // waits for the client's delayed ACK (~40 ms), which cut small downloads 20-fold.
        if let Err(e) = stream.set_nodelay(true) {
            tracing::debug!(error = %e, %peer, "could not set TCP_NODELAY");
        }
        let svc = service.clone().map_request(move |mut req: hyper::Request<hyper::body::Incoming>| {
            req.extensions_mut().insert(ConnectInfo::<SocketAddr>(peer));
            req.map(axum::body::Body::new)
        });
        let stall = Stall::new();
        let io = TokioIo::new(Watched::new(stream, stall.clone()));
        let conn = graceful.watch(builder.serve_connection(io, TowerToHyperService::new(svc)));
        tokio::spawn(async move {
            let _slot = slot;
            tokio::select! {
                ended = conn => if let Err(e) = ended {
                    tracing::debug!(error = %e, %peer, "connection ended with an error");
                },
                // Dropping the connection drops its response body, and what the body held.
                () = stall.expired(write_stall) => tracing::debug!(%peer, "client stopped reading; connection closed"),
            }
        });
    }
    drop(listener);
    tracing::info!("shutting down: waiting for open requests");
    tokio::select! {
        () = graceful.shutdown() => {}
        () = tokio::time::sleep(grace) => tracing::warn!("open requests did not finish in time"),
    }
}
