//! Accepting HTTP connections with limits that slow or idle clients cannot outwait: a client
//! must send a request's header within the header-read timeout (which also ends a keep-alive
//! connection idle that long), and at most `max_connections` are open at once; beyond that
//! the listener stops accepting until one closes, leaving the rest in the kernel's backlog.
//!
//! `axum::serve` has no header-read timeout, so connections are served here with hyper-util's
//! automatic HTTP/1 and HTTP/2 builder and one service per connection that carries the peer's
//! address (`ConnectInfo`).

use std::convert::Infallible;
use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use axum::body::Body;
use axum::extract::Request;
use hyper::body::Incoming;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::conn::auto::Builder;
use hyper_util::service::TowerToHyperService;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{OwnedSemaphorePermit, Semaphore, watch};
use tower::{Service, ServiceExt as _};

/// How long accepting pauses after the operating system refused a connection (for example out
/// of file descriptors), so that the loop does not spin.
const ACCEPT_ERROR_PAUSE: Duration = Duration::from_millis(50);

/// What one client may hold of the server.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ConnectionLimits {
    /// Time to send a complete request header, and the longest a keep-alive connection may
    /// sit idle between requests.
    pub header_read_timeout: Duration,
    /// Connections open at once.
    pub max_connections: u32,
}

/// Serves `router` on `listener` until `shutdown` completes; then stops accepting, asks every
/// open connection to finish its request in flight and close, and waits up to `grace` for
/// them.
pub async fn serve(
    listener: TcpListener,
    router: Router,
    limits: ConnectionLimits,
    shutdown: impl Future<Output = ()>,
    grace: Duration,
) {
    let open = Arc::new(Semaphore::new(limits.max_connections as usize));
    let (stop, stopping) = watch::channel(false);
    let mut make_service = router.into_make_service_with_connect_info::<SocketAddr>();
    let mut shutdown = std::pin::pin!(shutdown);
    loop {
        let permit = tokio::select! {
            permit = Arc::clone(&open).acquire_owned() => match permit {
                Ok(permit) => permit,
                // The semaphore is never closed.
                Err(_) => break,
            },
            () = &mut shutdown => break,
        };
        let (stream, peer) = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok(accepted) => accepted,
                Err(e) => {
                    tracing::warn!(error = %e, "accepting a connection failed");
                    tokio::time::sleep(ACCEPT_ERROR_PAUSE).await;
                    continue;
                }
            },
            () = &mut shutdown => break,
        };
        let service = match make_service.call(peer).await {
            Ok(service) => service,
            Err(never) => match never {},
        };
        tokio::spawn(serve_connection(
            stream,
            service,
            limits,
            stopping.clone(),
            permit,
        ));
    }
    drop(listener);
    let _ = stop.send(true);
    // Every connection holds a permit until it closes: all permits back means all closed.
    let all = limits.max_connections;
    if tokio::time::timeout(grace, open.acquire_many(all))
        .await
        .is_err()
    {
        tracing::warn!("grace period over; closing remaining connections");
    }
}

/// Serves one connection until it closes, or until shutdown lets its request in flight
/// finish.
async fn serve_connection<S>(
    stream: TcpStream,
    service: S,
    limits: ConnectionLimits,
    mut stopping: watch::Receiver<bool>,
    _open: OwnedSemaphorePermit,
) where
    S: Service<Request, Response = axum::response::Response, Error = Infallible>
        + Clone
        + Send
        + 'static,
    S::Future: Send,
{
    // The builder first reads a few bytes to tell HTTP/1 from HTTP/2, without a timeout: a
    // client that connects and sends nothing is closed here instead.
    let mut first = [0u8; 1];
    match tokio::time::timeout(limits.header_read_timeout, stream.peek(&mut first)).await {
        Ok(Ok(read)) if read > 0 => {}
        _ => return,
    }
    let service = TowerToHyperService::new(
        service.map_request(|request: Request<Incoming>| request.map(Body::new)),
    );
    let mut builder = Builder::new(TokioExecutor::new());
    builder
        .http1()
        .timer(TokioTimer::new())
        .header_read_timeout(limits.header_read_timeout);
    builder
        .http2()
        .timer(TokioTimer::new())
        .keep_alive_interval(limits.header_read_timeout)
        .keep_alive_timeout(limits.header_read_timeout);
    let mut connection =
        std::pin::pin!(builder.serve_connection_with_upgrades(TokioIo::new(stream), service));
    tokio::select! {
        result = connection.as_mut() => {
            if let Err(e) = result {
                tracing::debug!(error = %e, "connection ended with an error");
            }
            return;
        }
        _ = stopping.wait_for(|stop| *stop) => connection.as_mut().graceful_shutdown(),
    }
    if let Err(e) = connection.await {
        tracing::debug!(error = %e, "connection ended with an error during shutdown");
    }
}
