//! Server-Sent Events: `GET /api/v1/training/jobs/{id}/events` (one job)
//! and `GET /api/v1/training/events` (every job).
//!
//! Event types: `job` (the full job JSON, on every change), `metric` (one
//! stored point) and, on the all-jobs stream only, `ready` (sent first, once
//! the subscription is live). The per-job stream starts with the job's
//! current snapshot, replays its stored points, follows live, and ends after
//! the job's terminal state.
//!
//! The streams are derived from the database, not from an event log: every
//! event's `id:` is a cursor `m<position>-j<position>` naming the last
//! point and the job version sent, in the database's commit order
//! ([`FeedPos`]): on SQLite `m<metric id>-j<updated_at µs>`, on
//! PostgreSQL's all-jobs stream `m<xid>.<metric id>-j<xid>.<job number>`.
//! A client resuming with `Last-Event-ID` gets every point after `m` and
//! the job's current snapshot if it changed after `j` (intermediate
//! versions of a job coalesce into the latest; points never do). This
//! survives daemon restarts and needs no retention policy. Rows the
//! database holds back (committed behind a transaction still open) are
//! read again after [`RETRY`] even without a wake-up.
//!
//! The in-process hub ([`crate::events`]) is only a wake-up signal: on each
//! wake-up a stream reads what it has not sent yet from the database, so
//! events published out of commit order by concurrent requests can neither
//! reorder nor drop points. A subscriber that falls more than the hub's
//! capacity behind (`Lagged`) simply re-reads from its cursor, so no
//! `resync` event is needed and memory per subscriber stays bounded by one
//! page of rows.

use std::collections::VecDeque;
use std::convert::Infallible;
use std::sync::Arc;
use std::time::Duration;

use axum::extract::State;
use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
use axum::response::sse::{Event as SseEvent, KeepAlive, Sse};
use axum::response::{IntoResponse, Response};
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use tokio::sync::broadcast;
use tokio_util::sync::CancellationToken;
use utoipa::IntoParams;
use uuid::Uuid;

use super::error::ApiError;
use super::extract::{ApiQuery, JobId};
use super::responses::{Unauthorized, Unavailable};
use super::AppState;
use crate::events::Event;
use crate::jobs::{JobError, Jobs};
use crate::model::{ErrorBody, FeedPos, FeedRead, FeedScope, Job, Metric, ValidationError};

/// Rows read from the database per wake-up (bounds a subscriber's memory).
const PAGE: i64 = 256;
/// Hub events folded into one database read.
const MAX_COALESCE: usize = 1024;
/// How soon a read that the database held rows back from is repeated.
const RETRY: Duration = Duration::from_millis(25);
/// The event id's pattern (OpenAPI).
const EVENT_ID: &str = r"^\s*(m[0-9]{1,19}(\.[0-9]{1,19})?-j[0-9]{1,19}(\.[0-9]{1,19})?)?\s*$";
/// Interval of the `: keep-alive` comments.
pub const KEEP_ALIVE: Duration = Duration::from_secs(10);

/// Where a stream resumes: the positions of the last point and job
/// version sent.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Cursor {
    /// Position of the last point sent.
    pub metric: FeedPos,
    /// Position of the newest job version sent.
    pub job: FeedPos,
}

impl Cursor {
    /// Parses `m<position>-j<position>`, a position being `<n>` (which is
    /// `(0, n)`) or `<a>.<b>`.
    pub fn parse(s: &str) -> Result<Cursor, ValidationError> {
        let bad = || {
            ValidationError::new(
                "last_event_id",
                format!("{s:?} is not an event id: expected m<metric id>-j<microseconds> (or m<a>.<b>-j<c>.<d>) as sent in an event's id field"),
            )
        };
        let (m, j) = s.trim().split_once('-').ok_or_else(bad)?;
        let num = |n: &str| n.parse::<i64>().ok().filter(|n| *n >= 0);
        let pos = |part: &str, prefix: char| {
            let p = part.strip_prefix(prefix)?;
            match p.split_once('.') {
                Some((a, b)) => Some((num(a)?, num(b)?)),
                None => Some((0, num(p)?)),
            }
        };
        Ok(Cursor {
            metric: pos(m, 'm').ok_or_else(bad)?,
            job: pos(j, 'j').ok_or_else(bad)?,
        })
    }
}

/// `n` for `(0, n)` (SQLite's event ids stay as they were), else `a.b`.
struct Pos(FeedPos);

impl std::fmt::Display for Pos {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self.0 {
            (0, n) => write!(f, "{n}"),
            (a, b) => write!(f, "{a}.{b}"),
        }
    }
}

impl std::fmt::Display for Cursor {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "m{}-j{}", Pos(self.metric), Pos(self.job))
    }
}

/// Query of the event streams.
#[derive(Debug, Clone, Default, Serialize, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct EventsQuery {
    /// Resume after this event id (the `Last-Event-ID` header wins when both are sent).
    #[param(pattern = r"^\s*(m[0-9]{1,19}(\.[0-9]{1,19})?-j[0-9]{1,19}(\.[0-9]{1,19})?)?\s*$")]
    pub last_event_id: Option<String>,
}

/// The optional `Last-Event-ID` header as the OpenAPI document describes
/// it (a tuple parameter would be required, or nullable, which no header is).
pub struct LastEventIdHeader;

impl IntoParams for LastEventIdHeader {
    fn into_params(
        _: impl Fn() -> Option<utoipa::openapi::path::ParameterIn>,
    ) -> Vec<utoipa::openapi::path::Parameter> {
        use utoipa::openapi::path::{ParameterBuilder, ParameterIn};
        use utoipa::openapi::schema::{ObjectBuilder, Type};
        let schema = ObjectBuilder::new()
            .schema_type(Type::String)
            .pattern(Some(EVENT_ID));
        vec![ParameterBuilder::new()
            .name("Last-Event-ID")
            .parameter_in(ParameterIn::Header)
            .required(utoipa::openapi::Required::False)
            .description(Some("Resume after this event id (wins over the query)"))
            .schema(Some(schema))
            .build()]
    }
}

impl EventsQuery {
    /// The resume cursor from the header or the query, if any.
    fn cursor(&self, headers: &HeaderMap) -> Result<Option<Cursor>, ValidationError> {
        let header = headers
            .get("last-event-id")
            .map(|v| {
                v.to_str().map(str::to_string).map_err(|_| {
                    ValidationError::new("last_event_id", "the Last-Event-ID header must be ASCII")
                })
            })
            .transpose()?;
        match header.or_else(|| self.last_event_id.clone()) {
            Some(s) if !s.trim().is_empty() => Cursor::parse(&s).map(Some),
            _ => Ok(None),
        }
    }
}

/// Live events of one job.
#[utoipa::path(get, path = "/api/v1/training/jobs/{id}/events", tag = "jobs",
    params(("id" = uuid::Uuid, Path, description = "Job id"), EventsQuery,
        LastEventIdHeader),
    responses(
        (status = 200, description = "`text/event-stream`: `job` (the job JSON; the current snapshot first) and `metric` (a point) events; ends after the terminal state", content_type = "text/event-stream"),
        (status = 204, description = "Resumed after the job's terminal state: nothing more will come"),
        (status = 401, response = Unauthorized),
        (status = 404, description = "Unknown job", body = ErrorBody),
        (status = 422, description = "Malformed id or Last-Event-ID", body = ErrorBody),
        (status = 503, response = Unavailable),
    ))]
pub async fn job_events(
    State(st): State<AppState>,
    JobId(id): JobId,
    headers: HeaderMap,
    ApiQuery(q): ApiQuery<EventsQuery>,
) -> Result<Response, ApiError> {
    let resume = q.cursor(&headers)?;
    // Subscribe before reading, so nothing committed in between is missed.
    let rx = st.jobs.subscribe();
    let job = st.jobs.get(id).await?;
    let mut feed = Feed::new(st.jobs.clone(), rx, st.shutdown.clone(), FeedScope::Job(id));
    match resume {
        Some(c) => feed.cursor = c,
        None => {
            let pos = (0, micros(&job.updated_at));
            feed.cursor.job = pos;
            feed.push_job(pos, job);
        }
    }
    feed.fill().await?;
    if feed.finished() {
        // EventSource clients stop reconnecting on 204.
        return Ok(StatusCode::NO_CONTENT.into_response());
    }
    Ok(sse(feed))
}

/// Live events of every job.
#[utoipa::path(get, path = "/api/v1/training/events", tag = "jobs",
    params(EventsQuery,
        LastEventIdHeader),
    responses(
        (status = 200, description = "`text/event-stream`: `ready` first, then `job` and `metric` events of every job", content_type = "text/event-stream"),
        (status = 401, response = Unauthorized),
        (status = 422, description = "Malformed Last-Event-ID", body = ErrorBody),
        (status = 503, response = Unavailable),
    ))]
pub async fn all_events(
    State(st): State<AppState>,
    headers: HeaderMap,
    ApiQuery(q): ApiQuery<EventsQuery>,
) -> Result<Response, ApiError> {
    let resume = q.cursor(&headers)?;
    let rx = st.jobs.subscribe();
    let cursor = match resume {
        Some(c) => c,
        None => {
            let (metric, job) = st.jobs.feed_start().await?;
            Cursor { metric, job }
        }
    };
    let mut feed = Feed::new(st.jobs.clone(), rx, st.shutdown.clone(), FeedScope::All);
    feed.cursor = cursor;
    feed.queue.push_back(Out::Ready);
    Ok(sse(feed))
}

fn sse(feed: Feed) -> Response {
    let stream = futures::stream::unfold(feed, |mut feed| async move {
        feed.next().await.map(|e| (Ok::<_, Infallible>(e), feed))
    });
    let mut resp = Sse::new(stream)
        .keep_alive(KeepAlive::new().interval(KEEP_ALIVE).text("keep-alive"))
        .into_response();
    // Proxies such as nginx would otherwise buffer the stream.
    resp.headers_mut()
        .insert("x-accel-buffering", HeaderValue::from_static("no"));
    resp.headers_mut()
        .insert(header::CACHE_CONTROL, HeaderValue::from_static("no-cache"));
    resp
}

fn micros(t: &DateTime<Utc>) -> i64 {
    t.timestamp_micros()
}

/// Whether a stream of `scope` carries changes of `job`.
fn wants(scope: FeedScope, job: Uuid) -> bool {
    match scope {
        FeedScope::Job(id) => id == job,
        FeedScope::All => true,
    }
}

/// Something read from the database, waiting to be sent.
enum Out {
    Ready,
    // Boxed: a job (with its attempts) dwarfs a point.
    Job(FeedPos, Box<Job>),
    Metric(FeedPos, Metric),
}

/// One subscriber's state: its cursor, what to re-read, and at most one page
/// of rows waiting to be sent.
struct Feed {
    jobs: Arc<Jobs>,
    rx: broadcast::Receiver<Event>,
    closing: CancellationToken,
    scope: FeedScope,
    cursor: Cursor,
    queue: VecDeque<Out>,
    /// A job of interest may have changed since the last read.
    jobs_dirty: bool,
    /// Points of interest may have been stored since the last read.
    metrics_dirty: bool,
    /// The per-job stream has queued the terminal snapshot.
    terminal: bool,
    /// The last read was held back: read again after [`RETRY`].
    retry: bool,
}

impl Feed {
    fn new(
        jobs: Arc<Jobs>,
        rx: broadcast::Receiver<Event>,
        closing: CancellationToken,
        scope: FeedScope,
    ) -> Self {
        Feed {
            jobs,
            rx,
            closing,
            scope,
            cursor: Cursor::default(),
            queue: VecDeque::new(),
            jobs_dirty: true,
            metrics_dirty: true,
            terminal: false,
            retry: false,
        }
    }

    fn push_job(&mut self, pos: FeedPos, job: Job) {
        if matches!(self.scope, FeedScope::Job(_)) && job.status.is_terminal() {
            self.terminal = true;
        }
        self.queue.push_back(Out::Job(pos, Box::new(job)));
    }

    /// Whether the stream has nothing more to send, ever.
    fn finished(&self) -> bool {
        self.terminal && self.queue.is_empty() && !self.metrics_dirty
    }

    /// The next event to send; `None` ends the stream.
    async fn next(&mut self) -> Option<SseEvent> {
        loop {
            if let Some(out) = self.queue.pop_front() {
                return Some(self.encode(out));
            }
            if self.finished() || self.closing.is_cancelled() {
                return None;
            }
            if !(self.jobs_dirty || self.metrics_dirty) {
                self.wait().await?;
            }
            if let Err(e) = self.fill().await {
                // The database is closing or failing: end the stream; the
                // client resumes from its cursor once the daemon is back.
                tracing::warn!(error = %e, "an event stream stopped");
                return None;
            }
        }
    }

    /// Waits for a relevant change; `None` when the daemon shuts down.
    async fn wait(&mut self) -> Option<()> {
        loop {
            let got = tokio::select! {
                r = self.rx.recv() => r,
                _ = tokio::time::sleep(RETRY), if self.retry => {
                    self.jobs_dirty = true;
                    self.metrics_dirty = true;
                    return Some(());
                }
                _ = self.closing.cancelled() => return None,
            };
            self.note(got)?;
            // Fold whatever else is already queued into the same read.
            for _ in 0..MAX_COALESCE {
                match self.rx.try_recv() {
                    Ok(e) => self.note(Ok(e))?,
                    Err(broadcast::error::TryRecvError::Lagged(n)) => {
                        self.note(Err(broadcast::error::RecvError::Lagged(n)))?
                    }
                    Err(_) => break,
                }
            }
            if self.jobs_dirty || self.metrics_dirty {
                return Some(());
            }
        }
    }

    /// Marks what a hub event makes stale; `None` when the hub is gone.
    fn note(&mut self, got: Result<Event, broadcast::error::RecvError>) -> Option<()> {
        match got {
            Ok(Event::Job(j)) if wants(self.scope, j.id) => self.jobs_dirty = true,
            Ok(Event::Metric(m)) if wants(self.scope, m.job_id) => self.metrics_dirty = true,
            // Changed on another replica: its row, its points or both.
            Ok(Event::Touched(id)) if wants(self.scope, id) => {
                self.jobs_dirty = true;
                self.metrics_dirty = true;
            }
            Ok(Event::Resync) => {
                self.jobs_dirty = true;
                self.metrics_dirty = true;
            }
            Ok(_) => {}
            Err(broadcast::error::RecvError::Lagged(_)) => {
                // Missed events: re-read everything from the cursor.
                metrics::counter!("platform_event_stream_lagged_total").increment(1);
                self.jobs_dirty = true;
                self.metrics_dirty = true;
            }
            Err(broadcast::error::RecvError::Closed) => return None,
        }
        Some(())
    }

    /// Reads what has not been sent yet (at most a page of points, then the
    /// changed jobs) into the queue.
    async fn fill(&mut self) -> Result<(), JobError> {
        let (scope, cursor) = (self.scope, self.cursor);
        let page = self
            .jobs
            .read_feed(FeedRead {
                scope,
                jobs_after: self.jobs_dirty.then_some(cursor.job),
                points_after: cursor.metric,
                page: PAGE,
            })
            .await?;
        self.retry = page.held_back;
        let (jobs, points) = (page.jobs, page.points);
        let more_points = points.len() as i64 == PAGE;
        self.queue
            .extend(points.into_iter().map(|(pos, m)| Out::Metric(pos, m)));
        if more_points {
            // Send this page first; the jobs are read again after the rest.
            self.metrics_dirty = true;
            return Ok(());
        }
        self.metrics_dirty = false;
        self.jobs_dirty = matches!(scope, FeedScope::All) && jobs.len() as i64 == PAGE;
        for (pos, job) in jobs {
            if pos > self.cursor.job {
                self.push_job(pos, job);
            } else if matches!(scope, FeedScope::Job(_)) && job.status.is_terminal() {
                // The client already has the final version.
                self.terminal = true;
            }
        }
        Ok(())
    }

    /// Turns a queued row into an SSE event, advancing the cursor.
    fn encode(&mut self, out: Out) -> SseEvent {
        let (name, data) = match out {
            Out::Ready => ("ready", Ok(SseEvent::default().data("{}"))),
            Out::Job(pos, job) => {
                self.cursor.job = self.cursor.job.max(pos);
                ("job", SseEvent::default().json_data(&job))
            }
            Out::Metric(pos, m) => {
                self.cursor.metric = self.cursor.metric.max(pos);
                ("metric", SseEvent::default().json_data(&m))
            }
        };
        // Serialising our own types cannot fail; the fallback keeps the
        // stream well-formed if it ever did.
        data.unwrap_or_else(|_| SseEvent::default().data("{}"))
            .event(name)
            .id(self.cursor.to_string())
    }
}

#[cfg(test)]
mod tests {
    use super::Cursor;

    #[test]
    fn cursor_round_trips_and_rejects_junk() {
        let c = Cursor {
            metric: (0, 42),
            job: (0, 1_700_000_000_123_456),
        };
        assert_eq!(c.to_string(), "m42-j1700000000123456");
        assert_eq!(Cursor::parse(&c.to_string()).unwrap(), c);
        let pg = Cursor {
            metric: (812, 42),
            job: (790, 7),
        };
        assert_eq!(pg.to_string(), "m812.42-j790.7");
        assert_eq!(Cursor::parse(&pg.to_string()).unwrap(), pg);
        for bad in [
            "",
            "m1",
            "m-1-j2",
            "x1-j2",
            "m1-jx",
            "m1-j2-",
            "1-2",
            "m1.-j2",
            "m1.2.3-j4",
        ] {
            assert!(Cursor::parse(bad).is_err(), "{bad:?} accepted");
        }
    }
}
