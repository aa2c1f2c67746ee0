//! The SQL of replica coordination (`db/coord.rs`): the leader lease as one
//! upsert on the database's clock, and the wake-up channel, sent with
//! `pg_notify` on a pooled connection and heard on a dedicated one.

use std::time::Duration;

use tokio::sync::mpsc;
use tokio_postgres::AsyncMessage;

use super::{config, describe, fail, text, tls, Postgres};
use crate::db::coord::Notice;
use crate::db::url::PgUrl;
use crate::db::DbError;

/// The `LISTEN`/`NOTIFY` channel of every replica.
const CHANNEL: &str = "platform";
/// How often the listening connection proves it is alive (a server gone
/// without closing the socket would otherwise leave it waiting forever).
const PING_EVERY: Duration = Duration::from_secs(10);
const PING_TIMEOUT: Duration = Duration::from_secs(5);
/// The pause before reconnecting a lost listening connection.
const RECONNECT_PAUSE: Duration = Duration::from_secs(1);

/// Takes a free or expired lease, or renews the holder's own, in one
/// statement: a row back (the epoch) means the caller holds it. The epoch
/// grows only when the holder changes. Times are the server's (`now()`),
/// so replicas with skewed clocks agree.
const ACQUIRE: &str = "
INSERT INTO leases (name, holder, epoch, expires_at)
VALUES ($1, $2, 1, now() + make_interval(secs => $3))
ON CONFLICT (name) DO UPDATE
   SET holder = EXCLUDED.holder,
       epoch = CASE WHEN leases.holder = EXCLUDED.holder THEN leases.epoch ELSE leases.epoch + 1 END,
       expires_at = EXCLUDED.expires_at
 WHERE leases.holder = EXCLUDED.holder OR leases.expires_at < now()
RETURNING epoch";

const RELEASE: &str =
    "UPDATE leases SET expires_at = now() WHERE name = $1 AND holder = $2 AND expires_at > now()";

impl Postgres {
    pub(in crate::db) async fn acquire_lease(
        &self,
        name: &str,
        holder: &str,
        ttl: Duration,
    ) -> Result<Option<i64>, DbError> {
        let c = self.client().await?;
        let stmt = c.prepare_cached(ACQUIRE).await.map_err(fail)?;
        let row = c
            .query_opt(&stmt, &[&text(name), &text(holder), &ttl.as_secs_f64()])
            .await
            .map_err(fail)?;
        row.map(|r| super::col::<i64>(&r, 0)).transpose()
    }

    pub(in crate::db) async fn release_lease(
        &self,
        name: &str,
        holder: &str,
    ) -> Result<(), DbError> {
        let c = self.client().await?;
        let stmt = c.prepare_cached(RELEASE).await.map_err(fail)?;
        c.execute(&stmt, &[&text(name), &text(holder)])
            .await
            .map_err(fail)?;
        Ok(())
    }

    pub(in crate::db) async fn notify(&self, payload: &str) -> Result<(), DbError> {
        let c = self.client().await?;
        let stmt = c
            .prepare_cached("SELECT pg_notify($1, $2)")
            .await
            .map_err(fail)?;
        c.execute(&stmt, &[&CHANNEL, &text(payload)])
            .await
            .map_err(fail)?;
        Ok(())
    }

    pub(in crate::db) fn listen(&self) -> mpsc::Receiver<Notice> {
        let (tx, rx) = mpsc::channel(1024);
        tokio::spawn(listen_loop(self.url.clone(), tx));
        rx
    }
}

/// Keeps a listening connection until the receiver is dropped.
async fn listen_loop(url: PgUrl, tx: mpsc::Sender<Notice>) {
    loop {
        let lost = tokio::select! {
            r = listen_once(&url, &tx) => r,
            _ = tx.closed() => return,
        };
        match lost {
            // The receiver is gone: nobody listens any more.
            None => return,
            Some(why) => tracing::warn!(
                reason = %why,
                "the wake-up channel from other replicas is down; reconnecting"
            ),
        }
        tokio::select! {
            _ = tokio::time::sleep(RECONNECT_PAUSE) => {}
            _ = tx.closed() => return,
        }
    }
}

/// One listening connection: forwards what it hears until it fails (why)
/// or the receiver is gone (`None`).
async fn listen_once(url: &PgUrl, tx: &mpsc::Sender<Notice>) -> Option<String> {
    let tls = match tls::connector(url) {
        Ok(t) => t,
        Err(e) => return Some(e.to_string()),
    };
    let (client, mut conn) = match config(url).connect(tls).await {
        Ok(c) => c,
        Err(e) => return Some(describe(&e)),
    };
    // The connection must be polled for queries to progress and for
    // notifications to arrive: its own task does both.
    let (heard, mut hearing) = mpsc::unbounded_channel::<Result<String, String>>();
    let driver = tokio::spawn(async move {
        loop {
            let next = std::future::poll_fn(|cx| conn.poll_message(cx)).await;
            let item = match next {
                Some(Ok(AsyncMessage::Notification(n))) => Ok(n.payload().to_string()),
                Some(Ok(_)) => continue,
                Some(Err(e)) => Err(describe(&e)),
                None => Err("the server closed the connection".to_string()),
            };
            let failed = item.is_err();
            if heard.send(item).is_err() || failed {
                return;
            }
        }
    });
    let _driver = AbortOnDrop(driver);
    if let Err(e) = client.batch_execute(&format!("LISTEN {CHANNEL}")).await {
        return Some(describe(&e));
    }
    tx.send(Notice::Listening).await.ok()?;
    let mut ping = tokio::time::interval(PING_EVERY);
    ping.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            m = hearing.recv() => match m {
                Some(Ok(payload)) => tx.send(Notice::Message(payload)).await.ok()?,
                Some(Err(why)) => return Some(why),
                None => return Some("the connection ended".into()),
            },
            _ = ping.tick() => {
                match tokio::time::timeout(PING_TIMEOUT, client.simple_query("SELECT 1")).await {
                    Ok(Ok(_)) => {}
                    Ok(Err(e)) => return Some(describe(&e)),
                    Err(_) => return Some(format!("no answer to a ping within {}s", PING_TIMEOUT.as_secs())),
                }
            }
        }
    }
}

/// Stops the connection's task with the listener that owns it.
struct AbortOnDrop(tokio::task::JoinHandle<()>);

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        self.0.abort();
    }
}
