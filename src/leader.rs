//! Which replica leads: with `--leader-election lease`, replicas sharing
//! one PostgreSQL database take turns holding a lease row (`db/coord.rs`),
//! and the holder alone runs the scheduler, the runner's watchers and
//! timers (`daemon/leading.rs` starts and stops them on this module's
//! [`Role`] changes). With `off`, this daemon leads alone.
//!
//! The lease lives 12 s on the database's clock and is renewed every 4 s;
//! followers try to take it every second (a crashed leader's successor
//! takes over 12–13 s after its last renewal). This replica's own clock only
//! measures how long ago a renewal was *sent*: the database stamped the
//! lease after that, so "sent + TTL" is never later than the real expiry.
//! A leader whose renewals fail steps down [`MARGIN`] before that point,
//! before anyone else can take the lease, then keeps trying. A graceful
//! stop releases the lease (after the leader-only work stopped), so a
//! successor takes over at its next try instead of after the TTL.

use std::sync::Arc;
use std::time::Duration;

use tokio::sync::watch;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use crate::db::Db;

/// The lease's name (one leader for the whole database).
pub const LEASE: &str = "scheduler";
/// How long a lease lasts after its last renewal.
pub const TTL: Duration = Duration::from_secs(12);
/// How often the leader renews.
pub const RENEW_EVERY: Duration = Duration::from_secs(4);
/// How often a follower (or a leader whose renewal failed) tries.
pub const RETRY_EVERY: Duration = Duration::from_secs(1);
/// A leader that could not renew steps down this long before its lease
/// could expire.
pub const MARGIN: Duration = Duration::from_secs(3);
/// The longest one acquire or renewal may take.
const CALL_TIMEOUT: Duration = Duration::from_secs(4);

/// This replica's part.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Role {
    /// It runs the leader-only work; `epoch` is the lease's (none when
    /// leader election is off).
    Leading {
        /// Grows with each new holder of the lease.
        epoch: Option<i64>,
    },
    /// Another replica leads (or nobody can be sure, while the database is
    /// unreachable): this one serves the API only.
    Following,
}

impl Role {
    /// Whether this replica leads.
    pub fn is_leading(self) -> bool {
        matches!(self, Role::Leading { .. })
    }

    /// The lease's epoch while leading under election.
    pub fn epoch(self) -> Option<i64> {
        match self {
            Role::Leading { epoch } => epoch,
            Role::Following => None,
        }
    }
}

/// A view of this replica's role (`/health`, the leader-only work).
#[derive(Debug, Clone)]
pub struct Leadership {
    replica: Arc<str>,
    role: watch::Receiver<Role>,
}

impl Leadership {
    /// Leader election off: this daemon leads alone, for good.
    pub fn alone(replica: Arc<str>) -> Self {
        let (tx, role) = watch::channel(Role::Leading { epoch: None });
        // Nobody changes it: the receiver keeps the value.
        drop(tx);
        metrics::gauge!("platform_leader").set(1.0);
        Self { replica, role }
    }

    /// This replica's name (the lease holder's).
    pub fn replica(&self) -> &str {
        &self.replica
    }

    /// The role now.
    pub fn current(&self) -> Role {
        *self.role.borrow()
    }

    /// A receiver of every change of role.
    pub fn watch(&self) -> watch::Receiver<Role> {
        self.role.clone()
    }
}

/// The lease loop of one replica.
pub struct Election {
    db: Arc<Db>,
    replica: Arc<str>,
    tx: watch::Sender<Role>,
}

impl Election {
    /// An election for `replica`, following until it gets the lease.
    pub fn new(db: Arc<Db>, replica: Arc<str>) -> (Self, Leadership) {
        let (tx, role) = watch::channel(Role::Following);
        metrics::gauge!("platform_leader").set(0.0);
        let view = Leadership {
            replica: replica.clone(),
            role,
        };
        (Self { db, replica, tx }, view)
    }

    /// Takes and renews the lease until `stop`; the role is then left as
    /// it is (the caller stops the leader-only work, then [`release`]s).
    pub async fn run(self, stop: CancellationToken) {
        // While leading: when the lease may expire, minus the margin.
        let mut valid_until: Option<Instant> = None;
        loop {
            let sent = Instant::now();
            let call = tokio::time::timeout(
                CALL_TIMEOUT,
                self.db.acquire_lease(LEASE, &self.replica, TTL),
            );
            tokio::pin!(call);
            // The deadline is watched during the call too: a renewal that
            // hangs must not keep a leader past it.
            let got = loop {
                tokio::select! {
                    r = &mut call => break r,
                    _ = sleep_until_opt(valid_until) => self.step_down(&mut valid_until),
                    _ = stop.cancelled() => return,
                }
            };
            let held = match got {
                Ok(Ok(Some(epoch))) => {
                    valid_until = Some(sent + TTL - MARGIN);
                    self.set(Role::Leading { epoch: Some(epoch) });
                    true
                }
                Ok(Ok(None)) => {
                    valid_until = None;
                    self.set(Role::Following);
                    false
                }
                Ok(Err(e)) => {
                    tracing::warn!(error = %e, "cannot renew or take the leader lease");
                    false
                }
                Err(_) => {
                    tracing::warn!(
                        "cannot renew or take the leader lease: no answer within {}s",
                        CALL_TIMEOUT.as_secs()
                    );
                    false
                }
            };
            let next = sent + if held { RENEW_EVERY } else { RETRY_EVERY };
            loop {
                tokio::select! {
                    _ = tokio::time::sleep_until(next) => break,
                    _ = sleep_until_opt(valid_until) => self.step_down(&mut valid_until),
                    _ = stop.cancelled() => return,
                }
            }
        }
    }

    /// The lease may expire soon and was not renewed: stop leading first.
    fn step_down(&self, valid_until: &mut Option<Instant>) {
        tracing::error!(
            "the leader lease could not be renewed in time: stepping down before it expires"
        );
        *valid_until = None;
        self.set(Role::Following);
    }

    fn set(&self, role: Role) {
        let before = *self.tx.borrow();
        if before == role {
            return;
        }
        match role {
            Role::Leading { epoch } => {
                tracing::info!(replica = %self.replica, epoch = epoch.unwrap_or_default(), "this replica leads: it runs the scheduler and watches the runner")
            }
            Role::Following => {
                tracing::info!(replica = %self.replica, "this replica follows: another one leads")
            }
        }
        metrics::gauge!("platform_leader").set(if role.is_leading() { 1.0 } else { 0.0 });
        self.tx.send_replace(role);
    }
}

/// Ends `replica`'s lease now (graceful stop, after the leader-only work
/// stopped), so a successor need not wait for it to expire.
pub async fn release(db: &Db, replica: &str) {
    match tokio::time::timeout(CALL_TIMEOUT, db.release_lease(LEASE, replica)).await {
        Ok(Ok(())) => tracing::info!("released the leader lease"),
        Ok(Err(e)) => {
            tracing::warn!(error = %e, "cannot release the leader lease; it expires by itself")
        }
        Err(_) => tracing::warn!("cannot release the leader lease in time; it expires by itself"),
    }
}

async fn sleep_until_opt(at: Option<Instant>) {
    match at {
        Some(at) => tokio::time::sleep_until(at).await,
        None => std::future::pending().await,
    }
}
