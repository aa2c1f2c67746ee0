//! The cap on long-lived responses: event streams (`…/events`) and
//! followed logs (`…/logs?follow=true`) are exempt from the idle timeout,
//! so their number is capped instead (`--max-streams`). Each holds a slot
//! until its body ends; past the cap the request is answered 503 with a
//! `{"detail": …}` that names the setting.
//!
//! [`Held`] is the body wrapper that keeps something alive (a slot, a
//! connection's in-flight mark) exactly as long as the response body.

use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use axum::body::Body;
use axum::extract::{Query, Request, State};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use bytes::Bytes;
use http_body::{Frame, SizeHint};
use serde::Deserialize;
use tokio::sync::Semaphore;

use super::error::ApiError;
use super::AppState;

/// Slots for long-lived responses.
#[derive(Clone)]
pub struct StreamSlots {
    slots: Arc<Semaphore>,
    max: usize,
}

impl StreamSlots {
    /// At most `max` at once.
    pub fn new(max: usize) -> Self {
        StreamSlots {
            slots: Arc::new(Semaphore::new(max)),
            max,
        }
    }
}

/// Event streams: every answer is (or may become) a stream.
pub async fn limit_streams(State(st): State<AppState>, req: Request, next: Next) -> Response {
    with_slot(&st.streams, req, next).await
}

#[derive(Deserialize)]
struct Follow {
    follow: Option<String>,
}

/// The logs route: only `follow=true` is long-lived.
pub async fn limit_followed_logs(State(st): State<AppState>, req: Request, next: Next) -> Response {
    let follows = Query::<Follow>::try_from_uri(req.uri())
        .ok()
        .and_then(|Query(f)| f.follow)
        .is_some_and(|f| f == "true");
    if !follows {
        return next.run(req).await;
    }
    with_slot(&st.streams, req, next).await
}

async fn with_slot(streams: &StreamSlots, req: Request, next: Next) -> Response {
    let Ok(slot) = streams.slots.clone().try_acquire_owned() else {
        metrics::counter!("platform_streams_refused_total").increment(1);
        return ApiError::Unavailable(format!(
            "too many live streams: this server serves at most {} event streams and followed logs at once (MAX_STREAMS); try again later",
            streams.max
        ))
        .into_response();
    };
    next.run(req)
        .await
        .map(|body| Held::new(body, slot).into_body())
}

/// A response body that keeps `G` alive until the body is dropped (sent,
/// or abandoned by a client that went away).
pub struct Held<G> {
    body: Body,
    _guard: G,
}

impl<G: Send + Unpin + 'static> Held<G> {
    /// `body`, holding `guard`.
    pub fn new(body: Body, guard: G) -> Self {
        Held {
            body,
            _guard: guard,
        }
    }

    /// As an axum body.
    pub fn into_body(self) -> Body {
        Body::new(self)
    }
}

impl<G: Unpin> http_body::Body for Held<G> {
    type Data = Bytes;
    type Error = axum::Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, axum::Error>>> {
        Pin::new(&mut self.body).poll_frame(cx)
    }

    fn is_end_stream(&self) -> bool {
        self.body.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.body.size_hint()
    }
}
