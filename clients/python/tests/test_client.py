"""Every Client method against a real daemon (PLATFORM_SERVER, PLATFORM_TOKEN)."""

import os
import threading
import uuid

import pytest

from conftest import fast_demo, needs_daemon
from platform_client import (AuthenticationError, BadRequest, Client, Job, JobLookupError,
                             JobStatus, NotFound, UnreachableError, ValidationError,
                             WaitTimeout)

pytestmark = needs_daemon


def test_health_and_frameworks(client):
    assert client.health()["status"] == "healthy"
    names = [f.name for f in client.frameworks()]
    assert "demo" in names


def test_upload_dataset_lists_and_resumes(client, dataset, tmp_path):
    d = client.get_dataset(dataset)
    assert d is not None and d.file_count == 7
    assert {f.path for f in d.files} >= {"images/0000.jpg", "labels/0002.txt", "data.yaml"}
    assert dataset in [s.name for s in client.list_datasets()]
    assert client.get_dataset("no-such-dataset") is None
    # A second upload adds only what is new.
    (tmp_path / "a.txt").write_text("a")
    again = client.upload_dataset(tmp_path, "more")
    (tmp_path / "b.txt").write_text("bb")
    again = client.upload_dataset(tmp_path, "more")
    assert again.file_count == 2 and again.total_bytes == 3


def test_create_get_list_and_refer_to_jobs_like_the_cli(client, dataset):
    user = f"pytest-{uuid.uuid4().hex[:8]}"
    a = client.create_job("demo", "yolo11n", dataset, config=fast_demo(), user=user)
    b = client.create_job("demo", "yolo11n", client.get_dataset(dataset).uri,
                          user="pytest-b", idempotency_key="sweep-b-1")
    assert isinstance(a, Job) and a.status in (JobStatus.PENDING, JobStatus.RUNNING)
    assert a.config == fast_demo() and a.dataset_s3_uri.endswith("/datasets/coco128/")
    assert b.number == a.number + 1
    for ref in (a.id, a.id.upper(), a.id[:13], a.number, str(a.number), f"#{a.number}", a):
        assert client.get_job(ref).id == a.id, ref
    with pytest.raises(JobLookupError) as amb:
        client.get_job(a.id[:4])  # every job of this run shares its first hex digits
    assert len(amb.value.candidates) >= 2 and "more than one job" in str(amb.value)
    with pytest.raises(JobLookupError, match="no job #"):
        client.get_job(10**11)
    with pytest.raises(JobLookupError, match="is not a job"):
        client.get_job("xyz")
    mine = client.list_jobs(user=user)
    assert [j.id for j in mine] == [a.id]
    newest = client.list_jobs(limit=2)
    assert [j.id for j in newest] == [b.id, a.id]
    client.cancel(b)
    assert a.id not in [j.id for j in client.list_jobs(status="cancelled")]
    assert b.id in [j.id for j in client.list_jobs(status="cancelled")]


def test_wait_follows_the_job_and_metrics_read_every_point(client, dataset):
    job = client.create_job("demo", "yolo11n", dataset, config=fast_demo(steps_per_epoch=5))
    done = client.wait(job, timeout=120)
    assert done.status == JobStatus.COMPLETED and done.progress == 1.0 and done.finished
    points = client.metrics(done)
    epochs = [p.epoch for p in points if p.step is None]
    assert epochs == [1, 2, 3]
    assert [p.step for p in points if p.step is not None] == list(range(1, 16))
    assert all(isinstance(p.metrics, dict) for p in points)
    assert [p.id for p in points] == sorted(p.id for p in points)
    later = client.metrics(done, after_id=points[-2].id)
    assert [p.id for p in later] == [points[-1].id]
    try:
        import pandas  # noqa: F401
    except ImportError:
        with pytest.raises(ImportError, match="pandas"):
            client.metrics(done, as_dataframe=True)
    else:
        df = client.metrics(done, as_dataframe=True)
        assert len(df) == len(points) and "mAP50" in df.columns and "step" in df.columns


def test_wait_times_out_and_cancel_ends_the_job(client, dataset):
    job = client.create_job("demo", "yolo11n", dataset, config={"epochs": 1000, "epoch_seconds": 1})
    with pytest.raises(WaitTimeout) as e:
        client.wait(job, timeout=1.5)
    assert e.value.job.id == job.id and not e.value.job.finished
    cancelled = client.cancel(job.number)
    assert cancelled.status == JobStatus.CANCELLED
    assert client.wait(job, timeout=30).status == JobStatus.CANCELLED
    with pytest.raises(BadRequest) as again:
        client.cancel(job)
    assert again.value.status_code == 400 and again.value.detail


def test_wait_falls_back_to_polling_without_a_stream(client, dataset, monkeypatch):
    def no_stream(*args, **kwargs):
        raise UnreachableError(client.server, "a proxy that buffers event streams")
        yield  # pragma: no cover

    monkeypatch.setattr(client, "_events", no_stream)
    job = client.create_job("demo", "yolo11n", dataset, config=fast_demo())
    assert client.wait(job, timeout=120, poll_interval=0.2).status == JobStatus.COMPLETED


def test_stream_events_of_one_job_and_of_all(client, dataset):
    seen = []
    ready = threading.Event()

    def follow_all():
        for event in client.stream_events():
            seen.append(event)
            if event.type == "ready":
                ready.set()
            if len([e for e in seen if e.job and e.job.finished and e.job.id == job_ids[0]]):
                return

    job_ids = []
    with Client() as other:
        t = threading.Thread(target=follow_all, daemon=True)
        t.start()
        assert ready.wait(30)
        job = other.create_job("demo", "yolo11n", dataset, config=fast_demo())
        job_ids.append(job.id)
        events = list(other.stream_events(job))
    assert events[0].type == "job" and events[0].job.id == job.id
    assert events[-1].job is not None and events[-1].job.status == JobStatus.COMPLETED
    metric_epochs = [e.metric.epoch for e in events if e.type == "metric"]
    assert metric_epochs == [1, 2, 3]
    assert all(e.id for e in events)
    # Resuming after the last event: nothing more comes.
    assert list(other_client_resume(job, events[-1].id)) == []
    t.join(60)
    assert any(e.job and e.job.id == job.id for e in seen)


def other_client_resume(job, last_id):
    with Client() as c:
        return list(c.stream_events(job, last_event_id=last_id))


def test_download_artifacts_and_logs(client, dataset, tmp_path):
    job = client.wait(client.create_job("demo", "yolo11n", dataset, config=fast_demo()), timeout=120)
    files = client.artifacts(job)
    assert files and job.checkpoint_s3_uri in [f.uri for f in files]
    written = client.download_artifacts(job, tmp_path / "out")
    assert sorted(p.relative_to(tmp_path / "out").as_posix() for p in written) == sorted(f.path for f in files)
    for f in files:
        assert (tmp_path / "out" / f.path).stat().st_size == f.size
    assert not list((tmp_path / "out").rglob("*.part"))
    assert "epoch 3/3" in client.logs(job)
    assert len(client.logs(job, tail=1).strip().splitlines()) == 1


def test_errors_carry_the_api_body(client, dataset):
    with pytest.raises(NotFound) as nf:
        client.get_job("0190f000-0000-7000-8000-00000000dead")
    assert nf.value.status_code == 404 and "detail" in nf.value.body
    with pytest.raises(ValidationError) as bad:
        client.create_job("no-such-framework", "m", dataset)
    assert bad.value.status_code == 422 and bad.value.field == "framework"
    assert "demo" in bad.value.detail
    with pytest.raises(JobLookupError, match="no dataset named"):
        client.create_job("demo", "m", "missing-dataset")
    with pytest.raises(UnreachableError, match="cannot reach the platform server"):
        Client("http://127.0.0.1:9").health()


@pytest.mark.skipif(not os.environ.get("PLATFORM_TOKEN"), reason="the daemon has no API token")
def test_a_wrong_token_is_an_authentication_error():
    with Client(token="wrong-token-for-this-test") as c:
        with pytest.raises(AuthenticationError) as e:
            c.list_jobs()
    assert e.value.status_code == 401
