//! OpenAPI additions for answers that do not belong to one handler: the
//! 429 of the API-token rate limit (every route that takes the token), the
//! 507 of a full disk (every write), the 503 of the stream cap (event
//! streams, followed logs) and the `?token=` parameter of the event
//! streams. Handlers' own annotations say what is particular to them; this
//! says what the middleware adds to all.

use utoipa::openapi::path::{Operation, ParameterBuilder, ParameterIn};
use utoipa::openapi::{Content, HttpMethod, OpenApi, Ref, Required, ResponseBuilder};
use utoipa::PartialSchema;

/// The streams a browser opens with `EventSource`: they take `?token=`.
const EVENT_STREAMS: &[&str] = &[
    "/api/v1/training/events",
    "/api/v1/training/jobs/{id}/events",
];
/// Other routes whose answer may be a long-lived stream.
const FOLLOWED: &str = "/api/v1/training/jobs/{id}/logs";
/// Routes that never ask for the API token.
const SERVICE: &[&str] = &["/", "/health", "/metrics"];

/// Adds the cross-cutting answers to every operation they apply to.
pub struct CrossCutting;

impl utoipa::Modify for CrossCutting {
    fn modify(&self, openapi: &mut OpenApi) {
        for (path, item) in openapi.paths.paths.iter_mut() {
            let ops = [
                (HttpMethod::Get, item.get.as_mut()),
                (HttpMethod::Put, item.put.as_mut()),
                (HttpMethod::Post, item.post.as_mut()),
                (HttpMethod::Delete, item.delete.as_mut()),
            ];
            for (method, op) in ops {
                let Some(op) = op else { continue };
                if !SERVICE.contains(&path.as_str()) && !uses_callback_token(op) {
                    respond(
                        op,
                        "429",
                        "Too many failed API-token attempts from this address (`MAX_AUTH_FAILURES` per minute); see `Retry-After`",
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
