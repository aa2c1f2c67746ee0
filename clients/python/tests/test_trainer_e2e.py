"""The trainer side inside real trainers of a real daemon: the daemon
launches tests/trainer_app.py as framework `pytest-trainer` (registered by
the Rust test that runs this suite)."""

import socket
import threading
import time

import pytest

from conftest import needs_daemon
from platform_client import JobStatus

pytestmark = needs_daemon


@pytest.fixture
def trainer(client):
    if "pytest-trainer" not in [f.name for f in client.frameworks()]:
        pytest.skip("the daemon has no `pytest-trainer` framework (cargo test --test python_client registers it)")
    return "pytest-trainer"


# copy_local=False: the dataset comes through the job's own dataset route with
# the job's token, although the daemon requires an API token the trainer lacks.
@pytest.mark.parametrize("copy_local", [True, False])
def test_a_trainer_reports_in_order_moves_files_and_completes(client, trainer, dataset, copy_local):
    job = client.create_job(trainer, "tiny", dataset,
                            config={"scenario": "basic", "epochs": 3, "steps": 10, "copy_local": copy_local})
    done = client.wait(job, timeout=120)
    assert done.status == JobStatus.COMPLETED, client.logs(job)
    assert done.checkpoint_s3_uri.endswith("/outputs/best.pt")
    points = client.metrics(done)
    assert [p.step for p in points if p.step is not None] == list(range(1, 31))
    epochs = [p for p in points if p.step is None]
    assert [p.epoch for p in epochs] == [1, 2, 3]
    assert epochs[0].metrics["files"] == 7, "the whole dataset was downloaded"
    # Order: each epoch's point comes after its steps.
    by_id = sorted(points, key=lambda p: p.id)
    assert [p.step or p.epoch * 100 for p in by_id][:11] == list(range(1, 11)) + [100]
    assert [f.path for f in client.artifacts(done)] == ["best.pt"]
    assert "dataset: data.yaml,images/0000.jpg" in client.logs(done)


def test_a_cancelled_trainer_learns_of_it_and_exits_cleanly(client, trainer, dataset):
    job = client.create_job(trainer, "tiny", dataset, config={"scenario": "until_cancelled"})
    deadline = time.monotonic() + 60
    while "training" not in client.logs(job):
        assert time.monotonic() < deadline, client.logs(job)
        time.sleep(0.2)
    client.cancel(job)
    deadline = time.monotonic() + 30
    while "stopped: the job is cancelled" not in client.logs(job):
        assert time.monotonic() < deadline, client.logs(job)
        time.sleep(0.2)
    assert client.get_job(job).status == JobStatus.CANCELLED


def _forward(listener):
    def pipe(a, b):
        try:
            while True:
                data = a.recv(65536)
                if not data:
                    break
                b.sendall(data)
        except OSError:
            pass
        finally:
            for s in (a, b):
                try:
                    s.shutdown(socket.SHUT_RDWR)
                except OSError:
                    pass

    def serve(target):
        while True:
            try:
                conn, _ = listener.accept()
            except OSError:
                return
            upstream = socket.create_connection(target)
            threading.Thread(target=pipe, args=(conn, upstream), daemon=True).start()
            threading.Thread(target=pipe, args=(upstream, conn), daemon=True).start()

    return serve


def test_reports_wait_out_an_outage_and_arrive_once_in_order(client, trainer, dataset):
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    job = client.create_job(trainer, "tiny", dataset, config={"scenario": "outage", "via_port": port})
    deadline = time.monotonic() + 60
    while "queued" not in client.logs(job):
        assert time.monotonic() < deadline, client.logs(job)
        time.sleep(0.2)
    time.sleep(1.0)  # the trainer keeps retrying, refused
    assert client.get_job(job).progress == 0.0, "nothing got through yet"
    listener = socket.socket()
    listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    listener.bind(("127.0.0.1", port))
    listener.listen()
    host, daemon_port = client.server.split("//", 1)[1].rsplit(":", 1)
    threading.Thread(target=_forward(listener), args=((host, int(daemon_port)),), daemon=True).start()
    try:
        done = client.wait(job, timeout=60)
    finally:
        listener.close()
    assert done.status == JobStatus.COMPLETED, client.logs(job)
    assert [p.epoch for p in client.metrics(done)] == [1, 2, 3, 4, 5]
    assert "unreachable" in client.logs(job)
