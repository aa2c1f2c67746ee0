//! What a person types for a job, turned into the job's UUID: the full
//! UUID, a unique prefix of it, or the job's number.
//!
//! The rule for an argument, in order:
//! - a full UUID (any case) is used as it is;
//! - `#N` is job number N;
//! - 1 to [`MAX_NUMBER_DIGITS`] digits without a leading zero are a job
//!   number (`42`). Job ids are UUIDv7, whose first hex digit stays `0`
//!   for millennia, so no id prefix looks like this;
//! - anything else is an id prefix: at least 4 hexadecimal characters
//!   (dashes allowed), which must match exactly one job.
//!
//! An ambiguous prefix is an error that lists the jobs it matches.

use uuid::Uuid;

use super::output;
use crate::client::{Client, ClientError};
use crate::model::{Job, JobListQuery};

/// Longest all-digit argument read as a job number (the rest are prefixes).
pub const MAX_NUMBER_DIGITS: usize = 12;

/// Shortest id prefix accepted.
pub const MIN_PREFIX: usize = 4;

/// Most candidates an ambiguity error lists.
const MAX_CANDIDATES: usize = 10;

/// Which job an argument names, before asking the server.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum JobRef {
    /// A full UUID.
    Id(Uuid),
    /// A job number.
    Number(i64),
    /// A lowercase id prefix.
    Prefix(String),
}

impl JobRef {
    /// Reads an argument by the rule in the module documentation.
    pub fn parse(text: &str) -> Result<JobRef, ResolveError> {
        let text = text.trim();
        let bad = || ResolveError::BadRef(text.to_string());
        if let Ok(id) = Uuid::parse_str(text) {
            return Ok(JobRef::Id(id));
        }
        if let Some(digits) = text.strip_prefix('#') {
            return number(digits).ok_or_else(bad);
        }
        if !text.starts_with('0') && text.len() <= MAX_NUMBER_DIGITS {
            if let Some(n) = number(text) {
                return Ok(n);
            }
        }
        let hex = text.chars().filter(|c| *c != '-').count();
        if hex < MIN_PREFIX || !text.chars().all(|c| c.is_ascii_hexdigit() || c == '-') {
            return Err(bad());
        }
        Ok(JobRef::Prefix(text.to_ascii_lowercase()))
    }
}

/// `N` (digits only, at least 1) as a job number.
fn number(digits: &str) -> Option<JobRef> {
    if digits.is_empty() || !digits.chars().all(|c| c.is_ascii_digit()) {
        return None;
    }
    digits
        .parse::<i64>()
        .ok()
        .filter(|n| *n >= 1)
        .map(JobRef::Number)
}

/// Why an argument did not name exactly one job.
#[derive(Debug, thiserror::Error)]
pub enum ResolveError {
    /// Neither an id, a prefix nor a number.
    #[error("{0:?} is not a job: give a job number (42 or #42), the full id, or a prefix of at least 4 hexadecimal characters")]
    BadRef(String),
    /// No job has this number.
    #[error("there is no job #{0}")]
    NoNumber(i64),
    /// No job id starts with it.
    #[error("no job id starts with {0:?}")]
    NoMatch(String),
    /// Several jobs start with it (at most [`MAX_CANDIDATES`] of them listed).
    #[error("{}", ambiguous(.prefix, .candidates, *.more))]
    Ambiguous {
        /// The prefix.
        prefix: String,
        /// Some of the jobs it matches, newest first.
        candidates: Vec<Job>,
        /// Whether it matches more than those.
        more: bool,
    },
    /// The lookup failed.
    #[error(transparent)]
    Client(#[from] ClientError),
}

/// The ambiguity message: one sentence, then a table of the candidates.
fn ambiguous(prefix: &str, candidates: &[Job], more: bool) -> String {
    let mut t = output::table(&["ID", "UUID", "MODEL", "STATUS", "CREATED"]);
    for j in candidates {
        t.add_row(vec![
            output::job_number(j),
            j.id.to_string(),
            j.model_name.clone(),
            j.status.to_string(),
            output::ago(j.created_at),
        ]);
    }
    let mut text = format!(
        "the prefix {prefix:?} matches more than one job; give more characters or the job number:"
    );
    for line in output::table_lines(&t) {
        text.push_str("\n  ");
        text.push_str(&line);
    }
    if more {
        text.push_str(&format!(
            "\n  … and more (only the newest {MAX_CANDIDATES} are shown)"
        ));
    }
    text
}

/// Resolves `text` (see the module documentation) to a job id. A full
/// UUID is not looked up: the command's own request says whether it exists.
pub async fn job_id(client: &Client, text: &str) -> Result<Uuid, ResolveError> {
    let q = match JobRef::parse(text)? {
        JobRef::Id(id) => return Ok(id),
        JobRef::Number(n) => JobListQuery {
            number: Some(n),
            limit: Some(1),
            ..Default::default()
        },
        JobRef::Prefix(ref p) => JobListQuery {
            id_prefix: Some(p.clone()),
            limit: Some(MAX_CANDIDATES as i64 + 1),
            ..Default::default()
        },
    };
    let mut found = client.list_jobs(&q).await?;
    match (found.len(), q.number, q.id_prefix) {
        (1, _, _) => Ok(found.remove(0).id),
        (0, Some(n), _) => Err(ResolveError::NoNumber(n)),
        (0, None, prefix) => Err(ResolveError::NoMatch(prefix.unwrap_or_default())),
        (_, _, prefix) => {
            let more = found.len() > MAX_CANDIDATES;
            found.truncate(MAX_CANDIDATES);
            Err(ResolveError::Ambiguous {
                prefix: prefix.unwrap_or_default(),
                candidates: found,
                more,
            })
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn numbers_prefixes_and_ids() {
        let id = "019af3c2-7b1e-7c4d-9a57-3f2b8c1d0e9f";
        assert_eq!(
            JobRef::parse(id).unwrap(),
            JobRef::Id(Uuid::parse_str(id).unwrap())
        );
        assert_eq!(
            JobRef::parse(&id.to_uppercase()).unwrap(),
            JobRef::Id(Uuid::parse_str(id).unwrap())
        );
        assert_eq!(JobRef::parse("42").unwrap(), JobRef::Number(42));
        assert_eq!(JobRef::parse("#42").unwrap(), JobRef::Number(42));
        assert_eq!(JobRef::parse("#007").unwrap(), JobRef::Number(7));
        assert_eq!(JobRef::parse("7").unwrap(), JobRef::Number(7));
        assert_eq!(
            JobRef::parse("999999999999").unwrap(),
            JobRef::Number(999_999_999_999)
        );
        // A leading zero, or more digits than a number has: an id prefix.
        assert_eq!(
            JobRef::parse("0190").unwrap(),
            JobRef::Prefix("0190".into())
        );
        assert_eq!(
            JobRef::parse("1234567890123").unwrap(),
            JobRef::Prefix("1234567890123".into())
        );
        assert_eq!(
            JobRef::parse("019AF3C2").unwrap(),
            JobRef::Prefix("019af3c2".into())
        );
        assert_eq!(
            JobRef::parse("019af3c2-7b").unwrap(),
            JobRef::Prefix("019af3c2-7b".into())
        );
        for bad in [
            "", "#", "#0", "#-1", "#4a", "0", "01", "abc", "xyz!", "g000", "--ab-",
        ] {
            assert!(
                matches!(JobRef::parse(bad), Err(ResolveError::BadRef(_))),
                "{bad:?}"
            );
        }
    }
}
