//! The retry policy and its engine: which ends of an attempt are tried
//! again, after how long, and how many times. One engine for both runners
//! (the lifecycle service applies it to every attempt's end).
//!
//! The shape follows Kubernetes' `podFailurePolicy`: ordered rules, the
//! first match wins, each matching exit codes (`in` / `not_in`) or events
//! (`oom`, `vanished`, `evicted`, `stale`, `timeout`); no match fails the
//! job. `retry` counts against `max_attempts`; `retry-uncounted` does not,
//! but no job runs more than [`MAX_TOTAL_ATTEMPTS`] attempts in all.

use std::time::Duration;

use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use super::validate::ValidationError;

/// The most attempts a job ever runs, uncounted retries included: a rule
/// that retries every preemption cannot loop for ever.
pub const MAX_TOTAL_ATTEMPTS: u32 = 20;

/// The most rules one policy may have.
pub const MAX_RULES: usize = 32;

/// The longest backoff pause, in seconds (one day).
pub const MAX_BACKOFF_SECS: f64 = 86_400.0;

/// How a job is retried after an attempt that did not succeed.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct RetryPolicy {
    /// Attempts in all, counted ones (1–20; 1: never retried).
    #[serde(default = "one", deserialize_with = "whole_u32")]
    #[schema(minimum = 1, maximum = 20, default = 1)]
    pub max_attempts: u32,
    /// Pauses between attempts.
    #[serde(default)]
    pub backoff: Backoff,
    /// Ordered rules (at most 32); the first that matches an attempt's end
    /// decides. No match: the job fails.
    #[serde(default)]
    #[schema(max_items = 32)]
    pub rules: Vec<RetryRule>,
}

fn one() -> u32 {
    1
}

/// `3` or `3.0` (both JSON Schema integers) as a `u32`.
fn whole_u32<'de, D>(d: D) -> Result<u32, D::Error>
where
    D: serde::Deserializer<'de>,
{
    use serde::de::Error;
    let n: serde_json::Number = Deserialize::deserialize(d)?;
    super::validate::integral("", &n)
        .ok()
        .and_then(|n| u32::try_from(n).ok())
        .ok_or_else(|| D::Error::custom("must be a whole number between 1 and 20"))
}

/// Pauses between attempts: `initial`, then multiplied by `factor` after
/// each retry, never over `max` (seconds; fractions allowed).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct Backoff {
    /// The first pause, in seconds (default 10).
    #[serde(default = "ten")]
    #[schema(minimum = 0, maximum = 86400, default = 10)]
    pub initial: f64,
    /// Growth per retry (1–10, default 2).
    #[serde(default = "two")]
    #[schema(minimum = 1, maximum = 10, default = 2)]
    pub factor: f64,
    /// The longest pause, in seconds (default 600).
    #[serde(default = "six_hundred")]
    #[schema(minimum = 0, maximum = 86400, default = 600)]
    pub max: f64,
}

fn ten() -> f64 {
    10.0
}
fn two() -> f64 {
    2.0
}
fn six_hundred() -> f64 {
    600.0
}

impl Default for Backoff {
    fn default() -> Self {
        Self {
            initial: ten(),
            factor: two(),
            max: six_hundred(),
        }
    }
}

/// One rule: what it matches and what it does. It matches an attempt
/// whose exit code is among `exit_codes` or whose event is among `events`
/// (a rule with neither matches nothing).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct RetryRule {
    /// Exit codes: a list (`[3, 4]`, the same as `{"in": [3, 4]}`) or
    /// `{"not_in": [0, 2]}`. A trainer killed by signal N has code -N.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub exit_codes: Option<ExitCodes>,
    /// Events that ended the attempt.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub events: Option<Vec<AttemptEvent>>,
    /// What to do on a match.
    pub action: RetryAction,
}

/// Exit codes a rule matches.
#[derive(Debug, Clone, PartialEq, Serialize, ToSchema)]
#[serde(untagged)]
pub enum ExitCodes {
    /// These codes (the same as `{"in": […]}`).
    List(Vec<i32>),
    /// `{"in": […]}` or `{"not_in": […]}`.
    Set(ExitCodeSet),
}

/// `in` and/or `not_in`.
#[derive(Debug, Clone, PartialEq, Serialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ExitCodeSet {
    /// Matches these codes.
    #[serde(default, rename = "in", skip_serializing_if = "Option::is_none")]
    pub in_: Option<Vec<i32>>,
    /// Matches every code but these.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub not_in: Option<Vec<i32>>,
}

/// Read by hand: only a list of integers, or an object with `in` and/or
/// `not_in` lists (a derived untagged enum would also take a struct from a
/// list, e.g. `[null, null]`). Whole floats (`3.0`) are integers.
impl<'de> Deserialize<'de> for ExitCodes {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        use serde::de::Error;
        fn codes<E: Error>(v: &serde_json::Value) -> Result<Vec<i32>, E> {
            let items = v
                .as_array()
                .ok_or_else(|| E::custom("expected a list of exit codes"))?;
            items
                .iter()
                .map(|c| {
                    c.as_number()
                        .and_then(|n| super::validate::integral("", n).ok())
                        .and_then(|n| i32::try_from(n).ok())
                        .ok_or_else(|| E::custom("exit codes are whole numbers"))
                })
                .collect()
        }
        let v = serde_json::Value::deserialize(d)?;
        match &v {
            serde_json::Value::Array(_) => Ok(ExitCodes::List(codes(&v)?)),
            serde_json::Value::Object(m) => {
                let mut set = ExitCodeSet {
                    in_: None,
                    not_in: None,
                };
                // A null list is an absent one (the fields are optional).
                for (k, list) in m.iter().filter(|(_, l)| !l.is_null()) {
                    match k.as_str() {
                        "in" => set.in_ = Some(codes(list)?),
                        "not_in" => set.not_in = Some(codes(list)?),
                        other => {
                            return Err(D::Error::custom(format!(
                                "unknown field {other:?}, expected \"in\" or \"not_in\""
                            )))
                        }
                    }
                }
                Ok(ExitCodes::Set(set))
            }
            _ => Err(D::Error::custom(
                "expected a list of exit codes or {\"in\": [...]} / {\"not_in\": [...]}",
            )),
        }
    }
}

impl ExitCodes {
    /// Whether `code` is among them: a list or `in` names the codes,
    /// `not_in` excludes codes; both given, both must hold.
    fn matches(&self, code: i32) -> bool {
        match self {
            ExitCodes::List(codes) => codes.contains(&code),
            ExitCodes::Set(ExitCodeSet { in_, not_in }) => {
                in_.as_ref().is_none_or(|c| c.contains(&code))
                    && not_in.as_ref().is_none_or(|c| !c.contains(&code))
            }
        }
    }
}

/// Something other than a plain exit that ended an attempt.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "kebab-case")]
pub enum AttemptEvent {
    /// The trainer ran out of memory (Kubernetes `OOMKilled`).
    Oom,
    /// The trainer or its node disappeared (also `node-lost`).
    #[serde(alias = "node-lost")]
    Vanished,
    /// The trainer was evicted or preempted (also `preempted`).
    #[serde(alias = "preempted")]
    Evicted,
    /// It stopped sending heartbeats and was stopped.
    Stale,
    /// It ran longer than its `max_duration` and was stopped.
    Timeout,
}

impl AttemptEvent {
    /// The wire name.
    pub fn as_str(self) -> &'static str {
        match self {
            AttemptEvent::Oom => "oom",
            AttemptEvent::Vanished => "vanished",
            AttemptEvent::Evicted => "evicted",
            AttemptEvent::Stale => "stale",
            AttemptEvent::Timeout => "timeout",
        }
    }
}

/// What a matching rule does.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "kebab-case")]
pub enum RetryAction {
    /// Try again; counts against `max_attempts`.
    Retry,
    /// Try again without counting (e.g. a preempted node); still capped at
    /// 20 attempts in all.
    RetryUncounted,
    /// Fail the job.
    Fail,
}

/// How one attempt ended, as far as the policy cares.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct AttemptEnd {
    /// The trainer's exit code, when known.
    pub exit_code: Option<i32>,
    /// What ended it, when it was not a plain exit.
    pub event: Option<AttemptEvent>,
}

/// The policy's answer for one attempt's end.
#[derive(Debug, Clone, PartialEq)]
pub enum Decision {
    /// Run another attempt after `pause`.
    Retry {
        /// The backoff before it.
        pause: Duration,
        /// Whether this retry counts against `max_attempts`.
        counted: bool,
    },
    /// Fail the job; `why` says why it is not retried (empty when no rule
    /// asked for a retry).
    Fail {
        /// Why the retry policy gave up, when it had retries to give.
        why: Option<String>,
    },
}

impl Default for RetryPolicy {
    fn default() -> Self {
        Self {
            max_attempts: 1,
            backoff: Backoff::default(),
            rules: Vec::new(),
        }
    }
}

impl RetryPolicy {
    /// A policy retrying `codes` up to `max_attempts` in all.
    pub fn on_exit_codes(codes: Vec<i32>, max_attempts: u32) -> Self {
        Self {
            max_attempts,
            backoff: Backoff::default(),
            rules: vec![RetryRule {
                exit_codes: Some(ExitCodes::List(codes)),
                events: None,
                action: RetryAction::Retry,
            }],
        }
    }

    /// Checks ranges (what the OpenAPI document says, no more).
    pub fn validate(&self, field: &str) -> Result<(), ValidationError> {
        let err = |sub: &str, msg: String| ValidationError::new(format!("{field}.{sub}"), msg);
        if !(1..=MAX_TOTAL_ATTEMPTS).contains(&self.max_attempts) {
            return Err(err(
                "max_attempts",
                format!("must be between 1 and {MAX_TOTAL_ATTEMPTS}"),
            ));
        }
        let b = &self.backoff;
        for (name, v) in [("backoff.initial", b.initial), ("backoff.max", b.max)] {
            if !(0.0..=MAX_BACKOFF_SECS).contains(&v) {
                return Err(err(
                    name,
                    format!("must be between 0 and {MAX_BACKOFF_SECS} seconds"),
                ));
            }
        }
        if !(1.0..=10.0).contains(&b.factor) {
            return Err(err("backoff.factor", "must be between 1 and 10".into()));
        }
        if self.rules.len() > MAX_RULES {
            return Err(err("rules", format!("at most {MAX_RULES} rules")));
        }
        Ok(())
    }

    /// The rule matching `end`, first match wins.
    fn action_for(&self, end: &AttemptEnd) -> Option<RetryAction> {
        self.rules
            .iter()
            .find(|r| {
                let by_code = matches!((&r.exit_codes, end.exit_code), (Some(c), Some(code)) if c.matches(code));
                let by_event = matches!((&r.events, end.event), (Some(evs), Some(ev)) if evs.contains(&ev));
                by_code || by_event
            })
            .map(|r| r.action)
    }

    /// The decision on an attempt that ended as `end`, being attempt
    /// number `attempt` of which `counted` counted against `max_attempts`
    /// (this one included).
    pub fn decide(&self, end: &AttemptEnd, attempt: u32, counted: u32) -> Decision {
        let action = self.action_for(end);
        let give_up = |why: String| Decision::Fail { why: Some(why) };
        match action {
            None | Some(RetryAction::Fail) => Decision::Fail { why: None },
            Some(_) if attempt >= MAX_TOTAL_ATTEMPTS => give_up(format!(
                "gave up after {attempt} attempts (the most any job runs)"
            )),
            Some(RetryAction::Retry) if counted >= self.max_attempts => give_up(format!(
                "gave up after {counted} of {} attempts",
                self.max_attempts
            )),
            Some(a) => Decision::Retry {
                pause: self.pause_after(attempt),
                counted: a == RetryAction::Retry,
            },
        }
    }

    /// The pause after attempt number `attempt` (1 for the first).
    pub fn pause_after(&self, attempt: u32) -> Duration {
        let b = &self.backoff;
        let exp = attempt.saturating_sub(1).min(64) as i32;
        let secs = (b.initial * b.factor.powi(exp)).min(b.max).max(0.0);
        Duration::from_secs_f64(if secs.is_finite() { secs } else { b.max })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn code(c: i32) -> AttemptEnd {
        AttemptEnd {
            exit_code: Some(c),
            event: None,
        }
    }

    #[test]
    fn listed_codes_retry_up_to_max_attempts_with_growing_pauses() {
        let mut p = RetryPolicy::on_exit_codes(vec![3], 3);
        p.backoff = Backoff {
            initial: 1.0,
            factor: 2.0,
            max: 3.0,
        };
        assert_eq!(
            p.decide(&code(3), 1, 1),
            Decision::Retry {
                pause: Duration::from_secs(1),
                counted: true
            }
        );
        assert_eq!(
            p.decide(&code(3), 2, 2),
            Decision::Retry {
                pause: Duration::from_secs(2),
                counted: true
            }
        );
        assert!(
            matches!(p.decide(&code(3), 3, 3), Decision::Fail { why: Some(w) } if w.contains("3 of 3"))
        );
        assert_eq!(p.decide(&code(1), 1, 1), Decision::Fail { why: None });
        assert_eq!(p.pause_after(5), Duration::from_secs(3));
    }

    #[test]
    fn first_match_wins_and_uncounted_retries_are_capped() {
        let p: RetryPolicy = serde_json::from_value(serde_json::json!({
            "max_attempts": 2,
            "rules": [
                {"exit_codes": [137], "action": "fail"},
                {"events": ["preempted", "node-lost"], "action": "retry-uncounted"},
                {"exit_codes": {"not_in": [0, 2]}, "action": "retry"}
            ]
        }))
        .unwrap();
        p.validate("retry").unwrap();
        assert_eq!(p.decide(&code(137), 1, 1), Decision::Fail { why: None });
        assert_eq!(p.decide(&code(2), 1, 1), Decision::Fail { why: None });
        assert!(matches!(
            p.decide(&code(5), 1, 1),
            Decision::Retry { counted: true, .. }
        ));
        let evicted = AttemptEnd {
            exit_code: None,
            event: Some(AttemptEvent::Evicted),
        };
        assert!(matches!(
            p.decide(&evicted, 7, 1),
            Decision::Retry { counted: false, .. }
        ));
        assert!(matches!(
            p.decide(&evicted, MAX_TOTAL_ATTEMPTS, 1),
            Decision::Fail { why: Some(_) }
        ));
    }

    #[test]
    fn code_sets_combine_and_empty_rules_match_nothing() {
        let p: RetryPolicy = serde_json::from_value(serde_json::json!({
            "max_attempts": 3,
            "rules": [
                {"action": "retry"},
                {"events": [], "action": "retry"},
                {"exit_codes": {"in": [1, 2, 3], "not_in": [2]}, "action": "retry"}
            ]
        }))
        .unwrap();
        p.validate("retry").unwrap();
        assert!(matches!(p.decide(&code(1), 1, 1), Decision::Retry { .. }));
        assert_eq!(p.decide(&code(2), 1, 1), Decision::Fail { why: None });
        assert_eq!(p.decide(&code(4), 1, 1), Decision::Fail { why: None });
        let bad: RetryPolicy =
            serde_json::from_value(serde_json::json!({"max_attempts": 0})).unwrap();
        assert_eq!(
            bad.validate("retry").unwrap_err().field,
            "retry.max_attempts"
        );
        assert!(serde_json::from_value::<RetryPolicy>(
            serde_json::json!({"rules": [{"events": ["meteor"], "action": "retry"}]})
        )
        .is_err());
        let whole: RetryPolicy = serde_json::from_str(
            r#"{"max_attempts": 3.0, "rules": [{"exit_codes": [3.0], "action": "retry"}]}"#,
        )
        .unwrap();
        assert_eq!(whole.max_attempts, 3);
        assert!(matches!(
            whole.decide(&code(3), 1, 1),
            Decision::Retry { .. }
        ));
        for bad in [r#"[null, null]"#, r#"{"in": 3}"#, r#"{"maybe": [1]}"#, "3"] {
            let rule = format!(r#"{{"rules": [{{"exit_codes": {bad}, "action": "retry"}}]}}"#);
            assert!(serde_json::from_str::<RetryPolicy>(&rule).is_err(), "{bad}");
        }
    }
}
