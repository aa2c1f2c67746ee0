//! `platform job compare A B C` (or `--sweep ID`): runs side by side — the
//! config keys that differ (flattened, dotted), tags, status, duration,
//! and the best and last value of chosen metrics, sorted by the first.
//! Also the runs' labels that overlaid charts use as their legend.

use std::collections::BTreeMap;

use clap::Args;
use serde::Serialize;
use serde_json::Value;
use uuid::Uuid;

use super::exit::Exit;
use super::metric_keys::{keys, rank, sort_by_step, Direction};
use super::output::{self, OutputFormat, Printer};
use crate::client::Client;
use crate::model::{Job, Metric};

/// `platform job compare`.
#[derive(Debug, Args)]
pub struct CompareArgs {
    /// Jobs: numbers (42 or #42), full ids, or unique id prefixes.
    #[arg(required_unless_present = "sweep")]
    pub ids: Vec<String>,
    /// Compare the jobs of this sweep (with any jobs named too).
    #[arg(long, value_name = "SWEEP_ID")]
    pub sweep: Option<Uuid>,
    /// A metric to show (best and last) and how its best is taken: max, min or last [default: by its name, min for losses, else max]; repeatable; the first sorts the table.
    #[arg(long = "metric", value_name = "NAME[:max|min|last]")]
    pub metrics: Vec<String>,
}

/// How a metric's best value is taken.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Agg {
    /// Highest value.
    Max,
    /// Lowest value.
    Min,
    /// The latest value.
    Last,
}

/// A chosen metric.
#[derive(Debug, Clone, PartialEq)]
pub struct Chosen {
    /// Its name.
    pub key: String,
    /// How its best is taken.
    pub agg: Agg,
}

/// Parses `NAME[:max|min|last]`.
pub fn parse_metric(s: &str) -> Result<Chosen, String> {
    let (key, agg) = match s.rsplit_once(':') {
        Some((k, "max")) => (k, Some(Agg::Max)),
        Some((k, "min")) => (k, Some(Agg::Min)),
        Some((k, "last")) => (k, Some(Agg::Last)),
        Some((_, other)) if !other.is_empty() && !other.contains(['/', '.']) => {
            return Err(format!("--metric {s:?}: {other:?} is not max, min or last"))
        }
        _ => (s, None),
    };
    if key.is_empty() {
        return Err(format!("--metric {s:?}: the metric name is empty"));
    }
    Ok(Chosen {
        key: key.to_string(),
        agg: agg.unwrap_or(match Direction::of(key) {
            Direction::Lower => Agg::Min,
            _ => Agg::Max,
        }),
    })
}

/// One metric of one run.
#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize)]
pub struct Summary {
    /// The best value by the metric's aggregation.
    pub best: Option<f64>,
    /// The latest value.
    pub last: Option<f64>,
}

/// One row of the comparison (the JSON output's element).
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Row {
    /// The job's id.
    pub job: Uuid,
    /// Its number.
    pub number: i64,
    /// Its name, if any.
    pub name: Option<String>,
    /// Its status.
    pub status: String,
    /// Seconds from start to end (or to now while running).
    pub duration_s: Option<f64>,
    /// Its values of the config keys that differ between the runs.
    pub config: BTreeMap<String, Value>,
    /// Its tags.
    pub tags: BTreeMap<String, String>,
    /// The chosen metrics.
    pub metrics: BTreeMap<String, Summary>,
}

/// `a.b.c` → value for every leaf of a config (arrays are leaves).
pub fn flatten(config: Option<&Value>) -> BTreeMap<String, Value> {
    fn walk(prefix: &str, v: &Value, out: &mut BTreeMap<String, Value>) {
        match v {
            Value::Object(m) if !m.is_empty() => {
                for (k, v) in m {
                    let key = if prefix.is_empty() {
                        k.clone()
                    } else {
                        format!("{prefix}.{k}")
                    };
                    walk(&key, v, out);
                }
            }
            other if !prefix.is_empty() => {
                out.insert(prefix.to_string(), other.clone());
            }
            _ => {}
        }
    }
    let mut out = BTreeMap::new();
    if let Some(v) = config {
        walk("", v, &mut out);
    }
    out
}

/// The flattened config keys whose values are not the same in every job
/// (a key some job lacks differs).
pub fn differing_keys(jobs: &[Job]) -> Vec<String> {
    let flat: Vec<BTreeMap<String, Value>> =
        jobs.iter().map(|j| flatten(j.config.as_ref())).collect();
    let mut all: Vec<&String> = flat.iter().flat_map(|m| m.keys()).collect();
    all.sort();
    all.dedup();
    all.into_iter()
        .filter(|k| {
            let first = flat.first().and_then(|m| m.get(*k));
            flat.iter().any(|m| m.get(*k) != first)
        })
        .cloned()
        .collect()
}

/// A run's label: `#12 lr=0.01,batch=16` (its values of the differing
/// keys), else its name, else its number alone.
pub fn labels(jobs: &[Job]) -> Vec<String> {
    let differ = differing_keys(jobs);
    jobs.iter()
        .map(|j| {
            let flat = flatten(j.config.as_ref());
            let values: Vec<String> = differ
                .iter()
                .filter_map(|k| flat.get(k).map(|v| format!("{k}={}", plain(v))))
                .collect();
            let number = output::job_number(j);
            match (values.is_empty(), &j.labels.name) {
                (false, _) => format!("{number} {}", values.join(",")),
                (true, Some(n)) => format!("{number} {n}"),
                (true, None) => number,
            }
        })
        .collect()
}

fn plain(v: &Value) -> String {
    match v {
        Value::String(s) => s.clone(),
        other => other.to_string(),
    }
}

fn summarize(points: &[Metric], c: &Chosen) -> Summary {
    let ys: Vec<f64> = points
        .iter()
        .filter_map(|p| p.metrics.get(&c.key).and_then(Value::as_f64))
        .collect();
    let last = ys.last().copied();
    let best = match c.agg {
        Agg::Max => ys.iter().copied().reduce(f64::max),
        Agg::Min => ys.iter().copied().reduce(f64::min),
        Agg::Last => last,
    };
    Summary { best, last }
}

/// The rows for `jobs` with their (step-ordered) points, sorted by the
/// first chosen metric (max and last: highest first; min: lowest first;
/// runs without it last).
pub fn rows(runs: &[(Job, Vec<Metric>)], chosen: &[Chosen]) -> Vec<Row> {
    let jobs: Vec<Job> = runs.iter().map(|(j, _)| j.clone()).collect();
    let differ = differing_keys(&jobs);
    let now = chrono::Utc::now();
    let mut rows: Vec<Row> = runs
        .iter()
        .map(|(j, points)| {
            let flat = flatten(j.config.as_ref());
            Row {
                job: j.id,
                number: j.number,
                name: j.labels.name.clone(),
                status: j.status.as_str().to_string(),
                duration_s: j.started_at.map(|s| {
                    (j.completed_at.unwrap_or(now) - s).num_milliseconds() as f64 / 1000.0
                }),
                config: differ
                    .iter()
                    .filter_map(|k| flat.get(k).map(|v| (k.clone(), v.clone())))
                    .collect(),
                tags: j.labels.tags.clone(),
                metrics: chosen
                    .iter()
                    .map(|c| (c.key.clone(), summarize(points, c)))
                    .collect(),
            }
        })
        .collect();
    if let Some(first) = chosen.first() {
        let value = |r: &Row| r.metrics.get(&first.key).and_then(|s| s.best);
        rows.sort_by(|a, b| match (value(a), value(b)) {
            (Some(x), Some(y)) if first.agg == Agg::Min => x.total_cmp(&y),
            (Some(x), Some(y)) => y.total_cmp(&x),
            (Some(_), None) => std::cmp::Ordering::Less,
            (None, Some(_)) => std::cmp::Ordering::Greater,
            (None, None) => std::cmp::Ordering::Equal,
        });
    }
    rows
}

/// Runs `platform job compare`.
pub async fn run(client: &Client, out: &Printer, a: CompareArgs) -> anyhow::Result<()> {
    let fmt = out.format(&[OutputFormat::Table, OutputFormat::Json, OutputFormat::Csv])?;
    let mut chosen = a
        .metrics
        .iter()
        .map(|m| parse_metric(m).map_err(Exit::usage))
        .collect::<Result<Vec<_>, _>>()?;
    let mut jobs: Vec<Job> = match a.sweep {
        Some(id) => client.sweep(id, false).await?.jobs,
        None => Vec::new(),
    };
    for text in &a.ids {
        let id = super::resolve::job_id(client, text).await?;
        if !jobs.iter().any(|j| j.id == id) {
            jobs.push(client.get_job(id).await?);
        }
    }
    let mut runs = Vec::with_capacity(jobs.len());
    for j in jobs {
        let mut points = client.all_metrics(j.id, None).await?;
        sort_by_step(&mut points);
        runs.push((j, points));
    }
    if chosen.is_empty() {
        // The most telling metric the runs have, if any.
        let all: Vec<Metric> = runs.iter().flat_map(|(_, p)| p.iter().cloned()).collect();
        if let Some(top) = rank(keys(&all)).into_iter().next() {
            chosen.push(parse_metric(&top).map_err(Exit::usage)?);
        }
    }
    let rows = rows(&runs, &chosen);
    match fmt {
        OutputFormat::Json => out.json(&rows),
        OutputFormat::Csv => {
            for line in csv(&rows, &chosen) {
                println!("{line}");
            }
            Ok(())
        }
        _ => {
            let (headers, cells) = table(&rows, &chosen, false);
            let h: Vec<&str> = headers.iter().map(String::as_str).collect();
            let mut t = output::table(&h);
            for r in cells {
                t.add_row(r);
            }
            output::print_table(&t);
            Ok(())
        }
    }
}

/// Headers and cells of the table (`raw`: CSV's plain numbers and ids).
fn table(rows: &[Row], chosen: &[Chosen], raw: bool) -> (Vec<String>, Vec<Vec<String>>) {
    let keys: Vec<String> = rows
        .iter()
        .flat_map(|r| r.config.keys().cloned())
        .collect::<std::collections::BTreeSet<_>>()
        .into_iter()
        .collect();
    let tagged = rows.iter().any(|r| !r.tags.is_empty());
    let named = rows.iter().any(|r| r.name.is_some());
    let mut headers = vec![if raw { "job" } else { "JOB" }.to_string()];
    if named {
        headers.push(if raw { "name" } else { "NAME" }.into());
    }
    headers.extend(keys.iter().cloned());
    if tagged {
        headers.push(if raw { "tags" } else { "TAGS" }.into());
    }
    headers.push(if raw { "status" } else { "STATUS" }.into());
    headers.push(if raw { "duration_s" } else { "DURATION" }.into());
    for c in chosen {
        let agg = serde_json::to_value(c.agg)
            .ok()
            .and_then(|v| v.as_str().map(str::to_string));
        headers.push(format!("{}:{}", c.key, agg.unwrap_or_default()));
        headers.push(format!("{}:last", c.key));
    }
    let num = |v: Option<f64>| match v {
        Some(x) if raw => x.to_string(),
        Some(x) => output::number(&serde_json::json!(x)),
        None if raw => String::new(),
        None => "-".into(),
    };
    let cells = rows
        .iter()
        .map(|r| {
            let mut row = vec![if raw {
                r.job.to_string()
            } else {
                format!("#{}", r.number)
            }];
            if named {
                row.push(r.name.clone().unwrap_or_default());
            }
            for k in &keys {
                row.push(r.config.get(k).map(plain).unwrap_or_else(|| "-".into()));
            }
            if tagged {
                let t: Vec<String> = r.tags.iter().map(|(k, v)| format!("{k}={v}")).collect();
                row.push(t.join(","));
            }
            row.push(r.status.clone());
            row.push(match r.duration_s {
                Some(d) if raw => d.to_string(),
                Some(d) => output::duration(d as i64),
                None if raw => String::new(),
                None => "-".into(),
            });
            for c in chosen {
                let s = r.metrics.get(&c.key).copied().unwrap_or_default();
                row.push(num(s.best));
                row.push(num(s.last));
            }
            row
        })
        .collect();
    (headers, cells)
}

/// CSV lines (RFC 4180 quoting), header first.
fn csv(rows: &[Row], chosen: &[Chosen]) -> Vec<String> {
    let quote = |s: &String| {
        if s.contains([',', '"', '\n', '\r']) {
            format!("\"{}\"", s.replace('"', "\"\""))
        } else {
            s.clone()
        }
    };
    let (headers, cells) = table(rows, chosen, true);
    std::iter::once(headers)
        .chain(cells)
        .map(|r| r.iter().map(quote).collect::<Vec<_>>().join(","))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn job(n: i64, config: Value) -> Job {
        let mut j: Job = serde_json::from_value(json!({
            "id": Uuid::now_v7(), "user_id": "u", "model_name": "m", "framework": "demo",
            "dataset_s3_uri": "s3://b/d/", "config": config, "status": "completed",
            "progress": 1.0, "message": null, "checkpoint_s3_uri": null, "error": null,
            "created_at": "2026-01-01T00:00:00Z", "updated_at": "2026-01-01T00:00:00Z",
            "started_at": "2026-01-01T00:00:00Z", "completed_at": "2026-01-01T00:01:00Z"
        }))
        .unwrap();
        j.number = n;
        j
    }

    fn points(values: &[f64]) -> Vec<Metric> {
        values
            .iter()
            .enumerate()
            .map(|(i, v)| {
                serde_json::from_value(json!({
                    "id": i, "job_id": Uuid::nil(), "epoch": i + 1, "step": null,
                    "loss": null, "accuracy": null, "metrics": {"mAP50": v},
                    "created_at": "2026-01-01T00:00:00Z"
                }))
                .unwrap()
            })
            .collect()
    }

    #[test]
    fn only_differing_keys_show_flattened() {
        let a = job(1, json!({"epochs": 3, "opt": {"lr": 0.1, "m": 0.9}}));
        let b = job(
            2,
            json!({"epochs": 3, "opt": {"lr": 0.01, "m": 0.9}, "aug": "x"}),
        );
        assert_eq!(differing_keys(&[a.clone(), b.clone()]), ["aug", "opt.lr"]);
        assert_eq!(labels(&[a, b]), ["#1 opt.lr=0.1", "#2 aug=x,opt.lr=0.01"]);
    }

    #[test]
    fn rows_sort_by_the_first_metric_and_aggregate() {
        let runs = vec![
            (job(1, json!({"lr": 1})), points(&[0.2, 0.5, 0.4])),
            (job(2, json!({"lr": 2})), points(&[0.6, 0.7])),
            (job(3, json!({"lr": 3})), Vec::new()),
        ];
        let max = [parse_metric("mAP50:max").unwrap()];
        let r = rows(&runs, &max);
        assert_eq!(r.iter().map(|r| r.number).collect::<Vec<_>>(), [2, 1, 3]);
        assert_eq!(
            r[1].metrics["mAP50"],
            Summary {
                best: Some(0.5),
                last: Some(0.4)
            }
        );
        assert_eq!(r[0].duration_s, Some(60.0));
        let min = [parse_metric("mAP50:min").unwrap()];
        assert_eq!(
            rows(&runs, &min)
                .iter()
                .map(|r| r.number)
                .collect::<Vec<_>>(),
            [1, 2, 3]
        );
        let lines = csv(&rows(&runs, &max), &max);
        assert!(
            lines[0].ends_with("lr,status,duration_s,mAP50:max,mAP50:last"),
            "{}",
            lines[0]
        );
    }

    #[test]
    fn metric_choices_parse() {
        assert_eq!(parse_metric("val_loss").unwrap().agg, Agg::Min);
        assert_eq!(parse_metric("mAP50").unwrap().agg, Agg::Max);
        assert_eq!(
            parse_metric("x:last").unwrap(),
            Chosen {
                key: "x".into(),
                agg: Agg::Last
            }
        );
        assert!(parse_metric("x:avg").is_err());
        assert!(parse_metric(":max").is_err());
    }
}
