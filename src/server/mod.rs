//! The HTTP API: state, routes and middleware.
//!
//! [`router`] assembles the groups of routes, each with its own auth
//! layer ([`auth`]): public service routes, user routes (the operator's API
//! token), event streams (the API token, also as `?token=`) and trainer
//! routes (the job's callback token); plus the dashboard. Long-lived
//! responses take a slot ([`streams`]). Handlers live in the sub-modules
//! and are thin: they extract, call [`crate::jobs::Jobs`] (or the store,
//! the runner), and shape the answer; every error goes through
//! [`error::ApiError`]. [`listen::serve`] runs the router: connection cap,
//! timeouts, graceful stop. Start-up and shutdown of the daemon live in
//! [`crate::daemon`].

pub mod artifacts;
mod audit;
mod auth;
mod conn;
mod credentials;
pub mod datasets;
pub mod error;
pub mod events;
pub mod extract;
pub mod gpus;
pub mod jobs;
pub mod listen;
pub mod meta;
pub mod openapi;
mod ratelimit;
mod responses;
pub mod retention;
pub mod runs;
pub mod sched;
pub mod streams;
pub mod sweeps;
pub mod ui;
pub mod users;
pub mod webhooks;

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

pub use listen::{fit_open_files, serve, ServeOptions, DEFAULT_MAX_CONNECTIONS};
pub use ratelimit::AuthFailures;
pub use streams::StreamSlots;

use crate::jobs::Jobs;
use crate::runner::{Runner, SpecBuilder};
use crate::storage::Store;
use crate::trainers::Trainers;
use crate::users::Users;
use error::ApiError;

/// What the handlers use, shared: every middleware layer and handler
/// takes its own copy of the state for each request, so a copy is one
/// reference count, not one per service.
#[derive(Clone)]
pub struct AppState(Arc<Services>);

impl AppState {
    /// The state over `services`.
    pub fn new(services: Services) -> Self {
        Self(Arc::new(services))
    }
}

impl std::ops::Deref for AppState {
    type Target = Services;

    fn deref(&self) -> &Services {
        &self.0
    }
}

/// What the handlers use, and nothing more.
pub struct Services {
    /// The job service (lifecycle rules, reads, the event hub).
    pub jobs: Arc<Jobs>,
    /// Webhook endpoints and their deliveries.
    pub webhooks: Arc<crate::webhooks::Webhooks>,
    /// The object store (datasets, artifacts, archived logs).
    pub store: Arc<Store>,
    /// The runner (live logs, dry-run plans).
    pub runner: Arc<dyn Runner>,
    /// Builds launch specs (dry runs show exactly what a launch would do).
    pub specs: Arc<SpecBuilder>,
    /// The daemon's GPUs and who holds them (none with Kubernetes).
    pub gpus: Arc<crate::gpus::Gpus>,
    /// The trainer registry (`/frameworks`, reloads).
    pub registry: Arc<Trainers>,
    /// Users and tokens: whose a presented token is, user management,
    /// the audit trail.
    pub users: Arc<Users>,
    /// Failed API-token attempts per client address.
    pub auth_failures: Arc<AuthFailures>,
    /// Slots for event streams and followed logs.
    pub streams: StreamSlots,
    /// JSON body limit.
    pub max_body_bytes: usize,
    /// Prometheus renderer, when the recorder is installed.
    pub prometheus: Option<PrometheusHandle>,
    /// Whether this replica leads (`/health`).
    pub leadership: crate::leader::Leadership,
    /// Cancelled when the daemon starts shutting down: long-lived
    /// responses (event streams, followed logs) end on it.
    pub shutdown: CancellationToken,
}

const REQUEST_ID: HeaderName = HeaderName::from_static("x-request-id");

/// All routes with their middleware.
pub fn router(state: AppState, cors_origins: &[String]) -> Router {
    let user_api = Router::new()
        .route("/jobs", post(jobs::create_job).get(jobs::list_jobs))
        .route(
            "/jobs/{id}",
            get(jobs::get_job)
                .delete(jobs::cancel_job)
                .patch(sched::update_job),
        )
        .route("/frameworks", get(runs::frameworks))
        .route("/frameworks/reload", post(runs::reload_frameworks))
        .route(
            "/jobs/{id}/logs",
            get(runs::logs).route_layer(middleware::from_fn_with_state(
                state.clone(),
                streams::limit_followed_logs,
            )),
        )
        .route("/jobs/{id}/metrics", get(jobs::list_metrics))
        .merge(artifacts::user_routes());
    // Browsers' EventSource cannot send a header: these also take ?token=.
    let event_streams = Router::new()
        .route("/jobs/{id}/events", get(events::job_events))
        .route("/events", get(events::all_events))
        .route_layer(middleware::from_fn_with_state(
            state.clone(),
            streams::limit_streams,
        ))
        .route_layer(middleware::from_fn_with_state(
            state.clone(),
            auth::require_stream_token,
        ));
    let trainer_api = Router::new()
        .route("/jobs/{id}/callback", post(jobs::callback))
        .route("/jobs/{id}/metrics", post(jobs::ingest_metrics))
        .route("/jobs/{id}/heartbeat", post(sched::heartbeat))
        .merge(artifacts::trainer_routes())
        .merge(datasets::trainer_routes())
        .route_layer(middleware::from_fn_with_state(
            state.clone(),
            auth::require_job_token,
        ));
    // Token check first (outermost), then the audit of changes.
    let audited = |r: Router<AppState>| {
        r.route_layer(middleware::from_fn_with_state(state.clone(), audit::record))
            .route_layer(middleware::from_fn_with_state(
                state.clone(),
                auth::require_api_token,
            ))
    };
    let user_api = audited(user_api);
    let datasets = audited(datasets::routes());
    let accounts = audited(users::routes());
    let webhooks = audited(webhooks::routes());
    let queues = audited(sched::queue_routes().merge(gpus::routes()));
    let sweeps = audited(sweeps::routes());
    let retention = audited(retention::routes());
    let dashboard = ui::pages()
        .route_layer(middleware::from_fn_with_state(
            state.clone(),
            ui::require_dashboard_login,
        ))
        .layer(middleware::map_response(ui::protect));
    let app = Router::new()
        .route("/", get(meta::root))
        .route("/health", get(meta::health))
        .route("/metrics", get(meta::prometheus))
        .route("/openapi.json", get(openapi::openapi_json))
        .route("/docs", get(meta::docs))
        .route("/docs/", get(meta::docs))
        .route("/docs/swagger-ui-bundle.js", get(meta::docs_js))
        .route("/docs/swagger-ui.css", get(meta::docs_css))
        .nest(
            "/api/v1/training",
            user_api.merge(event_streams).merge(trainer_api),
        )
        .merge(datasets)
        .merge(accounts)
        .merge(webhooks)
        .merge(queues)
        .merge(sweeps)
        .merge(retention)
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
    .layer(middleware::map_request(drop_unfit_request_id))
}

/// The longest client-supplied `X-Request-Id` kept.
const MAX_REQUEST_ID: usize = 128;

/// Removes a client-supplied `X-Request-Id` that is too long or not
/// printable ASCII, so a fresh one replaces it: ids are echoed and logged,
/// and must not carry junk into either.
async fn drop_unfit_request_id(mut req: Request) -> Request {
    let fit = |v: &HeaderValue| {
        let b = v.as_bytes();
        !b.is_empty() && b.len() <= MAX_REQUEST_ID && b.iter().all(|c| (0x20..0x7f).contains(c))
    };
    let ids = req.headers().get_all(REQUEST_ID);
    let keep = ids.iter().count() == 1 && ids.iter().all(fit);
    if !keep {
        req.headers_mut().remove(REQUEST_ID);
    }
    req
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
