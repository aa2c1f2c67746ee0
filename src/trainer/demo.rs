//! The built-in `demo` trainer (`platform demo-train`, hidden): simulates a
//! vision training run over the real contract, so a fresh install can run a
//! job end to end with nothing else installed.
//!
//! `CONFIG` keys: `epochs` (default 10), `epoch_seconds` (default 0.5),
//! `steps_per_epoch` (default 0: per-step points sent in batches when > 0),
//! `fail_at_epoch` (exit 1 at that epoch, for trying failure handling),
//! `seed`. Curves follow the usual shapes — loss decaying towards a floor,
//! mAP rising towards a ceiling — with noise, seeded from the job id so a
//! job is reproducible.

use std::collections::BTreeMap;
use std::time::Duration;

use rand::{Rng, SeedableRng};
use serde_json::{Number, Value};

use super::{Endpoint, ReportError, Reporter};
use crate::model::{JobStatus, TrainingUpdate};

/// Settings read from `CONFIG`.
#[derive(Debug, Clone, PartialEq)]
pub struct DemoConfig {
    /// Number of epochs.
    pub epochs: u32,
    /// Simulated seconds per epoch.
    pub epoch_seconds: f64,
    /// Per-step points per epoch (0: none).
    pub steps_per_epoch: u32,
    /// Fail at this epoch.
    pub fail_at_epoch: Option<u32>,
    /// RNG seed.
    pub seed: u64,
}

impl DemoConfig {
    /// Reads the config object, falling back to defaults for missing or
    /// unusable values.
    pub fn from_json(config: &Value, default_seed: u64) -> Self {
        let num = |k: &str| config.get(k).and_then(Value::as_f64);
        Self {
            epochs: num("epochs").map_or(10, |v| v.clamp(1.0, 100_000.0) as u32),
            epoch_seconds: num("epoch_seconds").map_or(0.5, |v| v.clamp(0.0, 3600.0)),
            steps_per_epoch: num("steps_per_epoch").map_or(0, |v| v.clamp(0.0, 100_000.0) as u32),
            fail_at_epoch: num("fail_at_epoch").map(|v| v.max(1.0) as u32),
            seed: num("seed").map_or(default_seed, |v| v as u64),
        }
    }
}

/// One epoch's simulated metrics.
pub fn epoch_metrics(
    e: u32,
    cfg: &DemoConfig,
    ceiling: f64,
    rng: &mut impl Rng,
) -> BTreeMap<String, f64> {
    let t = f64::from(e) / f64::from(cfg.epochs);
    let k = 3.5;
    let noise = |rng: &mut dyn rand::RngCore, scale: f64| (rng.random::<f64>() - 0.5) * 2.0 * scale;
    let loss = 0.35 + 2.4 * (-k * t).exp() + noise(rng, 0.04);
    let map50 = (ceiling * (1.0 - (-k * 1.1 * t).exp()) + noise(rng, 0.012)).clamp(0.0, 1.0);
    let precision = (0.45 + 0.4 * (1.0 - (-k * t).exp()) + noise(rng, 0.015)).clamp(0.0, 1.0);
    let recall = (0.35 + 0.42 * (1.0 - (-k * t).exp()) + noise(rng, 0.015)).clamp(0.0, 1.0);
    BTreeMap::from([
        ("epoch".into(), f64::from(e)),
        ("loss".into(), loss.max(0.0)),
        ("box_loss".into(), (loss * 0.45).max(0.0)),
        ("cls_loss".into(), (loss * 0.35).max(0.0)),
        ("mAP50".into(), map50),
        ("mAP50-95".into(), map50 * 0.68),
        ("precision".into(), precision),
        ("recall".into(), recall),
        ("lr".into(), 0.01 * (1.0 - t) + 0.0001),
    ])
}

fn numbers(m: &BTreeMap<String, f64>) -> BTreeMap<String, Number> {
    m.iter()
        .filter_map(|(k, v)| {
            let n = if v.fract() == 0.0 && v.abs() < 1e15 {
                Some(Number::from(*v as i64))
            } else {
                Number::from_f64(*v)
            };
            n.map(|n| (k.clone(), n))
        })
        .collect()
}

/// Runs the demo trainer; returns the process exit code.
pub async fn run() -> i32 {
    match train().await {
        Ok(code) => code,
        Err(e) => {
            eprintln!("demo trainer: {e:#}");
            1
        }
    }
}

async fn train() -> anyhow::Result<i32> {
    // Reports are queued and delivered in the background: training goes on
    // while the daemon is away.
    let reporter = Reporter::start(Endpoint::from_env(None)?);
    let config: Value = std::env::var("CONFIG")
        .ok()
        .and_then(|c| serde_json::from_str(&c).ok())
        .unwrap_or(Value::Null);
    let job_seed = reporter
        .endpoint()
        .job_id()
        .map(|id| id.as_u64_pair().1)
        .unwrap_or(42);
    let cfg = DemoConfig::from_json(&config, job_seed);
    let model = std::env::var("MODEL_NAME").unwrap_or_else(|_| "model".into());
    let dataset = std::env::var("DATASET_S3_URI").unwrap_or_default();
    let mut rng = rand::rngs::StdRng::seed_from_u64(cfg.seed);
    // Bigger models reach a higher mAP.
    let ceiling = match model.chars().last() {
        Some('n') => 0.62,
        Some('s') => 0.68,
        Some('m') => 0.72,
        Some('l') => 0.75,
        Some('x') => 0.78,
        _ => 0.66,
    };
    println!("demo trainer: {model} on {dataset}, {} epochs", cfg.epochs);
    let update = |status, progress: f64, message: String| TrainingUpdate {
        job_id: None,
        status,
        progress: Some(progress),
        message: Some(message),
        metrics: None,
        checkpoint_s3_uri: None,
        error: None,
        sequence: None,
    };
    let stopped = |e: ReportError| -> anyhow::Result<i32> {
        match e {
            ReportError::Ended(s) => {
                println!("job is {s}; stopping");
                Ok(0)
            }
            other => Err(other.into()),
        }
    };
    if let Err(e) = reporter
        .send(update(JobStatus::Running, 0.0, format!("starting {model}")))
        .await
    {
        return stopped(e);
    }
    let mut last = BTreeMap::new();
    let step_pause = if cfg.steps_per_epoch > 0 {
        cfg.epoch_seconds / f64::from(cfg.steps_per_epoch)
    } else {
        cfg.epoch_seconds
    };
    for e in 1..=cfg.epochs {
        if cfg.steps_per_epoch > 0 {
            let mut points = Vec::new();
            for s in 0..cfg.steps_per_epoch {
                tokio::time::sleep(Duration::from_secs_f64(step_pause)).await;
                let step = u64::from(e - 1) * u64::from(cfg.steps_per_epoch) + u64::from(s) + 1;
                let t = (f64::from(e - 1) + f64::from(s + 1) / f64::from(cfg.steps_per_epoch))
                    / f64::from(cfg.epochs);
                let loss = 0.35 + 2.4 * (-3.5 * t).exp() + (rng.random::<f64>() - 0.5) * 0.2;
                points.push(numbers(&BTreeMap::from([
                    ("epoch".to_string(), f64::from(e)),
                    ("step".to_string(), step as f64),
                    ("train_loss".to_string(), loss.max(0.0)),
                ])));
            }
            if let Err(err) = reporter.points(points).await {
                return stopped(err);
            }
        } else {
            tokio::time::sleep(Duration::from_secs_f64(step_pause)).await;
        }
        if cfg.fail_at_epoch == Some(e) {
            eprintln!("demo trainer: simulated failure at epoch {e} (fail_at_epoch)");
            // What was measured before the failure still arrives.
            if let Err(err) = reporter.flush().await {
                eprintln!("demo trainer: {err}");
            }
            return Ok(1);
        }
        let m = epoch_metrics(e, &cfg, ceiling, &mut rng);
        last = m.clone();
        println!(
            "epoch {e}/{} loss={:.4} mAP50={:.4}",
            cfg.epochs, m["loss"], m["mAP50"]
        );
        let mut u = update(
            JobStatus::Running,
            f64::from(e) / f64::from(cfg.epochs),
            format!("epoch {e}/{}", cfg.epochs),
        );
        u.metrics = Some(numbers(&m));
        if let Err(err) = reporter.send(u).await {
            return stopped(err);
        }
    }
    let mut done = update(
        JobStatus::Completed,
        1.0,
        format!("finished {} epochs", cfg.epochs),
    );
    done.checkpoint_s3_uri = checkpoint(&reporter, &model, &last, &mut rng).await;
    // The last word waits until every queued report is delivered.
    if let Err(err) = reporter.finish(done).await {
        return stopped(err);
    }
    println!("done");
    Ok(0)
}

/// Stores a small checkpoint (`best.pt`: a header naming the model and
/// final metrics, then pseudo-weights) through the daemon's artifact
/// endpoint; `None` when that fails, so the job still completes.
async fn checkpoint(
    reporter: &Reporter,
    model: &str,
    last: &BTreeMap<String, f64>,
    rng: &mut impl Rng,
) -> Option<String> {
    let header =
        serde_json::json!({"format": "platform-demo-checkpoint", "model": model, "metrics": last});
    let mut bytes = format!("{header}\n").into_bytes();
    let mut weights = vec![0u8; 64 * 1024];
    rng.fill_bytes(&mut weights);
    bytes.extend_from_slice(&weights);
    match reporter.upload_artifact("best.pt", bytes.into()).await {
        Ok(uri) => {
            println!("saved checkpoint {uri}");
            Some(uri)
        }
        Err(e) => {
            eprintln!("demo trainer: could not store the checkpoint ({e}); finishing without one");
            None
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn curves_fall_and_rise() {
        let cfg = DemoConfig::from_json(&serde_json::json!({"epochs": 20}), 7);
        let mut rng = rand::rngs::StdRng::seed_from_u64(7);
        let first = epoch_metrics(1, &cfg, 0.7, &mut rng);
        let last = epoch_metrics(20, &cfg, 0.7, &mut rng);
        assert!(last["loss"] < first["loss"] * 0.5, "{first:?} {last:?}");
        assert!(last["mAP50"] > first["mAP50"] + 0.3, "{first:?} {last:?}");
        assert!(last["mAP50"] <= 1.0);
    }

    #[test]
    fn config_defaults_and_clamps() {
        let c = DemoConfig::from_json(&Value::Null, 1);
        assert_eq!((c.epochs, c.epoch_seconds, c.steps_per_epoch), (10, 0.5, 0));
        let c = DemoConfig::from_json(&serde_json::json!({"epochs": -3, "epoch_seconds": 0.01}), 1);
        assert_eq!(c.epochs, 1);
        assert_eq!(c.epoch_seconds, 0.01);
    }
}
