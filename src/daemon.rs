//! The daemon's composition root: `platform serve` from a resolved
//! configuration to a running service and back to a clean stop.
//!
//! Start-up, in order: install the Prometheus recorder; open and check the
//! object store (a bad store setting fails before anything is written);
//! open the database; load the trainer registry; build the job service,
//! the runner and the scheduler; bind the listener; serve. Shutdown runs
//! the same way back: a signal cancels one [`CancellationToken`], which
//! ends the HTTP server (in-flight requests finish, event streams and
//! followed logs end), then the scheduler (launches in flight finish),
//! then the runner (trainers keep running for the next daemon unless
//! `--stop-jobs-on-exit`), then the database closes.
//!
//! This is the only module that knows every part; each part gets exactly
//! the handles it uses.

use std::sync::Arc;
use std::time::Instant;

use anyhow::Context;
use metrics_exporter_prometheus::PrometheusHandle;
use tokio::signal::unix::{signal, Signal, SignalKind};
use tokio_util::sync::CancellationToken;

use crate::config::{RunnerKind, ServerConfig};
use crate::db::Db;
use crate::events::Events;
use crate::jobs::{Jobs, JobsConfig};
use crate::runner::env::StoreContract;
use crate::runner::scheduler::Scheduler;
use crate::runner::subprocess::{SubprocessConfig, SubprocessRunner};
use crate::runner::{Runner, SpecBuilder};
use crate::server::{self, ApiToken, AppState};
use crate::storage::Store;
use crate::trainers::Registry;

/// Runs the daemon until SIGINT/SIGTERM.
pub async fn run(cfg: ServerConfig) -> anyhow::Result<()> {
    let started = Instant::now();
    let shutdown = CancellationToken::new();
    cancel_on_signal(shutdown.clone());
    let prometheus = install_prometheus();
    // Checked before the database opens, so a bad store setting fails fast and cleanly.
    let store = Arc::new(Store::from_config(&cfg.storage)?);
    store.check().await.with_context(|| {
        format!(
            "the object store ({}) failed its start-up check",
            store.describe()
        )
    })?;
    let db = Arc::new(Db::open_sqlite(&cfg.database_path).await?);
    let served = serve(&cfg, db.clone(), store, prometheus, started, shutdown).await;
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

/// Everything between opening the database and closing it.
async fn serve(
    cfg: &ServerConfig,
    db: Arc<Db>,
    store: Arc<Store>,
    prometheus: Option<PrometheusHandle>,
    started: Instant,
    shutdown: CancellationToken,
) -> anyhow::Result<()> {
    let registry = Arc::new(Registry::load(
        cfg.trainer_dir.as_deref(),
        cfg.trainers_file.as_deref(),
    )?);
    let jobs = Arc::new(Jobs::new(
        db.clone(),
        Events::new(),
        registry.clone(),
        store.clone(),
        JobsConfig {
            callback_auth: cfg.callback_auth,
            dataset_check: cfg.storage.dataset_check,
        },
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
    let runner = build_runner(cfg, jobs.clone(), store.clone()).await?;
    let specs = Arc::new(SpecBuilder::new(
        registry.clone(),
        Arc::new(StoreContract {
            base_url,
            store: store.clone(),
        }),
    ));
    let scheduler = tokio::spawn(
        Scheduler::new(
            jobs.clone(),
            runner.clone(),
            specs.clone(),
            cfg.max_concurrent_jobs,
        )
        .hold(cfg.hold_jobs)
        .run(shutdown.child_token()),
    );
    let state = AppState {
        jobs,
        store: store.clone(),
        runner: runner.clone(),
        specs,
        registry: registry.clone(),
        api_token: ApiToken::new(cfg.api_token.as_deref()),
        max_body_bytes: cfg.max_body_bytes,
        prometheus,
        shutdown: shutdown.clone(),
    };
    let app = server::router(state, &cfg.cors_origins);
    tracing::info!(
        database = %db.describe(),
        runner = runner.name(),
        max_concurrent_jobs = cfg.max_concurrent_jobs,
        frameworks = %registry.names().join(","),
        store = %store.describe(),
        startup_ms = started.elapsed().as_millis() as u64,
        "listening on http://{addr}"
    );
    let served = server::serve(listener, app, shutdown.clone())
        .await
        .context("the HTTP server failed");
    // The server may also have stopped on its own (an error): stop the rest.
    shutdown.cancel();
    tracing::info!("shutting down: in-flight requests finished");
    let _ = scheduler.await;
    runner.shutdown(cfg.stop_jobs_on_exit).await;
    served
}

async fn build_runner(
    cfg: &ServerConfig,
    jobs: Arc<Jobs>,
    store: Arc<Store>,
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
                },
            )))
        }
        RunnerKind::Kubernetes => {
            if cfg.backend_base_url.is_none() {
                tracing::warn!("BACKEND_BASE_URL is not set: trainer pods are told to call back the daemon's bind address, which they can only reach if the daemon runs on their network; set it to the daemon's Service URL");
            }
            let runner =
                crate::runner::kubernetes::KubernetesRunner::connect(jobs, store, cfg.kube.clone())
                    .await?;
            Ok(Arc::new(runner))
        }
    }
}

fn install_prometheus() -> Option<PrometheusHandle> {
    let builder = metrics_exporter_prometheus::PrometheusBuilder::new();
    match builder.install_recorder() {
        Ok(h) => Some(h),
        Err(e) => {
            tracing::warn!(error = %e, "Prometheus metrics are disabled");
            None
        }
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
