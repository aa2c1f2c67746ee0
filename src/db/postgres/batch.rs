//! The in-memory state of one write batch between its two round trips:
//! what the writer's operations fill in ([`super::writer`]) and the SQL
//! of each round trip reads and answers ([`super::round_trips`]).

use std::collections::HashMap;

use chrono::{DateTime, Utc};
use uuid::Uuid;

use crate::model::{Attempt, AuditEntry, JobRecord, MetricPoint};

/// What the commit decided, for the writes to build their answers from.
pub(super) struct Committed {
    /// Numbers of the jobs inserted.
    pub(super) numbers: HashMap<Uuid, i64>,
    /// Ids of the points inserted, in the batch's order.
    pub(super) point_ids: Vec<i64>,
}

/// A job row as the batch has it.
pub(super) struct Slot {
    pub(super) rec: JobRecord,
    /// Inserted by this batch.
    pub(super) new: bool,
    /// Must be written back.
    pub(super) dirty: bool,
    /// The change is visible (the all-jobs feed sends the job again).
    pub(super) visible: bool,
    /// Its attempts as stored, to write back only those that changed.
    pub(super) stored_attempts: Vec<Attempt>,
}

/// A metric point to insert.
pub(super) struct Point {
    pub(super) job: Uuid,
    pub(super) point: MetricPoint,
    pub(super) at: DateTime<Utc>,
    /// The job's attempt when the point arrived.
    pub(super) attempt: u32,
}

/// A job event to queue for every webhook endpoint whose filters take it.
pub(super) struct Event {
    pub(super) job: Uuid,
    pub(super) event: &'static str,
    /// The body as stored and later sent.
    pub(super) payload: String,
    pub(super) framework: String,
    pub(super) user: String,
    pub(super) at: DateTime<Utc>,
}

/// The in-memory state of one batch between its two round trips.
pub(super) struct Batch {
    pub(super) now: DateTime<Utc>,
    pub(super) rows: HashMap<Uuid, Slot>,
    /// Jobs inserted, in order.
    pub(super) created: Vec<Uuid>,
    /// Points to insert, in order.
    pub(super) points: Vec<Point>,
    /// Webhook events to queue, in order.
    pub(super) events: Vec<Event>,
    /// Audit entries to store, in order.
    pub(super) audits: Vec<AuditEntry>,
}
