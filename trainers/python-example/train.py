#!/usr/bin/env python3
"""Reference trainer for `platform`: the whole trainer contract, standard library only.

The daemon launches this script with the environment of SPEC §4:
JOB_ID, CALLBACK_URL, CALLBACK_TOKEN, BACKEND_BASE_URL, MODEL_NAME, FRAMEWORK,
DATASET_S3_URI, OUTPUT_S3_URI, CONFIG (the job's config as a JSON object) and,
when S3 is configured, S3_ENDPOINT / AWS_* / BUCKET_NAME.

Reports go into an ordered, bounded queue that a background thread delivers
with authenticated callbacks, so training goes on while the daemon restarts
or is upgraded: the backlog arrives, in order and exactly once (every report
carries a `sequence`), when it is back. Delivery gives up after
PLATFORM_REPORT_TIMEOUT seconds (default 3600) without reaching the daemon.
A 409 means the job was cancelled or already ended: the next report raises
JobEnded and the trainer stops. The final report waits until everything is
delivered. The checkpoint is uploaded through the daemon's artifact endpoint.

Copy it as the template for a real trainer: replace `train_one_epoch` with
your framework's training step (see trainers/README.md for an Ultralytics
YOLO example).
"""

import collections
import json
import math
import os
import random
import sys
import threading
import time
import urllib.error
import urllib.parse
import urllib.request


class JobEnded(Exception):
    """The daemon answered 409: the job is already cancelled/finished."""


class ReportFailed(Exception):
    """A report cannot be delivered (rejected, or the daemon stayed away too long)."""


class Reporter:
    """Queues reports and delivers them in order from a background thread."""

    CAPACITY = 10_000  # queued reports; when full, `send` waits for room

    def __init__(self):
        self.url = os.environ["CALLBACK_URL"]
        self.base = os.environ.get("BACKEND_BASE_URL") or self.url.split("/api/v1/")[0]
        self.job_id = os.environ.get("JOB_ID", "")
        self.token = os.environ.get("CALLBACK_TOKEN", "")
        self.timeout = float(os.environ.get("PLATFORM_REPORT_TIMEOUT") or 3600)
        self.sequence = 0
        self.queue = collections.deque()
        self.changed = threading.Condition()
        self.stopped = None  # the exception that stopped delivery, once it has
        threading.Thread(target=self._deliver_in_order, daemon=True).start()

    def send(self, status, progress=None, message=None, metrics=None,
             checkpoint=None, error=None):
        """Queues a callback; raises JobEnded/ReportFailed once delivery stopped."""
        body = {"status": status}
        for key, value in (("progress", progress), ("message", message),
                           ("metrics", metrics), ("checkpoint_s3_uri", checkpoint),
                           ("error", error)):
            if value is not None:
                body[key] = value
        with self.changed:
            if self._merge_progress(body):
                return
            while self.stopped is None and len(self.queue) >= self.CAPACITY:
                self.changed.wait()
            if self.stopped is not None:
                raise self.stopped
            self.sequence += 1
            body["sequence"] = self.sequence
            self.queue.append(body)
            self.changed.notify_all()

    def finish(self, status, **fields):
        """Sends the last report and waits until everything is delivered."""
        self.send(status, **fields)
        with self.changed:
            while self.stopped is None and self.queue:
                self.changed.wait()
            if self.stopped is not None:
                raise self.stopped

    def upload(self, path, data):
        """Uploads an output file with the job's token; returns its URI in the store."""
        url = (f"{self.base}/api/v1/training/jobs/{self.job_id}/artifacts/"
               f"{urllib.parse.quote(path)}")
        stored = self._patiently(lambda: self._request(
            "PUT", url, data, "application/octet-stream"))
        return stored["uri"]

    @staticmethod
    def _progress_only(body):
        return body["status"] == "running" and not (
            body.get("metrics") or "checkpoint_s3_uri" in body or "error" in body)

    def _merge_progress(self, body):
        """A progress-only update replaces one queued just before it (never the
        first, which may be on its way); metric points are never merged."""
        if self.stopped is not None or len(self.queue) < 2:
            return False
        last = self.queue[-1]
        if not (self._progress_only(body) and self._progress_only(last)):
            return False
        self.sequence += 1
        last.update(body, sequence=self.sequence)
        return True

    def _deliver_in_order(self):
        while True:
            with self.changed:
                while not self.queue:
                    self.changed.wait()
                body = self.queue[0]
            try:
                data = json.dumps(body).encode()
                try:
                    self._patiently(lambda: self._request("POST", self.url, data))
                except JobEnded as ended:
                    if str(ended) != body["status"]:
                        raise  # else the job already is where this report puts it
            except Exception as e:  # JobEnded, ReportFailed: stop for good
                with self.changed:
                    self.stopped = e
                    self.queue.clear()
                    self.changed.notify_all()
                if not isinstance(e, JobEnded):
                    print(f"cannot report to the platform server: {e}", file=sys.stderr, flush=True)
                return
            with self.changed:
                self.queue.popleft()
                self.changed.notify_all()

    def _request(self, method, url, data, content_type="application/json"):
        request = urllib.request.Request(
            url, data=data, method=method,
            headers={"Content-Type": content_type,
                     "Authorization": f"Bearer {self.token}"})
        with urllib.request.urlopen(request, timeout=60) as response:
            return json.load(response)

    def _patiently(self, attempt):
        """Runs `attempt` until it succeeds, retrying while the daemon is away
        (restarting, upgrading) with capped backoff, for up to `timeout` seconds."""
        delay, down_since = 0.2, None
        while True:
            try:
                return attempt()
            except urllib.error.HTTPError as e:
                if e.code == 409:
                    raise JobEnded(json.load(e).get("status", "ended"))
                if e.code < 500 and e.code != 429:
                    raise ReportFailed(f"the platform server answered {e.code}: {e.read()[:200]!r}")
                reason = f"the platform server answered {e.code}"
            except (urllib.error.URLError, OSError) as e:
                reason = str(e)  # daemon restarting or busy: retry with backoff
            now = time.monotonic()
            down_since = down_since or now
            if now - down_since >= self.timeout:
                raise ReportFailed(f"gave up after {now - down_since:.0f}s without reaching "
                                   f"the platform server (PLATFORM_REPORT_TIMEOUT): {reason}")
            time.sleep(delay * random.uniform(0.8, 1.2))
            delay = min(delay * 2, 5)


def train_one_epoch(epoch, epochs, rng):
    """Stand-in for a real training epoch: returns this epoch's metrics."""
    t = epoch / epochs
    loss = 0.3 + 2.0 * math.exp(-3 * t) + rng.uniform(-0.03, 0.03)
    accuracy = min(1.0, 0.9 * (1 - math.exp(-3 * t)) + rng.uniform(-0.01, 0.01))
    return {"epoch": epoch, "loss": round(loss, 5), "accuracy": round(accuracy, 5)}


def save_checkpoint(reporter, model, metrics):
    """Uploads `best.pt` (here: the final metrics standing in for weights);
    returns its URI, or None when the upload failed (the job still completes)."""
    data = json.dumps({"model": model, "metrics": metrics}).encode()
    try:
        return reporter.upload("best.pt", data)
    except ReportFailed as e:
        print(f"could not store the checkpoint ({e}); finishing without one", flush=True)
        return None


def main():
    config = json.loads(os.environ.get("CONFIG") or "{}")
    epochs = int(config.get("epochs", 5))
    pause = float(config.get("epoch_seconds", 0.2))
    model = os.environ.get("MODEL_NAME", "model")
    reporter = Reporter()
    rng = random.Random(os.environ.get("JOB_ID", "seed"))
    print(f"training {model} on {os.environ.get('DATASET_S3_URI')} for {epochs} epochs", flush=True)
    try:
        reporter.send("running", progress=0.0, message=f"starting {model}")
        metrics = {}
        for epoch in range(1, epochs + 1):
            time.sleep(pause)
            metrics = train_one_epoch(epoch, epochs, rng)
            print(f"epoch {epoch}/{epochs} {metrics}", flush=True)
            reporter.send("running", progress=epoch / epochs,
                          message=f"epoch {epoch}/{epochs}", metrics=metrics)
        reporter.finish("completed", progress=1.0, message=f"finished {epochs} epochs",
                        checkpoint=save_checkpoint(reporter, model, metrics))
    except JobEnded as ended:
        print(f"job is {ended}; stopping", flush=True)
        return 0
    except Exception as e:  # report the failure, then exit non-zero
        try:
            reporter.finish("failed", error=f"{type(e).__name__}: {e}")
        except Exception:
            pass
        raise
    return 0


if __name__ == "__main__":
    sys.exit(main())
