//! The accept loop: serves the router over HTTP/1.1 and HTTP/2 (hyper's
//! auto builder) with a cap on open connections, header and idle timeouts
//! ([`super::conn`]), `TCP_NODELAY`, the client's address for the handlers
//! (`ConnectInfo`), and a graceful stop.
//!
//! At the cap a new connection first replaces the connection that has
//! waited longest without a request in flight (idle sockets cost the server
//! nothing to drop, and a client reconnects), so idle or half-open sockets
//! can never lock out a health check or a real client. Only when every
//! connection is busy does the newcomer get a quick `503` with
//! `Connection: close`. Each connection needs a file descriptor, so the cap
//! is also kept below the open-files limit ([`fit_open_files`]).

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use axum::extract::ConnectInfo;
use axum::Router;
use hyper::body::Incoming;
use hyper_util::rt::{TokioExecutor, TokioIo};
use hyper_util::server::conn::auto;
use tokio::io::AsyncWriteExt;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tower::ServiceExt;

use super::conn::{Activity, Connections, Watched};
use super::streams::Held;

/// How long a newcomer at the cap waits for an evicted connection's slot.
const EVICTION_WAIT: Duration = Duration::from_millis(250);
/// Refusals (503 at the cap) being written at once; past it, plain closes.
const MAX_REFUSING: usize = 64;
/// File descriptors kept free for everything but client connections
/// (database, logs, object store, trainers' pipes).
const RESERVED_FDS: u64 = 64;

/// The connection settings of [`serve`].
#[derive(Debug, Clone, Copy)]
pub struct ServeOptions {
    /// Most open connections.
    pub max_connections: usize,
    /// Time a client has to send a request's headers.
    pub header_timeout: Duration,
    /// Time a kept-alive connection may wait for its next request.
    pub idle_timeout: Duration,
}

/// The default connection cap.
pub const DEFAULT_MAX_CONNECTIONS: usize = 4096;

/// The largest connection cap that leaves room under an open-files limit
/// of `limit` descriptors: an eighth of them (at least [`RESERVED_FDS`])
/// stay free for the rest of the daemon.
pub fn fit_open_files(wanted: usize, limit: u64) -> usize {
    let reserve = (limit / 8).max(RESERVED_FDS);
    let room = usize::try_from(limit.saturating_sub(reserve)).unwrap_or(usize::MAX);
    wanted.min(room).max(1)
}

/// Serves `app` on `listener` until `shutdown` is cancelled, then stops
/// accepting, lets the requests in flight finish (event streams and
/// followed logs end on the same token) and returns.
pub async fn serve(
    listener: TcpListener,
    app: Router,
    opts: ServeOptions,
    shutdown: CancellationToken,
) -> std::io::Result<()> {
    let slots = Arc::new(Semaphore::new(opts.max_connections));
    let refusing = Arc::new(Semaphore::new(MAX_REFUSING));
    let conns = Arc::new(Connections::default());
    let tasks = TaskTracker::new();
    let mut builder = auto::Builder::new(TokioExecutor::new());
    // Header and idle timeouts are conn.rs's: hyper's own header timer
    // would also cut kept-alive connections waiting for their next request.
    builder.http1().header_read_timeout(None);
    let builder = Arc::new(builder);
    let mut accept_errors = AcceptErrors::default();
    loop {
        let (tcp, peer) = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok(a) => a,
                Err(e) => {
                    if !accept_errors.wait_after(e, &shutdown).await {
                        break;
                    }
                    continue;
                }
            },
            _ = shutdown.cancelled() => break,
        };
        // No Nagle delay: small writes (SSE events, callback answers) go out
        // at once instead of waiting up to 40 ms for the peer's delayed ACK.
        if let Err(e) = tcp.set_nodelay(true) {
            tracing::debug!(error = %e, "cannot set TCP_NODELAY");
        }
        let Some(permit) = admit(&slots, &conns).await else {
            match refusing.clone().try_acquire_owned() {
                Ok(p) => {
                    tasks.spawn(async move {
                        refuse(tcp).await;
                        drop(p);
                    });
                }
                Err(_) => drop(tcp),
            }
            continue;
        };
        let act = conns.add();
        let conn = Conn {
            builder: builder.clone(),
            app: app.clone(),
            peer,
            act,
            conns: conns.clone(),
            opts,
            shutdown: shutdown.clone(),
        };
        tasks.spawn(async move {
            conn.run(tcp).await;
            drop(permit);
        });
    }
    drop(listener);
    tasks.close();
    tasks.wait().await;
    Ok(())
}

/// A slot for a new connection: a free one, or the slot of the
/// longest-idle connection, closed for it; `None` when all are busy.
async fn admit(slots: &Arc<Semaphore>, conns: &Connections) -> Option<OwnedSemaphorePermit> {
    if let Ok(p) = slots.clone().try_acquire_owned() {
        return Some(p);
    }
    if !conns.evict_longest_idle() {
        return None;
    }
    tokio::time::timeout(EVICTION_WAIT, slots.clone().acquire_owned())
        .await
        .ok()?
        .ok()
}

/// Answers a connection past the cap with a 503 and closes it.
async fn refuse(mut tcp: TcpStream) {
    const BODY: &str = r#"{"detail":"the server has too many open connections (MAX_CONNECTIONS); try again shortly"}"#;
    let head = format!(
        "HTTP/1.1 503 Service Unavailable\r\ncontent-type: application/json\r\ncontent-length: {}\r\nretry-after: 1\r\nconnection: close\r\n\r\n",
        BODY.len()
    );
    let answer = async {
        tcp.write_all(head.as_bytes()).await?;
        tcp.write_all(BODY.as_bytes()).await?;
        tcp.shutdown().await?;
        // Read what the client sent, so closing does not reset the
        // connection before it has read the answer.
        let mut sink = [0u8; 4096];
        while tokio::io::AsyncReadExt::read(&mut tcp, &mut sink).await? > 0 {}
        Ok::<_, std::io::Error>(())
    };
    let _ = tokio::time::timeout(Duration::from_secs(2), answer).await;
}

/// One accepted connection and what serving it needs.
struct Conn {
    builder: Arc<auto::Builder<TokioExecutor>>,
    app: Router,
    peer: SocketAddr,
    act: Arc<Activity>,
    conns: Arc<Connections>,
    opts: ServeOptions,
    shutdown: CancellationToken,
}

impl Conn {
    async fn run(self, tcp: TcpStream) {
        let io = TokioIo::new(Watched::new(tcp, self.act.clone()));
        let (app, peer, act) = (self.app.clone(), self.peer, self.act.clone());
        let service = hyper::service::service_fn(move |req: hyper::Request<Incoming>| {
            let (app, act) = (app.clone(), act.clone());
            async move {
                let in_flight = act.begin();
                let mut req = req.map(axum::body::Body::new);
                req.extensions_mut().insert(ConnectInfo(peer));
                let resp = app
                    .oneshot(req)
                    .await
                    .unwrap_or_else(|e: Infallible| match e {});
                // The request counts as in flight until its body is sent.
                Ok::<_, Infallible>(resp.map(|body| Held::new(body, in_flight).into_body()))
            }
        });
        let conn = self.builder.serve_connection(io, service);
        tokio::pin!(conn);
        let (header, idle) = (self.opts.header_timeout, self.opts.idle_timeout);
        let mut draining = false;
        loop {
            tokio::select! {
                served = conn.as_mut() => {
                    if let Err(e) = served {
                        tracing::debug!(peer = %self.peer, error = %e, "connection ended with an error");
                    }
                    break;
                }
                // Dropping the connection closes the socket: nothing is in
                // flight, so nothing is cut off.
                _ = self.act.expired(header, idle) => {
                    tracing::debug!(peer = %self.peer, "closing an idle connection");
                    break;
                }
                _ = self.shutdown.cancelled(), if !draining => {
                    draining = true;
                    conn.as_mut().graceful_shutdown();
                }
            }
        }
        self.conns.remove(&self.act);
    }
}

/// Accept failures: dropped handshakes are ignored; running out of file
/// descriptors waits a little (the kernel keeps the queue) and is logged
/// at most every ten seconds.
#[derive(Default)]
struct AcceptErrors {
    last_logged: Option<tokio::time::Instant>,
}

impl AcceptErrors {
    /// Waits as the error asks; false when the server is shutting down.
    async fn wait_after(&mut self, e: std::io::Error, shutdown: &CancellationToken) -> bool {
        use std::io::ErrorKind::*;
        if matches!(
            e.kind(),
            ConnectionAborted | ConnectionReset | ConnectionRefused | Interrupted
        ) {
            return true;
        }
        let now = tokio::time::Instant::now();
        if self
            .last_logged
            .is_none_or(|t| now.duration_since(t) > Duration::from_secs(10))
        {
            self.last_logged = Some(now);
            tracing::warn!(error = %e, "cannot accept connections (out of file descriptors?); retrying");
        }
        tokio::select! {
            _ = tokio::time::sleep(Duration::from_millis(50)) => true,
            _ = shutdown.cancelled() => false,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_cap_leaves_descriptors_for_the_rest_of_the_daemon() {
        assert_eq!(fit_open_files(4096, 1_048_576), 4096);
        assert_eq!(fit_open_files(4096, 1024), 1024 - 128);
        assert_eq!(fit_open_files(4096, 256), 256 - 64);
        assert_eq!(fit_open_files(100, 1024), 100);
        assert_eq!(fit_open_files(4096, 10), 1);
    }
}
