//! Wake-ups across replicas sharing one PostgreSQL database
//! (`--leader-election lease`): this replica's committed changes are told
//! to the others, and theirs become events on this replica's hub.
//!
//! Outgoing: the job ids of local events, gathered for up to
//! [`COALESCE`], then one `pg_notify` in autocommit on a pooled connection
//! (never inside the writer's transactions: a pending `NOTIFY` takes a
//! global lock at commit and would serialise them). Incoming: each id
//! becomes [`Event::Touched`], and `*` (too many ids, a queue change, a
//! lagging hub) or a reconnected channel becomes [`Event::Resync`].
//! Payloads are `<replica> <id>,<id>,…` or `<replica> *`; a replica
//! ignores its own. These are wake-ups only: subscribers re-read the
//! database, so a lost notification delays a view, never corrupts one.

use std::collections::HashSet;
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::broadcast::error::RecvError;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;
use uuid::Uuid;

use super::Jobs;
use crate::db::Notice;
use crate::events::Event;

/// How long touched ids are gathered before one notification goes out.
const COALESCE: Duration = Duration::from_millis(50);
/// The pause before a failed notification is sent again.
const RETRY: Duration = Duration::from_millis(500);
/// More ids than this go as `*` (a payload must stay under 8000 bytes).
const MAX_IDS: usize = 150;

/// What is waiting to be told to the other replicas.
#[derive(Default)]
struct Outbox {
    ids: HashSet<Uuid>,
    all: bool,
    /// When it goes out.
    due: Option<Instant>,
}

impl Outbox {
    fn add(&mut self, event: Result<Event, RecvError>) {
        match event {
            Ok(Event::Job(j)) => {
                self.ids.insert(j.id);
            }
            Ok(Event::Metric(m)) => {
                self.ids.insert(m.job_id);
            }
            // Wake-ups from elsewhere are not news for the others.
            Ok(Event::Touched(_) | Event::Resync) | Err(RecvError::Closed) => return,
            Ok(Event::Queue(_)) | Err(RecvError::Lagged(_)) => self.all = true,
        }
        self.due.get_or_insert_with(|| Instant::now() + COALESCE);
    }

    fn payload(&self, replica: &str) -> String {
        if self.all || self.ids.len() > MAX_IDS {
            return format!("{replica} *");
        }
        let ids: Vec<String> = self.ids.iter().map(Uuid::to_string).collect();
        format!("{replica} {}", ids.join(","))
    }
}

/// What a payload from another replica asks of this one; `None` for this
/// replica's own and for anything unreadable.
fn parse(payload: &str, me: &str) -> Option<Vec<Event>> {
    let (from, rest) = payload.split_once(' ')?;
    if from == me {
        return None;
    }
    if rest == "*" {
        return Some(vec![Event::Resync]);
    }
    Some(
        rest.split(',')
            .filter_map(|id| id.parse().ok().map(Event::Touched))
            .collect(),
    )
}

impl Jobs {
    /// Relays wake-ups between this replica (`replica`, a name without
    /// spaces) and the others until `stop`.
    pub async fn relay(self: Arc<Self>, replica: Arc<str>, stop: CancellationToken) {
        let mut local = self.events.subscribe();
        let mut heard = match self.db.listen() {
            Ok(rx) => rx,
            Err(e) => {
                tracing::error!(error = %e, "cannot listen for changes on other replicas");
                return;
            }
        };
        let mut out = Outbox::default();
        loop {
            tokio::select! {
                e = local.recv() => match e {
                    Err(RecvError::Closed) => return,
                    e => out.add(e),
                },
                n = heard.recv() => match n {
                    Some(n) => self.on_notice(n, &replica),
                    None => return,
                },
                _ = sleep_until_opt(out.due) => {
                    match self.db.notify(&out.payload(&replica)).await {
                        Ok(()) => out = Outbox::default(),
                        Err(e) => {
                            tracing::warn!(error = %e, "cannot wake the other replicas; retrying");
                            out.due = Some(Instant::now() + RETRY);
                        }
                    }
                }
                _ = stop.cancelled() => return,
            }
        }
    }

    fn on_notice(&self, notice: Notice, me: &str) {
        let events = match notice {
            Notice::Message(p) => parse(&p, me).unwrap_or_default(),
            Notice::Listening => vec![Event::Resync],
        };
        for e in events {
            // A launch elsewhere may have minted a new token: read it again.
            if let Ok(mut cached) = self.tokens.write() {
                match &e {
                    Event::Touched(id) => {
                        cached.remove(id);
                    }
                    _ => cached.clear(),
                }
            }
            self.events.publish(e);
        }
    }
}

async fn sleep_until_opt(at: Option<Instant>) {
    match at {
        Some(at) => tokio::time::sleep_until(at).await,
        None => std::future::pending().await,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn payloads_name_the_sender_and_ids_or_everything() {
        let id = Uuid::now_v7();
        let mut out = Outbox::default();
        out.ids.insert(id);
        let p = out.payload("a-1");
        assert_eq!(p, format!("a-1 {id}"));
        assert!(parse(&p, "a-1").is_none(), "a replica ignores its own");
        assert!(matches!(parse(&p, "b-2").as_deref(), Some([Event::Touched(x)]) if *x == id));
        out.all = true;
        assert!(matches!(
            parse(&out.payload("a-1"), "b-2").as_deref(),
            Some([Event::Resync])
        ));
        for _ in 0..=MAX_IDS {
            out.ids.insert(Uuid::now_v7());
        }
        out.all = false;
        let big = out.payload("a-1");
        assert!(big.len() < 8000);
        assert_eq!(big, "a-1 *");
    }
}
