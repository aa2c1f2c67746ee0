//! The automatic retention policy's flags (issue 17), flattened into
//! `platform serve`'s, and the [`RetentionPolicy`] they resolve to. Off by
//! default: nothing is pruned unless an operator says how old is old. The
//! artifacts policy is separate and explicit, since checkpoints cannot be
//! regenerated the way a downsampled curve can be redrawn.

use std::time::Duration;

use clap::{Args, ValueEnum};

use crate::model::retention::{MAX_DAYS, MAX_MAX_POINTS, MIN_MAX_POINTS};
use crate::model::{MetricsRetention, PruneRequest};

/// What the policy does with old metric histories.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum RetentionMetrics {
    /// Keep the first, the last and each stretch's extremes (the same
    /// curve), up to --retention-max-points per series.
    Downsample,
    /// Delete every point.
    Delete,
    /// Leave histories whole (prune only logs).
    Keep,
}

/// Flags of the automatic retention policy.
#[derive(Debug, Clone, Args)]
pub struct RetentionArgs {
    /// Prune the metric history (and, with --retention-logs, the archived logs) of jobs that ended more than this many days ago, hourly and once shortly after start-up [default: never].
    #[arg(long, env = "PLATFORM_RETENTION_DAYS", value_name = "DAYS", value_parser = days)]
    pub retention_days: Option<f64>,

    /// What the policy does with those histories.
    #[arg(
        long,
        env = "PLATFORM_RETENTION_METRICS",
        value_enum,
        default_value = "downsample"
    )]
    pub retention_metrics: RetentionMetrics,

    /// Points per series a downsampled history keeps (2 to 10000).
    #[arg(long, env = "PLATFORM_RETENTION_MAX_POINTS", default_value_t = 1000, value_name = "N", value_parser = clap::value_parser!(u32).range(i64::from(MIN_MAX_POINTS)..=i64::from(MAX_MAX_POINTS)))]
    pub retention_max_points: u32,

    /// The policy also deletes those jobs' archived trainer logs.
    #[arg(long, env = "PLATFORM_RETENTION_LOGS", value_parser = clap::builder::FalseyValueParser::new())]
    pub retention_logs: bool,

    /// Delete the artifacts (checkpoints, exports) of jobs that ended more than this many days ago, on the same schedule; a policy of its own [default: never].
    #[arg(long, env = "PLATFORM_ARTIFACT_RETENTION_DAYS", value_name = "DAYS", value_parser = days)]
    pub artifact_retention_days: Option<f64>,

    /// Seconds between automatic prunes (the first runs a minute after start-up, or sooner when this is shorter).
    #[arg(long, env = "PLATFORM_RETENTION_INTERVAL", default_value = "3600", value_name = "SECONDS", value_parser = interval)]
    pub retention_interval: Duration,
}

/// The automatic policy: what each run asks for, and how often.
#[derive(Debug, Clone, PartialEq)]
pub struct RetentionPolicy {
    /// Prunes metric histories (and logs), when configured.
    pub history: Option<PruneRequest>,
    /// Deletes artifacts, when configured.
    pub artifacts: Option<PruneRequest>,
    /// Between runs.
    pub every: Duration,
}

impl RetentionPolicy {
    /// The policy `args` configure.
    pub fn from_args(args: &RetentionArgs) -> Self {
        let request = |days: f64| PruneRequest {
            older_than_days: days,
            metrics: MetricsRetention::Keep,
            max_points: None,
            logs: false,
            artifacts: false,
            dry_run: false,
        };
        let history = args.retention_days.map(|days| {
            let metrics = match args.retention_metrics {
                RetentionMetrics::Downsample => MetricsRetention::Downsample,
                RetentionMetrics::Delete => MetricsRetention::Delete,
                RetentionMetrics::Keep => MetricsRetention::Keep,
            };
            PruneRequest {
                metrics,
                max_points: (metrics == MetricsRetention::Downsample)
                    .then_some(args.retention_max_points),
                logs: args.retention_logs,
                ..request(days)
            }
        });
        let artifacts = args.artifact_retention_days.map(|days| PruneRequest {
            artifacts: true,
            ..request(days)
        });
        RetentionPolicy {
            history,
            artifacts,
            every: args.retention_interval,
        }
    }

    /// What each run asks for, in order (histories, then artifacts).
    pub fn requests(&self) -> impl Iterator<Item = &PruneRequest> {
        self.history.iter().chain(self.artifacts.iter())
    }
}

/// A number of days: 0 to a century, fractions allowed.
fn days(s: &str) -> Result<f64, String> {
    s.trim()
        .parse::<f64>()
        .ok()
        .filter(|d| d.is_finite() && (0.0..=MAX_DAYS).contains(d))
        .ok_or_else(|| format!("expected a number of days between 0 and {MAX_DAYS}, not {s:?}"))
}

/// At least a second, at most a week.
fn interval(s: &str) -> Result<Duration, String> {
    s.trim()
        .parse::<f64>()
        .ok()
        .filter(|x| x.is_finite() && (1.0..=604_800.0).contains(x))
        .map(Duration::from_secs_f64)
        .ok_or_else(|| {
            format!("expected a number of seconds between 1 and 604800 (a week), not {s:?}")
        })
}

#[cfg(test)]
mod tests {
    use clap::Parser;

    use super::*;

    #[derive(Parser)]
    struct Cli {
        #[command(flatten)]
        retention: RetentionArgs,
    }

    fn policy(args: &[&str]) -> Result<RetentionPolicy, clap::Error> {
        let cli = Cli::try_parse_from(std::iter::once("serve").chain(args.iter().copied()))?;
        Ok(RetentionPolicy::from_args(&cli.retention))
    }

    #[test]
    fn off_unless_configured() {
        let p = policy(&[]).unwrap();
        assert_eq!(p.requests().count(), 0);
        assert_eq!(p.every, Duration::from_secs(3600));
    }

    #[test]
    fn histories_and_artifacts_are_separate_policies() {
        let p = policy(&[
            "--retention-days",
            "30",
            "--retention-logs",
            "--retention-max-points",
            "500",
            "--artifact-retention-days",
            "90",
            "--retention-interval",
            "60",
        ])
        .unwrap();
        let history = p.history.clone().unwrap();
        assert_eq!(
            (history.older_than_days, history.metrics, history.max_points),
            (30.0, MetricsRetention::Downsample, Some(500))
        );
        assert!(history.logs && !history.artifacts);
        let artifacts = p.artifacts.clone().unwrap();
        assert_eq!(artifacts.metrics, MetricsRetention::Keep);
        assert!(artifacts.artifacts && !artifacts.logs);
        assert_eq!(artifacts.older_than_days, 90.0);
        assert_eq!(p.requests().count(), 2);
        let delete = policy(&["--retention-days", "7", "--retention-metrics", "delete"]).unwrap();
        assert_eq!(delete.history.unwrap().max_points, None);
        for bad in [
            &["--retention-days", "-1"][..],
            &["--retention-max-points", "1"],
            &["--retention-interval", "0"],
        ] {
            assert!(policy(bad).is_err(), "{bad:?}");
        }
    }
}
