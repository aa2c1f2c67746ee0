//! The in-process [`Reporter`]: a trainer's callbacks and metric points go
//! into a bounded queue and a background task delivers them in order, so
//! training goes on while the daemon is away (restarting, upgrading) and the
//! backlog arrives once it is back.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};

use serde_json::Number;
use tokio::sync::{watch, Notify};
use tokio::task::JoinHandle;

use super::delivery::{Attempt, Endpoint, ReportError};
use super::outbox::{Outbox, Report, MEMORY_CAPACITY};
use crate::model::callback::MAX_BATCH_POINTS;
use crate::model::{MetricBatch, TrainingUpdate};

/// Queues a trainer's reports and delivers them in the background.
///
/// [`Reporter::send`] and [`Reporter::points`] return as soon as the report
/// is queued (they wait only when the queue is full); they fail once the
/// job has ended (409) or delivery has given up. [`Reporter::finish`] sends
/// the trainer's last word and waits until everything is delivered.
pub struct Reporter {
    shared: Arc<Shared>,
    task: JoinHandle<()>,
    /// Sends a heartbeat every [`HEARTBEAT_EVERY`], so a long silent
    /// stretch (a slow epoch) is not mistaken for a hang.
    beat: JoinHandle<()>,
}

/// How often a [`Reporter`] sends a heartbeat; `PLATFORM_HEARTBEAT_INTERVAL`
/// (seconds) overrides it.
pub const HEARTBEAT_EVERY: std::time::Duration = std::time::Duration::from_secs(30);

/// The heartbeat period: `PLATFORM_HEARTBEAT_INTERVAL` or the default.
fn heartbeat_every() -> std::time::Duration {
    std::env::var("PLATFORM_HEARTBEAT_INTERVAL")
        .ok()
        .and_then(|s| crate::trainer::delivery::parse_timeout(&s).ok())
        .filter(|d| !d.is_zero())
        .unwrap_or(HEARTBEAT_EVERY)
}

/// Sends heartbeats until aborted; failures are ignored (reports carry
/// the news, and the daemon may be away for a while).
async fn beat_periodically(shared: Arc<Shared>) {
    let Some(id) = shared.endpoint.job_id() else {
        return;
    };
    let mut every = tokio::time::interval(heartbeat_every());
    every.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        every.tick().await;
        let _ = shared
            .endpoint
            .bounded(shared.endpoint.client().heartbeat(id))
            .await;
    }
}

struct Shared {
    endpoint: Endpoint,
    state: Mutex<State>,
    /// Wakes the delivery task when something is queued.
    queued: Notify,
    /// Bumped whenever a report left the queue or delivery stopped.
    progress: watch::Sender<u64>,
}

#[derive(Default)]
struct State {
    outbox: Outbox,
    /// Why delivery stopped for good, once it has.
    stopped: Option<ReportError>,
}

impl Shared {
    fn state(&self) -> MutexGuard<'_, State> {
        // The state is consistent after every statement: a panic elsewhere
        // leaves nothing half-done.
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

impl Reporter {
    /// Starts the delivery task (inside a tokio runtime).
    pub fn start(endpoint: Endpoint) -> Self {
        let shared = Arc::new(Shared {
            endpoint,
            state: Mutex::new(State::default()),
            queued: Notify::new(),
            progress: watch::Sender::new(0),
        });
        let task = tokio::spawn(deliver_in_order(shared.clone()));
        let beat = tokio::spawn(beat_periodically(shared.clone()));
        Self { shared, task, beat }
    }

    /// Where reports go.
    pub fn endpoint(&self) -> &Endpoint {
        &self.shared.endpoint
    }

    /// Queues a callback.
    pub async fn send(&self, update: TrainingUpdate) -> Result<(), ReportError> {
        self.enqueue(Report::Callback(update)).await
    }

    /// Queues metric points (sent in batches of at most 1,000).
    pub async fn points(&self, points: Vec<BTreeMap<String, Number>>) -> Result<(), ReportError> {
        for chunk in points.chunks(MAX_BATCH_POINTS) {
            self.enqueue(Report::Points(MetricBatch {
                points: chunk.to_vec(),
                sequence: None,
            }))
            .await?;
        }
        Ok(())
    }

    /// Sends the trainer's last callback and waits until every queued
    /// report is delivered (or delivery gives up).
    pub async fn finish(&self, update: TrainingUpdate) -> Result<(), ReportError> {
        self.send(update).await?;
        self.flush().await
    }

    /// Waits until every queued report is delivered (or delivery gives up).
    pub async fn flush(&self) -> Result<(), ReportError> {
        self.wait_until(|st| st.outbox.is_empty()).await
    }

    /// Uploads an output file through the daemon's artifact endpoint (no
    /// storage credentials needed), retrying while the daemon is away, and
    /// returns its URI in the object store.
    pub async fn upload_artifact(
        &self,
        path: &str,
        bytes: bytes::Bytes,
    ) -> Result<String, ReportError> {
        let ep = &self.shared.endpoint;
        let id = ep
            .job_id()
            .ok_or_else(|| ReportError::Refused("JOB_ID is not set: artifacts need it".into()))?;
        let len = bytes.len() as u64;
        let upload = || async {
            let body = reqwest::Body::from(bytes.clone());
            ep.bounded(ep.client().upload_artifact(id, path, body, len))
                .await
                .map(|f| f.uri)
                .map_err(Attempt::from)
        };
        ep.patiently(&mut None, upload).await
    }

    async fn enqueue(&self, report: Report) -> Result<(), ReportError> {
        let mut report = Some(report);
        self.wait_until(|st| match report.take() {
            Some(r) => match st.outbox.push(r, MEMORY_CAPACITY) {
                Ok(()) => {
                    self.shared.queued.notify_one();
                    true
                }
                Err(back) => {
                    report = Some(*back);
                    false
                }
            },
            None => true,
        })
        .await
    }

    /// Runs `done` on the state each time a report leaves the queue, until
    /// it returns true or delivery has stopped.
    async fn wait_until(
        &self,
        mut done: impl FnMut(&mut State) -> bool,
    ) -> Result<(), ReportError> {
        let mut changes = self.shared.progress.subscribe();
        loop {
            {
                let mut st = self.shared.state();
                if let Some(e) = &st.stopped {
                    return Err(e.clone());
                }
                if done(&mut st) {
                    return Ok(());
                }
            }
            // The task lives as long as `self`, so the channel stays open.
            let _ = changes.changed().await;
        }
    }
}

impl Drop for Reporter {
    fn drop(&mut self) {
        self.task.abort();
        self.beat.abort();
    }
}

/// The delivery task: the first queued report, retried until delivered;
/// then the next. A report that cannot be delivered stops the queue.
async fn deliver_in_order(shared: Arc<Shared>) {
    let mut down_since = None;
    loop {
        let next = shared.state().outbox.front().cloned();
        let Some(report) = next else {
            shared.queued.notified().await;
            continue;
        };
        let delivered = shared.endpoint.deliver(&report, &mut down_since).await;
        let stop = {
            let mut st = shared.state();
            match delivered {
                Ok(()) => {
                    st.outbox.pop();
                    false
                }
                Err(e) => {
                    // The trainer hears of it on its next report.
                    st.outbox.clear();
                    st.stopped = Some(e);
                    true
                }
            }
        };
        shared.progress.send_modify(|n| *n += 1);
        if stop {
            return;
        }
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use uuid::Uuid;

    use super::*;
    use crate::model::JobStatus;
    use crate::trainer::outbox::tests::{epoch, progress};
    use crate::trainer::testing::{endpoint, free_port, FakeDaemon};

    fn update(r: Report) -> TrainingUpdate {
        match r {
            Report::Callback(u) => u,
            Report::Points(_) => unreachable!("a callback"),
        }
    }

    fn done() -> TrainingUpdate {
        TrainingUpdate {
            status: JobStatus::Completed,
            ..update(progress(1.0))
        }
    }

    #[tokio::test]
    async fn training_goes_on_while_the_daemon_is_away_and_the_backlog_arrives_once() {
        let (port, id) = (free_port(), Uuid::now_v7());
        let r = Reporter::start(endpoint(port, id, Duration::from_secs(600)));
        // Nobody listens: every report is queued and `send` returns at once.
        for e in 1..=4 {
            r.send(update(epoch(e))).await.unwrap();
        }
        let step = BTreeMap::from([("step".to_string(), Number::from(1))]);
        r.points(vec![step; 1500]).await.unwrap();
        tokio::time::sleep(Duration::from_millis(500)).await;
        let daemon = FakeDaemon::start(port).await;
        r.finish(done()).await.unwrap();
        assert_eq!(daemon.sequences(), vec![1, 2, 3, 4, 5, 6, 7]);
        let applied = daemon.applied();
        assert_eq!(applied[4]["points"].as_array().unwrap().len(), 1000);
        assert_eq!(applied[5]["points"].as_array().unwrap().len(), 500);
        assert_eq!(applied[6]["status"], "completed");
    }

    #[tokio::test]
    async fn a_cancelled_job_stops_the_reporter() {
        let (port, id) = (free_port(), Uuid::now_v7());
        let daemon = FakeDaemon::start(port).await;
        daemon.cancel_job();
        let r = Reporter::start(endpoint(port, id, Duration::from_secs(600)));
        r.send(update(epoch(1))).await.unwrap();
        let e = r.flush().await.unwrap_err();
        assert!(
            matches!(e, ReportError::Ended(JobStatus::Cancelled)),
            "{e:?}"
        );
        let e = r.send(update(epoch(2))).await.unwrap_err();
        assert!(
            matches!(e, ReportError::Ended(JobStatus::Cancelled)),
            "{e:?}"
        );
    }

    #[tokio::test]
    async fn delivery_gives_up_after_the_timeout() {
        let (port, id) = (free_port(), Uuid::now_v7());
        let r = Reporter::start(endpoint(port, id, Duration::from_millis(300)));
        let e = r.finish(done()).await.unwrap_err();
        assert!(matches!(e, ReportError::TimedOut { .. }), "{e:?}");
    }
}
