//! Turning object_store errors into one readable line each: a missing
//! key is a 404, a full disk under the local store is its own error (507),
//! and everything else says what failed and what to check (unreachable
//! endpoint, missing bucket, rejected credentials), with every credential
//! scrubbed out.

use nix::errno::Errno;

use super::{Backend, Store, StoreError};

impl Store {
    /// Turns a backend error into one readable, redacted sentence.
    pub(super) fn explain(&self, op: &str, e: object_store::Error) -> StoreError {
        if let object_store::Error::NotFound { path, .. } = &e {
            if !self.is_missing_bucket(&e) {
                return StoreError::NotFound(format!("object {:?}", self.key_of(path)));
            }
        }
        if let object_store::Error::AlreadyExists { path, .. } = &e {
            return StoreError::Exists(format!("object {:?}", self.key_of(path)));
        }
        if let Some(clash) = self.path_clash(op, &e) {
            return clash;
        }
        let text = scrub(&self.redact, error_chain(&e));
        let msg = match &self.backend {
            Backend::Local { root } if is_disk_full(&e) => {
                return StoreError::DiskFull(format!(
                    "cannot {op} the local object store at {}: the disk is full; free space on it and try again",
                    root.display()
                ));
            }
            Backend::Local { root } => {
                format!(
                    "cannot {op} the local object store at {}: {text}",
                    root.display()
                )
            }
            Backend::S3 { cfg, .. } => {
                let at = cfg.endpoint.as_deref().unwrap_or("AWS S3");
                let lower = text.to_ascii_lowercase();
                if self.is_missing_bucket(&e) {
                    format!(
                        "bucket {:?} does not exist at {at}: create it or set BUCKET_NAME to an existing bucket",
                        cfg.bucket
                    )
                } else if matches!(
                    e,
                    object_store::Error::PermissionDenied { .. }
                        | object_store::Error::Unauthenticated { .. }
                ) || CREDENTIAL_ERRORS.iter().any(|c| lower.contains(c))
                {
                    format!(
                        "the S3 service at {at} rejected the credentials for bucket {:?} ({}): check AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY",
                        cfg.bucket,
                        s3_code(&text).unwrap_or("access denied")
                    )
                } else if is_connect_error(&e) {
                    format!(
                        "cannot reach the S3 endpoint {at}: {}; check S3_ENDPOINT and that the service is running",
                        crate::errors::root_cause(&e)
                    )
                } else {
                    format!("cannot {op} S3 bucket {:?} at {at}: {text}", cfg.bucket)
                }
            }
        };
        StoreError::Unavailable(msg)
    }

    /// A local-store key that cannot exist because of what is already on
    /// the filesystem: a file where its path needs a folder (or the other
    /// way round), or a name too long. Nothing can be there to read (404);
    /// a write is refused (409, 422), not blamed on the store (503).
    fn path_clash(&self, op: &str, e: &object_store::Error) -> Option<StoreError> {
        if !matches!(self.backend, Backend::Local { .. }) {
            return None;
        }
        let mut cur: Option<&(dyn std::error::Error + 'static)> = Some(e);
        let errno = loop {
            let s = cur?;
            if let Some(code) = s
                .downcast_ref::<std::io::Error>()
                .and_then(std::io::Error::raw_os_error)
            {
                break code;
            }
            cur = s.source();
        };
        let object = "the object".to_string();
        match (Errno::from_raw(errno), op) {
            (Errno::ENOTDIR | Errno::EISDIR | Errno::ENAMETOOLONG, "read") => {
                Some(StoreError::NotFound(object))
            }
            (Errno::ENOTDIR | Errno::EISDIR, _) => Some(StoreError::Clash(object)),
            (Errno::ENAMETOOLONG, _) => {
                Some(StoreError::Invalid(crate::model::ValidationError::new(
                    "path",
                    "the path is too long for the local object store's filesystem",
                )))
            }
            _ => None,
        }
    }

    /// The key in an error's path: the local backend reports the file's
    /// path on the server, which must not reach clients.
    fn key_of<'a>(&self, path: &'a str) -> &'a str {
        match &self.backend {
            Backend::Local { root } => match root.to_str().and_then(|r| path.strip_prefix(r)) {
                Some(key) => key.trim_start_matches('/'),
                // Never the server's path: its last segment at most.
                None => path.rsplit('/').next().unwrap_or_default(),
            },
            Backend::S3 { .. } => path,
        }
    }

    fn is_missing_bucket(&self, e: &object_store::Error) -> bool {
        matches!(self.backend, Backend::S3 { .. })
            && error_chain(e).to_ascii_lowercase().contains("nosuchbucket")
    }
}

/// Lowercased fragments of S3 answers that mean "these credentials do not
/// work here" (status lines and S3 error codes).
const CREDENTIAL_ERRORS: &[&str] = &[
    "403 forbidden",
    "401 unauthorized",
    "invalidaccesskeyid",
    "signaturedoesnotmatch",
    "accessdenied",
    "notsignedup",
    "invalidtoken",
    "expiredtoken",
];

/// Replaces every credential in `text` with `***`.
pub(super) fn scrub(secrets: &[String], mut text: String) -> String {
    for s in secrets {
        if text.contains(s.as_str()) {
            text = text.replace(s.as_str(), "***");
        }
    }
    text
}

/// The error and its sources, joined.
fn error_chain(e: &(dyn std::error::Error + 'static)) -> String {
    let mut text = e.to_string();
    let mut cur = e.source();
    while let Some(s) = cur {
        let t = s.to_string();
        if !text.contains(&t) {
            text.push_str(": ");
            text.push_str(&t);
        }
        cur = s.source();
    }
    text
}

/// Whether an I/O error in the chain is `ENOSPC` (or a quota exceeded,
/// which writes see the same way).
fn is_disk_full(e: &(dyn std::error::Error + 'static)) -> bool {
    let mut cur: Option<&(dyn std::error::Error + 'static)> = Some(e);
    while let Some(s) = cur {
        if let Some(io) = s.downcast_ref::<std::io::Error>() {
            use std::io::ErrorKind::*;
            if matches!(io.kind(), StorageFull | QuotaExceeded) {
                return true;
            }
        }
        cur = s.source();
    }
    false
}

fn is_connect_error(e: &(dyn std::error::Error + 'static)) -> bool {
    let mut cur: Option<&(dyn std::error::Error + 'static)> = Some(e);
    while let Some(s) = cur {
        if let Some(r) = s.downcast_ref::<reqwest::Error>() {
            if r.is_connect() || r.is_timeout() {
                return true;
            }
        }
        if let Some(io) = s.downcast_ref::<std::io::Error>() {
            use std::io::ErrorKind::*;
            if matches!(
                io.kind(),
                ConnectionRefused | ConnectionReset | TimedOut | NotConnected | AddrNotAvailable
            ) {
                return true;
            }
        }
        cur = s.source();
    }
    let lower = error_chain(e).to_ascii_lowercase();
    lower.contains("error sending request")
        || lower.contains("connection refused")
        || lower.contains("dns error")
}

/// The S3 error code in a response body (`<Code>InvalidAccessKeyId</Code>`).
fn s3_code(text: &str) -> Option<&str> {
    let start = text.find("<Code>")? + "<Code>".len();
    let end = text[start..].find("</Code>")? + start;
    Some(&text[start..end])
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::storage::StorageConfig;

    /// The error the local store returns when a write hits `ENOSPC` (the
    /// shape object_store gives it: the io::Error is in the source chain).
    #[test]
    fn enospc_under_the_local_store_is_a_full_disk() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::from_config(&StorageConfig::local(dir.path().join("store"))).unwrap();
        let enospc = || object_store::Error::Generic {
            store: "LocalFileSystem",
            source: Box::new(std::io::Error::from_raw_os_error(28)),
        };
        match store.explain("write to", enospc()) {
            StoreError::DiskFull(m) => assert!(m.contains("the disk is full"), "{m}"),
            other => panic!("expected DiskFull, got {other:?}"),
        }
        let other = object_store::Error::Generic {
            store: "LocalFileSystem",
            source: Box::new(std::io::Error::from_raw_os_error(13)),
        };
        assert!(matches!(
            store.explain("write to", other),
            StoreError::Unavailable(_)
        ));
    }
}
