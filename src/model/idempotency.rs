//! The `Idempotency-Key` request header (IETF httpapi draft) on job
//! creation: its names, what a key may be, and the fingerprint of a request
//! body that tells a retry from a different request under the same key.
//! Client and server share it, so the CLI sends only keys the daemon takes.

use serde_json::Value;

use super::job::CreateJob;

/// The request header a client sets to make `POST …/jobs` safe to retry.
pub const IDEMPOTENCY_KEY: &str = "idempotency-key";
/// The response header that marks an answer as a replay of the original.
pub const IDEMPOTENT_REPLAYED: &str = "idempotent-replayed";
/// The longest key accepted, in characters.
pub const MAX_KEY: usize = 255;

/// Why a header value is not a key.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("the Idempotency-Key header must be 1–{MAX_KEY} printable ASCII characters (optionally in double quotes), e.g. a UUID")]
pub struct BadKey;

/// Parses a header value: a bare token (as Stripe sends it) or a
/// Structured Field string in double quotes (as the draft writes it).
pub fn parse_key(raw: &[u8]) -> Result<String, BadKey> {
    let text = std::str::from_utf8(raw).map_err(|_| BadKey)?.trim();
    let key = match text.strip_prefix('"') {
        Some(rest) => rest.strip_suffix('"').ok_or(BadKey)?,
        None => text,
    };
    let printable = key.bytes().all(|b| (0x21..0x7f).contains(&b) && b != b'"');
    if key.is_empty() || key.len() > MAX_KEY || !printable {
        return Err(BadKey);
    }
    Ok(key.to_string())
}

/// The request body in one canonical text: the create fields in a fixed
/// order, object keys sorted at every depth, no whitespace. Two bodies a
/// client means as the same request (keys reordered, spaces) give the same
/// text; any difference in a value does not.
pub fn canonical_body(req: &CreateJob) -> String {
    let v = serde_json::json!({
        "user_id": req.user_id,
        "model_name": req.model_name,
        "framework": req.framework,
        "dataset_s3_uri": req.dataset_s3_uri,
        "config": req.stored_config(),
    });
    let mut out = String::new();
    write_sorted(&v, &mut out);
    out
}

/// Writes `v` with object keys in sorted order whatever map the JSON
/// library keeps (insertion-ordered when a dependency asks for it).
fn write_sorted(v: &Value, out: &mut String) {
    match v {
        Value::Object(m) => {
            let mut keys: Vec<&String> = m.keys().collect();
            keys.sort();
            out.push('{');
            for (i, k) in keys.into_iter().enumerate() {
                if i > 0 {
                    out.push(',');
                }
                out.push_str(&Value::String(k.clone()).to_string());
                out.push(':');
                write_sorted(&m[k], out);
            }
            out.push('}');
        }
        Value::Array(a) => {
            out.push('[');
            for (i, x) in a.iter().enumerate() {
                if i > 0 {
                    out.push(',');
                }
                write_sorted(x, out);
            }
            out.push(']');
        }
        other => out.push_str(&other.to_string()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn req(config: Value) -> CreateJob {
        CreateJob {
            user_id: "u".into(),
            model_name: "m".into(),
            framework: "demo".into(),
            dataset_s3_uri: "s3://b/d/".into(),
            config: Some(config),
            sched: Default::default(),
            labels: Default::default(),
        }
    }

    #[test]
    fn keys_are_tokens_or_quoted_strings() {
        assert_eq!(parse_key(b"abc-123").unwrap(), "abc-123");
        assert_eq!(parse_key(b"\"8e03-x\"").unwrap(), "8e03-x");
        for bad in [
            &b""[..],
            b"\"\"",
            b"a b",
            b"\"open",
            b"caf\xc3\xa9",
            &[b'k'; MAX_KEY + 1],
        ] {
            assert_eq!(parse_key(bad), Err(BadKey), "{bad:?}");
        }
        assert!(parse_key(&[b'k'; MAX_KEY]).is_ok());
    }

    #[test]
    fn the_canonical_body_ignores_key_order_but_not_values() {
        let a = canonical_body(&req(
            serde_json::json!({"b": {"y": 1, "x": [2, {"q": 1, "p": 0}]}, "a": 1}),
        ));
        let b = canonical_body(&req(
            serde_json::json!({"a": 1, "b": {"x": [2, {"p": 0, "q": 1}], "y": 1}}),
        ));
        assert_eq!(a, b);
        assert!(a.contains(r#""b":{"x":[2,{"p":0,"q":1}],"y":1}"#), "{a}");
        let c = canonical_body(&req(
            serde_json::json!({"a": 2, "b": {"x": [2, {"p": 0, "q": 1}], "y": 1}}),
        ));
        assert_ne!(a, c);
        // An empty config is stored (and launched) as none.
        assert_eq!(
            canonical_body(&req(Value::Null)),
            canonical_body(&CreateJob {
                config: None,
                ..req(Value::Null)
            })
        );
    }
}
