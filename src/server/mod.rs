//! The HTTP API: state, routes and middleware.
//!
//! [`router`] assembles three groups of routes, each with its own auth
//! layer ([`auth`]): public service routes, user routes (the operator's API
//! token) and trainer routes (the job's callback token); plus the
//! dashboard. Handlers live in the sub-modules and are thin: they extract,
//! call [`crate::jobs::Jobs`] (or the store, the runner), and shape the
//! answer; every error goes through [`error::ApiError`]. Start-up and
//! shutdown of the daemon live in [`crate::daemon`].

pub mod artifacts;
mod auth;
pub mod datasets;
pub mod error;
pub mod events;
pub mod extract;
pub mod jobs;
pub mod meta;
pub mod openapi;
pub mod runs;
pub mod ui;

use std::sync::Arc;
use std::time::Instant;

use axum::extract::{MatchedPath, Request};
use axum::http::{HeaderName, HeaderValue, Method};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::Router;
use metrics_exporter_prometheus::PrometheusHandle;
use tokio_util::sync::CancellationToken;
use tower_http::catch_panic::CatchPanicLayer;
use tower_http::cors::{AllowOrigin, Any, CorsLayer};
use tower_http::request_id::{MakeRequestUuid, PropagateRequestIdLayer, SetRequestIdLayer};
use tower_http::trace::TraceLayer;

pub use auth::ApiToken;

use crate::jobs::Jobs;
use crate::runner::{Runner, SpecBuilder};
use crate::storage::Store;
use crate::trainers::Registry;
use error::ApiError;

/// What the handlers use, and nothing more.
#[derive(Clone)]
pub struct AppState {
    /// The job service (lifecycle rules, reads, the event hub).
    pub jobs: Arc<Jobs>,
    /// The object store (datasets, artifacts, archived logs).
    pub store: Arc<Store>,
    /// The runner (live logs, dry-run plans).
    pub runner: Arc<dyn Runner>,
    /// Builds launch specs (dry runs show exactly what a launch would do).
    pub specs: Arc<SpecBuilder>,
    /// The trainer registry (`/frameworks`).
    pub registry: Arc<Registry>,
    /// The operator's API token for user routes.
    pub api_token: ApiToken,
    /// JSON body limit.
    pub max_body_bytes: usize,
    /// Prometheus renderer, when the recorder is installed.
    pub prometheus: Option<PrometheusHandle>,
    /// Cancelled when the daemon starts shutting down: long-lived
    /// responses (event streams, followed logs) end on it.
    pub shutdown: CancellationToken,
}

const REQUEST_ID: HeaderName = HeaderName::from_static("x-request-id");

/// All routes with their middleware.
pub fn router(state: AppState, cors_origins: &[String]) -> Router {
    let user_api = Router::new()
        .route("/jobs", post(jobs::create_job).get(jobs::list_jobs))
        .route("/jobs/{id}", get(jobs::get_job).delete(jobs::cancel_job))
        .route("/frameworks", get(runs::frameworks))
        .route("/jobs/{id}/logs", get(runs::logs))
        .route("/jobs/{id}/metrics", get(jobs::list_metrics))
        .route("/jobs/{id}/events", get(events::job_events))
        .route("/events", get(events::all_events))
        .merge(artifacts::user_routes())
        .route_layer(middleware::from_fn_with_state(
            state.clone(),
            auth::require_api_token,
        ));
    let trainer_api = Router::new()
        .route("/jobs/{id}/callback", post(jobs::callback))
        .route("/jobs/{id}/metrics", post(jobs::ingest_metrics))
        .merge(artifacts::trainer_routes())
        .route_layer(middleware::from_fn_with_state(
            state.clone(),
            auth::require_job_token,
        ));
    let datasets = datasets::routes().route_layer(middleware::from_fn_with_state(
        state.clone(),
        auth::require_api_token,
    ));
    let dashboard = ui::pages().route_layer(middleware::from_fn_with_state(
        state.clone(),
        auth::require_dashboard_login,
    ));
    let app = Router::new()
        .route("/", get(meta::root))
        .route("/health", get(meta::health))
        .route("/metrics", get(meta::prometheus))
        .route("/openapi.json", get(meta::openapi_json))
        .route("/docs", get(meta::docs))
        .route("/docs/", get(meta::docs))
        .route("/docs/swagger-ui-bundle.js", get(meta::docs_js))
        .route("/docs/swagger-ui.css", get(meta::docs_css))
        .nest("/api/v1/training", user_api.merge(trainer_api))
        .merge(datasets)
        .merge(dashboard)
        .merge(ui::public_routes())
        .fallback(error::not_found)
        .method_not_allowed_fallback(error::method_not_allowed)
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

/// Serves `app` on `listener` until `shutdown` is cancelled, then finishes
/// the requests in flight.
pub async fn serve(
    listener: tokio::net::TcpListener,
    app: Router,
    shutdown: CancellationToken,
) -> std::io::Result<()> {
    // No Nagle delay: small writes (SSE events, callback answers) go out at
    // once instead of waiting up to 40 ms for the peer's delayed ACK.
    let listener = axum::serve::ListenerExt::tap_io(listener, |tcp| {
        if let Err(e) = tcp.set_nodelay(true) {
            tracing::debug!(error = %e, "cannot set TCP_NODELAY");
        }
    });
    axum::serve(listener, app)
        .with_graceful_shutdown(shutdown.cancelled_owned())
        .await
}
