//! The daemon's composition root: `platform serve` from a resolved
//! configuration to a running service and back to a clean stop.
//!
//! Start-up, in order: make everything the daemon creates private and lock
//! the data dir ([`crate::datadir`]); raise the soft open-files limit to
//! the hard one (every connection is a file descriptor); install the
//! Prometheus recorder; open and check the object store (a bad store
//! setting fails before anything is written);
//! open the database; load the trainer registry; build the job service,
//! the runner and the scheduler; bind the listener; serve, checking the
//! whole database file meanwhile (damage stops the daemon). Shutdown runs
//! the same way back: a signal cancels one [`CancellationToken`], which
//! ends the HTTP server (in-flight requests finish, event streams and
//! followed logs end), then the scheduler (launches in flight finish),
//! then the runner (trainers keep running for the next daemon unless
//! `--stop-jobs-on-exit`), then the database closes. SIGHUP reloads the
//! trainer registry (trainers file and directory) in place.
//!
//! This is the only module that knows every part; each part gets exactly
//! the handles it uses. With `--leader-election lease` the scheduler and
//! the runner's watchers run only while this replica leads ([`leading`]).

mod leading;
mod retention;
mod trim;

use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::Context;
use metrics_exporter_prometheus::PrometheusHandle;
use tokio::signal::unix::{signal, Signal, SignalKind};
use tokio_util::sync::CancellationToken;

use nix::sys::stat::Mode;

use crate::config::{LeaderElection, RunnerKind, ServerConfig};
use crate::datadir;
use crate::db::{Db, DbError, DbUrl, OpenOptions, SqliteOptions};
use crate::events::Events;
use crate::gpus::Gpus;
use crate::jobs::{Jobs, JobsConfig};
use crate::leader::Leadership;
use crate::runner::env::StoreContract;
use crate::runner::scheduler::Scheduler;
use crate::runner::subprocess::{SubprocessConfig, SubprocessRunner};
use crate::runner::{Runner, SpecBuilder};
use crate::server::{self, AppState, AuthFailures, ServeOptions, Services, StreamSlots};
use crate::storage::Store;
use crate::trainers::Trainers;
use crate::users::{Bootstrap, Users, ADMIN_NAME};
use crate::webhooks::{WebhookConfig, Webhooks};

/// Runs the daemon until SIGINT/SIGTERM.
pub async fn run(cfg: ServerConfig) -> anyhow::Result<()> {
    let started = Instant::now();
    let trainer_umask = datadir::restrict_umask();
    let sqlite_file = match &cfg.database {
        DbUrl::Sqlite(path) => Some(path.as_path()),
        DbUrl::Postgres(_) => None,
    };
    let _data_dir = datadir::claim(&cfg.data_dir, sqlite_file)?;
    let shutdown = CancellationToken::new();
    cancel_on_signal(shutdown.clone());
    let open_files = raise_open_files_limit();
    let prometheus = install_prometheus(&shutdown);
    phase(started, "process set up");
    // Checked before the database opens, so a bad store setting fails fast and cleanly.
    let store = Arc::new(Store::from_config(&cfg.storage)?);
    store.check().await.with_context(|| {
        format!(
            "the object store ({}) failed its start-up check",
            store.describe()
        )
    })?;
    phase(started, "object store checked");
    let db = Arc::new(
        Db::open(
            &cfg.database,
            OpenOptions {
                sqlite: SqliteOptions {
                    max_pages: cfg.test_db_max_pages,
                },
                pool_size: cfg.db_pool_size,
            },
        )
        .await?,
    );
    phase(started, "database open");
    let process = Process {
        started,
        shutdown,
        trainer_umask,
        open_files,
        prometheus,
    };
    let served = serve(&cfg, db.clone(), store, process).await;
    // Also on failure (e.g. the port is taken): queued writes are flushed
    // and the WAL checkpointed before the runtime stops. Later writes
    // (a trainer exiting right now) fail cleanly and are settled by the
    // next daemon's reconcile.
    db.close().await;
    if served.is_ok() {
        tracing::info!("stopped");
    }
    served
}

/// What start-up settled for the whole process before the database opened.
struct Process {
    started: Instant,
    shutdown: CancellationToken,
    /// The umask the daemon was started with (trainers get it back).
    trainer_umask: Mode,
    /// The open-files limit after raising it, when known.
    open_files: Option<u64>,
    prometheus: Option<PrometheusHandle>,
}

/// Everything between opening the database and closing it.
async fn serve(
    cfg: &ServerConfig,
    db: Arc<Db>,
    store: Arc<Store>,
    process: Process,
) -> anyhow::Result<()> {
    let Process {
        started,
        shutdown,
        trainer_umask,
        open_files,
        prometheus,
    } = process;
    let registry = Arc::new(Trainers::load(
        cfg.trainer_dir.as_deref(),
        cfg.trainers_file.as_deref(),
    )?);
    phase(started, "trainer registry loaded");
    // Listening from here on, before the port opens: SIGHUP's default
    // action would kill the daemon.
    match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::hangup()) {
        Ok(hangups) => {
            tokio::spawn(reload_on_hangup(
                hangups,
                registry.clone(),
                shutdown.clone(),
            ));
        }
        Err(e) => {
            tracing::error!(error = %e, "cannot listen for SIGHUP; reload trainers with `platform framework reload`")
        }
    }
    let queues = Arc::new(cfg.queues.clone());
    // Only local trainers take the daemon's machine's GPUs; Kubernetes
    // asks the cluster (`nvidia.com/gpu`).
    let local_gpus = match cfg.runner {
        RunnerKind::Subprocess => Some(Arc::new(local_gpus(&cfg.gpus)?)),
        RunnerKind::Kubernetes => None,
    };
    let jobs = Arc::new(Jobs::new(
        db.clone(),
        Events::with_capacity(cfg.test_event_capacity.unwrap_or(crate::events::CAPACITY)),
        registry.clone(),
        store.clone(),
        JobsConfig {
            queues: queues.clone(),
            max_job_duration: cfg.max_job_duration,
            heartbeat_timeout: cfg.heartbeat_timeout,
            stale_after: cfg.stale_after,
            callback_auth: cfg.callback_auth,
            dataset_check: cfg.storage.dataset_check,
            artifact_grace: cfg.artifact_grace,
            idempotency_ttl: cfg.idempotency_ttl,
            gpu_capacity: local_gpus.as_ref().map(|g| g.count()),
        },
    ));
    let users = Arc::new(Users::new(
        db.clone(),
        cfg.api_token.as_deref(),
        cfg.require_auth,
    ));
    match users
        .bootstrap(cfg.admin_token.as_deref(), &cfg.data_dir)
        .await
        .context("cannot create the first admin")?
    {
        Bootstrap::Existing if cfg.admin_token.is_some() => tracing::warn!(
            "PLATFORM_ADMIN_TOKEN is ignored: users exist already (it only seeds an empty database)"
        ),
        Bootstrap::Existing => phase(started, "users checked"),
        Bootstrap::Created => tracing::info!(user = ADMIN_NAME, "created the first admin user"),
        Bootstrap::TokenFile(path) => tracing::warn!(
            user = ADMIN_NAME,
            token_file = %path.display(),
            "created the first admin user; its API token is in the token file (readable only by this user): sign in with `platform login --token-stdin < FILE`, then delete the file"
        ),
    }
    let webhooks = Arc::new(Webhooks::new(
        db.clone(),
        WebhookConfig {
            allow_private: cfg.webhook_allow_private,
            timeout: cfg.webhook_timeout,
            retry_base: cfg.webhook_retry_base,
            max_age: cfg.webhook_retry_for,
        },
    ));
    webhooks
        .configure(cfg.configured_webhooks.clone())
        .await
        .context("cannot set up the configured webhooks (WEBHOOKS)")?;
    phase(started, "webhooks configured");
    let deliveries = tokio::spawn(crate::webhooks::deliver::run(
        webhooks.clone(),
        jobs.subscribe(),
        shutdown.child_token(),
    ));
    // Bind first: trainers are told the address actually bound (port 0 works).
    let listener = tokio::net::TcpListener::bind(cfg.bind)
        .await
        .with_context(|| format!("cannot listen on {}", cfg.bind))?;
    let addr = listener
        .local_addr()
        .context("cannot read the listening address")?;
    let base_url = cfg
        .backend_base_url
        .clone()
        .unwrap_or_else(|| crate::config::default_base_url(addr));
    let specs = Arc::new(
        SpecBuilder::new(
            registry.clone(),
            Arc::new(StoreContract {
                base_url,
                store: store.clone(),
                // Local trainers can run this binary (`platform report`); pods
                // run their image's.
                platform_bin: match cfg.runner {
                    RunnerKind::Subprocess => std::env::current_exe().ok(),
                    RunnerKind::Kubernetes => None,
                },
            }),
        )
        .local_gpus(local_gpus.as_ref().is_some_and(|g| g.count() > 0)),
    );
    let (runner, leadership, leader_work) = match cfg.leader_election {
        LeaderElection::Off => {
            let runner = build_runner(cfg, jobs.clone(), store.clone(), trainer_umask).await?;
            let mut scheduler = Scheduler::new(jobs.clone(), runner.clone(), specs.clone(), queues)
                .hold(cfg.hold_jobs);
            if let Some(gpus) = &local_gpus {
                scheduler = scheduler.gpus(gpus.clone());
                if gpus.count() > 0 {
                    tokio::spawn(crate::runner::telemetry::run(
                        jobs.clone(),
                        gpus.clone(),
                        crate::runner::telemetry::Settings {
                            every: cfg.gpu_sample_interval,
                            idle_after: cfg.gpu_idle_after,
                        },
                        shutdown.child_token(),
                    ));
                }
            }
            let scheduler = tokio::spawn(scheduler.run(shutdown.child_token()));
            let alone = Leadership::alone(Arc::from(cfg.replica_id.as_str()));
            (runner, alone, scheduler)
        }
        // Replicas run Kubernetes Jobs only: no local GPUs to hand out.
        LeaderElection::Lease => {
            warn_unset_base_url(cfg);
            let parts = leading::Parts {
                db: db.clone(),
                jobs: jobs.clone(),
                store: store.clone(),
                specs: specs.clone(),
                queues,
            };
            let r = leading::start(cfg, parts, &shutdown).await?;
            (r.runner, r.leadership, r.task)
        }
    };
    let retention = tokio::spawn(retention::run(
        jobs.clone(),
        cfg.retention.clone(),
        leadership.clone(),
        shutdown.child_token(),
    ));
    tokio::spawn(trim::run(db.clone(), shutdown.child_token()));
    let state = AppState::new(Services {
        jobs,
        webhooks,
        store: store.clone(),
        runner: runner.clone(),
        specs,
        gpus: local_gpus.unwrap_or_default(),
        registry: registry.clone(),
        users,
        auth_failures: Arc::new(AuthFailures::new(cfg.max_auth_failures)),
        streams: StreamSlots::new(cfg.http.max_streams),
        max_body_bytes: cfg.max_body_bytes,
        prometheus,
        leadership,
        shutdown: shutdown.clone(),
    });
    phase(started, "runner and scheduler started");
    let app = server::router(state, &cfg.cors_origins);
    let opts = serve_options(cfg, open_files);
    tracing::info!(
        database = %db.describe(),
        runner = runner.name(),
        max_concurrent_jobs = cfg.max_concurrent_jobs,
        frameworks = %registry.current().names().join(","),
        max_connections = opts.max_connections,
        store = %store.describe(),
        startup_ms = started.elapsed().as_millis() as u64,
        "listening on http://{addr}"
    );
    // Not before: start-up does not wait for it, however long the history.
    let integrity = tokio::spawn(check_integrity(db.clone(), shutdown.clone()));
    let served = server::serve(listener, app, opts, shutdown.clone())
        .await
        .context("the HTTP server failed");
    // The server may also have stopped on its own (an error): stop the rest.
    shutdown.cancel();
    tracing::info!("shutting down: in-flight requests finished");
    let _ = leader_work.await;
    let _ = deliveries.await;
    let _ = retention.await;
    runner.shutdown(cfg.stop_jobs_on_exit).await;
    match integrity.await {
        Ok(Some(damaged)) => Err(damaged.into()),
        _ => served,
    }
}

/// Waits for the database's whole-file integrity check, which runs beside
/// the service (writes wait for it). Damage stops the daemon as if it had
/// been found before start-up (the error it exits with); a check that
/// cannot run is only logged, and writes then fail.
async fn check_integrity(db: Arc<Db>, shutdown: CancellationToken) -> Option<DbError> {
    let started = Instant::now();
    match db.check_in_background(shutdown.clone()).await {
        Ok(()) => {
            if !shutdown.is_cancelled() {
                let ms = started.elapsed().as_millis() as u64;
                tracing::debug!(ms, "the database passed its integrity check");
            }
            None
        }
        Err(e @ DbError::Damaged { .. }) => {
            tracing::error!("{e}; stopping");
            shutdown.cancel();
            Some(e)
        }
        Err(DbError::Closed) => None,
        Err(e) => {
            tracing::error!(error = %e, "the database's integrity check could not run: writes fail");
            None
        }
    }
}

/// Logs how far start-up got (`--debug` / `RUST_LOG=debug`): where the
/// time before the first answer goes.
fn phase(started: Instant, what: &str) {
    tracing::debug!(
        ms = started.elapsed().as_secs_f64() * 1e3,
        "start-up: {what}"
    );
}

/// The GPUs local trainers may use (`--gpus`, `nvidia-smi`,
/// `CUDA_VISIBLE_DEVICES`), logged once.
fn local_gpus(selection: &crate::gpus::Selection) -> anyhow::Result<Gpus> {
    let found = crate::gpus::discover(selection)?;
    if !found.is_empty() {
        let list = found
            .iter()
            .map(|g| format!("{} ({}, {})", g.index, g.name, g.uuid))
            .collect::<Vec<_>>()
            .join("; ");
        tracing::info!(gpus = found.len(), %list, "GPUs for trainers");
    }
    Ok(Gpus::new(found))
}

async fn build_runner(
    cfg: &ServerConfig,
    jobs: Arc<Jobs>,
    store: Arc<Store>,
    trainer_umask: Mode,
) -> anyhow::Result<Arc<dyn Runner>> {
    match cfg.runner {
        RunnerKind::Subprocess => {
            let exe =
                std::env::current_exe().context("cannot find this binary to run trainers with")?;
            Ok(Arc::new(SubprocessRunner::new(
                jobs,
                store,
                SubprocessConfig {
                    runs_dir: cfg.data_dir.join("runs"),
                    exe,
                    kill_grace: cfg.kill_grace,
                    max_log_bytes: cfg.max_log_bytes,
                    trainer_umask: trainer_umask.bits(),
                },
            )))
        }
        RunnerKind::Kubernetes => {
            warn_unset_base_url(cfg);
            let runner =
                crate::runner::kubernetes::KubernetesRunner::connect(jobs, store, cfg.kube.clone())
                    .await?;
            Ok(Arc::new(runner))
        }
    }
}

fn warn_unset_base_url(cfg: &ServerConfig) {
    if cfg.backend_base_url.is_none() {
        tracing::warn!("BACKEND_BASE_URL is not set: trainer pods are told to call back the daemon's bind address, which they can only reach if the daemon runs on their network; set it to the daemon's Service URL");
    }
}

/// The server's connection settings, the cap fitted to the open-files limit.
fn serve_options(cfg: &ServerConfig, open_files: Option<u64>) -> ServeOptions {
    let wanted = cfg
        .http
        .max_connections
        .unwrap_or(server::DEFAULT_MAX_CONNECTIONS);
    let max_connections = match open_files {
        Some(limit) => server::fit_open_files(wanted, limit),
        None => wanted,
    };
    if max_connections < wanted && cfg.http.max_connections.is_some() {
        tracing::warn!(
            "--max-connections {wanted} does not fit the open-files limit of {}: serving at most {max_connections} connections",
            open_files.unwrap_or_default()
        );
    }
    ServeOptions {
        max_connections,
        header_timeout: cfg.http.header_timeout,
        idle_timeout: cfg.http.idle_timeout,
    }
}

/// Raises the soft `RLIMIT_NOFILE` to the hard limit (the soft default,
/// often 1024, is far below what the kernel allows) and returns the limit
/// in force; `None` when it cannot be read.
fn raise_open_files_limit() -> Option<u64> {
    use nix::sys::resource::{getrlimit, setrlimit, Resource};
    let (soft, hard) = match getrlimit(Resource::RLIMIT_NOFILE) {
        Ok(l) => l,
        Err(e) => {
            tracing::debug!(error = %e, "cannot read the open-files limit");
            return None;
        }
    };
    if soft >= hard {
        tracing::debug!(
            limit = soft,
            "the open-files limit is already at its maximum"
        );
        return Some(soft);
    }
    match setrlimit(Resource::RLIMIT_NOFILE, hard, hard) {
        Ok(()) => {
            tracing::info!(from = soft, to = hard, "raised the open-files limit");
            Some(hard)
        }
        Err(e) => {
            tracing::debug!(error = %e, limit = soft, "cannot raise the open-files limit");
            Some(soft)
        }
    }
}

/// Installs the Prometheus recorder, with its upkeep until shutdown.
fn install_prometheus(shutdown: &CancellationToken) -> Option<PrometheusHandle> {
    let builder = metrics_exporter_prometheus::PrometheusBuilder::new();
    match builder.install_recorder() {
        Ok(h) => {
            tokio::spawn(prometheus_upkeep(h.clone(), shutdown.clone()));
            Some(h)
        }
        Err(e) => {
            tracing::warn!(error = %e, "Prometheus metrics are disabled");
            None
        }
    }
}

/// How often histogram samples are folded into their summaries.
const PROMETHEUS_UPKEEP: Duration = Duration::from_secs(5);

/// Folds the histograms' raw samples (24 bytes each, two per request) into
/// their bounded summaries. A scrape does it too, but without upkeep the
/// samples of a daemon nobody scrapes pile up for good.
async fn prometheus_upkeep(handle: PrometheusHandle, shutdown: CancellationToken) {
    let mut tick = tokio::time::interval(PROMETHEUS_UPKEEP);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = tick.tick() => handle.run_upkeep(),
            _ = shutdown.cancelled() => return,
        }
    }
}

/// Reloads the trainer registry on every SIGHUP until shutdown (the
/// conventional "re-read your configuration" signal; without a handler it
/// would kill the daemon).
async fn reload_on_hangup(
    mut hangups: tokio::signal::unix::Signal,
    registry: Arc<Trainers>,
    shutdown: CancellationToken,
) {
    loop {
        tokio::select! {
            got = hangups.recv() => if got.is_none() { return },
            _ = shutdown.cancelled() => return,
        }
        tracing::info!("SIGHUP received: reloading the trainer registry");
        let registry = registry.clone();
        // Outcomes are logged by `reload`; a broken file keeps the old registry.
        let _ = tokio::task::spawn_blocking(move || registry.reload()).await;
    }
}

/// Cancels `shutdown` on the first SIGINT or SIGTERM. The listeners are in
/// place when this returns (not when a task first runs), so a signal from
/// start-up on (before the listener is bound too) stops the daemon
/// gracefully instead of killing it.
fn cancel_on_signal(shutdown: CancellationToken) {
    let mut interrupt = listen(SignalKind::interrupt(), "SIGINT");
    let mut terminate = listen(SignalKind::terminate(), "SIGTERM");
    tokio::spawn(async move {
        tokio::select! {
            _ = received(&mut interrupt) => {},
            _ = received(&mut terminate) => {},
            // Start-up failed or the server stopped: nothing to wait for.
            _ = shutdown.cancelled() => return,
        }
        tracing::info!("signal received: finishing in-flight requests");
        shutdown.cancel();
    });
}

fn listen(kind: SignalKind, name: &str) -> Option<Signal> {
    signal(kind)
        .map_err(|e| tracing::error!(error = %e, "cannot listen for {name}"))
        .ok()
}

/// The next delivery of the listener's signal; never, without a listener.
async fn received(listener: &mut Option<Signal>) {
    match listener {
        Some(s) => {
            s.recv().await;
        }
        None => std::future::pending().await,
    }
}
