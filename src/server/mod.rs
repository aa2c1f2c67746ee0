//! The HTTP daemon: state, routes, middleware and the serve loop.
//!
//! Routing and middleware live here; handlers live in [`jobs`] and
//! [`meta`]; every error goes through [`error::ApiError`].

pub mod artifacts;
pub mod datasets;
pub mod error;
pub mod events;
pub mod extract;
pub mod jobs;
pub mod meta;
pub mod runs;
pub mod ui;

use std::sync::Arc;
use std::time::Instant;

use anyhow::Context;
use axum::extract::{MatchedPath, Request, State};
use axum::http::{HeaderName, HeaderValue, Method};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::Router;
use metrics_exporter_prometheus::PrometheusHandle;
use tower_http::catch_panic::CatchPanicLayer;
use tower_http::cors::{AllowOrigin, Any, CorsLayer};
use tower_http::request_id::{MakeRequestUuid, PropagateRequestIdLayer, SetRequestIdLayer};
use tower_http::trace::TraceLayer;

use crate::config::ServerConfig;
use crate::db::Db;
use crate::events::Events;
use crate::jobs::{Jobs, JobsConfig};
use crate::runner::scheduler::{ContractSource, Scheduler, StoreContract};
use crate::runner::subprocess::{SubprocessConfig, SubprocessRunner};
use crate::runner::Runner;
use crate::trainers::Registry;
use error::ApiError;

/// What every handler can reach.
#[derive(Clone)]
pub struct AppState {
    /// The job service.
    pub jobs: Arc<Jobs>,
    /// JSON body limit.
    pub max_body_bytes: usize,
    /// Bearer token for the user-facing API.
    pub api_token: Option<Arc<str>>,
    /// Prometheus renderer, when the recorder is installed.
    pub prometheus: Option<PrometheusHandle>,
    /// The runner (for logs).
    pub runner: Arc<dyn Runner>,
    /// Where trainers find the daemon (for dry runs).
    pub contract: Arc<dyn ContractSource>,
}

const REQUEST_ID: HeaderName = HeaderName::from_static("x-request-id");

/// All routes with their middleware.
pub fn router(state: AppState, cors_origins: &[String]) -> Router {
    use axum::routing::post;
    let api = Router::new()
        .route("/jobs", post(jobs::create_job).get(jobs::list_jobs))
        .route("/jobs/{id}", get(jobs::get_job).delete(jobs::cancel_job))
        .route("/frameworks", get(runs::frameworks))
        .route("/jobs/{id}/callback", post(jobs::callback))
        .route("/jobs/{id}/logs", get(runs::logs))
        .route(
            "/jobs/{id}/metrics",
            get(jobs::list_metrics).post(jobs::ingest_metrics),
        )
        .route("/jobs/{id}/events", get(events::job_events))
        .route("/events", get(events::all_events))
        .merge(artifacts::routes());
    let app = Router::new()
        .route("/", get(meta::root))
        .route("/health", get(meta::health))
        .route("/metrics", get(meta::prometheus))
        .route("/openapi.json", get(meta::openapi_json))
        .route("/docs", get(meta::docs))
        .route("/docs/", get(meta::docs))
        .route("/docs/swagger-ui-bundle.js", get(meta::docs_js))
        .route("/docs/swagger-ui.css", get(meta::docs_css))
        .nest("/api/v1/training", api)
        .merge(datasets::routes())
        .merge(ui::routes())
        .fallback(error::not_found)
        .method_not_allowed_fallback(error::method_not_allowed)
        .layer(middleware::from_fn_with_state(
            state.clone(),
            require_api_token,
        ))
        .layer(middleware::from_fn(record_metrics))
        .with_state(state);
    let app = match cors(cors_origins) {
        Some(layer) => app.layer(layer),
        None => app,
    };
    app.layer(CatchPanicLayer::custom(|_| {
        ApiError::Internal("a handler panicked".into()).into_response()
    }))
    .layer(PropagateRequestIdLayer::new(REQUEST_ID))
    .layer(
        TraceLayer::new_for_http().make_span_with(|req: &Request| {
            let id = req
                .headers()
                .get(REQUEST_ID)
                .and_then(|v| v.to_str().ok())
                .unwrap_or("-");
            tracing::info_span!("request", method = %req.method(), path = %req.uri().path(), request_id = %id)
        }),
    )
    .layer(SetRequestIdLayer::new(REQUEST_ID, MakeRequestUuid))
}

fn cors(origins: &[String]) -> Option<CorsLayer> {
    if origins.is_empty() {
        return None;
    }
    let allow = if origins.iter().any(|o| o == "*") {
        AllowOrigin::any()
    } else {
        AllowOrigin::list(origins.iter().filter_map(|o| HeaderValue::from_str(o).ok()))
    };
    Some(
        CorsLayer::new()
            .allow_origin(allow)
            .allow_methods(Any)
            .allow_headers(Any),
    )
}

/// Endpoints trainers call with their per-job token instead of the API token.
fn is_trainer_endpoint(method: &Method, path: &str) -> bool {
    let Some(rest) = path.strip_prefix("/api/v1/training/jobs/") else {
        return false;
    };
    let mut parts = rest.splitn(3, '/');
    let (_id, tail) = (parts.next(), parts.next());
    matches!(
        (method, tail),
        (&Method::POST, Some("callback"))
            | (&Method::POST, Some("metrics"))
            | (&Method::PUT, Some("artifacts"))
    )
}

/// With an API token configured, every `/api` route except the trainer
/// endpoints needs `Authorization: Bearer <token>`, and so do the dashboard
/// pages; GET requests may carry it as a cookie or `?token=` instead
/// (browsers cannot add headers to `EventSource`; see [`ui`]).
async fn require_api_token(State(st): State<AppState>, req: Request, next: Next) -> Response {
    if let Some(token) = &st.api_token {
        let path = req.uri().path();
        let guarded = (path.starts_with("/api/") && !is_trainer_endpoint(req.method(), path))
            || ui::is_page(path);
        if guarded {
            let ok = extract::bearer(req.headers()).is_some_and(|b| b == token.as_ref())
                || ui::browser_token(&req).is_some_and(|b| b == token.as_ref());
            if !ok {
                if ui::is_page(path) {
                    return ui::login_page(None);
                }
                return ApiError::Unauthorized(
                    "missing or invalid API token: send Authorization: Bearer <token> (platform --token / PLATFORM_TOKEN)".into(),
                )
                .into_response();
            }
        }
    }
    next.run(req).await
}

async fn record_metrics(req: Request, next: Next) -> Response {
    let start = Instant::now();
    // Standard methods only: made-up ones must not grow the label set.
    let method = match *req.method() {
        Method::GET => "GET",
        Method::POST => "POST",
        Method::PUT => "PUT",
        Method::DELETE => "DELETE",
        Method::HEAD => "HEAD",
        Method::OPTIONS => "OPTIONS",
        Method::PATCH => "PATCH",
        _ => "other",
    };
    let route = req
        .extensions()
        .get::<MatchedPath>()
        .map(|p| p.as_str().to_string())
        .unwrap_or_else(|| "unmatched".into());
    let resp = next.run(req).await;
    let status = resp.status().as_u16().to_string();
    metrics::counter!("platform_http_requests_total", "method" => method, "route" => route.clone(), "status" => status).increment(1);
    metrics::histogram!("platform_http_request_duration_seconds", "method" => method, "route" => route)
        .record(start.elapsed().as_secs_f64());
    resp
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

/// Runs the daemon until SIGINT/SIGTERM.
pub async fn run(cfg: ServerConfig) -> anyhow::Result<()> {
    let started = Instant::now();
    let prometheus = install_prometheus();
    // Checked before the database opens, so a bad store setting fails fast and cleanly.
    let store = Arc::new(crate::storage::Store::from_config(&cfg.storage)?);
    store.check().await.with_context(|| {
        format!(
            "the object store ({}) failed its start-up check",
            store.describe()
        )
    })?;
    let db = Arc::new(Db::open(&cfg.database_path).await?);
    let served = serve(&cfg, db.clone(), store, prometheus, started).await;
    // Also on failure (e.g. the port is taken): an unclosed database would
    // be torn down mid-close when the runtime stops.
    if !Db::close_shared(db, std::time::Duration::from_secs(5)).await {
        tracing::warn!("database still in use at shutdown; relying on SQLite's own close");
    }
    if served.is_ok() {
        tracing::info!("stopped");
    }
    served
}

/// Everything between opening the database and closing it; every handle on
/// the database is dropped when this returns.
async fn serve(
    cfg: &ServerConfig,
    db: Arc<Db>,
    store: Arc<crate::storage::Store>,
    prometheus: Option<PrometheusHandle>,
    started: Instant,
) -> anyhow::Result<()> {
    let registry = Arc::new(Registry::load(
        cfg.trainer_dir.as_deref(),
        cfg.trainers_file.as_deref(),
    )?);
    let jobs = Arc::new(
        Jobs::new(
            db.clone(),
            Events::new(),
            registry.clone(),
            JobsConfig {
                callback_auth: cfg.callback_auth,
            },
        )
        .with_store(store.clone(), cfg.storage.dataset_check),
    );
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
    let runner = build_runner(cfg, jobs.clone()).await?;
    let contract: Arc<dyn ContractSource> = Arc::new(StoreContract {
        base_url: base_url.clone(),
        store: store.clone(),
    });
    let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
    let scheduler = tokio::spawn(
        Scheduler::new(
            jobs.clone(),
            runner.clone(),
            contract.clone(),
            cfg.max_concurrent_jobs,
        )
        .hold(cfg.hold_jobs)
        .run(stop_rx),
    );
    let state = AppState {
        jobs: jobs.clone(),
        max_body_bytes: cfg.max_body_bytes,
        api_token: cfg.api_token.as_deref().map(Arc::from),
        prometheus,
        runner: runner.clone(),
        contract,
    };
    let app = router(state, &cfg.cors_origins);
    tracing::info!(
        database = %cfg.database_path.display(),
        runner = runner.name(),
        max_concurrent_jobs = cfg.max_concurrent_jobs,
        frameworks = %registry.names().join(","),
        store = %store.describe(),
        startup_ms = started.elapsed().as_millis() as u64,
        "listening on http://{addr}"
    );
    // No Nagle delay: small writes (SSE events, callback answers) go out at
    // once instead of waiting up to 40 ms for the peer's delayed ACK.
    let listener = axum::serve::ListenerExt::tap_io(listener, |tcp| {
        if let Err(e) = tcp.set_nodelay(true) {
            tracing::debug!(error = %e, "cannot set TCP_NODELAY");
        }
    });
    let served = axum::serve(listener, app)
        .with_graceful_shutdown(shutdown_signal())
        .await
        .context("the HTTP server failed");
    tracing::info!("shutting down: in-flight requests finished");
    let _ = stop_tx.send(true);
    let _ = scheduler.await;
    runner.shutdown(cfg.stop_jobs_on_exit).await;
    served
}

async fn build_runner(cfg: &ServerConfig, jobs: Arc<Jobs>) -> anyhow::Result<Arc<dyn Runner>> {
    match cfg.runner {
        crate::config::RunnerKind::Subprocess => {
            let exe =
                std::env::current_exe().context("cannot find this binary to run trainers with")?;
            Ok(Arc::new(SubprocessRunner::new(
                jobs,
                SubprocessConfig {
                    runs_dir: cfg.data_dir.join("runs"),
                    exe,
                    kill_grace: cfg.kill_grace,
                    max_log_bytes: cfg.max_log_bytes,
                },
            )))
        }
        crate::config::RunnerKind::Kubernetes => {
            if cfg.backend_base_url.is_none() {
                tracing::warn!("BACKEND_BASE_URL is not set: trainer pods are told to call back the daemon's bind address, which they can only reach if the daemon runs on their network; set it to the daemon's Service URL");
            }
            let runner =
                crate::runner::kubernetes::KubernetesRunner::connect(jobs, cfg.kube.clone())
                    .await?;
            Ok(Arc::new(runner))
        }
    }
}

async fn shutdown_signal() {
    let ctrl_c = async {
        if let Err(e) = tokio::signal::ctrl_c().await {
            tracing::error!(error = %e, "cannot listen for Ctrl-C");
            std::future::pending::<()>().await;
        }
    };
    let term = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(e) => {
                tracing::error!(error = %e, "cannot listen for SIGTERM");
                std::future::pending::<()>().await;
            }
        }
    };
    tokio::select! {
        _ = ctrl_c => {},
        _ = term => {},
    }
    tracing::info!("signal received: finishing in-flight requests");
    events::close_streams();
}
