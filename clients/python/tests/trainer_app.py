"""A trainer for the end-to-end tests (framework `pytest-trainer`): what it
does comes from the job's config `scenario`; it uses only
platform_client.trainer, like a real trainer."""

import socket
import sys
import time
from pathlib import Path

from platform_client.trainer import (Contract, JobEnded, Reporter, config, download_dataset,
                                     upload_artifact)


def basic(cfg):
    data = download_dataset("data", copy_local=cfg.get("copy_local", True))
    files = sorted(p.relative_to(data).as_posix() for p in data.rglob("*") if p.is_file())
    print("dataset:", ",".join(files), flush=True)
    r = Reporter()
    r.send(progress=0.0, message="starting")
    epochs, steps = cfg.get("epochs", 3), cfg.get("steps", 10)
    for epoch in range(1, epochs + 1):
        for s in range(steps):
            r.log({"loss": 1.0 / (epoch * steps + s)}, step=(epoch - 1) * steps + s + 1)
        r.send(progress=epoch / epochs, message=f"epoch {epoch}/{epochs}",
               metrics={"epoch": epoch, "loss": 1.0 / epoch, "files": len(files)})
    Path("best.pt").write_bytes(b"weights" * 1000)
    r.finish("completed", progress=1.0, checkpoint=upload_artifact("best.pt"))


def until_cancelled(cfg):
    r = Reporter()
    r.send(progress=0.1, message="waiting to be cancelled")
    r.flush()
    print("training", flush=True)
    try:
        while True:
            time.sleep(0.1)
            if cfg.get("report_while_waiting"):
                r.send(metrics={"epoch": 1, "loss": 1.0})
    except JobEnded as e:
        print(f"stopped: the job is {e.status}", flush=True)


def outage(cfg):
    """Reports through a port the test opens only later: the daemon is
    'away' for the first reports."""
    c = Contract.from_env()
    away = c.base_url.rsplit(":", 1)[0] + f":{cfg['via_port']}"
    c.callback_url = c.callback_url.replace(c.base_url, away)
    c.base_url = away
    r = Reporter(c)
    for epoch in range(1, cfg.get("epochs", 5) + 1):
        r.send(progress=epoch / 5, message=f"epoch {epoch}", metrics={"epoch": epoch, "loss": 1 / epoch})
    print("queued", flush=True)
    r.finish("completed", progress=1.0)


def main():
    cfg = config()
    scenario = {"basic": basic, "until_cancelled": until_cancelled, "outage": outage}[cfg["scenario"]]
    scenario(cfg)
    return 0


if __name__ == "__main__":
    sys.exit(main())
