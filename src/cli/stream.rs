//! Client side of the daemon's Server-Sent Events: reads a stream, and
//! reconnects with `Last-Event-ID` when it drops, so callers see every
//! event once even across daemon restarts.
//!
//! The event-stream format is parsed here (a few lines of the WHATWG
//! algorithm: `event:`, `data:`, `id:`, comments, blank-line dispatch)
//! rather than with a crate, to keep the dependency tree small.

use std::time::{Duration, Instant};

use bytes::Bytes;
use futures::StreamExt;
use reqwest::{Method, StatusCode};
use serde::Serialize;

use crate::client::{Client, ClientError};

/// No byte for this long (keep-alives come every 10 s) means the
/// connection is dead.
const IDLE: Duration = Duration::from_secs(35);
/// Give up after failing to reconnect for this long.
const GIVE_UP: Duration = Duration::from_secs(120);

/// One dispatched event.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct SseEvent {
    /// The `event:` name (`message` when absent).
    pub event: String,
    /// The `id:` in force for this event, if any.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub id: Option<String>,
    /// The `data:` lines, joined with newlines.
    pub data: String,
}

/// What [`EventStream::next`] yields.
#[derive(Debug)]
pub(crate) enum Item {
    /// An event.
    Event(SseEvent),
    /// The connection dropped; reconnecting (attempt number, reason).
    Reconnecting(u32, String),
}

/// Incremental parser for `text/event-stream` bytes.
#[derive(Debug, Default)]
pub struct Parser {
    buf: Vec<u8>,
    event: String,
    data: Vec<String>,
    last_id: Option<String>,
}

impl Parser {
    /// Feeds bytes; returns the events they complete.
    pub fn feed(&mut self, bytes: &[u8]) -> Vec<SseEvent> {
        self.buf.extend_from_slice(bytes);
        let mut out = Vec::new();
        while let Some(end) = self.buf.iter().position(|b| *b == b'\n' || *b == b'\r') {
            // A CR LF pair is one line ending; a lone CR at the end of the
            // buffer may be the first half of one, so wait for more.
            if self.buf[end] == b'\r' && end + 1 == self.buf.len() {
                break;
            }
            let skip = if self.buf[end] == b'\r' && self.buf.get(end + 1) == Some(&b'\n') {
                2
            } else {
                1
            };
            let line: Vec<u8> = self.buf.drain(..end + skip).take(end).collect();
            if let Some(e) = self.line(&String::from_utf8_lossy(&line)) {
                out.push(e);
            }
        }
        out
    }

    fn line(&mut self, line: &str) -> Option<SseEvent> {
        if line.is_empty() {
            let event = std::mem::take(&mut self.event);
            let data = std::mem::take(&mut self.data);
            if data.is_empty() {
                return None;
            }
            return Some(SseEvent {
                event: if event.is_empty() {
                    "message".into()
                } else {
                    event
                },
                id: self.last_id.clone(),
                data: data.join("\n"),
            });
        }
        if line.starts_with(':') {
            return None;
        }
        let (field, value) = line.split_once(':').unwrap_or((line, ""));
        let value = value.strip_prefix(' ').unwrap_or(value);
        match field {
            "event" => self.event = value.to_string(),
            "data" => self.data.push(value.to_string()),
            "id" if !value.contains('\0') => self.last_id = Some(value.to_string()),
            _ => {}
        }
        None
    }

    /// The last `id:` seen.
    pub fn last_id(&self) -> Option<&str> {
        self.last_id.as_deref()
    }
}

type Body = futures::stream::BoxStream<'static, reqwest::Result<Bytes>>;

/// A resumable event stream at one path of the daemon.
pub(crate) struct EventStream {
    client: Client,
    path: String,
    parser: Parser,
    body: Option<Body>,
    ready: std::collections::VecDeque<SseEvent>,
    failing_since: Option<Instant>,
    attempts: u32,
    connected_once: bool,
}

impl EventStream {
    /// A stream of `path` (e.g. `/api/v1/training/jobs/ID/events`), resuming
    /// after `last_id` when given.
    pub fn new(client: &Client, path: impl Into<String>, last_id: Option<String>) -> Self {
        let parser = Parser {
            last_id,
            ..Parser::default()
        };
        EventStream {
            client: client.clone(),
            path: path.into(),
            parser,
            body: None,
            ready: Default::default(),
            failing_since: None,
            attempts: 0,
            connected_once: false,
        }
    }

    /// The next event, or a note that the stream is reconnecting. `Ok(None)`
    /// means the server said there is nothing more (204 on resume).
    /// Errors are final: the server refused (4xx) or stayed unreachable.
    pub async fn next(&mut self) -> Result<Option<Item>, ClientError> {
        loop {
            if let Some(e) = self.ready.pop_front() {
                return Ok(Some(Item::Event(e)));
            }
            let Some(body) = self.body.as_mut() else {
                match self.connect().await? {
                    Some(true) => continue,
                    Some(false) => return Ok(None),
                    None => return self.retry("cannot reconnect".into()).await.map(Some),
                }
            };
            match tokio::time::timeout(IDLE, body.next()).await {
                Ok(Some(Ok(chunk))) => {
                    self.failing_since = None;
                    self.attempts = 0;
                    self.ready.extend(self.parser.feed(&chunk));
                }
                Ok(Some(Err(e))) => {
                    self.body = None;
                    return self.retry(format!("the stream broke: {e}")).await.map(Some);
                }
                Ok(None) => {
                    self.body = None;
                    return self
                        .retry("the server closed the stream".into())
                        .await
                        .map(Some);
                }
                Err(_) => {
                    self.body = None;
                    return self.retry("no data for too long".into()).await.map(Some);
                }
            }
        }
    }

    /// Opens the connection: `Some(true)` when streaming, `Some(false)` for
    /// 204 (nothing more to come), `None` for a failure worth retrying.
    /// The server refusing, or never answering at all, is final.
    async fn connect(&mut self) -> Result<Option<bool>, ClientError> {
        let mut rb = self
            .client
            .request(Method::GET, &self.path)
            .header(reqwest::header::ACCEPT, "text/event-stream");
        if let Some(id) = self.parser.last_id() {
            rb = rb.header("Last-Event-ID", id);
        }
        match self.client.send(rb).await {
            Ok(resp) if resp.status() == StatusCode::NO_CONTENT => Ok(Some(false)),
            Ok(resp) => {
                self.connected_once = true;
                self.body = Some(resp.bytes_stream().boxed());
                // A partial event from a dropped connection is discarded.
                self.parser = Parser {
                    last_id: self.parser.last_id.take(),
                    ..Parser::default()
                };
                Ok(Some(true))
            }
            Err(e) if !e.is_transient() || !self.connected_once => Err(e),
            Err(e) => {
                tracing::debug!(error = %e, "reconnecting the event stream failed");
                Ok(None)
            }
        }
    }

    /// Waits before the next attempt, or fails for good.
    async fn retry(&mut self, reason: String) -> Result<Item, ClientError> {
        let since = *self.failing_since.get_or_insert_with(Instant::now);
        if since.elapsed() > GIVE_UP {
            return Err(ClientError::Unreachable {
                url: self.client.base().to_string(),
                reason: format!(
                    "the event stream stayed down for {}s ({reason})",
                    GIVE_UP.as_secs()
                ),
            });
        }
        self.attempts += 1;
        let backoff = Duration::from_millis(250 * 2u64.pow(self.attempts.min(4)));
        tokio::time::sleep(backoff).await;
        Ok(Item::Reconnecting(self.attempts, reason))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_fields_comments_and_split_chunks() {
        let mut p = Parser::default();
        assert!(p.feed(b": keep-alive\n\n").is_empty());
        let mut got = p.feed(b"data: {\"a\":1}\nevent: job\nid: m1-j2\r");
        assert!(got.is_empty());
        got.extend(p.feed(b"\n\r\ndata: x\ndata:y\n"));
        got.extend(p.feed(b"\n"));
        assert_eq!(got.len(), 2);
        assert_eq!(got[0].event, "job");
        assert_eq!(got[0].data, "{\"a\":1}");
        assert_eq!(got[0].id.as_deref(), Some("m1-j2"));
        assert_eq!(got[1].event, "message");
        assert_eq!(got[1].data, "x\ny");
        assert_eq!(got[1].id.as_deref(), Some("m1-j2"), "the id stays in force");
        assert_eq!(p.last_id(), Some("m1-j2"));
    }
}
