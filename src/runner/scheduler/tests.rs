//! The scheduler's policy, in-process: a real lifecycle service over
//! SQLite and the fake runner of [`crate::runner::fake`].

use super::*;
use crate::jobs::testing::Service;
use crate::jobs::RunnerOutcome;
use crate::model::TrainingUpdate;
use crate::runner::fake::{self, Failure, FakeRunner};
use std::time::Instant;

/// Waits (up to 5 s) for `cond` to hold.
async fn until(what: &str, mut cond: impl FnMut() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(5);
    while !cond() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

fn start(
    svc: &Service,
    runner: &FakeRunner,
    max: usize,
    hold: bool,
) -> (CancellationToken, tokio::task::JoinHandle<()>) {
    let stop = CancellationToken::new();
    let scheduler = Scheduler::new(
        svc.jobs.clone(),
        Arc::new(runner.clone()),
        fake::specs(svc),
        Arc::new(crate::queues::Queues::only_default(max as u32)),
    )
    .hold(hold);
    (stop.clone(), tokio::spawn(scheduler.run(stop)))
}

async fn status(svc: &Service, id: Uuid) -> JobStatus {
    svc.jobs.get(id).await.unwrap().status
}

#[tokio::test]
async fn launches_oldest_first_within_the_limit() {
    let svc = Service::start().await;
    let runner = FakeRunner::default();
    let mut ids = Vec::new();
    for _ in 0..4 {
        ids.push(svc.create("m").await.id);
    }
    let (stop, task) = start(&svc, &runner, 2, false);
    until("two launches", || runner.calls(|c| c.launched.len() == 2)).await;
    tokio::time::sleep(Duration::from_millis(200)).await;
    // The two oldest; each launch runs in its own task, so the runner may
    // see them in either order.
    let mut launched = runner.calls(|c| c.launched.clone());
    launched.sort();
    assert_eq!(launched, ids[..2]);
    assert_eq!(status(&svc, ids[0]).await, JobStatus::Running);
    assert_eq!(status(&svc, ids[2]).await, JobStatus::Pending);
    let job = svc.jobs.get(ids[0]).await.unwrap();
    assert_eq!(job.runner.as_deref(), Some("fake"));
    // A trainer ending frees its slot for the next oldest job.
    let ok = RunnerOutcome {
        exit_code: Some(0),
        failure: None,
        ..Default::default()
    };
    runner.gone(ids[0]);
    svc.jobs.finish_by_runner(ids[0], ok).await.unwrap();
    until("a third launch", || runner.calls(|c| c.launched.len() == 3)).await;
    assert_eq!(runner.calls(|c| c.launched[2]), ids[2]);
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert_eq!(runner.calls(|c| c.launched.len()), 3, "the limit holds");
    stop.cancel();
    task.await.unwrap();
    svc.close().await;
}

#[tokio::test]
async fn a_cancel_reaches_the_runner_and_frees_the_slot() {
    let svc = Service::start().await;
    let runner = FakeRunner::default();
    let a = svc.create("m").await.id;
    let b = svc.create("m").await.id;
    let (stop, task) = start(&svc, &runner, 1, false);
    until("the first launch", || runner.calls(|c| c.launched == [a])).await;
    svc.jobs.cancel(a, "cancelled by user").await.unwrap();
    until("the stop", || runner.calls(|c| c.cancelled == [a])).await;
    until("the next launch", || runner.calls(|c| c.launched == [a, b])).await;
    stop.cancel();
    task.await.unwrap();
    svc.close().await;
}

#[tokio::test]
async fn a_slow_launch_holds_up_neither_other_launches_nor_cancels() {
    let svc = Service::start().await;
    let runner = FakeRunner::default();
    runner.slow_model("slow", Duration::from_secs(5));
    let running = svc.create("fast").await.id;
    let slow = svc.create("slow").await.id;
    let after = svc.create("fast").await.id;
    let (stop, task) = start(&svc, &runner, 3, false);
    // The slow launch starts in its own task, maybe after the fast ones.
    until("both fast launches and the slow one started", || {
        runner.calls(|c| {
            c.launched.contains(&running)
                && c.launched.contains(&after)
                && c.launching.contains(&slow)
        })
    })
    .await;
    assert!(runner.calls(|c| !c.launched.contains(&slow)));
    svc.jobs.cancel(running, "cancelled by user").await.unwrap();
    until("the stop", || runner.calls(|c| c.cancelled == [running])).await;
    // Ordering, not timing: the stop did not wait for the slow launch.
    assert!(
        runner.calls(|c| !c.launched.contains(&slow)),
        "the cancel waited behind the slow launch"
    );
    // Shutdown waits for it: the job is never left pending with a trainer.
    stop.cancel();
    task.await.unwrap();
    assert!(runner.calls(|c| c.launched.contains(&slow)));
    assert_eq!(status(&svc, slow).await, JobStatus::Running);
    svc.close().await;
}

#[tokio::test]
async fn a_job_cancelled_while_launching_is_stopped_once_launched() {
    let svc = Service::start().await;
    let runner = FakeRunner::default();
    runner.slow_model("slow", Duration::from_millis(500));
    let id = svc.create("slow").await.id;
    let (stop, task) = start(&svc, &runner, 1, false);
    until("the launch to start", || {
        runner.calls(|c| c.launching == [id])
    })
    .await;
    svc.jobs.cancel(id, "cancelled by user").await.unwrap();
    until("the stop", || runner.calls(|c| c.cancelled.contains(&id))).await;
    assert!(runner.calls(|c| c.launched == [id]));
    let job = svc.jobs.get(id).await.unwrap();
    assert_eq!(job.status, JobStatus::Cancelled);
    assert_eq!(
        job.runner.as_deref(),
        Some("fake"),
        "the trainer stays findable"
    );
    stop.cancel();
    task.await.unwrap();
    svc.close().await;
}

#[tokio::test]
async fn a_restart_hands_over_this_runners_running_jobs_only() {
    let svc = Service::start().await;
    let runner = FakeRunner::default();
    let mine = svc.create("m").await.id;
    let foreign = svc.create("m").await.id;
    let ended = svc.create("m").await.id;
    let waiting = svc.create("m").await.id;
    svc.jobs.mark_launched(mine, "fake", None).await.unwrap();
    svc.jobs
        .mark_launched(foreign, "other", None)
        .await
        .unwrap();
    svc.jobs.mark_launched(ended, "fake", None).await.unwrap();
    svc.jobs.cancel(ended, "cancelled by user").await.unwrap();
    // Held: only the restart decisions run, nothing is launched.
    let (stop, task) = start(&svc, &runner, 0, true);
    until("the re-adoption", || {
        runner.calls(|c| !c.reconciled.is_empty())
    })
    .await;
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert_eq!(runner.calls(|c| c.reconciled.clone()), [mine]);
    assert!(runner.calls(|c| c.launched.is_empty()));
    assert_eq!(status(&svc, waiting).await, JobStatus::Pending);
    stop.cancel();
    task.await.unwrap();
    svc.close().await;
}

#[tokio::test]
async fn a_job_that_ended_keeps_its_slot_while_its_trainer_runs() {
    let svc = Service::start().await;
    let runner = FakeRunner::default();
    let a = svc.create("m").await.id;
    let b = svc.create("m").await.id;
    let (stop, task) = start(&svc, &runner, 1, false);
    until("the first launch", || runner.calls(|c| c.launched == [a])).await;
    // The trainer reports its end but is still running.
    let done: TrainingUpdate =
        serde_json::from_value(serde_json::json!({"status": "completed"})).unwrap();
    svc.jobs.callback(a, done).await.unwrap();
    until("the runner to hear of it", || {
        runner.calls(|c| c.ended == [a])
    })
    .await;
    tokio::time::sleep(Duration::from_millis(1200)).await;
    assert!(
        runner.calls(|c| c.launched == [a]),
        "nothing launches beside it, tick after tick"
    );
    assert_eq!(status(&svc, b).await, JobStatus::Pending);
    runner.gone(a);
    until("the next launch", || runner.calls(|c| c.launched == [a, b])).await;
    stop.cancel();
    task.await.unwrap();
    svc.close().await;
}

#[tokio::test]
async fn launch_failures_never_hold_up_the_jobs_behind() {
    let svc = Service::start().await;
    let runner = FakeRunner::default();
    runner.fail_model("unstartable", Failure::Start);
    runner.fail_model("unlucky", Failure::Environment);
    let bad = svc.create("unstartable").await.id;
    let unlucky = svc.create("unlucky").await.id;
    let fine = svc.create("m").await.id;
    let (stop, task) = start(&svc, &runner, 1, false);
    until("the fine job's launch", || {
        runner.calls(|c| c.launched == [fine])
    })
    .await;
    // The job's own fault fails it at once, saying why.
    let job = svc.jobs.get(bad).await.unwrap();
    assert_eq!(job.status, JobStatus::Failed);
    assert_eq!(job.error.as_deref(), Some("no such trainer"));
    // The environment's leaves it pending, saying when it is retried.
    let job = svc.jobs.get(unlucky).await.unwrap();
    assert_eq!(job.status, JobStatus::Pending);
    assert_eq!(
        job.message.as_deref(),
        Some("launch failed: disk full; retrying in 10 s (attempt 2 of 6)")
    );
    assert_eq!(
        runner.calls(|c| c.launching.iter().filter(|id| **id == unlucky).count()),
        1,
        "it waits out its pause"
    );
    stop.cancel();
    task.await.unwrap();
    svc.close().await;
}
