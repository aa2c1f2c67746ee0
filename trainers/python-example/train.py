#!/usr/bin/env python3
"""Reference trainer for `platform`, built on `platform_client.trainer`
(clients/python; standard library only, so it runs with a bare python3).

The daemon launches this script with the environment of SPEC §4 (JOB_ID,
CALLBACK_URL, CALLBACK_TOKEN, BACKEND_BASE_URL, MODEL_NAME, DATASET_S3_URI,
CONFIG, …). Its Reporter queues reports and delivers them from a background
thread, in order and exactly once (every report carries a `sequence`), so
training goes on while the daemon restarts; it gives up after
PLATFORM_REPORT_TIMEOUT seconds (default 3600) without reaching the daemon.
A cancel (409, or SIGTERM from the daemon) raises JobEnded: the trainer
stops and exits 0. The final report waits until everything is delivered;
the checkpoint goes up through the daemon's artifact endpoint.

Copy it as the template for a real trainer: replace `train_one_epoch` with
your framework's training step, or use the Ultralytics / Lightning adapters
(clients/python/README.md).
"""

import json
import math
import os
import random
import sys
import time
from pathlib import Path


def _import_trainer_side():
    """`platform_client.trainer` when installed (`pip install ./clients/python`,
    or into this directory's venv/), else from the repository this file is in."""
    try:
        import platform_client.trainer as trainer
    except ImportError:
        for parent in Path(__file__).resolve().parents:
            src = parent / "clients" / "python" / "src"
            if (src / "platform_client").is_dir():
                sys.path.insert(0, str(src))
                break
        import platform_client.trainer as trainer
    return trainer


trainer = _import_trainer_side()


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
    except trainer.ReportFailed as e:
        print(f"could not store the checkpoint ({e}); finishing without one", flush=True)
        return None


def main():
    config = trainer.config()
    epochs = int(config.get("epochs", 5))
    pause = float(config.get("epoch_seconds", 0.2))
    model = os.environ.get("MODEL_NAME", "model")
    reporter = trainer.Reporter()
    rng = random.Random(os.environ.get("JOB_ID", "seed"))
    print(f"training {model} on {os.environ.get('DATASET_S3_URI')} for {epochs} epochs", flush=True)
    with reporter.training():
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
    return 0


if __name__ == "__main__":
    sys.exit(main())
