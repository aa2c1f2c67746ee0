//! What a person attaches to a job to find and compare it later: `tags`
//! (key=value), a free-text `note`, a readable `name`, and the sweep it
//! belongs to. Set at create, tags and note editable later (`PATCH`).

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};
use utoipa::ToSchema;
use uuid::Uuid;

use super::validate::ValidationError;

/// Most tags on one job.
pub const MAX_TAGS: usize = 32;
/// Longest tag key, in characters.
pub const MAX_TAG_KEY: usize = 63;
/// Longest tag value, in characters.
pub const MAX_TAG_VALUE: usize = 255;
/// Longest note, in characters.
pub const MAX_NOTE: usize = 4096;
/// Longest job name, in characters.
pub const MAX_JOB_NAME: usize = 255;

/// A tag key's pattern (OpenAPI): what [`check_tag_key`] accepts.
pub const TAG_KEY: &str = "^[A-Za-z0-9][A-Za-z0-9._/-]{0,62}$";
/// A tag value's pattern (OpenAPI): no control character (Rust's
/// `char::is_control`: C0, DEL, C1), at most [`MAX_TAG_VALUE`] of them.
const TAG_VALUE: &str = "^[^\\u0000-\\u001f\\u007f-\\u009f]{0,255}$";
/// A `?tag=KEY=VALUE` filter's pattern (OpenAPI): what [`parse_tag`] accepts.
pub const TAG_FILTER: &str =
    "^[A-Za-z0-9][A-Za-z0-9._/-]{0,62}=[^\\u0000-\\u001f\\u007f-\\u009f]{0,255}$";

/// The schema of a tag map: keys and values as [`check_tags`] checks them,
/// at most [`MAX_TAGS`]; in a `PATCH` (`nullable_values`) a null deletes.
fn tag_map(nullable_values: bool) -> utoipa::openapi::schema::Object {
    use utoipa::openapi::schema::{ObjectBuilder, SchemaType, Type};
    let value_type = if nullable_values {
        SchemaType::from_iter([Type::String, Type::Null])
    } else {
        SchemaType::new(Type::String)
    };
    ObjectBuilder::new()
        .schema_type(Type::Object)
        .max_properties(Some(MAX_TAGS))
        .property_names(Some(
            ObjectBuilder::new()
                .schema_type(Type::String)
                .pattern(Some(TAG_KEY)),
        ))
        .additional_properties(Some(
            ObjectBuilder::new()
                .schema_type(value_type)
                .max_length(Some(MAX_TAG_VALUE))
                .pattern(Some(TAG_VALUE)),
        ))
        .build()
}

/// [`tag_map`] for a create.
pub fn tags_schema() -> utoipa::openapi::schema::Object {
    tag_map(false)
}

/// [`tag_map`] for a `PATCH`: a null value deletes the key.
pub fn tag_patch_schema() -> utoipa::openapi::schema::Object {
    tag_map(true)
}

/// The schema of a create's `name`: plain text, or null.
fn name_schema() -> utoipa::openapi::schema::Object {
    let mut o = super::validate::text(MAX_JOB_NAME, "A readable name for the job");
    o.schema_type = utoipa::openapi::schema::SchemaType::from_iter([
        utoipa::openapi::schema::Type::String,
        utoipa::openapi::schema::Type::Null,
    ]);
    o
}

/// The schema of a `note`: free text without control characters other
/// than newlines and tabs ([`check_note`]), or null.
pub fn note_schema() -> utoipa::openapi::schema::Object {
    use utoipa::openapi::schema::{ObjectBuilder, SchemaType, Type};
    ObjectBuilder::new()
        .schema_type(SchemaType::from_iter([Type::String, Type::Null]))
        .description(Some(format!(
            "Free-text note, at most {MAX_NOTE} characters (lines and tabs allowed, no other control characters); an empty one is no note."
        )))
        .max_length(Some(MAX_NOTE))
        .pattern(Some(
            "^[^\\u0000-\\u0008\\u000b-\\u001f\\u007f-\\u009f]*$",
        ))
        .build()
}

/// The labels of a stored job, as the API returns them.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct Labels {
    /// Key=value tags (`{}` when none).
    #[serde(default)]
    pub tags: BTreeMap<String, String>,
    /// Free-text note, or null.
    #[serde(default)]
    pub note: Option<String>,
    /// A readable name, e.g. `lr=0.001,batch=32` for a sweep's job; null
    /// for an ordinary job created without one.
    #[serde(default)]
    pub name: Option<String>,
    /// The sweep that created the job, or null.
    #[serde(default)]
    pub sweep_id: Option<Uuid>,
}

/// The labels a create may set (all optional; left out of the request's
/// JSON when empty, so old requests keep their idempotency fingerprint).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct NewLabels {
    /// Key=value tags: at most 32; keys 1–63 letters, digits, `-`, `_`,
    /// `.` or `/`, starting with a letter or digit; values at most 255
    /// characters without control characters.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    #[schema(schema_with = tags_schema)]
    pub tags: BTreeMap<String, String>,
    /// Free-text note, at most 4096 characters.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schema(schema_with = note_schema)]
    pub note: Option<String>,
    /// A readable name for the job, at most 255 characters.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schema(schema_with = name_schema)]
    pub name: Option<String>,
}

impl NewLabels {
    /// Checks every bound.
    pub fn validate(&self) -> Result<(), ValidationError> {
        check_tags(
            self.tags
                .iter()
                .map(|(k, v)| (k.as_str(), Some(v.as_str()))),
        )?;
        if self.tags.len() > MAX_TAGS {
            return Err(too_many_tags());
        }
        if let Some(n) = &self.note {
            check_note(n)?;
        }
        if let Some(n) = &self.name {
            super::validate::required_plain_text("name", n, MAX_JOB_NAME)?;
        }
        Ok(())
    }

    /// The labels a new job stores.
    pub fn stored(&self, sweep_id: Option<Uuid>) -> Labels {
        Labels {
            tags: self.tags.clone(),
            note: self.note.clone().filter(|n| !n.is_empty()),
            name: self.name.clone(),
            sweep_id,
        }
    }
}

fn too_many_tags() -> ValidationError {
    ValidationError::new("tags", format!("at most {MAX_TAGS} tags per job"))
}

/// Checks tag keys and (where given) values.
pub fn check_tags<'a>(
    tags: impl IntoIterator<Item = (&'a str, Option<&'a str>)>,
) -> Result<(), ValidationError> {
    for (k, v) in tags {
        check_tag_key(k)?;
        if let Some(v) = v {
            let field = format!("tags.{k}");
            super::validate::optional_text(&field, Some(v), MAX_TAG_VALUE)?;
            if let Some(c) = v.chars().find(|c| c.is_control()) {
                return Err(ValidationError::new(
                    field,
                    format!(
                        "must not contain control characters (found U+{:04X})",
                        u32::from(c)
                    ),
                ));
            }
        }
    }
    Ok(())
}

/// Tag keys look like label keys: 1–63 of letters, digits, `-_./`,
/// starting with a letter or digit.
pub fn check_tag_key(k: &str) -> Result<(), ValidationError> {
    let ok = !k.is_empty()
        && k.chars().count() <= MAX_TAG_KEY
        && k.chars().next().is_some_and(|c| c.is_ascii_alphanumeric())
        && k.chars()
            .all(|c| c.is_ascii_alphanumeric() || "-_./".contains(c));
    if ok {
        Ok(())
    } else {
        Err(ValidationError::new(
            "tags",
            format!("{k:?} is not a tag key: 1-{MAX_TAG_KEY} letters, digits, '-', '_', '.' or '/', starting with a letter or digit"),
        ))
    }
}

/// Notes are free text (lines and tabs allowed) up to [`MAX_NOTE`].
pub fn check_note(note: &str) -> Result<(), ValidationError> {
    super::validate::optional_text("note", Some(note), MAX_NOTE)?;
    match note
        .chars()
        .find(|c| c.is_control() && *c != '\n' && *c != '\t')
    {
        Some(c) => Err(ValidationError::new(
            "note",
            format!(
                "must not contain control characters other than newlines and tabs (found U+{:04X})",
                u32::from(c)
            ),
        )),
        None => Ok(()),
    }
}

/// Applies a `PATCH`'s tag changes (a null value deletes the key) and
/// note (an empty one clears it) to `labels`; checks the result's bounds.
pub fn apply_patch(
    labels: &mut Labels,
    tags: Option<&BTreeMap<String, Option<String>>>,
    note: Option<&str>,
) -> Result<(), ValidationError> {
    if let Some(tags) = tags {
        for (k, v) in tags {
            match v {
                Some(v) => labels.tags.insert(k.clone(), v.clone()),
                None => labels.tags.remove(k),
            };
        }
        if labels.tags.len() > MAX_TAGS {
            return Err(too_many_tags());
        }
    }
    if let Some(n) = note {
        labels.note = (!n.is_empty()).then(|| n.to_string());
    }
    Ok(())
}

/// Parses a `key=value` tag filter or assignment (`?tag=k=v`, `--tag k=v`).
pub fn parse_tag(s: &str) -> Result<(String, String), ValidationError> {
    let (k, v) = s.split_once('=').ok_or_else(|| {
        ValidationError::new("tag", format!("{s:?} is not KEY=VALUE (e.g. team=vision)"))
    })?;
    check_tags([(k, Some(v))]).map_err(|e| ValidationError::new("tag", e.message))?;
    Ok((k.to_string(), v.to_string()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tag_keys_are_like_label_keys() {
        for good in ["team", "a.b/c-d_e", "X1"] {
            assert!(check_tag_key(good).is_ok(), "{good}");
        }
        for bad in ["", "-a", "a b", "a=b", &"k".repeat(64)] {
            assert!(check_tag_key(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn patches_merge_and_delete() {
        let mut l = Labels::default();
        l.tags.insert("a".into(), "1".into());
        l.tags.insert("b".into(), "2".into());
        let patch = BTreeMap::from([("a".to_string(), None), ("c".to_string(), Some("3".into()))]);
        apply_patch(&mut l, Some(&patch), Some("hi")).unwrap();
        assert_eq!(
            l.tags,
            BTreeMap::from([("b".into(), "2".into()), ("c".into(), "3".into())])
        );
        assert_eq!(l.note.as_deref(), Some("hi"));
        apply_patch(&mut l, None, Some("")).unwrap();
        assert_eq!(l.note, None);
    }

    #[test]
    fn tag_filters_need_an_equals_sign() {
        assert_eq!(parse_tag("k=v=w").unwrap(), ("k".into(), "v=w".into()));
        assert!(parse_tag("k").is_err());
        assert!(parse_tag("=v").is_err());
    }

    #[test]
    fn notes_allow_lines_but_not_other_controls() {
        assert!(check_note("line one\nline\ttwo").is_ok());
        assert_eq!(check_note("a\u{1}").unwrap_err().field, "note");
        assert!(check_note(&"x".repeat(MAX_NOTE + 1)).is_err());
    }
}
