//! Webhooks: endpoints that receive a signed JSON event whenever a job
//! changes status, and the worker that delivers them.
//!
//! The events themselves are queued by the database in the transaction
//! that changes the status (the outbox, in each backend's writer), so the
//! callback path only ever writes one row per endpoint and never waits on a
//! receiver. [`deliver::run`] claims due deliveries, signs them (Standard
//! Webhooks), sends them with a timeout and no redirects, and records each
//! attempt, retrying with exponential backoff for up to a day
//! (`WEBHOOK_RETRY_FOR`). A restarted daemon picks up whatever was still
//! pending.

pub mod deliver;
pub mod sign;
pub mod target;

use std::sync::Arc;

use base64::Engine;
use rand::RngCore;
use tokio::sync::Notify;
use uuid::Uuid;

use crate::db::{self, Db, DbError};
use crate::model::webhook::{
    shown_url, CreateWebhook, CreatedWebhook, Delivery, Webhook, WebhookRecord, TEST_EVENT,
};
use crate::model::ValidationError;

/// Why a webhook operation was refused.
#[derive(Debug, thiserror::Error)]
pub enum WebhookError {
    /// No endpoint has this id (404).
    #[error("webhook {0} not found")]
    NotFound(Uuid),
    /// Endpoints from the configuration are changed there (409).
    #[error("webhook {0} comes from the daemon's configuration (WEBHOOKS); change it there")]
    Configured(Uuid),
    /// A field failed validation (422).
    #[error(transparent)]
    Invalid(#[from] ValidationError),
    /// The database failed.
    #[error(transparent)]
    Db(#[from] DbError),
}

/// Delivery settings.
#[derive(Debug, Clone, Copy)]
pub struct WebhookConfig {
    /// Allow loopback, private and link-local targets.
    pub allow_private: bool,
    /// Time one attempt may take.
    pub timeout: std::time::Duration,
    /// The first retry's delay; each later one is four times longer (capped
    /// at four hours) until `max_age` after the event.
    pub retry_base: std::time::Duration,
    /// How long after its event a delivery is retried before giving up
    /// (`WEBHOOK_RETRY_FOR`, a day by default).
    pub max_age: std::time::Duration,
}

/// The webhook service: endpoints over the database, and a wake-up for
/// the delivery worker.
pub struct Webhooks {
    db: Arc<Db>,
    cfg: WebhookConfig,
    wake: Arc<Notify>,
}

impl Webhooks {
    /// A service over `db`.
    pub fn new(db: Arc<Db>, cfg: WebhookConfig) -> Self {
        Self {
            db,
            cfg,
            wake: Arc::new(Notify::new()),
        }
    }

    /// Validates and stores an endpoint, with a fresh signing secret
    /// (returned this once).
    pub async fn add(&self, req: CreateWebhook) -> Result<CreatedWebhook, WebhookError> {
        let rec = self.record(req, "api").await?;
        self.db.add_webhook(rec.clone()).await?;
        Ok(CreatedWebhook {
            webhook: rec.webhook,
            secret: rec.secret,
        })
    }

    /// Replaces the configured endpoints (`WEBHOOKS`) with `list`: each
    /// entry is a [`CreateWebhook`] plus its `secret`.
    pub async fn configure(&self, list: Vec<(CreateWebhook, String)>) -> Result<(), WebhookError> {
        let mut recs = Vec::with_capacity(list.len());
        for (req, secret) in list {
            let mut rec = self.record(req, "config").await?;
            rec.webhook.secret_prefix = secret_prefix(&secret);
            rec.secret = secret;
            recs.push(rec);
        }
        Ok(self.db.replace_webhooks("config", recs).await?)
    }

    async fn record(
        &self,
        req: CreateWebhook,
        source: &str,
    ) -> Result<WebhookRecord, WebhookError> {
        req.validate()?;
        let url = req.url.trim().to_string();
        if let Err(e) = target::check(&url, self.cfg.allow_private).await {
            return Err(ValidationError::new("url", e.to_string()).into());
        }
        let secret = new_secret();
        Ok(WebhookRecord {
            webhook: Webhook {
                id: Uuid::now_v7(),
                url,
                format: req.format,
                events: req.events,
                frameworks: req.frameworks,
                users: req.users,
                source: source.into(),
                secret_prefix: secret_prefix(&secret),
                created_at: db::now(),
            },
            secret,
        })
    }

    /// Every endpoint, as lists show it (see [`shown`]).
    pub async fn list(&self) -> Result<Vec<Webhook>, WebhookError> {
        Ok(self.db.webhooks().await?.into_iter().map(shown).collect())
    }

    /// One endpoint, as lists show it (see [`shown`]).
    pub async fn get(&self, id: Uuid) -> Result<Webhook, WebhookError> {
        Ok(shown(
            self.db
                .webhook(id)
                .await?
                .ok_or(WebhookError::NotFound(id))?,
        ))
    }

    /// Removes an endpoint added over the API, with its deliveries.
    pub async fn remove(&self, id: Uuid) -> Result<(), WebhookError> {
        if self.get(id).await?.source == "config" {
            return Err(WebhookError::Configured(id));
        }
        match self.db.remove_webhook(id).await? {
            true => Ok(()),
            false => Err(WebhookError::NotFound(id)),
        }
    }

    /// Queues a test event to one endpoint and wakes the worker.
    pub async fn test(&self, id: Uuid) -> Result<Delivery, WebhookError> {
        let d = self
            .db
            .enqueue_test_event(id, TEST_EVENT)
            .await?
            .ok_or(WebhookError::NotFound(id))?;
        self.wake.notify_one();
        Ok(d)
    }

    /// The latest deliveries to an endpoint, newest first.
    pub async fn deliveries(&self, id: Uuid, limit: i64) -> Result<Vec<Delivery>, WebhookError> {
        self.get(id).await?;
        Ok(self.db.deliveries(id, limit).await?)
    }
}

/// An endpoint as the API shows it after its create: the secret by its
/// prefix only, the URL cut to its origin and first path segment (it may
/// hold a credential, as Slack's do).
fn shown(rec: WebhookRecord) -> Webhook {
    Webhook {
        url: shown_url(&rec.webhook.url),
        ..rec.webhook
    }
}

/// A Standard Webhooks secret: `whsec_` and 24 random bytes in base64.
fn new_secret() -> String {
    let mut key = [0u8; 24];
    rand::rng().fill_bytes(&mut key);
    format!(
        "whsec_{}",
        base64::engine::general_purpose::STANDARD.encode(key)
    )
}

/// What lists show of a secret.
fn secret_prefix(secret: &str) -> String {
    format!("{}…", secret.chars().take(10).collect::<String>())
}
