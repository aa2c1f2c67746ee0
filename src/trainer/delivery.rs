//! Delivering one report to the daemon: where it goes (from the SPEC §4
//! environment), what each answer means, and patient retries while the
//! daemon is away (restarting, upgrading) — up to `PLATFORM_REPORT_TIMEOUT`
//! since it was last reachable, never forever.

use std::future::Future;
use std::time::{Duration, SystemTime};

use rand::Rng;
use reqwest::StatusCode;
use uuid::Uuid;

use super::outbox::Report;
use crate::client::{Client, ClientError};
use crate::model::JobStatus;

/// The variable that sets how long reports are retried while the daemon is
/// unreachable, in seconds.
pub const TIMEOUT_ENV: &str = "PLATFORM_REPORT_TIMEOUT";
/// How long reports are retried while the daemon is unreachable, unless
/// [`TIMEOUT_ENV`] says otherwise.
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(3600);
/// One request's limit: a daemon that accepted the connection but does not
/// answer counts as unreachable.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(60);
/// First pause between retries; it doubles up to [`MAX_BACKOFF`].
const FIRST_BACKOFF: Duration = Duration::from_millis(200);
/// Longest pause between retries, so a returning daemon hears from its
/// trainers within seconds.
const MAX_BACKOFF: Duration = Duration::from_secs(5);

/// Why a report did not go through.
#[derive(Debug, Clone, thiserror::Error)]
pub enum ReportError {
    /// The job already ended (the daemon answered 409): stop training.
    #[error("the job is already {0}; stop training")]
    Ended(JobStatus),
    /// The daemon stayed unreachable for longer than the report timeout.
    #[error("gave up after {waited}s without reaching the platform server ({TIMEOUT_ENV}={limit}): {reason}", waited = .waited.as_secs(), limit = .limit.as_secs())]
    TimedOut {
        /// How long it has been unreachable.
        waited: Duration,
        /// The configured limit.
        limit: Duration,
        /// The last failure, one sentence.
        reason: String,
    },
    /// The daemon refused this report; sending it again cannot help.
    #[error("the platform server rejected a report: {0}")]
    Rejected(String),
    /// The daemon refuses this trainer altogether (wrong token, unknown
    /// job, unusable address).
    #[error("{0}")]
    Refused(String),
}

/// What one attempt says about the next.
pub enum Attempt {
    /// The daemon is away or struggling: try again later.
    Retry(ClientError),
    /// Trying again cannot help.
    Stop(ReportError),
}

impl From<ClientError> for Attempt {
    fn from(e: ClientError) -> Self {
        match e {
            ClientError::Api {
                status,
                job_status: Some(s),
                ..
            } if status == StatusCode::CONFLICT => Attempt::Stop(ReportError::Ended(s)),
            // An answer this client cannot read may be a proxy's error page
            // while the daemon restarts; a retried report is not applied twice.
            e @ ClientError::Protocol { .. } => Attempt::Retry(e),
            e if e.is_transient() => Attempt::Retry(e),
            ClientError::Api { status, detail, .. }
                if matches!(status.as_u16(), 401 | 403 | 404) =>
            {
                Attempt::Stop(ReportError::Refused(detail))
            }
            e @ ClientError::BadUrl(_) => Attempt::Stop(ReportError::Refused(e.to_string())),
            e => Attempt::Stop(ReportError::Rejected(e.to_string())),
        }
    }
}

/// Where a trainer's reports go, read from the trainer environment.
#[derive(Debug, Clone)]
pub struct Endpoint {
    client: Client,
    callback_url: String,
    job_id: Option<Uuid>,
    timeout: Duration,
}

/// A required variable of the trainer contract is missing or unusable.
#[derive(Debug, thiserror::Error)]
pub enum EnvError {
    /// A contract variable is not set.
    #[error("{0} is not set: run this inside a trainer launched by `platform serve` (it sets CALLBACK_URL and CALLBACK_TOKEN)")]
    Missing(&'static str),
    /// The report timeout is not a number of seconds.
    #[error("{TIMEOUT_ENV}={0:?} is not a number of seconds")]
    Timeout(String),
    /// The daemon URL is not usable.
    #[error(transparent)]
    Client(#[from] ClientError),
}

/// Parses a number of seconds (fractions allowed, at least 0).
pub fn parse_timeout(s: &str) -> Result<Duration, String> {
    s.trim()
        .parse::<f64>()
        .ok()
        .filter(|v| v.is_finite() && *v >= 0.0 && *v < 1e12)
        .map(Duration::from_secs_f64)
        .ok_or_else(|| format!("{s:?} is not a number of seconds"))
}

impl Endpoint {
    /// The endpoint from `CALLBACK_URL`, `CALLBACK_TOKEN`, `BACKEND_BASE_URL`,
    /// `JOB_ID` and `PLATFORM_REPORT_TIMEOUT` (`timeout`, when given, wins).
    pub fn from_env(timeout: Option<Duration>) -> Result<Self, EnvError> {
        let var = |k: &'static str| std::env::var(k).ok().filter(|v| !v.is_empty());
        let callback_url = var("CALLBACK_URL").ok_or(EnvError::Missing("CALLBACK_URL"))?;
        // The metrics and artifact endpoints sit next to the callback one.
        let base = var("BACKEND_BASE_URL").unwrap_or_else(|| {
            callback_url
                .split("/api/v1/")
                .next()
                .unwrap_or(&callback_url)
                .to_string()
        });
        let job_id = var("JOB_ID")
            .and_then(|j| Uuid::parse_str(&j).ok())
            .or_else(|| job_in_url(&callback_url));
        let timeout = match (timeout, var(TIMEOUT_ENV)) {
            (Some(t), _) => t,
            (None, Some(v)) => parse_timeout(&v).map_err(|_| EnvError::Timeout(v))?,
            (None, None) => DEFAULT_TIMEOUT,
        };
        Ok(Self::new(
            Client::new(&base, var("CALLBACK_TOKEN"))?,
            callback_url,
            job_id,
            timeout,
        ))
    }

    /// An endpoint from its parts: the daemon's client (with the job's
    /// token), the callback URL, the job id, and how long to retry.
    pub fn new(
        client: Client,
        callback_url: String,
        job_id: Option<Uuid>,
        timeout: Duration,
    ) -> Self {
        Self {
            client,
            callback_url,
            job_id,
            timeout,
        }
    }

    /// The job id (`JOB_ID`, else the one in `CALLBACK_URL`).
    pub fn job_id(&self) -> Option<Uuid> {
        self.job_id
    }

    /// The typed client, with the job's token.
    pub fn client(&self) -> &Client {
        &self.client
    }

    fn require_job(&self) -> Result<Uuid, Attempt> {
        self.job_id.ok_or_else(|| {
            Attempt::Stop(ReportError::Refused(
                "JOB_ID is not set: metric batches and artifacts need it".into(),
            ))
        })
    }

    /// One attempt at delivering `report`.
    pub async fn attempt(&self, report: &Report) -> Result<(), Attempt> {
        let sent = match report {
            Report::Callback(u) => self
                .bounded(self.client.callback_to(&self.callback_url, u))
                .await
                .map(|_| ()),
            Report::Points(b) => {
                let id = self.require_job()?;
                self.bounded(self.client.ingest(id, b)).await.map(|_| ())
            }
        };
        match (sent.map_err(Attempt::from), report) {
            // The job already is where this report would put it (e.g. an
            // earlier `completed` of the same trainer got there first).
            (Err(Attempt::Stop(ReportError::Ended(s))), Report::Callback(u)) if u.status == s => {
                Ok(())
            }
            (r, _) => r,
        }
    }

    /// Runs one request under [`REQUEST_TIMEOUT`].
    pub async fn bounded<T>(
        &self,
        request: impl Future<Output = Result<T, ClientError>>,
    ) -> Result<T, ClientError> {
        tokio::time::timeout(REQUEST_TIMEOUT, request)
            .await
            .unwrap_or_else(|_| {
                Err(ClientError::Unreachable {
                    url: self.client.base().to_string(),
                    reason: format!("no answer within {}s", REQUEST_TIMEOUT.as_secs()),
                })
            })
    }

    /// Delivers `report`, retrying while the daemon is away.
    pub async fn deliver(
        &self,
        report: &Report,
        down_since: &mut Option<SystemTime>,
    ) -> Result<(), ReportError> {
        self.patiently(down_since, || self.attempt(report)).await
    }

    /// Runs `attempt` until it succeeds, stops, or the daemon has been
    /// unreachable since `down_since` for longer than the timeout, pausing
    /// with capped exponential backoff. `down_since` is set on the first
    /// failure of an outage and cleared on success.
    pub async fn patiently<T, F, Fut>(
        &self,
        down_since: &mut Option<SystemTime>,
        mut attempt: F,
    ) -> Result<T, ReportError>
    where
        F: FnMut() -> Fut,
        Fut: Future<Output = Result<T, Attempt>>,
    {
        let mut pause = FIRST_BACKOFF;
        loop {
            match attempt().await {
                Ok(v) => {
                    *down_since = None;
                    return Ok(v);
                }
                Err(Attempt::Stop(e)) => {
                    *down_since = None;
                    return Err(e);
                }
                Err(Attempt::Retry(e)) => {
                    let outage_begins = down_since.is_none();
                    self.give_up_after(down_since, &e)?;
                    if outage_begins {
                        tracing::warn!(error = %e, "the platform server is unreachable; reports stay queued and are retried for up to {}s", self.timeout.as_secs());
                    } else {
                        tracing::debug!(error = %e, "report not delivered; retrying in {pause:?}");
                    }
                    tokio::time::sleep(jittered(pause)).await;
                    pause = (pause * 2).min(MAX_BACKOFF);
                }
            }
        }
    }

    /// Records an outage that `e` shows, and gives up once it has lasted
    /// longer than the timeout.
    pub fn give_up_after(
        &self,
        down_since: &mut Option<SystemTime>,
        e: &ClientError,
    ) -> Result<(), ReportError> {
        let now = SystemTime::now();
        let since = *down_since.get_or_insert(now);
        let waited = now.duration_since(since).unwrap_or_default();
        if waited >= self.timeout {
            return Err(ReportError::TimedOut {
                waited,
                limit: self.timeout,
                reason: e.to_string(),
            });
        }
        Ok(())
    }
}

/// `pause` ± 20 %, so trainers of a restarted daemon do not call in lockstep.
fn jittered(pause: Duration) -> Duration {
    pause.mul_f64(rand::rng().random_range(0.8..1.2))
}

/// The job id in a callback URL (`…/jobs/<id>/callback`).
fn job_in_url(url: &str) -> Option<Uuid> {
    let mut parts = url.trim_end_matches('/').rsplit('/');
    let _callback = parts.next()?;
    Uuid::parse_str(parts.next()?).ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn api(status: u16, job_status: Option<JobStatus>) -> ClientError {
        ClientError::Api {
            status: StatusCode::from_u16(status).unwrap(),
            detail: format!("answer {status}"),
            job_status,
        }
    }

    #[test]
    fn answers_decide_between_retrying_and_stopping() {
        let stop = |e| match Attempt::from(e) {
            Attempt::Stop(r) => Some(r),
            Attempt::Retry(_) => None,
        };
        assert!(matches!(
            stop(api(409, Some(JobStatus::Cancelled))),
            Some(ReportError::Ended(JobStatus::Cancelled))
        ));
        for transient in [500, 502, 503, 429] {
            assert!(stop(api(transient, None)).is_none(), "{transient}");
        }
        let unreachable = ClientError::Unreachable {
            url: "u".into(),
            reason: "connection refused".into(),
        };
        assert!(stop(unreachable).is_none());
        assert!(matches!(
            stop(api(401, None)),
            Some(ReportError::Refused(_))
        ));
        assert!(matches!(
            stop(api(404, None)),
            Some(ReportError::Refused(_))
        ));
        assert!(matches!(
            stop(api(422, None)),
            Some(ReportError::Rejected(_))
        ));
    }

    #[test]
    fn timeouts_parse_as_seconds() {
        assert_eq!(parse_timeout("90"), Ok(Duration::from_secs(90)));
        assert_eq!(parse_timeout("0.5"), Ok(Duration::from_millis(500)));
        assert!(parse_timeout("-1").is_err());
        assert!(parse_timeout("1h").is_err());
        assert!(parse_timeout("inf").is_err());
    }

    #[test]
    fn the_job_id_comes_from_the_callback_url_when_needed() {
        let id = Uuid::now_v7();
        assert_eq!(
            job_in_url(&format!("http://h:1/api/v1/training/jobs/{id}/callback")),
            Some(id)
        );
        assert_eq!(job_in_url("http://h:1/callback"), None);
    }

    #[tokio::test]
    async fn an_outage_is_retried_until_the_timeout_and_no_longer() {
        let ep = Endpoint::new(
            Client::new("http://127.0.0.1:1", None).unwrap(),
            "http://127.0.0.1:1/cb".into(),
            None,
            Duration::from_millis(700),
        );
        let mut down = None;
        let mut tries = 0;
        let r: Result<(), _> = ep
            .patiently(&mut down, || {
                tries += 1;
                async {
                    Err(Attempt::Retry(ClientError::Unreachable {
                        url: "u".into(),
                        reason: "connection refused".into(),
                    }))
                }
            })
            .await;
        assert!(matches!(r, Err(ReportError::TimedOut { .. })), "{r:?}");
        assert!(tries >= 3, "retried with backoff: {tries}");
        assert!(down.is_some(), "the outage is remembered");
        // A success ends the outage.
        let ok = ep.patiently(&mut down, || async { Ok(7) }).await;
        assert_eq!(ok.unwrap(), 7);
        assert!(down.is_none());
    }
}
