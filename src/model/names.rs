//! The rules for dataset names and object paths, shared by client and
//! server: the CLI checks them before uploading or writing a download, and
//! the server before any of them becomes a key in the object store.

use super::ValidationError;

/// Longest dataset name, in characters.
pub const MAX_DATASET_NAME: usize = 128;
/// Longest relative file path, in bytes (S3 keys are at most 1,024 bytes;
/// this leaves room for the `datasets/<name>/` or `jobs/<id>/outputs/` prefix).
pub const MAX_PATH_BYTES: usize = 768;
/// Longest path segment, in bytes: a file name on common filesystems is at
/// most 255 bytes, and the local store writes an upload to `<name>#<n>`
/// before renaming it into place.
pub const MAX_SEGMENT_BYTES: usize = 250;

/// [`dataset_name`]'s rule as an ECMA-262 regular expression, for the
/// OpenAPI document.
pub const DATASET_NAME_PATTERN: &str = r"^[A-Za-z0-9_][A-Za-z0-9._-]{0,127}$";

/// [`relative_path`]'s rule as an ECMA-262 regular expression, for the
/// OpenAPI document: `/`-separated segments of 1–250 characters other than
/// `/`, `\` and control characters, none `.` or `..` or ending in `#` and
/// digits. (The byte limits, 250 per segment and 768 in all, can only be
/// given in characters there; they are the same for ASCII.)
pub const PATH_PATTERN: &str = concat!(
    r"^(?!\.\.?(?:/|$))(?![^/]*#[0-9]+(?:/|$))[^/\\\u0000-\u001f\u007f-\u009f]{1,250}",
    r"(?:/(?!\.\.?(?:/|$))(?![^/]*#[0-9]+(?:/|$))[^/\\\u0000-\u001f\u007f-\u009f]{1,250})*$"
);

/// Checks a dataset name: 1–128 of `A-Z a-z 0-9 . _ -`, not starting with
/// `.` or `-`. Names become one key segment and appear in URIs unescaped.
pub fn dataset_name(name: &str) -> Result<(), ValidationError> {
    let err = |m: &str| Err(ValidationError::new("name", m.to_string()));
    if name.is_empty() {
        return err("the dataset name must not be empty");
    }
    if name.chars().count() > MAX_DATASET_NAME {
        return err(&format!(
            "the dataset name must be at most {MAX_DATASET_NAME} characters"
        ));
    }
    if name.starts_with('.') || name.starts_with('-') {
        return err("the dataset name must not start with '.' or '-'");
    }
    if !name
        .chars()
        .all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-'))
    {
        return err(&format!(
            "invalid dataset name {name:?}: use letters, digits, '.', '_' and '-'"
        ));
    }
    Ok(())
}

/// Checks a relative file path inside a dataset or a job's outputs: `/`
/// separated, no empty, `.` or `..` segments, not absolute, no backslashes,
/// NUL or other control characters, within the length limits. `field`
/// names the offending input in the error.
pub fn relative_path(field: &str, path: &str) -> Result<(), ValidationError> {
    let err = |m: String| Err(ValidationError::new(field, m));
    if path.is_empty() {
        return err("the path must not be empty".into());
    }
    if path.len() > MAX_PATH_BYTES {
        return err(format!("the path must be at most {MAX_PATH_BYTES} bytes"));
    }
    if path.starts_with('/') {
        return err(format!(
            "{path:?} is absolute: give a path relative to the dataset or job"
        ));
    }
    if path.contains('\\') {
        return err(format!(
            "{path:?} contains a backslash: separate directories with '/'"
        ));
    }
    if path.chars().any(char::is_control) {
        return err("the path must not contain control characters (NUL, newlines, …)".into());
    }
    for seg in path.split('/') {
        match seg {
            "" => return err(format!("{path:?} has an empty segment ('//' or a trailing '/')")),
            "." | ".." => {
                return err(format!(
                    "{path:?} contains {seg:?}: paths cannot leave their dataset or job"
                ))
            }
            s if s.len() > MAX_SEGMENT_BYTES => {
                return err(format!(
                    "each path segment must be at most {MAX_SEGMENT_BYTES} bytes"
                ))
            }
            s if is_staging_name(s) => {
                return err(format!(
                    "{s:?} ends in '#' and digits, which the local store reserves for uploads in progress"
                ))
            }
            _ => {}
        }
    }
    Ok(())
}

/// Names like `model.pt#3`: the local store stages multipart uploads there.
fn is_staging_name(seg: &str) -> bool {
    seg.rsplit_once('#')
        .is_some_and(|(_, n)| !n.is_empty() && n.bytes().all(|b| b.is_ascii_digit()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dataset_names() {
        for ok in ["coco128", "COCO_2017.v2", "a", &"x".repeat(128)] {
            assert!(dataset_name(ok).is_ok(), "{ok}");
        }
        for bad in [
            "",
            ".hidden",
            "-x",
            "a/b",
            "a b",
            "..",
            "é",
            &"x".repeat(129),
        ] {
            assert!(dataset_name(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn paths_cannot_escape() {
        for ok in [
            "a.jpg",
            "images/train/0001.jpg",
            "my file (1).txt",
            ".DS_Store",
            "a#b",
            "x#",
            "ü/ß",
        ] {
            assert!(relative_path("path", ok).is_ok(), "{ok}");
        }
        let long_seg = "x".repeat(MAX_SEGMENT_BYTES + 1);
        let long_path = ["y"; 400].join("/");
        for bad in [
            "",
            "/etc/passwd",
            "..",
            "../x",
            "a/../../x",
            "a/./b",
            "a//b",
            "a/",
            "a\\..\\b",
            "C:\\x",
            "a\0b",
            "a\nb",
            "model.pt#3",
            &long_seg,
            &long_path,
        ] {
            assert!(relative_path("path", bad).is_err(), "{bad:?}");
        }
    }
}
