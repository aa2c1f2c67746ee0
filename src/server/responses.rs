//! Responses shared by many routes of the OpenAPI document, referenced from
//! the handlers' `#[utoipa::path]` annotations as `response = …`. Only their
//! schemas are used: nothing constructs them. They live below both the
//! handlers and [`super::openapi`], which lists the handlers.
#![allow(dead_code)]

use utoipa::ToResponse;

use crate::model::ErrorBody;

/// The request body is not well-formed JSON, could not be read, or the
/// upload broke off (nothing was stored).
#[derive(ToResponse)]
#[response(
    description = "Malformed JSON, an unreadable body or path, or an upload that broke off; nothing was stored"
)]
pub struct BadRequest(ErrorBody);

/// The bearer token is missing or wrong.
#[derive(ToResponse)]
#[response(
    description = "Missing or wrong bearer token",
    headers(("WWW-Authenticate" = String, description = "Always `Bearer`"))
)]
pub struct Unauthorized(ErrorBody);

/// Authentication failed too often from this client (added to every
/// API-token route by [`super::openapi`]'s cross-cutting modifier).
#[derive(ToResponse)]
#[response(
    description = "Too many failed API-token attempts from this address (`MAX_AUTH_FAILURES` per minute); retry after `Retry-After` seconds",
    headers(("Retry-After" = String, description = "Seconds to wait"))
)]
pub struct TooManyRequests(ErrorBody);

/// A body over the limit.
#[derive(ToResponse)]
#[response(
    description = "Body larger than the limit (MAX_BODY_BYTES for JSON, MAX_OBJECT_BYTES for uploads)"
)]
pub struct TooLarge(ErrorBody);

/// A JSON endpoint got another content type.
#[derive(ToResponse)]
#[response(description = "The body is not `application/json`")]
pub struct NotJson(ErrorBody);

/// A field, parameter or path failed validation.
#[derive(ToResponse)]
#[response(description = "Invalid input: `field` names it, `detail` says why")]
pub struct Invalid(ErrorBody);

/// The daemon is shutting down, or the object store failed.
#[derive(ToResponse)]
#[response(description = "The daemon is shutting down, or the object store is unavailable")]
pub struct Unavailable(ErrorBody);

/// Authenticated, but the role or ownership does not allow it.
#[derive(ToResponse)]
#[response(
    description = "Not allowed for this user: a member acting on another user's job or token, or on admin-only routes; the message names the owner"
)]
pub struct Forbidden(ErrorBody);
