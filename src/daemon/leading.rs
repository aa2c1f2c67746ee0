//! `serve --leader-election lease`: several replicas share one PostgreSQL
//! database; every one serves the whole API, and the one holding the
//! lease ([`crate::leader`]) also runs the leader-only work: the
//! scheduler (launches, stops, deadlines and timers) and the Kubernetes
//! runner's watchers. Each term of leadership gets a fresh runner and
//! scheduler: starting one re-adopts the running Jobs (the restart path),
//! and losing the lease cancels them before anything else. Wake-ups
//! between replicas run meanwhile (`jobs/remote.rs`).

use std::sync::Arc;

use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

use crate::config::ServerConfig;
use crate::db::Db;
use crate::jobs::Jobs;
use crate::leader::{self, Election, Leadership};
use crate::queues::Queues;
use crate::runner::kubernetes::config::KubeSettings;
use crate::runner::kubernetes::KubernetesRunner;
use crate::runner::scheduler::Scheduler;
use crate::runner::{Runner, SpecBuilder};
use crate::storage::Store;

/// What a replica needs to lead.
pub(super) struct Parts {
    pub db: Arc<Db>,
    pub jobs: Arc<Jobs>,
    pub store: Arc<Store>,
    pub specs: Arc<SpecBuilder>,
    pub queues: Arc<Queues>,
}

/// A replica's runner for the API (logs, dry runs: it watches nothing),
/// its role, and the task that leads while it holds the lease (it ends
/// after `shutdown`, the lease released).
pub(super) struct Replica {
    pub runner: Arc<dyn Runner>,
    pub leadership: Leadership,
    pub task: JoinHandle<()>,
}

/// Connects to Kubernetes and starts the election, the leader-only work
/// of each term and the wake-ups between replicas.
pub(super) async fn start(
    cfg: &ServerConfig,
    parts: Parts,
    shutdown: &CancellationToken,
) -> anyhow::Result<Replica> {
    let client = KubernetesRunner::connect_client(&cfg.kube).await?;
    let runner: Arc<dyn Runner> = Arc::new(KubernetesRunner::idle(
        parts.jobs.clone(),
        parts.store.clone(),
        cfg.kube.clone(),
        client.clone(),
    ));
    let replica: Arc<str> = Arc::from(cfg.replica_id.as_str());
    tokio::spawn(
        parts
            .jobs
            .clone()
            .relay(replica.clone(), shutdown.child_token()),
    );
    let (election, leadership) = Election::new(parts.db.clone(), replica);
    let work = Work {
        parts,
        kube: cfg.kube.clone(),
        client,
        hold: cfg.hold_jobs,
        stop_jobs_on_exit: cfg.stop_jobs_on_exit,
    };
    let task = tokio::spawn(lead(work, election, leadership.clone(), shutdown.clone()));
    Ok(Replica {
        runner,
        leadership,
        task,
    })
}

struct Work {
    parts: Parts,
    kube: KubeSettings,
    client: kube::Client,
    hold: bool,
    stop_jobs_on_exit: bool,
}

/// One term of leadership: its runner (watchers) and scheduler.
struct Term {
    stop: CancellationToken,
    runner: Arc<dyn Runner>,
    scheduler: JoinHandle<()>,
}

impl Work {
    fn start_term(&self) -> Term {
        let p = &self.parts;
        let runner: Arc<dyn Runner> = Arc::new(KubernetesRunner::with_client(
            p.jobs.clone(),
            p.store.clone(),
            self.kube.clone(),
            self.client.clone(),
        ));
        let stop = CancellationToken::new();
        let scheduler = tokio::spawn(
            Scheduler::new(
                p.jobs.clone(),
                runner.clone(),
                p.specs.clone(),
                p.queues.clone(),
            )
            .hold(self.hold)
            .run(stop.clone()),
        );
        Term {
            stop,
            runner,
            scheduler,
        }
    }
}

impl Term {
    /// Stops launching and watching at once, then waits for launches in
    /// flight (each ends with its job marked, see `Scheduler::run`).
    async fn end(self, stop_jobs: bool) {
        self.stop.cancel();
        self.runner.shutdown(false).await;
        let _ = self.scheduler.await;
        if stop_jobs {
            self.runner.shutdown(true).await;
        }
    }
}

/// Follows the role: a term while leading, none while following; at
/// `shutdown`, ends the term, then releases the lease.
async fn lead(work: Work, election: Election, leadership: Leadership, shutdown: CancellationToken) {
    let elect = tokio::spawn(election.run(shutdown.clone()));
    let mut role = leadership.watch();
    let mut term: Option<Term> = None;
    loop {
        let leading = role.borrow_and_update().is_leading();
        if leading && term.is_none() {
            term = Some(work.start_term());
        } else if !leading {
            if let Some(t) = term.take() {
                t.end(false).await;
            }
        }
        tokio::select! {
            changed = role.changed() => if changed.is_err() { break },
            _ = shutdown.cancelled() => break,
        }
    }
    // The election stops renewing on `shutdown`; the work stops before
    // the lease goes, so no successor overlaps with it.
    let _ = elect.await;
    if let Some(t) = term.take() {
        t.end(work.stop_jobs_on_exit).await;
    }
    leader::release(&work.parts.db, leadership.replica()).await;
}
