//! Retention's rules in-process: a real SQLite database and local store in
//! a temporary directory, jobs reporting through the lifecycle service.

use serde_json::json;

use super::*;
use crate::jobs::testing::Service;
use crate::model::{JobStatus, MetricQuery, MetricsRetention};

/// A job that ran and reported `n` points (loss falling, one spike),
/// then ended with `status`.
async fn ran(svc: &Service, n: usize, status: &str) -> Uuid {
    let id = svc.create("m").await.id;
    let update = |v| serde_json::from_value(v).unwrap();
    svc.jobs
        .callback(id, update(json!({"status": "running"})))
        .await
        .unwrap();
    for chunk in (0..n).collect::<Vec<_>>().chunks(1_000) {
        let points: Vec<_> = chunk
            .iter()
            .map(|i| json!({"epoch": i, "loss": if *i == n / 3 { 50.0 } else { 1.0 / (1.0 + *i as f64) }}))
            .collect();
        let batch = serde_json::from_value(json!({ "points": points })).unwrap();
        svc.jobs.ingest(id, batch).await.unwrap();
    }
    if status != "running" {
        svc.jobs
            .callback(id, update(json!({"status": status})))
            .await
            .unwrap();
    }
    id
}

async fn losses(svc: &Service, id: Uuid) -> Vec<f64> {
    let q = MetricQuery {
        limit: Some(10_000),
        order: Some("asc".into()),
        ..MetricQuery::default()
    };
    let points = svc.jobs.metrics(id, q.validate().unwrap()).await.unwrap();
    points.iter().filter_map(|p| p.loss).collect()
}

/// A prune to the end (nothing stops it).
async fn prune(svc: &Service, req: &PruneRequest) -> PruneReport {
    svc.jobs
        .prune(req, "test", &CancellationToken::new())
        .await
        .unwrap()
}

fn request(metrics: MetricsRetention, max_points: Option<u32>) -> PruneRequest {
    PruneRequest {
        older_than_days: 0.0,
        metrics,
        max_points,
        logs: true,
        artifacts: false,
        dry_run: false,
    }
}

#[tokio::test]
async fn old_histories_keep_their_shape_and_live_jobs_stay_whole() {
    let svc = Service::start_with(|c| c.artifact_grace = std::time::Duration::ZERO).await;
    let old = ran(&svc, 3_000, "completed").await;
    let failed = ran(&svc, 50, "failed").await;
    let live = ran(&svc, 2_000, "running").await;
    let whole = losses(&svc, old).await;
    let stop = CancellationToken::new();
    let down = request(MetricsRetention::Downsample, Some(100));

    let dry = PruneRequest {
        dry_run: true,
        ..down.clone()
    };
    let r = svc.jobs.prune(&dry, "test", &stop).await.unwrap();
    assert_eq!((r.jobs, r.points_deleted), (1, 2_900), "{r:?}");
    assert_eq!(losses(&svc, old).await, whole, "a dry run changes nothing");
    assert!(svc.jobs.get(old).await.unwrap().pruned.is_none());

    let r = svc.jobs.prune(&down, "test", &stop).await.unwrap();
    assert_eq!((r.jobs, r.points_deleted), (1, 2_900), "{r:?}");
    assert!(!r.interrupted && r.errors.is_empty());
    let kept = losses(&svc, old).await;
    assert_eq!(kept.len(), 100);
    assert_eq!(
        (kept[0], kept[99]),
        (whole[0], whole[2_999]),
        "first and last"
    );
    assert!(kept.contains(&50.0), "the spike survives");
    let mark = svc.jobs.get(old).await.unwrap().pruned.unwrap();
    assert_eq!(
        (mark.max_points, mark.logs, mark.artifacts),
        (Some(100), true, false)
    );
    // Short histories lose nothing but are marked; live jobs are untouched.
    assert_eq!(losses(&svc, failed).await.len(), 50);
    assert!(svc.jobs.get(failed).await.unwrap().pruned.is_some());
    assert_eq!(losses(&svc, live).await.len(), 2_000);
    let live_job = svc.jobs.get(live).await.unwrap();
    assert_eq!(
        (live_job.status, live_job.pruned),
        (JobStatus::Running, None)
    );

    let again = svc.jobs.prune(&down, "test", &stop).await.unwrap();
    assert_eq!(
        (again.jobs, again.points_deleted),
        (0, 0),
        "a second prune is a no-op"
    );
    let all = svc
        .jobs
        .prune(&request(MetricsRetention::Delete, None), "test", &stop)
        .await
        .unwrap();
    assert_eq!((all.jobs, all.points_deleted), (2, 150));
    assert!(losses(&svc, old).await.is_empty());
    assert_eq!(
        svc.jobs.get(old).await.unwrap().pruned.unwrap().max_points,
        Some(0)
    );
    let wider = svc.jobs.prune(&down, "test", &stop).await.unwrap();
    assert_eq!(wider.jobs, 0, "a deleted history is not downsampled again");
    svc.close().await;
}

#[tokio::test]
async fn a_stopped_prune_leaves_the_rest_for_the_next_run() {
    let svc = Service::start_with(|c| c.artifact_grace = std::time::Duration::ZERO).await;
    let old = ran(&svc, 20, "completed").await;
    let stop = CancellationToken::new();
    stop.cancel();
    let req = request(MetricsRetention::Delete, None);
    let r = svc.jobs.prune(&req, "test", &stop).await.unwrap();
    assert!(r.interrupted && r.jobs == 0, "{r:?}");
    assert_eq!(losses(&svc, old).await.len(), 20);
    let r = prune(&svc, &req).await;
    assert_eq!((r.jobs, r.points_deleted, r.interrupted), (1, 20, false));
    svc.close().await;
}

#[tokio::test]
async fn gpu_telemetry_is_pruned_with_the_training_points() {
    let svc = Service::start_with(|c| c.artifact_grace = std::time::Duration::ZERO).await;
    let id = ran(&svc, 300, "running").await;
    for i in 0..250 {
        let util = f64::from(i % 100);
        let m = [("system/gpu0/utilization".to_string(), json!(util))];
        svc.jobs
            .record_system_metrics(id, m.into_iter().collect(), util)
            .await
            .unwrap();
    }
    let update = serde_json::from_value(json!({"status": "completed"})).unwrap();
    svc.jobs.callback(id, update).await.unwrap();
    let system = |svc: &Service| {
        let q = MetricQuery {
            limit: Some(10_000),
            system: Some(true),
            ..MetricQuery::default()
        };
        let jobs = svc.jobs.clone();
        async move { jobs.metrics(id, q.validate().unwrap()).await.unwrap().len() }
    };
    assert_eq!(system(&svc).await, 250);
    let down = request(MetricsRetention::Downsample, Some(20));
    let r = prune(&svc, &down).await;
    assert_eq!(
        (r.points_deleted, r.system_points_deleted),
        (280, 230),
        "{r:?}"
    );
    assert_eq!(system(&svc).await, 20);
    assert_eq!(losses(&svc, id).await.len(), 20);
    svc.close().await;
}

#[tokio::test]
async fn candidates_are_paged_through_to_the_last() {
    let svc = Service::start_with(|c| c.artifact_grace = std::time::Duration::ZERO).await;
    let n = PAGE as usize + 5;
    for _ in 0..n {
        ran(&svc, 3, "cancelled").await;
    }
    let req = request(MetricsRetention::Delete, None);
    let r = prune(&svc, &req).await;
    assert_eq!(
        (r.jobs, r.points_deleted),
        (n as u64, 3 * n as u64),
        "{r:?}"
    );
    svc.close().await;
}

#[tokio::test]
async fn jobs_within_the_artifact_grace_are_left_alone() {
    let svc = Service::start().await;
    let old = ran(&svc, 20, "completed").await;
    let req = request(MetricsRetention::Delete, None);
    let r = prune(&svc, &req).await;
    assert_eq!(r.jobs, 0, "{r:?}");
    assert_eq!(losses(&svc, old).await.len(), 20);
    svc.close().await;
}

fn range(first: i64, count: u64) -> IdRange {
    IdRange {
        first,
        last: first + count as i64 - 1,
        count,
    }
}

#[test]
fn batches_hold_at_most_a_batch_of_points() {
    let b = BATCH_POINTS;
    let at = |k: u64| (k * b) as i64;
    let training = vec![
        range(1, b * 3 / 5),
        range(at(10), b * 3 / 5),
        range(at(20), 10),
    ];
    let system = vec![range(1, b * 2 / 5 - 10), range(at(5), b)];
    let steps = batches(training, system);
    let sizes: Vec<u64> = steps
        .iter()
        .map(|s| count(&s.metrics) + count(&s.system))
        .collect();
    assert_eq!(sizes, vec![b * 3 / 5, b, b]);
    assert_eq!(
        steps[1].metrics.len() + steps[1].system.len(),
        3,
        "ranges share a write"
    );
    assert!(steps.iter().all(|s| s.mark.is_none()));
    assert!(batches(Vec::new(), Vec::new()).is_empty());
}
