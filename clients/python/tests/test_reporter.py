"""The trainer Reporter against a stand-in daemon: order, batching,
retries through an outage, 409, rejection, the timeout and SIGTERM.
(tests/test_trainer_e2e.py runs it inside real trainers of a real daemon.)"""

import os
import signal
import sys
import threading
import time

import pytest

from fake_daemon import FakeDaemon, contract_env, free_port
from platform_client.trainer import Contract, JobEnded, ReportFailed, Reporter


def reporter(port, timeout=600, **kw):
    return Reporter(Contract.from_env(contract_env(port, timeout)), handle_sigterm=False, **kw)


def test_reports_arrive_in_order_with_sequences_and_batched_points():
    d = FakeDaemon().start()
    r = reporter(d.port)
    r.send(progress=0.0, message="starting")
    for step in range(1, 2501):
        r.log({"loss": 1.0 / step}, step=step)
    r.send(progress=0.5, metrics={"epoch": 1, "loss": 0.4, "bad": float("nan")})
    r.log({"loss": 0.1}, step=2501)
    r.finish("completed", progress=1.0)
    kinds = ["points" if "points" in b else b["status"] for b in d.applied]
    assert kinds[0] == "running" and kinds[-1] == "completed"
    assert d.sequences() == sorted(d.sequences()) and len(set(d.sequences())) == len(d.sequences())
    steps = [p["step"] for b in d.applied if "points" in b for p in b["points"]]
    assert steps == list(range(1, 2502)), "every step point once, in order"
    assert all(len(b["points"]) <= 1000 for b in d.applied if "points" in b)
    assert sum(1 for b in d.applied if "points" in b) < 100, "points travel in batches"
    epoch = next(b for b in d.applied if b.get("metrics"))
    assert epoch["metrics"] == {"epoch": 1, "loss": 0.4}, "non-finite numbers are dropped"
    # The step points before the epoch callback were all delivered before it.
    i = d.applied.index(epoch)
    assert max(p["step"] for b in d.applied[:i] if "points" in b for p in b["points"]) == 2500


def test_training_goes_on_while_the_daemon_is_away_and_the_backlog_arrives_once():
    port = free_port()
    r = reporter(port)
    started = time.monotonic()
    for epoch in range(1, 6):
        r.send(progress=epoch / 5, metrics={"epoch": epoch, "loss": 1 / epoch})
    assert time.monotonic() - started < 1, "send only queues"
    time.sleep(1.0)  # several refused attempts
    d = FakeDaemon(port).start()
    r.finish("completed", progress=1.0)
    assert [b["metrics"]["epoch"] for b in d.applied[:5]] == [1, 2, 3, 4, 5]
    assert d.applied[-1]["status"] == "completed"
    assert d.sequences() == [1, 2, 3, 4, 5, 6]


def test_5xx_and_429_are_retried_and_applied_once():
    d = FakeDaemon().start()
    d.fail_next = [503, 429, 502]
    r = reporter(d.port)
    r.finish("completed", metrics={"epoch": 1, "loss": 0.5})
    assert len(d.applied) == 1 and len(d.requests) == 4


def test_a_cancelled_job_raises_job_ended():
    d = FakeDaemon().start()
    d.status = "cancelled"
    r = reporter(d.port)
    r.send(metrics={"epoch": 1, "loss": 1.0})
    with pytest.raises(JobEnded) as e:
        r.flush()
    assert e.value.status == "cancelled"
    with pytest.raises(JobEnded):
        r.send(metrics={"epoch": 2, "loss": 0.9})
    # Reporting the status the job already has is not an error.
    d2 = FakeDaemon().start()
    d2.status = "cancelled"
    reporter(d2.port).finish("cancelled")


def test_a_rejected_report_stops_delivery():
    d = FakeDaemon().start()
    d.fail_next = [422]
    r = reporter(d.port)
    with pytest.raises(ReportFailed, match="422"):
        r.finish("completed")


def test_delivery_gives_up_after_the_report_timeout():
    r = reporter(free_port(), timeout=0.5)
    started = time.monotonic()
    with pytest.raises(ReportFailed, match="PLATFORM_REPORT_TIMEOUT"):
        r.finish("completed")
    assert time.monotonic() - started < 10


def test_progress_only_updates_merge_while_queued_but_points_never_do():
    port = free_port()
    r = reporter(port)
    r.send(progress=0.0)
    for i in range(1, 50):
        r.send(progress=i / 100, message=f"batch {i}")
    r.send(metrics={"epoch": 1, "loss": 0.3})
    d = FakeDaemon(port).start()
    r.finish("completed")
    assert len(d.applied) == 4, [b for b in d.applied]
    assert d.applied[1]["message"] == "batch 49" and d.applied[1]["progress"] == 0.49


def test_a_full_queue_makes_the_producer_wait_instead_of_dropping():
    port = free_port()
    r = reporter(port, capacity=5)
    for e in range(1, 6):
        r.send(metrics={"epoch": e, "loss": 1.0})
    done = threading.Event()

    def sixth():
        r.send(metrics={"epoch": 6, "loss": 1.0})
        done.set()

    threading.Thread(target=sixth, daemon=True).start()
    assert not done.wait(0.5), "the sixth report waits for room"
    d = FakeDaemon(port).start()
    assert done.wait(10)
    r.finish("completed")
    assert [b["metrics"]["epoch"] for b in d.applied if b.get("metrics")] == [1, 2, 3, 4, 5, 6]


def test_uploads_send_the_file_with_the_token():
    d = FakeDaemon().start()
    r = reporter(d.port)
    uri = r.upload("best.pt", b"weights")
    assert uri.endswith("/outputs/best.pt") and d.artifacts["best.pt"] == b"weights"


SIGTERM_TRAINER = """
import sys, time
from platform_client.trainer import JobEnded, Reporter
r = Reporter()
r.send(progress=0.1, message="training")
r.flush()
try:
    print("ready", flush=True)
    while True:
        time.sleep(0.05)
except JobEnded as e:
    print("stopped:", e.status, flush=True)
    sys.exit(0)
"""


def test_sigterm_reports_cancelled_and_stops_training(tmp_path):
    import subprocess

    d = FakeDaemon().start()
    env = {**os.environ, **contract_env(d.port),
           "PYTHONPATH": os.pathsep.join(p for p in sys.path if p)}
    p = subprocess.Popen([sys.executable, "-c", SIGTERM_TRAINER], env=env,
                         stdout=subprocess.PIPE, text=True)
    assert p.stdout.readline().strip() == "ready"
    p.send_signal(signal.SIGTERM)
    out, _ = p.communicate(timeout=20)
    assert p.returncode == 0 and "stopped: cancelled" in out
    assert d.applied[-1]["status"] == "cancelled"


def test_the_contract_comes_from_the_environment():
    c = Contract.from_env({"CALLBACK_URL": "http://h:1/api/v1/training/jobs/"
                                           "0190f000-0000-7000-8000-000000000009/callback",
                           "CONFIG": '{"epochs": 3}'})
    assert c.base_url == "http://h:1" and c.job_id.endswith("09")
    assert c.config == {"epochs": 3} and c.report_timeout == 3600
    with pytest.raises(ReportFailed, match="CALLBACK_URL"):
        Contract.from_env({})
    with pytest.raises(ReportFailed, match="PLATFORM_REPORT_TIMEOUT"):
        Contract.from_env({"CALLBACK_URL": "http://h:1/cb", "PLATFORM_REPORT_TIMEOUT": "1h"})


def test_the_trainer_module_needs_no_httpx():
    import subprocess

    code = ("import sys; sys.modules['httpx'] = None\n"
            "import platform_client.trainer, platform_client.trainer.ultralytics\n"
            "print('ok')")
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(p for p in sys.path if p)}
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True)
    assert out.stdout.strip() == "ok", out.stderr
