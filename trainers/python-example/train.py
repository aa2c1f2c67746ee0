#!/usr/bin/env python3
"""Reference trainer for `platform`: the whole trainer contract, standard library only.

The daemon launches this script with the environment of SPEC §4:
JOB_ID, CALLBACK_URL, CALLBACK_TOKEN, BACKEND_BASE_URL, MODEL_NAME, FRAMEWORK,
DATASET_S3_URI, OUTPUT_S3_URI, CONFIG (the job's config as a JSON object) and,
when S3 is configured, S3_ENDPOINT / AWS_* / BUCKET_NAME.

It reports progress with authenticated callbacks and stops as soon as a
callback answers 409 (the job was cancelled or already ended). Copy it as the
template for a real trainer: replace `train_one_epoch` with your framework's
training step (see trainers/README.md for an Ultralytics YOLO example).
"""

import json
import math
import os
import random
import sys
import time
import urllib.error
import urllib.request


class JobEnded(Exception):
    """The daemon answered 409: the job is already cancelled/finished."""


class Reporter:
    """Sends callbacks with the job's bearer token, retrying transient failures."""

    def __init__(self):
        self.url = os.environ["CALLBACK_URL"]
        self.token = os.environ.get("CALLBACK_TOKEN", "")
        self.sequence = 0

    def send(self, status, progress=None, message=None, metrics=None,
             checkpoint=None, error=None):
        self.sequence += 1
        body = {"status": status, "sequence": self.sequence}
        for key, value in (("progress", progress), ("message", message),
                           ("metrics", metrics), ("checkpoint_s3_uri", checkpoint),
                           ("error", error)):
            if value is not None:
                body[key] = value
        data = json.dumps(body).encode()
        delay = 0.2
        for attempt in range(8):
            request = urllib.request.Request(
                self.url, data=data, method="POST",
                headers={"Content-Type": "application/json",
                         "Authorization": f"Bearer {self.token}"})
            try:
                with urllib.request.urlopen(request, timeout=10) as response:
                    return json.load(response)
            except urllib.error.HTTPError as e:
                if e.code == 409:
                    raise JobEnded(json.load(e).get("status", "ended"))
                if e.code < 500 and e.code != 429:
                    raise  # our bug (400/401/422): retrying will not help
            except (urllib.error.URLError, ConnectionError, TimeoutError):
                pass  # daemon restarting or busy: retry with backoff
            time.sleep(delay)
            delay = min(delay * 2, 10)
        raise RuntimeError(f"cannot reach {self.url} after retries")


def train_one_epoch(epoch, epochs, rng):
    """Stand-in for a real training epoch: returns this epoch's metrics."""
    t = epoch / epochs
    loss = 0.3 + 2.0 * math.exp(-3 * t) + rng.uniform(-0.03, 0.03)
    accuracy = min(1.0, 0.9 * (1 - math.exp(-3 * t)) + rng.uniform(-0.01, 0.01))
    return {"epoch": epoch, "loss": round(loss, 5), "accuracy": round(accuracy, 5)}


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
        for epoch in range(1, epochs + 1):
            time.sleep(pause)
            metrics = train_one_epoch(epoch, epochs, rng)
            print(f"epoch {epoch}/{epochs} {metrics}", flush=True)
            reporter.send("running", progress=epoch / epochs,
                          message=f"epoch {epoch}/{epochs}", metrics=metrics)
        output = os.environ.get("OUTPUT_S3_URI", "")
        reporter.send("completed", progress=1.0, message=f"finished {epochs} epochs",
                      checkpoint=(output + "best.pt") if output else None)
    except JobEnded as ended:
        print(f"job is {ended}; stopping", flush=True)
        return 0
    except Exception as e:  # report the failure, then exit non-zero
        try:
            reporter.send("failed", error=f"{type(e).__name__}: {e}")
        except Exception:
            pass
        raise
    return 0


if __name__ == "__main__":
    sys.exit(main())
