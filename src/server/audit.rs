//! The audit trail of the HTTP API: every state-changing request on a user
//! route (anything but GET, HEAD and OPTIONS that passed the token check)
//! is recorded with who (user, token name), what (method, path, status),
//! when and from where; not one the server failed (5xx: nothing changed,
//! and the log has it). Job creation and cancellation record their entry
//! inside the job's own write ([`crate::jobs`]) and mark the response
//! [`Audited`]; everything else is recorded by [`record`] right after the
//! handler answered.

use axum::extract::{FromRequestParts, OriginalUri, Request, State};
use axum::http::request::Parts;
use axum::http::Method;
use axum::middleware::Next;
use axum::response::Response;

use super::AppState;
use crate::model::{AuditEntry, Principal};

/// A response extension: the handler stored the audit entry itself.
#[derive(Debug, Clone, Copy)]
pub struct Audited;

/// The audit entry of this request, as far as it is known before the
/// handler runs (the status is filled in by whoever stores it).
#[derive(Debug, Clone)]
pub struct Draft(pub AuditEntry);

impl Draft {
    /// The entry for a change to `target` answered with `status`.
    pub fn finish(self, target: impl ToString, status: u16) -> AuditEntry {
        AuditEntry {
            target: Some(target.to_string()),
            status,
            ..self.0
        }
    }
}

impl<S: Send + Sync> FromRequestParts<S> for Draft {
    type Rejection = std::convert::Infallible;

    async fn from_request_parts(parts: &mut Parts, _: &S) -> Result<Self, Self::Rejection> {
        Ok(Draft(draft(parts)))
    }
}

fn draft(parts: &Parts) -> AuditEntry {
    let principal = parts.extensions.get::<Principal>();
    AuditEntry {
        id: 0,
        at: crate::db::now(),
        user: principal.and_then(|p| p.user.clone()),
        token: principal.and_then(|p| p.token.clone()),
        method: parts.method.to_string(),
        // Nested routers see their path without the prefix.
        path: parts
            .extensions
            .get::<OriginalUri>()
            .map_or(&parts.uri, |o| &o.0)
            .path()
            .to_string(),
        target: None,
        status: 0,
        remote: super::auth::client_ip(&parts.extensions).map(|ip| ip.to_string()),
        request_id: parts
            .headers
            .get("x-request-id")
            .and_then(|v| v.to_str().ok())
            .map(str::to_string),
    }
}

/// Middleware (inside the token check): records state-changing requests
/// the handler did not record itself.
pub async fn record(State(st): State<AppState>, req: Request, next: Next) -> Response {
    if matches!(*req.method(), Method::GET | Method::HEAD | Method::OPTIONS) {
        return next.run(req).await;
    }
    let (parts, body) = req.into_parts();
    let mut entry = draft(&parts);
    let resp = next.run(Request::from_parts(parts, body)).await;
    // A 5xx changed nothing and says the server failed (the log has it);
    // writing after a full disk would also hide that from /health.
    if resp.extensions().get::<Audited>().is_none() && !resp.status().is_server_error() {
        entry.status = resp.status().as_u16();
        if let Err(e) = st.users.record(entry).await {
            tracing::error!(error = %e, "cannot record an audit entry");
        }
    }
    resp
}
