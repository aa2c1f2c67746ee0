//! Service endpoints: `/`, `/health`, `/metrics` (Prometheus) and the
//! offline API docs page (the document itself is [`super::openapi`]'s).

use std::collections::BTreeMap;

use axum::extract::State;
use axum::http::{header, StatusCode};
use axum::response::{Html, IntoResponse, Response};
use axum::Json;

use super::AppState;
use crate::model::{Health, ServiceInfo, SERVICE_NAME};

/// The server version.
pub const VERSION: &str = env!("CARGO_PKG_VERSION");

/// Where things are.
#[utoipa::path(get, path = "/", tag = "service", security(()),
    responses((status = 200, description = "Service info", body = ServiceInfo)))]
pub async fn root() -> Json<ServiceInfo> {
    Json(ServiceInfo {
        service: SERVICE_NAME.into(),
        version: VERSION.into(),
        docs: "/docs".into(),
        health: "/health".into(),
        ui: "/ui".into(),
    })
}

/// Health: a database round-trip and an object store listing.
#[utoipa::path(get, path = "/health", tag = "service", security(()),
    responses(
        (status = 200, description = "Healthy", body = Health),
        (status = 503, description = "A component is failing", body = Health),
    ))]
pub async fn health(State(st): State<AppState>) -> (StatusCode, Json<Health>) {
    let mut checks = BTreeMap::new();
    let (db, storage) = tokio::join!(st.jobs.check_database(), st.store.health());
    let healthy = db.is_ok() && storage.is_ok();
    checks.insert(
        "database".to_string(),
        match db {
            Ok(_) => "ok".to_string(),
            Err(e) => e.to_string(),
        },
    );
    checks.insert(
        "storage".to_string(),
        storage.err().unwrap_or_else(|| "ok".into()),
    );
    let role = st.leadership.current();
    let status = if healthy {
        StatusCode::OK
    } else {
        StatusCode::SERVICE_UNAVAILABLE
    };
    (
        status,
        Json(Health {
            status: if healthy { "healthy" } else { "unhealthy" }.into(),
            service: SERVICE_NAME.into(),
            version: VERSION.into(),
            checks,
            leader: role.is_leading(),
            epoch: role.epoch(),
            replica: st.leadership.replica().to_string(),
            gpus: st.gpus.list(),
        }),
    )
}

/// Prometheus text exposition: request counters and latencies, callback
/// outcomes, commit batch sizes, and jobs by status.
#[utoipa::path(get, path = "/metrics", tag = "service", security(()),
    responses((status = 200, description = "Prometheus text format", content_type = "text/plain")))]
pub async fn prometheus(State(st): State<AppState>) -> Response {
    let mut text = st
        .prometheus
        .as_ref()
        .map(|h| h.render())
        .unwrap_or_default();
    if let Ok(counts) = st.jobs.count_by_status().await {
        text.push_str("# HELP platform_jobs Jobs by status.\n# TYPE platform_jobs gauge\n");
        for status in crate::model::status::ALL_STATUSES {
            let n = counts
                .iter()
                .find(|(s, _)| *s == status)
                .map_or(0, |(_, n)| *n);
            text.push_str(&format!("platform_jobs{{status=\"{status}\"}} {n}\n"));
        }
    }
    if let Ok(queues) = st.jobs.queues().await {
        text.push_str(
            "# HELP platform_queue_jobs Pending and running jobs per queue.\n# TYPE platform_queue_jobs gauge\n",
        );
        for q in &queues {
            for (status, n) in [("pending", q.pending), ("running", q.running)] {
                text.push_str(&format!(
                    "platform_queue_jobs{{queue=\"{}\",status=\"{status}\"}} {n}\n",
                    q.name
                ));
            }
        }
        text.push_str(
            "# HELP platform_queue_paused Whether a queue is paused (1) or not (0).\n# TYPE platform_queue_paused gauge\n",
        );
        for q in &queues {
            text.push_str(&format!(
                "platform_queue_paused{{queue=\"{}\"}} {}\n",
                q.name,
                u8::from(q.paused)
            ));
        }
    }
    text.push_str(&super::gpus::prometheus_text(&st));
    (
        [(
            header::CONTENT_TYPE,
            "text/plain; version=0.0.4; charset=utf-8",
        )],
        text,
    )
        .into_response()
}

const SWAGGER_JS: &str = include_str!("../../assets/swagger-ui/swagger-ui-bundle.js");
const SWAGGER_CSS: &str = include_str!("../../assets/swagger-ui/swagger-ui.css");

/// `GET /docs`: Swagger UI, served from assets compiled into the binary.
pub async fn docs() -> Html<&'static str> {
    Html(
        r##"<!doctype html>
<html lang="en">
<head>
  <meta charset="utf-8">
  <title>platform API</title>
  <link rel="stylesheet" href="/docs/swagger-ui.css">
</head>
<body>
  <div id="swagger-ui"></div>
  <script src="/docs/swagger-ui-bundle.js"></script>
  <script>
    // validatorUrl: null, or Swagger UI fetches a badge from swagger.io
    // whenever the page is not served from localhost.
    window.ui = SwaggerUIBundle({ url: "/openapi.json", dom_id: "#swagger-ui", validatorUrl: null });
  </script>
</body>
</html>"##,
    )
}

/// The Swagger UI script.
pub async fn docs_js() -> Response {
    static_asset("text/javascript; charset=utf-8", SWAGGER_JS)
}

/// The Swagger UI stylesheet.
pub async fn docs_css() -> Response {
    static_asset("text/css; charset=utf-8", SWAGGER_CSS)
}

fn static_asset(content_type: &'static str, body: &'static str) -> Response {
    (
        [
            (header::CONTENT_TYPE, content_type),
            (header::CACHE_CONTROL, "public, max-age=86400"),
        ],
        body,
    )
        .into_response()
}
