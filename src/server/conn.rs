//! What the server knows about each open connection, so that idle ones can
//! be closed: whether a request is in flight (its response body included,
//! so event streams and followed logs are never "idle"), since when it has
//! been idle, and whether the client has started sending its next request.
//!
//! The rules ([`Activity::deadline`]), like Go's `ReadHeaderTimeout` and
//! `IdleTimeout`:
//! - a new connection must send a complete request head within the header
//!   timeout;
//! - between requests a connection may stay silent for the idle timeout;
//!   once the next request's first byte arrives, its head must be complete
//!   within the header timeout;
//! - while a request is in flight nothing times out here.
//!
//! hyper's own `header_read_timeout` cannot express this: its timer also
//! runs while a kept-alive connection waits for its next request (so the
//! idle timeout could never exceed it), and it does not cover the
//! protocol-detection read of the auto (HTTP/1 + HTTP/2) builder.

use std::collections::HashMap;
use std::io;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::task::{Context, Poll};
use std::time::Duration;

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::sync::Notify;
use tokio::time::Instant;

/// One connection's activity.
pub(super) struct Activity {
    id: u64,
    state: Mutex<State>,
    /// Woken when the deadline may have moved earlier or gone away.
    wake: Notify,
}

struct State {
    in_flight: usize,
    /// Since when no request has been in flight.
    idle_since: Instant,
    /// When the first byte of the next request head arrived.
    head_started: Option<Instant>,
    /// A request has completed on this connection (the idle timeout applies).
    served: bool,
    /// Closed to make room for a new connection.
    evicted: bool,
}

/// When a connection is to be closed.
#[derive(Debug, PartialEq, Eq)]
pub(super) enum Deadline {
    /// Now (evicted while idle).
    Now,
    /// At this instant, unless something happens first.
    At(Instant),
    /// Not while a request is in flight.
    Never,
}

impl Activity {
    fn new(id: u64) -> Self {
        Activity {
            id,
            state: Mutex::new(State {
                in_flight: 0,
                idle_since: Instant::now(),
                head_started: None,
                served: false,
                evicted: false,
            }),
            wake: Notify::new(),
        }
    }

    fn state(&self) -> MutexGuard<'_, State> {
        // Nothing panics while holding the lock; a poisoned one still holds
        // consistent counters.
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// A request starts; the guard ends it when the response body is done.
    pub(super) fn begin(self: &Arc<Self>) -> InFlight {
        let mut s = self.state();
        s.in_flight += 1;
        s.head_started = None;
        InFlight(self.clone())
    }

    /// Bytes arrived from the client.
    fn on_read(&self) {
        let mut s = self.state();
        if s.in_flight == 0 && s.head_started.is_none() {
            s.head_started = Some(Instant::now());
            drop(s);
            self.wake.notify_one();
        }
    }

    /// When to close the connection, given the two timeouts.
    pub(super) fn deadline(&self, header: Duration, idle: Duration) -> Deadline {
        let s = self.state();
        // A request that slipped in after an eviction still finishes.
        if s.in_flight > 0 {
            Deadline::Never
        } else if s.evicted {
            Deadline::Now
        } else if let Some(t) = s.head_started {
            Deadline::At(t + header)
        } else if s.served {
            Deadline::At(s.idle_since + idle)
        } else {
            Deadline::At(s.idle_since + header)
        }
    }

    /// Resolves when the connection is due to be closed: idle or slow past
    /// its timeout, or evicted.
    pub(super) async fn expired(&self, header: Duration, idle: Duration) {
        loop {
            match self.deadline(header, idle) {
                Deadline::Now => return,
                Deadline::At(t) if t <= Instant::now() => return,
                Deadline::At(t) => {
                    tokio::select! {
                        _ = tokio::time::sleep_until(t) => {}
                        _ = self.wake.notified() => {}
                    }
                }
                Deadline::Never => self.wake.notified().await,
            }
        }
    }
}

/// A request in flight; dropped with its response body.
pub(super) struct InFlight(Arc<Activity>);

impl Drop for InFlight {
    fn drop(&mut self) {
        let mut s = self.0.state();
        s.in_flight = s.in_flight.saturating_sub(1);
        if s.in_flight == 0 {
            s.idle_since = Instant::now();
            s.served = true;
            drop(s);
            self.0.wake.notify_one();
        }
    }
}

/// Every open connection, to find the longest-idle one when the cap is
/// reached.
#[derive(Default)]
pub(super) struct Connections {
    next_id: AtomicU64,
    open: Mutex<HashMap<u64, Arc<Activity>>>,
}

impl Connections {
    fn open(&self) -> MutexGuard<'_, HashMap<u64, Arc<Activity>>> {
        self.open.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Registers a new connection.
    pub(super) fn add(&self) -> Arc<Activity> {
        let id = self.next_id.fetch_add(1, Ordering::Relaxed);
        let act = Arc::new(Activity::new(id));
        self.open().insert(id, act.clone());
        act
    }

    /// Forgets a closed connection.
    pub(super) fn remove(&self, act: &Activity) {
        self.open().remove(&act.id);
    }

    /// Closes the connection that has waited longest without a request in
    /// flight; false when every connection is busy.
    pub(super) fn evict_longest_idle(&self) -> bool {
        let open = self.open();
        let victim = open
            .values()
            .filter_map(|a| {
                let s = a.state();
                (s.in_flight == 0 && !s.evicted).then_some((s.idle_since, a))
            })
            .min_by_key(|(since, _)| *since)
            .map(|(_, a)| a.clone());
        drop(open);
        let Some(a) = victim else {
            return false;
        };
        a.state().evicted = true;
        a.wake.notify_one();
        true
    }
}

/// A socket that tells its connection's [`Activity`] when bytes arrive.
pub(super) struct Watched<S> {
    inner: S,
    act: Arc<Activity>,
}

impl<S> Watched<S> {
    pub(super) fn new(inner: S, act: Arc<Activity>) -> Self {
        Watched { inner, act }
    }
}

impl<S: AsyncRead + Unpin> AsyncRead for Watched<S> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let before = buf.filled().len();
        let polled = Pin::new(&mut self.inner).poll_read(cx, buf);
        if matches!(polled, Poll::Ready(Ok(()))) && buf.filled().len() > before {
            self.act.on_read();
        }
        polled
    }
}

impl<S: AsyncWrite + Unpin> AsyncWrite for Watched<S> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.inner).poll_write(cx, buf)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.inner).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const HEADER: Duration = Duration::from_secs(10);
    const IDLE: Duration = Duration::from_secs(60);

    #[tokio::test(start_paused = true)]
    async fn new_connections_get_the_header_timeout_then_the_idle_timeout() {
        let conns = Connections::default();
        let act = conns.add();
        let opened = Instant::now();
        assert_eq!(act.deadline(HEADER, IDLE), Deadline::At(opened + HEADER));
        act.on_read();
        let req = act.begin();
        assert_eq!(act.deadline(HEADER, IDLE), Deadline::Never);
        tokio::time::advance(Duration::from_secs(100)).await;
        drop(req);
        let done = Instant::now();
        assert_eq!(act.deadline(HEADER, IDLE), Deadline::At(done + IDLE));
        tokio::time::advance(Duration::from_secs(5)).await;
        act.on_read();
        assert_eq!(
            act.deadline(HEADER, IDLE),
            Deadline::At(done + Duration::from_secs(5) + HEADER)
        );
    }

    #[tokio::test(start_paused = true)]
    async fn expiry_waits_out_requests_in_flight() {
        use tokio::time::timeout;
        let conns = Connections::default();
        let act = conns.add();
        let req = act.begin();
        let mut watcher = {
            let act = act.clone();
            tokio::spawn(async move { act.expired(HEADER, IDLE).await })
        };
        let long = Duration::from_secs(1000);
        assert!(
            timeout(long, &mut watcher).await.is_err(),
            "a request in flight never expires"
        );
        drop(req);
        let almost = IDLE - Duration::from_secs(1);
        assert!(timeout(almost, &mut watcher).await.is_err());
        assert!(timeout(Duration::from_secs(2), &mut watcher).await.is_ok());
    }

    #[tokio::test(start_paused = true)]
    async fn eviction_picks_the_longest_idle_connection_never_a_busy_one() {
        let conns = Connections::default();
        let busy = conns.add();
        let _req = busy.begin();
        tokio::time::advance(Duration::from_secs(1)).await;
        let old = conns.add();
        tokio::time::advance(Duration::from_secs(1)).await;
        let young = conns.add();
        assert!(conns.evict_longest_idle());
        assert_eq!(old.deadline(HEADER, IDLE), Deadline::Now);
        assert_ne!(young.deadline(HEADER, IDLE), Deadline::Now);
        assert!(conns.evict_longest_idle());
        assert_eq!(young.deadline(HEADER, IDLE), Deadline::Now);
        assert!(!conns.evict_longest_idle(), "the busy one stays");
        conns.remove(&old);
        conns.remove(&young);
        assert_eq!(conns.open().len(), 1);
    }
}
