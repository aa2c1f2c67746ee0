//! The daemon's event streams as client commands read them: where they
//! are, what their events decode to, and waiting on one for a job to end.
//! The transport (parsing, reconnects) is [`super::stream`]'s.

use uuid::Uuid;

use super::stream::{EventStream, Item, SseEvent};
use crate::client::{Client, ClientError};
use crate::model::{Job, Metric};

/// Path of the stream of every job's changes and points.
pub const ALL_JOBS_EVENTS_PATH: &str = "/api/v1/training/events";

/// Path of a job's event stream.
pub fn job_events_path(id: Uuid) -> String {
    format!("/api/v1/training/jobs/{id}/events")
}

/// A decoded event of the daemon's streams.
#[derive(Debug, Clone)]
pub enum Update {
    /// A job changed (the full job).
    Job(Box<Job>),
    /// A metric point was stored.
    Metric(Metric),
    /// Anything else (`ready`, future event types).
    Other,
}

impl Update {
    /// Decodes an SSE event.
    pub fn decode(e: &SseEvent) -> Result<Update, ClientError> {
        let bad = |err: serde_json::Error| ClientError::Protocol {
            url: "event stream".into(),
            reason: format!("cannot read a {:?} event: {err}", e.event),
        };
        Ok(match e.event.as_str() {
            "job" => Update::Job(Box::new(serde_json::from_str(&e.data).map_err(bad)?)),
            "metric" => Update::Metric(serde_json::from_str(&e.data).map_err(bad)?),
            _ => Update::Other,
        })
    }
}

/// Waits on the job's event stream until the job is final and returns it
/// (for followers whose own stream can end a moment before the status does).
pub async fn until_final(client: &Client, id: Uuid) -> anyhow::Result<Job> {
    let mut events = EventStream::new(client, job_events_path(id), None);
    while let Some(item) = events.next().await? {
        if let Item::Event(e) = item {
            if let Update::Job(job) = Update::decode(&e)? {
                if job.status.is_terminal() {
                    return Ok(*job);
                }
            }
        }
    }
    Ok(client.get_job(id).await?)
}
