//! The lifecycle rules, in-process: a real SQLite database in a temporary
//! directory, no HTTP and no trainer processes.

use serde_json::json;

use super::testing::Service;
use super::*;
use crate::model::MetricQuery;

fn update(v: serde_json::Value) -> TrainingUpdate {
    serde_json::from_value(v).expect("a valid callback body")
}

fn batch(v: serde_json::Value) -> MetricBatch {
    serde_json::from_value(v).expect("a valid batch body")
}

async fn points(svc: &Service, id: Uuid) -> usize {
    let filter = MetricQuery::default().validate().expect("default query");
    svc.jobs.metrics(id, filter).await.expect("metrics").len()
}

#[tokio::test]
async fn callbacks_follow_the_state_machine_and_end_at_a_terminal_state() {
    let svc = Service::start().await;
    let id = svc.create("m").await.id;
    let ran = update(json!({"status": "running", "progress": 0.5, "metrics": {"loss": 1.0}}));
    svc.jobs.callback(id, ran).await.unwrap();
    let job = svc.jobs.get(id).await.unwrap();
    assert_eq!(job.status, JobStatus::Running);
    assert_eq!(job.progress, 0.5);
    assert!(job.started_at.is_some());
    svc.jobs
        .callback(id, update(json!({"status": "completed", "progress": 1.0})))
        .await
        .unwrap();
    let done = svc.jobs.get(id).await.unwrap();
    assert_eq!(done.status, JobStatus::Completed);
    assert!(done.completed_at.is_some());
    // Terminal states are final: a late update is refused and changes nothing.
    let late = svc
        .jobs
        .callback(id, update(json!({"status": "running", "progress": 0.1})))
        .await;
    assert!(matches!(
        late,
        Err(JobError::Finished {
            status: JobStatus::Completed,
            ..
        })
    ));
    assert_eq!(svc.jobs.get(id).await.unwrap(), done);
    assert_eq!(points(&svc, id).await, 1);
    svc.close().await;
}

#[tokio::test]
async fn an_applied_sequence_is_acknowledged_but_not_applied_again() {
    let svc = Service::start().await;
    let id = svc.create("m").await.id;
    let first = json!({"status": "running", "sequence": 2, "metrics": {"loss": 1.0}});
    let ack = svc.jobs.callback(id, update(first.clone())).await.unwrap();
    assert!(ack.applied);
    let ack = svc.jobs.callback(id, update(first)).await.unwrap();
    assert!(
        !ack.applied,
        "a repeated sequence is acknowledged, not applied"
    );
    let older = json!({"status": "running", "sequence": 1, "message": "stale"});
    assert!(!svc.jobs.callback(id, update(older)).await.unwrap().applied);
    assert_eq!(points(&svc, id).await, 1);
    assert_eq!(svc.jobs.get(id).await.unwrap().message, None);
    // Batches share the sequence.
    let ack = svc
        .jobs
        .ingest(id, batch(json!({"sequence": 2, "points": [{"loss": 0.5}]})))
        .await
        .unwrap();
    assert_eq!(ack.stored, 0);
    let ack = svc
        .jobs
        .ingest(
            id,
            batch(json!({"sequence": 3, "points": [{"loss": 0.5}, {"loss": 0.4}]})),
        )
        .await
        .unwrap();
    assert_eq!(ack.stored, 2);
    assert_eq!(points(&svc, id).await, 3);
    svc.close().await;
}

#[tokio::test]
async fn uploads_replace_while_live_and_only_add_within_the_grace() {
    let svc = Service::start().await;
    let id = svc.create("m").await.id;
    assert_eq!(
        svc.jobs.may_upload(id).await.unwrap(),
        UploadPermit::Replace
    );
    svc.jobs.cancel(id, "stop").await.unwrap();
    // The service's grace is 10 minutes: the job just ended.
    assert_eq!(
        svc.jobs.may_upload(id).await.unwrap(),
        UploadPermit::CreateOnly {
            status: JobStatus::Cancelled
        }
    );
    assert_eq!(
        UploadPermit::CreateOnly {
            status: JobStatus::Cancelled
        }
        .mode(),
        WriteMode::CreateOnly
    );
    assert!(matches!(
        svc.jobs.may_upload(Uuid::now_v7()).await,
        Err(JobError::NotFound(_))
    ));
    svc.close().await;
}

#[tokio::test]
async fn cancel_is_refused_for_an_ended_job() {
    let svc = Service::start().await;
    let id = svc.create("m").await.id;
    let job = svc.jobs.cancel(id, "cancelled by user").await.unwrap();
    assert_eq!(job.status, JobStatus::Cancelled);
    assert_eq!(job.message.as_deref(), Some("cancelled by user"));
    assert!(matches!(
        svc.jobs.cancel(id, "again").await,
        Err(JobError::NotCancellable {
            status: JobStatus::Cancelled,
            ..
        })
    ));
    assert!(matches!(
        svc.jobs.cancel(Uuid::now_v7(), "x").await,
        Err(JobError::NotFound(_))
    ));
    svc.close().await;
}

#[tokio::test]
async fn a_runner_report_never_overrides_an_ended_job_but_records_the_exit_code() {
    let svc = Service::start().await;
    let id = svc.create("m").await.id;
    svc.jobs.mark_launched(id, "fake", None).await.unwrap();
    svc.jobs.cancel(id, "cancelled by user").await.unwrap();
    let outcome = RunnerOutcome {
        exit_code: Some(-15),
        failure: Some("killed by SIGTERM".into()),
        ..Default::default()
    };
    let job = svc.jobs.finish_by_runner(id, outcome).await.unwrap();
    assert_eq!(job.status, JobStatus::Cancelled);
    assert_eq!(job.exit_code, Some(-15));
    assert_eq!(job.error, None);
    // A live job takes the runner's verdict.
    let other = svc.create("m").await.id;
    svc.jobs.mark_launched(other, "fake", None).await.unwrap();
    let failed = svc
        .jobs
        .finish_by_runner(
            other,
            RunnerOutcome {
                exit_code: Some(1),
                failure: Some("trainer exited with code 1".into()),
                ..Default::default()
            },
        )
        .await
        .unwrap();
    assert_eq!(failed.status, JobStatus::Failed);
    assert_eq!(failed.error.as_deref(), Some("trainer exited with code 1"));
    svc.close().await;
}

#[tokio::test]
async fn a_launch_of_a_cancelled_job_keeps_it_cancelled_but_records_the_runner() {
    let svc = Service::start().await;
    let id = svc.create("m").await.id;
    svc.jobs.cancel(id, "cancelled by user").await.unwrap();
    let job = svc
        .jobs
        .mark_launched(id, "fake", Some("{\"pid\":1}".into()))
        .await
        .unwrap();
    assert_eq!(job.status, JobStatus::Cancelled);
    assert_eq!(job.runner.as_deref(), Some("fake"));
    assert_eq!(job.started_at, None);
    let rec = svc.jobs.record(id).await.unwrap();
    assert_eq!(rec.runner_state.as_deref(), Some("{\"pid\":1}"));
    svc.close().await;
}

#[tokio::test]
async fn only_the_jobs_own_token_opens_its_trainer_routes() {
    let svc = Service::start().await;
    let a = svc.create("m").await.id;
    let b = svc.create("m").await.id;
    // Before a launch mints one, no token opens a job.
    assert!(matches!(
        svc.jobs.authorize(a, Some("anything")).await,
        Err(JobError::Unauthorized(_))
    ));
    let token_a = svc.jobs.issue_token(a).await.unwrap();
    svc.jobs.issue_token(b).await.unwrap();
    // The database keeps only the hash.
    let stored = svc.jobs.record(a).await.unwrap().token_hash.unwrap();
    assert_ne!(stored, token_a);
    assert_eq!(stored, crate::secrets::hash_token(&token_a));
    assert!(svc.jobs.authorize(a, Some(&token_a)).await.is_ok());
    assert!(matches!(
        svc.jobs.authorize(b, Some(&token_a)).await,
        Err(JobError::Unauthorized(_))
    ));
    assert!(matches!(
        svc.jobs.authorize(a, None).await,
        Err(JobError::Unauthorized(_))
    ));
    assert!(matches!(
        svc.jobs.authorize(Uuid::now_v7(), Some(&token_a)).await,
        Err(JobError::NotFound(_))
    ));
    // A new launch mints a new token; the old one stops working at once.
    let again = svc.jobs.issue_token(a).await.unwrap();
    assert!(svc.jobs.authorize(a, Some(&again)).await.is_ok());
    assert!(matches!(
        svc.jobs.authorize(a, Some(&token_a)).await,
        Err(JobError::Unauthorized(_))
    ));
    // An ended job gets no token.
    svc.jobs.cancel(b, "cancelled by user").await.unwrap();
    assert!(matches!(
        svc.jobs.issue_token(b).await,
        Err(JobError::Finished { .. })
    ));
    svc.close().await;
}

#[tokio::test]
async fn a_batch_is_all_or_nothing_and_refused_after_the_end() {
    let svc = Service::start().await;
    let id = svc.create("m").await.id;
    let bad = batch(json!({"points": [{"loss": 1.0}, {"epoch": 1.5}]}));
    assert!(matches!(
        svc.jobs.ingest(id, bad).await,
        Err(JobError::Invalid(_))
    ));
    assert_eq!(points(&svc, id).await, 0);
    svc.jobs.cancel(id, "cancelled by user").await.unwrap();
    let late = batch(json!({"points": [{"loss": 1.0}]}));
    assert!(matches!(
        svc.jobs.ingest(id, late).await,
        Err(JobError::Finished { .. })
    ));
    assert_eq!(points(&svc, id).await, 0);
    svc.close().await;
}

#[tokio::test]
async fn committed_changes_are_announced_points_before_the_job() {
    let svc = Service::start().await;
    let mut rx = svc.jobs.subscribe();
    let id = svc.create("m").await.id;
    assert!(
        matches!(rx.recv().await, Ok(Event::Job(j)) if j.id == id && j.status == JobStatus::Pending)
    );
    svc.jobs
        .callback(
            id,
            update(json!({"status": "completed", "metrics": {"loss": 0.1}})),
        )
        .await
        .unwrap();
    assert!(matches!(rx.recv().await, Ok(Event::Metric(m)) if m.job_id == id));
    assert!(matches!(rx.recv().await, Ok(Event::Job(j)) if j.status == JobStatus::Completed));
    svc.close().await;
}

/// The SQLite writer keeps each running job's record after a change
/// (`db/sqlite/writer.rs`, `JobCache`): a change made by any other write
/// in between must reach the next callback, never be written over by the
/// cached copy.
/// A progress-only callback is written without touching the row's
/// indexed columns, a status change with all of them: both are stored,
/// and the status index finds the job under its new status only.
#[tokio::test]
async fn progress_only_and_status_changing_callbacks_are_both_stored() {
    let svc = Service::start().await;
    let id = svc.create("m").await.id;
    let in_status = |status| JobFilter {
        user_id: None,
        status: Some(status),
        id_prefix: None,
        number: None,
        queue: None,
        sweep_id: None,
        tags: Vec::new(),
        limit: 10,
        offset: 0,
    };
    svc.jobs
        .callback(id, update(json!({"status": "running", "sequence": 1})))
        .await
        .unwrap();
    let report =
        json!({"status": "running", "sequence": 2, "progress": 0.25, "message": "epoch 1"});
    svc.jobs.callback(id, update(report)).await.unwrap();
    let rec = svc.jobs.record(id).await.unwrap();
    assert_eq!(
        (
            rec.job.progress,
            rec.job.message.as_deref(),
            rec.last_sequence
        ),
        (0.25, Some("epoch 1"), Some(2))
    );
    assert!(rec.job.sched.last_heartbeat_at.is_some());
    let running = svc.jobs.list(in_status(JobStatus::Running)).await.unwrap();
    assert_eq!(running.iter().map(|j| j.id).collect::<Vec<_>>(), [id]);

    let done = json!({"status": "completed", "sequence": 3, "progress": 1.0});
    svc.jobs.callback(id, update(done)).await.unwrap();
    let rec = svc.jobs.record(id).await.unwrap();
    assert_eq!(rec.job.status, JobStatus::Completed);
    assert!(rec.job.completed_at.is_some());
    assert_eq!((rec.job.progress, rec.last_sequence), (1.0, Some(3)));
    let running = svc.jobs.list(in_status(JobStatus::Running)).await.unwrap();
    assert!(running.is_empty(), "{running:?}");
    let completed = svc
        .jobs
        .list(in_status(JobStatus::Completed))
        .await
        .unwrap();
    assert_eq!(completed.iter().map(|j| j.id).collect::<Vec<_>>(), [id]);
}

#[tokio::test]
async fn a_change_between_two_callbacks_survives_the_second() {
    let svc = Service::start().await;
    let id = svc.create("m").await.id;
    svc.jobs
        .callback(id, update(json!({"status": "running", "sequence": 1})))
        .await
        .unwrap();
    svc.jobs
        .set_runner_state(id, Some("{\"pid\":7}".into()))
        .await
        .unwrap();
    let second = update(json!({"status": "running", "sequence": 2, "progress": 0.5}));
    svc.jobs.callback(id, second).await.unwrap();
    let rec = svc.jobs.record(id).await.unwrap();
    assert_eq!(rec.runner_state.as_deref(), Some("{\"pid\":7}"));
    assert_eq!((rec.job.progress, rec.last_sequence), (0.5, Some(2)));
}
