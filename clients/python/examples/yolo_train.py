#!/usr/bin/env python3
"""An Ultralytics YOLO trainer for `platform`: downloads the job's dataset
(a directory with data.yaml), builds the model from its YAML (MODEL_NAME,
e.g. `yolov8n` → yolov8n.yaml: no pretrained weights, nothing downloaded),
trains with platform reporting (epoch metrics under Ultralytics' names,
progress, best.pt/last.pt uploaded, `completed`), and stops cleanly when
the job is cancelled.

Register it in a trainers file, with a Python that has ultralytics and
platform-client installed:

    [trainers.yolo]
    command = ["/path/to/venv/bin/python", "/path/to/clients/python/examples/yolo_train.py"]
    env = { PYTHONUNBUFFERED = "1" }

CONFIG keys: epochs (default 2), imgsz (64), batch (4), model_yaml (default
`<MODEL_NAME>.yaml`).
"""

import os
import sys
import tempfile
from pathlib import Path

# Ultralytics looks for fonts, assets and updates online unless told not to;
# its settings file goes to a private directory instead of ~/.config.
os.environ.setdefault("YOLO_OFFLINE", "1")
os.environ.setdefault("YOLO_CONFIG_DIR", os.path.join(tempfile.gettempdir(), f"yolo-config-{os.getuid()}"))

from platform_client.trainer import Reporter, config, download_dataset  # noqa: E402
from platform_client.trainer.ultralytics import attach  # noqa: E402


def main():
    cfg = config()
    reporter = Reporter()
    with reporter.training():
        reporter.send(progress=0.0, message="downloading the dataset")
        data = download_dataset("data")
        from ultralytics import YOLO, settings

        settings.update({"sync": False})
        model = YOLO(cfg.get("model_yaml") or f"{os.environ.get('MODEL_NAME', 'yolov8n')}.yaml")
        attach(model, reporter)
        model.train(data=str(Path(data) / "data.yaml"), epochs=int(cfg.get("epochs", 2)),
                    imgsz=int(cfg.get("imgsz", 64)), batch=int(cfg.get("batch", 4)), device="cpu",
                    workers=0, plots=False, amp=False, project=str(Path("runs").resolve()),
                    name="train", exist_ok=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
