//! Request extractors that turn every kind of bad input into the right 4xx:
//! malformed ids (422), bad query strings (422), wrong content types (415),
//! oversized bodies (413), malformed JSON (400) and wrong or non-finite
//! values (422, naming the field).

use axum::extract::{FromRequest, FromRequestParts, Path, Query, Request};
use axum::http::{header, request::Parts, HeaderMap};
use bytes::Bytes;
use serde::de::DeserializeOwned;
use uuid::Uuid;

use super::error::ApiError;
use super::AppState;

/// A job id from the path; anything but a UUID is a 422.
#[derive(Debug, Clone, Copy)]
pub struct JobId(pub Uuid);

impl<S: Send + Sync> FromRequestParts<S> for JobId {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, Self::Rejection> {
        // A segment that does not even decode (e.g. `%FF`) is as malformed
        // an id as any other non-UUID.
        let Path(params) = Path::<Vec<(String, String)>>::from_request_parts(parts, state)
            .await
            .map_err(|_| ApiError::invalid("job_id", "the path's job id is not a valid UUID"))?;
        let raw = params
            .iter()
            .find(|(k, _)| k == "id")
            .map(|(_, v)| v.as_str())
            .unwrap_or_default();
        Uuid::parse_str(raw)
            .map(JobId)
            .map_err(|_| ApiError::invalid("job_id", format!("{raw:?} is not a valid UUID")))
    }
}

/// A query string; a value of the wrong type is a 422 naming the parameter.
#[derive(Debug, Clone)]
pub struct ApiQuery<T>(pub T);

impl<S: Send + Sync, T: DeserializeOwned> FromRequestParts<S> for ApiQuery<T> {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, Self::Rejection> {
        Query::<T>::from_request_parts(parts, state)
            .await
            .map(|Query(q)| ApiQuery(q))
            .map_err(|e| {
                let text = e.body_text();
                let text = text
                    .strip_prefix("Failed to deserialize query string: ")
                    .unwrap_or(&text)
                    .to_string();
                // "limit: invalid digit…" → field `limit`, message "invalid digit…"
                // (the error's Display adds the field back once).
                match text.split_once(": ") {
                    Some((field, message)) if is_param_name(field) => {
                        ApiError::invalid(field, message)
                    }
                    _ => ApiError::invalid("query", text),
                }
            })
    }
}

fn is_param_name(s: &str) -> bool {
    !s.is_empty() && s.chars().all(|c| c.is_ascii_alphanumeric() || c == '_')
}

/// A JSON body, read within the size limit, not yet decoded (handlers that
/// authenticate do so before looking at the body).
#[derive(Debug, Clone)]
pub struct JsonBody(pub Bytes);

impl FromRequest<AppState> for JsonBody {
    type Rejection = ApiError;

    async fn from_request(req: Request, state: &AppState) -> Result<Self, Self::Rejection> {
        let limit = state.max_body_bytes;
        if !is_json(req.headers()) {
            return Err(ApiError::UnsupportedMediaType(
                "request body must be JSON: send Content-Type: application/json".into(),
            ));
        }
        let too_large = || {
            ApiError::TooLarge(format!(
                "request body is larger than the limit of {limit} bytes"
            ))
        };
        let declared = req
            .headers()
            .get(header::CONTENT_LENGTH)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.parse::<usize>().ok());
        if declared.is_some_and(|n| n > limit) {
            return Err(too_large());
        }
        let bytes = axum::body::to_bytes(req.into_body(), limit)
            .await
            .map_err(|e| {
                if is_length_limit(&e) {
                    too_large()
                } else {
                    ApiError::BadRequest(format!("cannot read the request body: {e}"))
                }
            })?;
        Ok(JsonBody(bytes))
    }
}

impl JsonBody {
    /// Decodes the body into `T`.
    pub fn decode<T: DeserializeOwned>(&self) -> Result<T, ApiError> {
        decode(&self.0)
    }
}

fn is_length_limit(e: &axum::Error) -> bool {
    let mut source: Option<&(dyn std::error::Error + 'static)> = Some(e);
    while let Some(s) = source {
        if s.is::<http_body_util::LengthLimitError>() {
            return true;
        }
        source = s.source();
    }
    false
}

fn is_json(headers: &HeaderMap) -> bool {
    let Some(ct) = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
    else {
        return false;
    };
    let mime = ct
        .split(';')
        .next()
        .unwrap_or("")
        .trim()
        .to_ascii_lowercase();
    mime == "application/json" || (mime.starts_with("application/") && mime.ends_with("+json"))
}

/// Decodes JSON, classifying failures: syntax → 400; wrong types, missing
/// fields, out-of-range and non-finite numbers → 422 naming the field.
pub fn decode<T: DeserializeOwned>(bytes: &[u8]) -> Result<T, ApiError> {
    // Fast path: path tracking costs on every field, and is only needed to
    // explain a failure, so a body that decodes is decoded without it.
    if let Ok(value) = serde_json::from_slice(bytes) {
        // serde accepts a struct as a positional array, and skips over
        // unknown fields without reading their numbers; neither may pass.
        if !starts_object(bytes) {
            return Err(ApiError::invalid("body", "must be a JSON object"));
        }
        if let Some(path) = overflowing_number(bytes) {
            return Err(ApiError::invalid(
                path,
                "numbers must be finite (this one overflows)",
            ));
        }
        return Ok(value);
    }
    if serde_json::from_slice::<serde::de::IgnoredAny>(bytes).is_ok() && !starts_object(bytes) {
        return Err(ApiError::invalid("body", "must be a JSON object"));
    }
    let mut de = serde_json::Deserializer::from_slice(bytes);
    let result: Result<T, _> = serde_path_to_error::deserialize(&mut de);
    let value = match result {
        Ok(v) => v,
        Err(e) => {
            let path = e.path().to_string();
            let inner = e.into_inner();
            return Err(classify(bytes, &path, &inner));
        }
    };
    de.end().map_err(|e| classify(bytes, ".", &e))?;
    Ok(value)
}

fn classify(bytes: &[u8], path: &str, e: &serde_json::Error) -> ApiError {
    use serde_json::error::Category;
    let msg = strip_position(&e.to_string());
    match e.classify() {
        // A document that is not JSON at all is malformed, even when the
        // deserializer noticed a missing field before reaching the bad byte.
        Category::Data => {
            if let Err(syntax) = serde_json::from_slice::<serde::de::IgnoredAny>(bytes) {
                return classify(bytes, ".", &syntax);
            }
            let field = match path {
                "." | "" => missing_field(&msg).unwrap_or("body").to_string(),
                p => p.to_string(),
            };
            ApiError::invalid(field, msg)
        }
        Category::Syntax if msg.contains("number out of range") => ApiError::invalid(
            non_body(path),
            "numbers must be finite (this one overflows)",
        ),
        Category::Syntax if has_non_finite_literal(bytes) => ApiError::invalid(
            non_body(path),
            "NaN and Infinity are not allowed: numbers must be finite",
        ),
        // serde_json reports some type mismatches (e.g. a number where an
        // enum's string belongs) as syntax errors; if the document itself
        // parses, the problem is the value.
        Category::Syntax if serde_json::from_slice::<serde::de::IgnoredAny>(bytes).is_ok() => {
            ApiError::invalid(non_body(path), format!("invalid value: {msg}"))
        }
        _ => ApiError::BadRequest(format!("malformed JSON body: {msg}")),
    }
}

fn non_body(path: &str) -> String {
    match path {
        "." | "" => "body".into(),
        p => p.into(),
    }
}

fn strip_position(msg: &str) -> String {
    match msg.find(" at line ") {
        Some(i) => msg[..i].to_string(),
        None => msg.to_string(),
    }
}

fn missing_field(msg: &str) -> Option<&str> {
    msg.strip_prefix("missing field `")?.split('`').next()
}

fn starts_object(bytes: &[u8]) -> bool {
    bytes.iter().find(|b| !b.is_ascii_whitespace()) == Some(&b'{')
}

/// The path of a number too large for an f64 anywhere in a parsed document,
/// if any. Only numbers with an exponent or over 300 digits can overflow, so
/// the common body costs one scan and no float parsing.
fn overflowing_number(bytes: &[u8]) -> Option<String> {
    let overflows = |token: &[u8]| {
        (token.len() > 300 || token.iter().any(|c| matches!(c, b'e' | b'E')))
            && std::str::from_utf8(token)
                .ok()
                .and_then(|t| t.parse::<f64>().ok())
                .is_none_or(|f| !f.is_finite())
    };
    let mut number: Option<usize> = None;
    let end = std::iter::once((bytes.len(), b' '));
    let suspect = outside_strings(bytes).chain(end).any(|(i, b)| {
        let numeric = matches!(b, b'0'..=b'9' | b'-' | b'+' | b'.' | b'e' | b'E');
        match number {
            None if b == b'-' || b.is_ascii_digit() => number = Some(i),
            Some(start) if !numeric => {
                number = None;
                return overflows(&bytes[start..i]);
            }
            _ => {}
        }
        false
    });
    if !suspect {
        return None;
    }
    // Name the field: decoding into a generic value fails right there.
    let mut de = serde_json::Deserializer::from_slice(bytes);
    match serde_path_to_error::deserialize::<_, serde_json::Value>(&mut de) {
        Err(e) => Some(non_body(&e.path().to_string())),
        Ok(_) => Some("body".into()),
    }
}

/// The bytes of a JSON text outside its string literals, with their offsets.
fn outside_strings(bytes: &[u8]) -> impl Iterator<Item = (usize, u8)> + '_ {
    let (mut in_str, mut escaped) = (false, false);
    bytes.iter().enumerate().filter_map(move |(i, &b)| {
        if in_str {
            match (escaped, b) {
                (true, _) => escaped = false,
                (false, b'\\') => escaped = true,
                (false, b'"') => in_str = false,
                _ => {}
            }
            None
        } else if b == b'"' {
            in_str = true;
            None
        } else {
            Some((i, b))
        }
    })
}

/// Whether the text has a bare `NaN`/`Infinity` token outside strings
/// (JavaScript-style JSON that serde_json rightly refuses to parse).
fn has_non_finite_literal(bytes: &[u8]) -> bool {
    outside_strings(bytes).any(|(i, b)| match b {
        b'N' => bytes[i..].starts_with(b"NaN"),
        b'I' => bytes[i..].starts_with(b"Infinity"),
        _ => false,
    })
}

/// The `Authorization: Bearer` token, if any.
pub fn bearer(headers: &HeaderMap) -> Option<&str> {
    let value = headers.get(header::AUTHORIZATION)?.to_str().ok()?;
    let (scheme, token) = value.split_once(' ')?;
    scheme
        .eq_ignore_ascii_case("bearer")
        .then(|| token.trim())
        .filter(|t| !t.is_empty())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::TrainingUpdate;

    fn status_of(body: &str) -> u16 {
        match decode::<TrainingUpdate>(body.as_bytes()) {
            Ok(_) => 200,
            Err(ApiError::BadRequest(_)) => 400,
            Err(ApiError::Invalid(_)) => 422,
            Err(e) => panic!("unexpected {e:?}"),
        }
    }

    #[test]
    fn classifies_bad_json() {
        assert_eq!(status_of(r#"{"status": "running"}"#), 200);
        assert_eq!(status_of(r#"{"status": "running""#), 400);
        assert_eq!(status_of(r#"{"status": "running"} x"#), 400);
        assert_eq!(status_of(r#"{"status": "running", "progress": NaN}"#), 422);
        assert_eq!(
            status_of(r#"{"status": "running", "progress": -Infinity}"#),
            422
        );
        assert_eq!(
            status_of(r#"{"status": "running", "progress": 1e999}"#),
            422
        );
        assert_eq!(
            status_of(r#"{"status": "running", "message": "NaN"} x"#),
            400
        );
        assert_eq!(status_of(r#"{"status": 5}"#), 422);
        assert_eq!(status_of(r#"{"progress": 0.5}"#), 422);
        assert_eq!(status_of(r#"{"progress": 0.5} trailing"#), 400);
        assert_eq!(status_of(r#"{"status": "bogus", "progress": NaN}"#), 422);
        // Overflow in a field the body type ignores, and positional arrays.
        assert_eq!(
            status_of(r#"{"status": "running", "x": {"y": [1e999]}}"#),
            422
        );
        assert_eq!(
            status_of(r#"{"status": "running", "x": "1e999", "y": 1e300}"#),
            200
        );
        assert_eq!(status_of(r#"["running", 0.5]"#), 422);
        assert_eq!(status_of(r#"  {"status": "running"}"#), 200);
        assert_eq!(
            status_of(
                r#"{"status": "running", "x": "a\"1e999", "t": true, "f": false, "n": -2.5E3}"#
            ),
            200
        );
        assert_eq!(
            status_of(r#"{"status": "running", "x": "a\"", "y": 1E400}"#),
            422
        );
    }

    #[test]
    fn names_the_field() {
        let Err(ApiError::Invalid(v)) =
            decode::<TrainingUpdate>(br#"{"status": "running", "metrics": {"loss": "x"}}"#)
        else {
            panic!("expected 422")
        };
        assert_eq!(v.field, "metrics.loss");
        let Err(ApiError::Invalid(v)) = decode::<TrainingUpdate>(br#"{}"#) else {
            panic!("expected 422")
        };
        assert_eq!(v.field, "status");
        let Err(ApiError::Invalid(v)) =
            decode::<TrainingUpdate>(br#"{"status": "running", "extra": {"y": [1, -2e400]}}"#)
        else {
            panic!("expected 422")
        };
        assert_eq!(v.field, "extra.y[1]");
    }
}
