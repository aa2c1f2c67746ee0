//! Field validation shared by every request type: one error shape that names
//! the offending field, and the checks the SPEC's limits need.

use serde_json::{Number, Value};

/// The create body's text fields as a pattern: no control character (C0,
/// DEL, C1: what no trainer's environment or argv can carry), and not only
/// whitespace (one character outside Rust's `char::is_whitespace` set,
/// which is what `trim` removes; the controls among it, `\t`-`\r` and
/// U+0085, are excluded by the first class already).
pub const PLAIN_TEXT: &str = concat!(
    "^[^\\u0000-\\u001f\\u007f-\\u009f]*",
    "[^\\u0000-\\u0020\\u007f-\\u00a0\\u1680\\u2000-\\u200a\\u2028\\u2029\\u202f\\u205f\\u3000]",
    "[^\\u0000-\\u001f\\u007f-\\u009f]*$"
);

/// The schema of a required text field: 1–`max` characters, not only
/// whitespace ([`required_text`]).
pub(super) fn text(max: usize, description: &str) -> utoipa::openapi::schema::Object {
    utoipa::openapi::schema::ObjectBuilder::new()
        .schema_type(utoipa::openapi::schema::Type::String)
        .description(Some(format!(
            "{description} (1–{max} characters, not only whitespace, no control characters)."
        )))
        .min_length(Some(1))
        .max_length(Some(max))
        .pattern(Some(PLAIN_TEXT))
        .build()
}

/// A request field that failed validation (the server answers 422).
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
#[error("{field}: {message}")]
pub struct ValidationError {
    /// Dotted path of the field, e.g. `user_id` or `metrics.loss`.
    pub field: String,
    /// Why it was rejected, as a short phrase.
    pub message: String,
}

impl ValidationError {
    /// A validation error for `field`.
    pub fn new(field: impl Into<String>, message: impl Into<String>) -> Self {
        Self {
            field: field.into(),
            message: message.into(),
        }
    }
}

/// Checks a required string: present, not blank, at most `max` characters.
pub fn required_text(field: &str, value: &str, max: usize) -> Result<(), ValidationError> {
    if value.trim().is_empty() {
        return Err(ValidationError::new(field, "must not be empty"));
    }
    optional_text(field, Some(value), max)
}

/// Checks a required one-line string ([`required_text`]) that also holds
/// no control characters (NUL, other C0 codes, DEL, C1 codes).
///
/// Such values end up in a trainer's environment and argv, where a NUL
/// cannot be passed at all and the others garble logs and terminals: a
/// job carrying one could be stored but never launched.
pub fn required_plain_text(field: &str, value: &str, max: usize) -> Result<(), ValidationError> {
    required_text(field, value, max)?;
    match value.chars().find(|c| c.is_control()) {
        Some(c) => Err(ValidationError::new(
            field,
            format!(
                "must not contain control characters (found U+{:04X})",
                u32::from(c)
            ),
        )),
        None => Ok(()),
    }
}

/// Checks an optional string's length in characters (not bytes).
pub fn optional_text(field: &str, value: Option<&str>, max: usize) -> Result<(), ValidationError> {
    match value {
        Some(v) if v.chars().count() > max => Err(ValidationError::new(
            field,
            format!("must be at most {max} characters"),
        )),
        _ => Ok(()),
    }
}

/// Reads a JSON number as an integer, accepting `21` and `21.0` (both are
/// JSON Schema's `integer`) but not `21.5` or anything outside i64.
pub fn integral(field: &str, n: &Number) -> Result<i64, ValidationError> {
    if let Some(i) = n.as_i64() {
        return Ok(i);
    }
    // 2^63: every f64 below it (and at or above -2^63) converts exactly.
    const LIMIT: f64 = 9_223_372_036_854_775_808.0;
    match n.as_f64() {
        Some(f) if f.fract() == 0.0 && (-LIMIT..LIMIT).contains(&f) => Ok(f as i64),
        _ => Err(ValidationError::new(field, "must be an integer")),
    }
}

/// `deserialize_with` for an optional integer field, spelled `3` or `3.0`
/// ([`integral`]); the error names the field through serde's path.
pub fn optional_integer<'de, D>(d: D) -> Result<Option<i64>, D::Error>
where
    D: serde::Deserializer<'de>,
{
    use serde::de::Error;
    let n: Option<Number> = serde::Deserialize::deserialize(d)?;
    n.map(|n| integral("", &n).map_err(|e| D::Error::custom(e.message)))
        .transpose()
}

/// [`optional_integer`] for a field that holds a `u32`.
pub fn optional_u32<'de, D>(d: D) -> Result<Option<u32>, D::Error>
where
    D: serde::Deserializer<'de>,
{
    use serde::de::Error;
    optional_integer(d)?
        .map(|n| u32::try_from(n).map_err(|_| D::Error::custom("must be between 0 and 4294967295")))
        .transpose()
}

/// Rejects non-finite numbers anywhere in a JSON value.
///
/// serde_json cannot produce NaN or infinities from text, but values built
/// from f64 elsewhere can; this keeps the "never store a non-finite number"
/// rule in one checkable place.
pub fn finite_json(field: &str, value: &Value) -> Result<(), ValidationError> {
    match value {
        Value::Number(n) if n.as_f64().is_some_and(|f| !f.is_finite()) => {
            Err(ValidationError::new(field, "must be a finite number"))
        }
        Value::Array(items) => items.iter().try_for_each(|v| finite_json(field, v)),
        Value::Object(map) => map
            .iter()
            .try_for_each(|(k, v)| finite_json(&format!("{field}.{k}"), v)),
        _ => Ok(()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn integers_may_be_spelled_as_floats() {
        let n = |s: &str| serde_json::from_str::<Number>(s).unwrap();
        assert_eq!(integral("f", &n("21")).unwrap(), 21);
        assert_eq!(integral("f", &n("21.0")).unwrap(), 21);
        assert_eq!(integral("f", &n("1e16")).unwrap(), 10_000_000_000_000_000);
        // Needs serde_json's correctly rounded parsing (`float_roundtrip`):
        // its default fast path read this as …675.25, "not an integer".
        assert_eq!(
            integral("f", &n("-1883850357438675.0")).unwrap(),
            -1_883_850_357_438_675
        );
        assert!(integral("f", &n("21.5")).is_err());
        assert!(integral("f", &n("1e19")).is_err());
        assert!(integral("f", &n("18446744073709551615")).is_err());
    }

    #[test]
    fn lengths_count_characters() {
        assert!(required_text("f", &"é".repeat(255), 255).is_ok());
        assert!(required_text("f", &"é".repeat(256), 255).is_err());
        assert!(required_text("f", "   ", 255).is_err());
    }

    #[test]
    fn plain_text_refuses_every_control_character() {
        assert!(required_plain_text("f", "yolo11n é ✓", 255).is_ok());
        for bad in ["a\0b", "a\nb", "a\tb", "a\u{1b}[31m", "a\u{7f}", "a\u{85}"] {
            let e = required_plain_text("f", bad, 255).unwrap_err();
            assert_eq!(e.field, "f");
            assert!(e.message.contains("control characters"), "{bad:?}: {e}");
        }
    }

    #[test]
    fn integral_rejects_fractions() {
        let n = |s: &str| serde_json::from_str::<Number>(s).unwrap();
        assert_eq!(integral("e", &n("21")).unwrap(), 21);
        assert_eq!(integral("e", &n("21.0")).unwrap(), 21);
        assert!(integral("e", &n("21.5")).is_err());
        assert!(integral("e", &n("1e300")).is_err());
    }
}
