//! In-process fan-out of committed changes: every job change and every new
//! metric point is published here after its write is durable, for the live
//! event stream and the scheduler.
//!
//! With several replicas on one PostgreSQL database, changes committed on
//! another replica arrive here as [`Event::Touched`] and [`Event::Resync`]
//! (`jobs/remote.rs`): wake-ups that carry no state, so subscribers re-read
//! from the database, which stays the only source of events.

use std::sync::Arc;

use tokio::sync::broadcast;
use uuid::Uuid;

use crate::model::{Job, Metric};

/// Something that changed, after it was committed.
#[derive(Debug, Clone)]
pub enum Event {
    /// A job was created or changed (status, progress, message, …).
    Job(Arc<Job>),
    /// A metric point was stored.
    Metric(Arc<Metric>),
    /// A queue was paused or resumed (its name).
    Queue(Arc<str>),
    /// Job `id` (its row, its points, or both) changed on another replica:
    /// re-read it.
    Touched(Uuid),
    /// Changes on other replicas may have been missed (a queue changed
    /// there, or the wake-up channel reconnected): re-read everything.
    Resync,
}

impl Event {
    /// Whether this replica's own commit made the event (and not a wake-up
    /// from another replica).
    pub fn is_local(&self) -> bool {
        !matches!(self, Event::Touched(_) | Event::Resync)
    }
}

/// How many events a slow subscriber may fall behind before it is told to
/// resynchronise (it then misses events rather than growing a queue).
pub const CAPACITY: usize = 4096;

/// The publisher; clone-cheap.
#[derive(Debug, Clone)]
pub struct Events {
    tx: broadcast::Sender<Event>,
}

impl Default for Events {
    fn default() -> Self {
        Self::new()
    }
}

impl Events {
    /// A hub with no subscribers.
    pub fn new() -> Self {
        Self::with_capacity(CAPACITY)
    }

    /// A hub whose subscribers may fall `capacity` events behind.
    pub fn with_capacity(capacity: usize) -> Self {
        let (tx, _) = broadcast::channel(capacity.max(1));
        Self { tx }
    }

    /// Publishes an event; a no-op when nobody listens.
    pub fn publish(&self, event: Event) {
        let _ = self.tx.send(event);
    }

    /// A new subscription, starting with the next event.
    pub fn subscribe(&self) -> broadcast::Receiver<Event> {
        self.tx.subscribe()
    }
}
