//! The OpenAPI 3.1 document served at `/openapi.json`.
//!
//! utoipa generates it from the handlers' `#[utoipa::path]` annotations and
//! the model's `ToSchema`/`IntoParams` derives; this module assembles it and
//! holds the responses many routes share (referenced from the annotations
//! as `response = …`). It is meant to be exact, not merely indicative: every
//! status a route can answer, every parameter bound and name pattern the
//! server enforces. CI checks it with an OpenAPI validator and fuzzes a live
//! daemon against it (`scripts/fuzz-api.sh`), so a handler that starts
//! answering something new, or stops checking a bound, fails there.
//!
//! Two facts only the running daemon knows are filled in when the document
//! is served: the registered frameworks (the only values `framework`
//! accepts), and whether user routes need the API token at all.

use utoipa::openapi::path::{Operation, ParameterBuilder, ParameterIn};
use utoipa::openapi::security::{HttpAuthScheme, HttpBuilder, SecurityScheme};
use utoipa::openapi::{
    Content, HttpMethod, OpenApi as Document, Ref, RefOr, Required, ResponseBuilder, Schema,
};
use utoipa::{OpenApi, PartialSchema};

use axum::extract::State;
use axum::http::header;
use axum::response::{IntoResponse, Response};

use super::AppState;
use crate::model::ErrorBody;

use super::responses::{
    BadRequest, Forbidden, Invalid, NotJson, TooLarge, TooManyRequests, Unauthorized, Unavailable,
};

/// The OpenAPI document, generated from the handlers' annotations.
#[derive(OpenApi)]
#[openapi(
    info(title = "platform", description = "Run ML training jobs: REST API of `platform serve`."),
    paths(
        super::meta::root, super::meta::health, super::meta::prometheus,
        super::jobs::create_job, super::jobs::list_jobs, super::jobs::get_job,
        super::jobs::cancel_job, super::jobs::callback, super::jobs::list_metrics,
        super::jobs::ingest_metrics, super::runs::frameworks, super::runs::reload_frameworks,
        super::runs::logs,
        super::artifacts::upload_artifact, super::artifacts::list_artifacts,
        super::datasets::job_dataset, super::datasets::job_dataset_file,
        super::artifacts::download_artifact,
        super::datasets::list_datasets, super::datasets::get_dataset,
        super::datasets::upload_dataset_file, super::datasets::download_dataset_file,
        super::events::job_events, super::events::all_events,
        super::users::whoami, super::users::list_users, super::users::create_user,
        super::users::update_user, super::users::list_tokens, super::users::create_token,
        super::users::revoke_token, super::users::audit,
        super::webhooks::add_webhook, super::webhooks::list_webhooks,
        super::webhooks::get_webhook, super::webhooks::remove_webhook,
        super::webhooks::test_webhook, super::webhooks::list_deliveries,
        super::sched::list_queues, super::sched::pause_queue, super::sched::resume_queue,
        super::sched::update_job, super::sched::heartbeat,
        super::sweeps::create_sweep, super::sweeps::list_sweeps, super::sweeps::get_sweep,
        super::sweeps::cancel_sweep,
        super::gpus::list_gpus,
        super::retention::prune,
    ),
    components(
        // `parameters` refers to it from a hand-written schema, which utoipa
        // does not follow to collect it.
        schemas(ErrorBody, crate::model::sweep::ParamValues),
        responses(BadRequest, Unauthorized, Forbidden, TooManyRequests, TooLarge, NotJson, Invalid, Unavailable),
    ),
    modifiers(&Security, &Uploads, &CrossCutting, &Flattened),
    security(("api_token" = [])),
    tags(
        (name = "jobs", description = "Create, list, inspect and cancel training jobs"),
        (name = "trainer", description = "Endpoints trainers call with their job's callback token"),
        (name = "queues", description = "Queues: limits, counts, pause and resume"),
        (name = "sweeps", description = "Sweeps: many jobs from one spec (grid or random search), their status and cancel"),
        (name = "gpus", description = "The daemon's GPUs (subprocess runner): holders and telemetry"),
        (name = "datasets", description = "Upload, list and download datasets in the object store"),
        (name = "service", description = "Health, metadata, monitoring and retention"),
        (name = "users", description = "Users, their API tokens, who you are, and the audit trail"),
        (name = "webhooks", description = "Endpoints that receive signed events when jobs change status (Standard Webhooks), and their deliveries"),
    )
)]
pub struct ApiDoc;

const API_TOKEN: &str = "api_token";

struct Security;

impl utoipa::Modify for Security {
    fn modify(&self, openapi: &mut Document) {
        let bearer = |what: &str| {
            SecurityScheme::Http(
                HttpBuilder::new()
                    .scheme(HttpAuthScheme::Bearer)
                    .description(Some(what))
                    .build(),
            )
        };
        let components = openapi.components.get_or_insert_with(Default::default);
        components.add_security_scheme(
            API_TOKEN,
            bearer("A user's API token (`plt_…`) or the operator's PLATFORM_API_TOKEN, on user routes when the daemon requires auth"),
        );
        components.add_security_scheme(
            "callback_token",
            bearer("A job's own callback token (CALLBACK_TOKEN in its trainer's environment)"),
        );
    }
}

/// Upload bodies (`application/octet-stream`) are raw bytes, and may be
/// absent: a request without a body stores an empty file. utoipa would
/// describe bytes as an array of integers and the body as required.
struct Uploads;

impl utoipa::Modify for Uploads {
    fn modify(&self, openapi: &mut Document) {
        use utoipa::openapi::schema::{ObjectBuilder, Type};
        const BYTES: &str = "application/octet-stream";
        for item in openapi.paths.paths.values_mut() {
            for op in operations(item) {
                let Some(body) = op.request_body.as_mut() else {
                    continue;
                };
                if let Some(content) = body.content.get_mut(BYTES) {
                    let bytes = ObjectBuilder::new()
                        .schema_type(Type::String)
                        .content_media_type(BYTES)
                        .build();
                    content.schema = Some(RefOr::T(Schema::Object(bytes)));
                    body.required = Some(utoipa::openapi::Required::False);
                }
            }
        }
    }
}

/// The document as this daemon serves it: the registered frameworks, and
/// no API-token requirement when none is configured.
pub fn document(st: &AppState) -> Document {
    let mut doc = ApiDoc::openapi();
    restrict_frameworks(&mut doc, &st.registry.current().names());
    restrict_queues(&mut doc, &st.jobs.queue_names());
    if !st.users.auth_required() {
        drop_api_token(&mut doc);
    }
    doc
}

/// `CreateJob.framework` accepts exactly the registered names.
fn restrict_frameworks(doc: &mut Document, names: &[String]) {
    let Some(components) = doc.components.as_mut() else {
        return;
    };
    let Some(RefOr::T(Schema::Object(create))) = components.schemas.get_mut("CreateJob") else {
        return;
    };
    if let Some(RefOr::T(Schema::Object(field))) = create.properties.get_mut("framework") {
        field.enum_values = Some(names.iter().map(|n| n.as_str().into()).collect());
    }
}

/// `CreateJob.queue` accepts exactly the configured queues.
fn restrict_queues(doc: &mut Document, names: &[String]) {
    let Some(components) = doc.components.as_mut() else {
        return;
    };
    let Some(RefOr::T(Schema::Object(create))) = components.schemas.get_mut("CreateJob") else {
        return;
    };
    if let Some(RefOr::T(Schema::Object(field))) = create.properties.get_mut("queue") {
        // The field is optional and nullable: null takes `default`.
        let mut values: Vec<serde_json::Value> = names.iter().map(|n| n.as_str().into()).collect();
        values.push(serde_json::Value::Null);
        field.enum_values = Some(values);
    }
}

/// Without a configured API token, user routes are open: no security
/// requirement, and no 401 or 429 (no authentication can fail).
fn drop_api_token(doc: &mut Document) {
    doc.security = None;
    if let Some(components) = doc.components.as_mut() {
        components.security_schemes.remove(API_TOKEN);
    }
    for item in doc.paths.paths.values_mut() {
        for op in operations(item) {
            // Operations with their own requirement (trainer routes) or an
            // explicit "none" (public routes) keep what they say.
            if op.security.is_none() {
                op.responses.responses.remove("401");
                op.responses.responses.remove("429");
            }
        }
    }
}

fn operations(item: &mut utoipa::openapi::PathItem) -> impl Iterator<Item = &mut Operation> {
    operations_by_method(item).map(|(_, op)| op)
}

fn operations_by_method(
    item: &mut utoipa::openapi::PathItem,
) -> impl Iterator<Item = (HttpMethod, &mut Operation)> {
    [
        (HttpMethod::Get, item.get.as_mut()),
        (HttpMethod::Put, item.put.as_mut()),
        (HttpMethod::Post, item.post.as_mut()),
        (HttpMethod::Delete, item.delete.as_mut()),
        (HttpMethod::Options, item.options.as_mut()),
        (HttpMethod::Head, item.head.as_mut()),
        (HttpMethod::Patch, item.patch.as_mut()),
        (HttpMethod::Trace, item.trace.as_mut()),
    ]
    .into_iter()
    .filter_map(|(m, op)| op.map(|op| (m, op)))
}

/// The streams a browser opens with `EventSource`: they take `?token=`.
const EVENT_STREAMS: &[&str] = &[
    "/api/v1/training/events",
    "/api/v1/training/jobs/{id}/events",
];
/// Other routes whose answer may be a long-lived stream.
const FOLLOWED: &str = "/api/v1/training/jobs/{id}/logs";
/// Routes that never ask for the API token.
const SERVICE: &[&str] = &["/", "/health", "/metrics"];

/// What the middleware adds to every route it applies to: the 429 of the
/// API-token rate limit, the 507 of a full disk (every write), the 503 of
/// the stream cap (event streams, followed logs) and the `?token=`
/// parameter of the event streams.
struct CrossCutting;

impl utoipa::Modify for CrossCutting {
    fn modify(&self, openapi: &mut Document) {
        for (path, item) in openapi.paths.paths.iter_mut() {
            for (method, op) in operations_by_method(item) {
                if !SERVICE.contains(&path.as_str())
                    && !uses_callback_token(op)
                    && !op.responses.responses.contains_key("429")
                {
                    op.responses.responses.insert(
                        "429".to_string(),
                        RefOr::Ref(Ref::from_response_name("TooManyRequests")),
                    );
                }
                if method != HttpMethod::Get {
                    respond(op, "507", "The server's disk is full; nothing was stored");
                }
                if EVENT_STREAMS.contains(&path.as_str()) || path == FOLLOWED {
                    respond(
                        op,
                        "503",
                        "Too many live streams at once (`MAX_STREAMS`); try again later",
                    );
                }
                if EVENT_STREAMS.contains(&path.as_str()) {
                    op.parameters.get_or_insert_with(Vec::new).push(
                        ParameterBuilder::new()
                            .name("token")
                            .parameter_in(ParameterIn::Query)
                            .required(Required::False)
                            .description(Some(
                                "The API token, for browsers' EventSource, which cannot send a header (other API routes ignore it)",
                            ))
                            .schema(Some(String::schema()))
                            .build(),
                    );
                }
            }
        }
    }
}

fn uses_callback_token(op: &Operation) -> bool {
    op.security.as_ref().is_some_and(|reqs| {
        reqs.iter().any(|r| {
            serde_json::to_value(r)
                .ok()
                .and_then(|v| v.as_object().map(|o| o.contains_key("callback_token")))
                .unwrap_or(false)
        })
    })
}

/// Adds a `{"detail": …}` answer, unless the handler documents its own.
fn respond(op: &mut Operation, status: &str, description: &str) {
    if op.responses.responses.contains_key(status) {
        return;
    }
    let resp = ResponseBuilder::new()
        .description(description)
        .content(
            "application/json",
            Content::new(Some(Ref::from_schema_name("ErrorBody"))),
        )
        .build();
    op.responses
        .responses
        .insert(status.to_string(), resp.into());
}

/// `GET /openapi.json`.
pub async fn openapi_json(State(st): State<AppState>) -> Response {
    match document(&st).to_json() {
        Ok(json) => ([(header::CONTENT_TYPE, "application/json")], json).into_response(),
        Err(e) => {
            super::error::ApiError::Internal(format!("cannot render OpenAPI: {e}")).into_response()
        }
    }
}

/// `Job` and `CreateJob` carry their scheduling fields in a nested struct
/// that serde flattens; utoipa describes that as `allOf` [nested, rest].
/// Clients see one flat object, so the document says so: the nested
/// schema's properties are merged in and the nested schema goes.
struct Flattened;

impl utoipa::Modify for Flattened {
    fn modify(&self, openapi: &mut Document) {
        let Some(components) = openapi.components.as_mut() else {
            return;
        };
        // In dependency order: a later schema's parts are merged already.
        for name in ["Job", "CreateJob", "CreateSweep", "SweepRecord", "Sweep"] {
            let Some(RefOr::T(Schema::AllOf(all))) = components.schemas.get(name) else {
                continue;
            };
            let mut merged = utoipa::openapi::schema::Object::new();
            merged.description = all.description.clone();
            for item in &all.items {
                let part = match item {
                    RefOr::T(Schema::Object(o)) => Some(o.clone()),
                    RefOr::Ref(r) => {
                        let target = r.ref_location.rsplit('/').next().unwrap_or_default();
                        match components.schemas.get(target) {
                            Some(RefOr::T(Schema::Object(o))) => Some(o.clone()),
                            _ => None,
                        }
                    }
                    _ => None,
                };
                let Some(part) = part else { continue };
                merged.schema_type = part.schema_type.clone();
                merged.properties.extend(part.properties);
                merged.required.extend(part.required);
                if merged.description.is_none() {
                    merged.description = part.description;
                }
            }
            components
                .schemas
                .insert(name.to_string(), RefOr::T(Schema::Object(merged)));
        }
        for nested in [
            "JobScheduling",
            "CreateScheduling",
            "Labels",
            "NewLabels",
            "SweepRecord",
        ] {
            components.schemas.remove(nested);
        }
    }
}
