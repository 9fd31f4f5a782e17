//! The accept loop: hyper connections over the axum router, with graceful shutdown, on a plain
//! listener (HTTP/1.1, and HTTP/2 with prior knowledge if enabled) and optionally a TLS one
//! (HTTP/2 or HTTP/1.1 as ALPN decides).
//!
//! Hand-rolled rather than `axum::serve` for knobs that one lacks: the header buffer size
//! (so that the 32 KiB header limit is answered by our JSON 431, not a bare hyper error), a
//! bounded wait for open requests at shutdown, a cap on open connections (TLS and plain
//! together), closing a connection whose client stops reading its response
//! (`timeouts::Watched`, `conn_watch`) or that sits idle, and the client's address worked out
//! once per request (`client_addr`).

use std::convert::Infallible;
use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use axum::body::Body;
use axum::extract::ConnectInfo;
use axum::Router;
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::conn::auto::Builder;
use hyper_util::server::graceful::{GracefulShutdown, Watcher};
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::TcpListener;
use tokio::sync::Semaphore;
use tokio_rustls::TlsAcceptor;
use tower::ServiceExt;
use tracing::Instrument;

use super::client_addr::{self, TrustedProxies};
use super::conn_watch::ConnWatch;
use super::timeouts::{Stall, Watched};
use super::{router, AppState};

/// Header fields hyper parses before it gives up with a bare 431 of its own. Our JSON 431 is
/// for blocks over `max_header_bytes` (32 KiB), so hyper must never stop first on a block under
/// that: 2048 fields of 16 bytes each is 32 KiB. Higher costs a bigger allocation on every
/// request (two arrays of this many entries, 64 KiB each at 2048), so this is where we stop.
const MAX_HEADER_COUNT: usize = 2048;

/// Streams one HTTP/2 connection may have open at once. Transfers are bounded per account and
/// in all by `limits` whatever the protocol; this bounds the requests a connection can park.
const MAX_STREAMS: u32 = 128;

/// Where the server listens: plain HTTP always, TLS when configured.
pub struct Listeners {
    pub plain: TcpListener,
    /// Accept HTTP/2 with prior knowledge (h2c) on the plain listener, besides HTTP/1.1.
    pub plain_h2c: bool,
    pub tls: Option<TlsListener>,
}

pub struct TlsListener {
    pub listener: TcpListener,
    /// Its ALPN list decides the protocols: `h2` and `http/1.1`, or only the latter.
    pub acceptor: TlsAcceptor,
}

/// What every connection is served with.
struct Shared {
    service: Router,
    proxies: TrustedProxies,
    /// HTTP/1.1 only, HTTP/2 only, and either by sniffing the first bytes (h2c).
    h1: Builder<TokioExecutor>,
    h2: Builder<TokioExecutor>,
    sniff: Builder<TokioExecutor>,
    plain_h2c: bool,
    write_stall: Duration,
    header_read: Duration,
    /// No request in flight for this long closes a connection (`conn_watch`). Twice the
    /// header timeout, so that on HTTP/1.1 hyper's own header timer acts first.
    idle: Duration,
}

pub async fn serve(app: AppState, listeners: Listeners, shutdown: impl Future<Output = ()>) {
    let grace = Duration::from_secs(app.settings.shutdown_grace_secs);
    let header_room = (app.settings.max_header_bytes * 4).max(64 * 1024);
    let write_stall = app.settings.limits.write_stall();
    let header_read = Duration::from_secs(app.settings.limits.header_read_secs);
    // Past this many open connections the loop stops accepting until one closes: the kernel's
    // backlog holds the rest, and the process keeps descriptors for packs and the database.
    let connections = Arc::new(Semaphore::new(app.settings.limits.max_connections));
    let proxies = app.settings.proxies.clone();
    let mut sniff = Builder::new(TokioExecutor::new());
    sniff
        .http1()
        .max_buf_size(header_room)
        .max_headers(MAX_HEADER_COUNT)
        .timer(TokioTimer::new())
        .header_read_timeout(header_read);
    // HTTP/2 has no header timer and lets a client stop reading without our writes waiting;
    // `conn_watch` gives it both (see docs/decisions.md). Pings find peers that vanished.
    sniff
        .http2()
        .timer(TokioTimer::new())
        .max_concurrent_streams(MAX_STREAMS)
        .max_header_list_size(header_room as u32)
        .keep_alive_interval(Some(header_read))
        .keep_alive_timeout(header_read);
    let shared = Arc::new(Shared {
        service: router(app),
        proxies,
        h1: sniff.clone().http1_only(),
        h2: sniff.clone().http2_only(),
        sniff,
        plain_h2c: listeners.plain_h2c,
        write_stall,
        header_read,
        idle: header_read * 2,
    });
    let graceful = GracefulShutdown::new();
    let Listeners { plain, tls, .. } = listeners;
    tokio::pin!(shutdown);
    loop {
        let slot = tokio::select! {
            slot = connections.clone().acquire_owned() => slot.expect("the semaphore is never closed"),
            () = &mut shutdown => break,
        };
        let tls_accept = async {
            match &tls {
                Some(t) => t.listener.accept().await,
                None => std::future::pending().await,
            }
        };
        let (accepted, over_tls) = tokio::select! {
            accepted = plain.accept() => (accepted, false),
            accepted = tls_accept => (accepted, true),
            () = &mut shutdown => break,
        };
        let (stream, peer) = match accepted {
            Ok(conn) => conn,
            Err(e) => {
                // Out of file descriptors and the like: back off rather than spin.
                tracing::warn!(error = %e, "accept failed");
                tokio::time::sleep(Duration::from_millis(50)).await;
                continue;
            }
        };
        // Responses stream headers and body in separate writes; without NODELAY a small body
        // waits for the client's delayed ACK (~40 ms), which cut small downloads 20-fold.
        if let Err(e) = stream.set_nodelay(true) {
            tracing::debug!(error = %e, %peer, "could not set TCP_NODELAY");
        }
        let stall = Stall::new();
        let watched = Watched::new(stream, stall.clone());
        let shared = shared.clone();
        let watcher = graceful.watcher();
        let acceptor = if over_tls { tls.as_ref().map(|t| t.acceptor.clone()) } else { None };
        tokio::spawn(async move {
            let _slot = slot;
            match acceptor {
                None => serve_connection(&shared, watcher, watched, peer, false, stall, None).await,
                Some(acceptor) => {
                    // The handshake is the head of a TLS connection: the same deadline.
                    let stream = match tokio::time::timeout(shared.header_read, acceptor.accept(watched)).await {
                        Ok(Ok(s)) => s,
                        Ok(Err(e)) => return tracing::debug!(error = %e, %peer, "TLS handshake failed"),
                        Err(_) => return tracing::debug!(%peer, "TLS handshake timed out"),
                    };
                    let h2 = stream.get_ref().1.alpn_protocol() == Some(b"h2");
                    serve_connection(&shared, watcher, stream, peer, true, stall, Some(h2)).await
                }
            }
        });
    }
    drop(plain);
    drop(tls);
    tracing::info!("shutting down: waiting for open requests");
    tokio::select! {
        () = graceful.shutdown() => {}
        () = tokio::time::sleep(grace) => tracing::warn!("open requests did not finish in time"),
    }
}

/// Serve one accepted connection until it ends, or until a watchdog closes it: a client that
/// stopped reading (its socket's writes wait, `Watched`; or, on HTTP/2, a response body is
/// never asked for more, `conn_watch`), or a connection idle with nothing in flight.
/// `h2`: what ALPN chose; `None` on the plain listener, where h2c is sniffed if enabled.
async fn serve_connection<I>(
    shared: &Shared,
    watcher: Watcher,
    io: I,
    peer: SocketAddr,
    tls: bool,
    stall: Stall,
    h2: Option<bool>,
) where
    I: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let watch = ConnWatch::new();
    let (router, proxies, w) = (shared.service.clone(), shared.proxies.clone(), watch.clone());
    let svc = service_fn(move |req: hyper::Request<Incoming>| {
        let client = client_addr::resolve(peer.ip(), tls, req.headers(), &proxies);
        let held = w.begin();
        let (router, w) = (router.clone(), w.clone());
        let mut req = req.map(Body::new);
        req.extensions_mut().insert(ConnectInfo::<SocketAddr>(peer));
        req.extensions_mut().insert(client);
        // Whatever a handler logs names the client, the forwarded address behind a proxy.
        let span = tracing::info_span!("request", client = %client.ip);
        async move {
            let resp = match router.oneshot(req).instrument(span).await {
                Ok(resp) => resp,
                Err(never) => match never {},
            };
            Ok::<_, Infallible>(resp.map(|b| w.track(b, held)))
        }
    });
    let builder = match h2 {
        Some(true) => &shared.h2,
        Some(false) => &shared.h1,
        None if shared.plain_h2c => &shared.sniff,
        None => &shared.h1,
    };
    let conn = watcher.watch(builder.serve_connection(TokioIo::new(io), svc).into_owned());
    tokio::select! {
        ended = conn => if let Err(e) = ended {
            tracing::debug!(error = %e, %peer, "connection ended with an error");
        },
        // Dropping the connection drops its response bodies, and what they held.
        () = stall.expired(shared.write_stall) => tracing::debug!(%peer, "client stopped reading; connection closed"),
        why = watch.ended(shared.write_stall, shared.idle) => tracing::debug!(%peer, ?why, "connection closed"),
    }
}
