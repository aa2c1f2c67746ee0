//! `platform prune`: retention on demand (admins), the client of
//! `POST /api/v1/prune`; and the `Pruned:` line of `job get`.

use clap::{ArgGroup, Args};
use indicatif::HumanBytes;

use super::output::{OutputFormat, Printer};
use super::{Exit, GlobalArgs};
use crate::model::retention::{MAX_DAYS, MAX_MAX_POINTS, MIN_MAX_POINTS};
use crate::model::{Job, MetricsRetention, PruneReport, PruneRequest};

/// Flags of `platform prune`.
#[derive(Debug, Args)]
#[command(group(ArgGroup::new("metrics").args(["downsample", "delete_metrics", "keep_metrics"])))]
pub struct PruneArgs {
    /// Touch only jobs that ended more than this long ago: a number with a unit, `30d`, `12h`, `90m`, `2w`, `1y` (a bare number is days).
    #[arg(long, value_name = "AGE", value_parser = age_in_days)]
    pub older_than: f64,
    /// Downsample their metric histories to at most N points per series, keeping the first, the last and the extremes (the default, with N = 1000).
    #[arg(long, value_name = "N", value_parser = clap::value_parser!(u32).range(i64::from(MIN_MAX_POINTS)..=i64::from(MAX_MAX_POINTS)))]
    pub downsample: Option<u32>,
    /// Delete their metric histories instead.
    #[arg(long)]
    pub delete_metrics: bool,
    /// Leave their metric histories whole (prune only logs or artifacts).
    #[arg(long)]
    pub keep_metrics: bool,
    /// Also delete their archived trainer logs.
    #[arg(long)]
    pub logs: bool,
    /// Also delete their artifacts (checkpoints, exports): gone for good.
    #[arg(long)]
    pub artifacts: bool,
    /// Only say what would be removed; change nothing.
    #[arg(long)]
    pub dry_run: bool,
}

impl PruneArgs {
    fn request(&self) -> PruneRequest {
        let metrics = if self.delete_metrics {
            MetricsRetention::Delete
        } else if self.keep_metrics {
            MetricsRetention::Keep
        } else {
            MetricsRetention::Downsample
        };
        PruneRequest {
            older_than_days: self.older_than,
            metrics,
            max_points: self.downsample,
            logs: self.logs,
            artifacts: self.artifacts,
            dry_run: self.dry_run,
        }
    }
}

/// Runs `platform prune`: prints what went, and exits 1 when some jobs
/// could not be pruned or the run was cut short.
pub async fn run(g: &GlobalArgs, out: &Printer, args: PruneArgs) -> anyhow::Result<()> {
    let fmt = out.format(&[OutputFormat::Table, OutputFormat::Json, OutputFormat::Yaml])?;
    let client = g.client()?;
    let report = client.prune(&args.request()).await?;
    match fmt {
        OutputFormat::Json => out.json(&report)?,
        OutputFormat::Yaml => out.yaml(&report)?,
        _ if !out.quiet => print_report(&report),
        _ => {}
    }
    for e in &report.errors {
        eprintln!("error: {e}");
    }
    if report.interrupted {
        return Err(Exit {
            code: 1,
            message: "the prune stopped early because the daemon is shutting down; what it removed stays removed, and the next prune carries on".into(),
        }
        .into());
    }
    if !report.errors.is_empty() {
        return Err(Exit::silent(1));
    }
    Ok(())
}

fn print_report(r: &PruneReport) {
    let cutoff = r.cutoff.format("%Y-%m-%d %H:%M:%S UTC");
    if r.dry_run {
        println!("dry run: nothing was changed; a prune would remove this from {} job(s) that ended before {cutoff}:", r.jobs);
    } else {
        println!("pruned {} job(s) that ended before {cutoff}:", r.jobs);
    }
    let files = |n: u64, bytes: u64| format!("{n} ({})", HumanBytes(bytes));
    let mut rows = vec![
        ("metric points", r.points_deleted.to_string()),
        ("GPU telemetry points", r.system_points_deleted.to_string()),
        ("archived logs", files(r.logs_deleted, r.log_bytes)),
        ("artifacts", files(r.artifacts_deleted, r.artifact_bytes)),
    ];
    if !r.dry_run {
        rows.push((
            "disk space given back",
            match r.reclaimed_bytes {
                Some(b) => HumanBytes(b).to_string(),
                None => "none: the database file predates auto-vacuum; stop the daemon and run `platform db vacuum` once".into(),
            },
        ));
    }
    for (what, n) in rows {
        println!("  {what:<22} {n}");
    }
    println!("  {:<22} {:.1} s", "took", r.seconds);
}

/// `Pruned:` for `job get`, when retention removed something.
pub fn job_rows(j: &Job) -> Vec<(&'static str, String)> {
    j.pruned
        .iter()
        .map(|p| {
            (
                "Pruned",
                format!(
                    "{} ({})",
                    p.describe(),
                    p.at.format("%Y-%m-%d %H:%M:%S UTC")
                ),
            )
        })
        .collect()
}

/// `30d`, `12h`, `90m`, `45s`, `2w`, `1y` (365 days) or a bare number of
/// days, as days.
fn age_in_days(s: &str) -> Result<f64, String> {
    let t = s.trim();
    let (number, per_day) = match t.char_indices().last() {
        Some((i, 'y')) => (&t[..i], 1.0 / 365.0),
        Some((i, 'w')) => (&t[..i], 1.0 / 7.0),
        Some((i, 'd')) => (&t[..i], 1.0),
        Some((i, 'h')) => (&t[..i], 24.0),
        Some((i, 'm')) => (&t[..i], 1_440.0),
        Some((i, 's')) => (&t[..i], 86_400.0),
        _ => (t, 1.0),
    };
    number
        .trim()
        .parse::<f64>()
        .ok()
        .map(|n| n / per_day)
        .filter(|d| d.is_finite() && (0.0..=MAX_DAYS).contains(d))
        .ok_or_else(|| {
            format!(
                "expected an age such as 30d, 12h, 90m or 2w (at most {MAX_DAYS} days), not {s:?}"
            )
        })
}

#[cfg(test)]
mod tests {
    use super::age_in_days;

    #[test]
    fn ages_take_units() {
        assert_eq!(age_in_days("30d"), Ok(30.0));
        assert_eq!(age_in_days("30"), Ok(30.0));
        assert_eq!(age_in_days("12h"), Ok(0.5));
        assert_eq!(age_in_days("2w"), Ok(14.0));
        assert_eq!(age_in_days("1y"), Ok(365.0));
        assert_eq!(age_in_days("90m"), Ok(90.0 / 1440.0));
        assert_eq!(age_in_days(" 0d "), Ok(0.0));
        for bad in ["", "d", "-1d", "200y", "30x", "1e9", "inf"] {
            assert!(age_in_days(bad).is_err(), "{bad:?}");
        }
    }
}
