//! Handlers for `/api/v1/webhooks…`: endpoints that receive signed events
//! when jobs change status, and their delivery records. Admins only: an
//! endpoint sees every job's events, and its URL may carry a secret.

use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::middleware;
use axum::routing::{get, post};
use axum::{Json, Router};
use serde::Deserialize;
use utoipa::IntoParams;
use uuid::Uuid;

use super::error::ApiError;
use super::extract::{ApiQuery, JsonBody};
use super::responses::{BadRequest, Forbidden, NotJson, TooLarge, Unauthorized, Unavailable};
use super::AppState;
use crate::model::webhook::{CreateWebhook, CreatedWebhook, Delivery, Webhook};
use crate::model::ErrorBody;
use crate::webhooks::WebhookError;

/// The webhook routes (full paths; merged into the app router).
pub fn routes() -> Router<AppState> {
    Router::new()
        .route("/api/v1/webhooks", post(add_webhook).get(list_webhooks))
        .route(
            "/api/v1/webhooks/{id}",
            get(get_webhook).delete(remove_webhook),
        )
        .route("/api/v1/webhooks/{id}/test", post(test_webhook))
        .route("/api/v1/webhooks/{id}/deliveries", get(list_deliveries))
        .route_layer(middleware::from_fn_with_state(
            "manage webhooks",
            super::auth::require_admin,
        ))
}

impl From<WebhookError> for ApiError {
    fn from(e: WebhookError) -> Self {
        match e {
            WebhookError::NotFound(_) => ApiError::NotFound(e.to_string()),
            WebhookError::Configured(_) => ApiError::Conflict {
                detail: e.to_string(),
                status: None,
            },
            WebhookError::Invalid(v) => ApiError::Invalid(v),
            WebhookError::Db(d) => d.into(),
        }
    }
}

fn webhook_id(raw: &str) -> Result<Uuid, ApiError> {
    Uuid::parse_str(raw)
        .map_err(|_| ApiError::invalid("webhook_id", format!("{raw:?} is not a valid UUID")))
}

/// Add a webhook endpoint. The answer carries its signing secret, shown
/// only this once.
#[utoipa::path(post, path = "/api/v1/webhooks", tag = "webhooks",
    request_body = CreateWebhook,
    responses(
        (status = 201, description = "Added; `secret` is shown only here", body = CreatedWebhook),
        (status = 400, response = BadRequest),
        (status = 401, response = Unauthorized),
        (status = 403, response = Forbidden),
        (status = 413, response = TooLarge),
        (status = 415, response = NotJson),
        (status = 422, description = "Invalid field, or a target the daemon refuses (private, loopback, link-local or metadata address without --webhook-allow-private)", body = ErrorBody),
        (status = 503, response = Unavailable),
    ))]
pub async fn add_webhook(
    State(st): State<AppState>,
    body: JsonBody,
) -> Result<(StatusCode, Json<CreatedWebhook>), ApiError> {
    let req: CreateWebhook = body.decode()?;
    Ok((StatusCode::CREATED, Json(st.webhooks.add(req).await?)))
}

/// List webhook endpoints (secrets by prefix only).
#[utoipa::path(get, path = "/api/v1/webhooks", tag = "webhooks",
    responses(
        (status = 200, description = "Endpoints, oldest first", body = Vec<Webhook>),
        (status = 401, response = Unauthorized),
        (status = 403, response = Forbidden),
        (status = 503, response = Unavailable),
    ))]
pub async fn list_webhooks(State(st): State<AppState>) -> Result<Json<Vec<Webhook>>, ApiError> {
    Ok(Json(st.webhooks.list().await?))
}

/// One webhook endpoint.
#[utoipa::path(get, path = "/api/v1/webhooks/{id}", tag = "webhooks",
    params(("id" = uuid::Uuid, Path, description = "Webhook id")),
    responses(
        (status = 200, description = "The endpoint", body = Webhook),
        (status = 401, response = Unauthorized),
        (status = 403, response = Forbidden),
        (status = 404, description = "Unknown webhook", body = ErrorBody),
        (status = 422, description = "Malformed id", body = ErrorBody),
        (status = 503, response = Unavailable),
    ))]
pub async fn get_webhook(
    State(st): State<AppState>,
    Path(id): Path<String>,
) -> Result<Json<Webhook>, ApiError> {
    Ok(Json(st.webhooks.get(webhook_id(&id)?).await?))
}

/// Remove a webhook endpoint and its delivery records.
#[utoipa::path(delete, path = "/api/v1/webhooks/{id}", tag = "webhooks",
    params(("id" = uuid::Uuid, Path, description = "Webhook id")),
    responses(
        (status = 204, description = "Removed"),
        (status = 401, response = Unauthorized),
        (status = 403, response = Forbidden),
        (status = 404, description = "Unknown webhook", body = ErrorBody),
        (status = 409, description = "The endpoint comes from the daemon's configuration (WEBHOOKS)", body = ErrorBody),
        (status = 422, description = "Malformed id", body = ErrorBody),
        (status = 503, response = Unavailable),
    ))]
pub async fn remove_webhook(
    State(st): State<AppState>,
    Path(id): Path<String>,
) -> Result<StatusCode, ApiError> {
    st.webhooks.remove(webhook_id(&id)?).await?;
    Ok(StatusCode::NO_CONTENT)
}

/// Send a `webhook.test` event to one endpoint (queued like any delivery).
#[utoipa::path(post, path = "/api/v1/webhooks/{id}/test", tag = "webhooks",
    params(("id" = uuid::Uuid, Path, description = "Webhook id")),
    responses(
        (status = 202, description = "Queued; follow it in the deliveries", body = Delivery),
        (status = 401, response = Unauthorized),
        (status = 403, response = Forbidden),
        (status = 404, description = "Unknown webhook", body = ErrorBody),
        (status = 422, description = "Malformed id", body = ErrorBody),
        (status = 503, response = Unavailable),
    ))]
pub async fn test_webhook(
    State(st): State<AppState>,
    Path(id): Path<String>,
) -> Result<(StatusCode, Json<Delivery>), ApiError> {
    let d = st.webhooks.test(webhook_id(&id)?).await?;
    Ok((StatusCode::ACCEPTED, Json(d)))
}

/// Query of `GET /api/v1/webhooks/{id}/deliveries`.
#[derive(Debug, Default, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct DeliveryQuery {
    /// At most this many, newest first (1–1000, default 50).
    #[param(minimum = 1, maximum = 1000)]
    pub limit: Option<i64>,
}

/// Recent deliveries to one endpoint: state, attempts, last answer.
#[utoipa::path(get, path = "/api/v1/webhooks/{id}/deliveries", tag = "webhooks",
    params(("id" = uuid::Uuid, Path, description = "Webhook id"), DeliveryQuery),
    responses(
        (status = 200, description = "Deliveries, newest first", body = Vec<Delivery>),
        (status = 401, response = Unauthorized),
        (status = 403, response = Forbidden),
        (status = 404, description = "Unknown webhook", body = ErrorBody),
        (status = 422, description = "Malformed id or limit", body = ErrorBody),
        (status = 503, response = Unavailable),
    ))]
pub async fn list_deliveries(
    State(st): State<AppState>,
    Path(id): Path<String>,
    ApiQuery(q): ApiQuery<DeliveryQuery>,
) -> Result<Json<Vec<Delivery>>, ApiError> {
    let limit = q.limit.unwrap_or(50);
    if !(1..=1000).contains(&limit) {
        return Err(ApiError::invalid("limit", "must be between 1 and 1000"));
    }
    Ok(Json(st.webhooks.deliveries(webhook_id(&id)?, limit).await?))
}
