//! (tests only) A stand-in for the daemon's trainer routes: it applies
//! callbacks and metric batches by `sequence` like the real one, records
//! what it applied, can start late (the daemon was away) and can answer 409
//! (the job ended).

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use axum::{Json, Router};
use serde_json::{json, Value};
use uuid::Uuid;

use super::Endpoint;
use crate::client::Client;

#[derive(Default)]
struct Inner {
    applied: Mutex<(i64, Vec<Value>)>,
    ended: AtomicBool,
}

/// The fake daemon.
pub struct FakeDaemon {
    inner: Arc<Inner>,
    task: tokio::task::JoinHandle<()>,
}

/// A port nothing listens on yet.
pub fn free_port() -> u16 {
    let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    l.local_addr().unwrap().port()
}

/// An endpoint for job `id` at `port`, retrying for `timeout`.
pub fn endpoint(port: u16, id: Uuid, timeout: Duration) -> Endpoint {
    let base = format!("http://127.0.0.1:{port}");
    Endpoint::new(
        Client::new(&base, Some("token".into())).unwrap(),
        format!("{base}/api/v1/training/jobs/{id}/callback"),
        Some(id),
        timeout,
    )
}

impl FakeDaemon {
    /// Starts listening on `port`.
    pub async fn start(port: u16) -> Self {
        let inner = Arc::new(Inner::default());
        let app = Router::new()
            .route("/api/v1/training/jobs/{id}/callback", post(apply))
            .route("/api/v1/training/jobs/{id}/metrics", post(apply))
            .with_state(inner.clone());
        let listener = tokio::net::TcpListener::bind(("127.0.0.1", port))
            .await
            .unwrap();
        let task = tokio::spawn(async move {
            axum::serve(listener, app).await.unwrap();
        });
        Self { inner, task }
    }

    /// From now on every report gets 409 (a user cancelled the job).
    pub fn cancel_job(&self) {
        self.inner.ended.store(true, Ordering::SeqCst);
    }

    /// The bodies applied, in order.
    pub fn applied(&self) -> Vec<Value> {
        self.inner.applied.lock().unwrap().1.clone()
    }

    /// The sequences applied, in order.
    pub fn sequences(&self) -> Vec<i64> {
        self.applied()
            .iter()
            .map(|b| b["sequence"].as_i64().unwrap())
            .collect()
    }
}

impl Drop for FakeDaemon {
    fn drop(&mut self) {
        self.task.abort();
    }
}

async fn apply(
    State(inner): State<Arc<Inner>>,
    Path(id): Path<Uuid>,
    Json(body): Json<Value>,
) -> Response {
    if inner.ended.load(Ordering::SeqCst) {
        let detail = json!({"detail": "the job is cancelled", "status": "cancelled"});
        return (StatusCode::CONFLICT, Json(detail)).into_response();
    }
    let mut applied = inner.applied.lock().unwrap();
    let seq = body["sequence"].as_i64().unwrap_or(i64::MAX);
    if seq > applied.0 {
        applied.0 = seq;
        applied.1.push(body);
    }
    Json(json!({"status": "ok", "job_id": id, "stored": 0})).into_response()
}
