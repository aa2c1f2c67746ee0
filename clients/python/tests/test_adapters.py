"""The Ultralytics and Lightning adapters with the real libraries, training
for real on CPU on data made here (no downloads). Opt-in: they run only
where the libraries are installed (pip install ultralytics lightning)."""

import importlib.util
from pathlib import Path

import pytest

from fake_daemon import FakeDaemon, contract_env
from platform_client.trainer import Contract, Reporter

EXAMPLES = Path(__file__).resolve().parent.parent / "examples"


def need(module, what):
    if importlib.util.find_spec(module) is None:
        pytest.skip(f"{what} is not installed: `pip install {what}` to run this opt-in adapter test")


def reporter(d):
    return Reporter(Contract.from_env(contract_env(d.port)), handle_sigterm=False)


@pytest.fixture
def yolo(tmp_path, monkeypatch):
    """Ultralytics offline in `tmp_path`: (YOLO, attach, a tiny dataset, a fake daemon)."""
    need("ultralytics", "ultralytics")
    monkeypatch.setenv("YOLO_OFFLINE", "1")
    monkeypatch.setenv("YOLO_CONFIG_DIR", str(tmp_path / "yolo-config"))
    monkeypatch.chdir(tmp_path)
    monkeypatch.syspath_prepend(str(EXAMPLES))
    import tiny_dataset
    from ultralytics import YOLO

    from platform_client.trainer.ultralytics import attach

    return YOLO, attach, tiny_dataset.write(tmp_path / "data", images=4), FakeDaemon().start()


def test_ultralytics_reports_epochs_with_native_names_and_uploads_checkpoints(tmp_path, yolo):
    YOLO, attach, data, d = yolo
    model = YOLO("yolov8n.yaml")
    callbacks = attach(model, reporter(d))
    model.train(data=str(data / "data.yaml"), epochs=2, imgsz=64, batch=2, device="cpu", workers=0,
                plots=False, amp=False, project=str(tmp_path / "runs"), name="t", exist_ok=True)
    points = [b["metrics"] for b in d.applied if b.get("metrics")]
    assert [p["epoch"] for p in points] == [1, 2, 3], "two epochs and the final validation"
    for p in points[:2]:
        assert {"train/box_loss", "metrics/mAP50(B)", "metrics/mAP50-95(B)", "loss", "lr/pg0"} <= set(p), p
    assert "metrics/mAP50(B)" in points[2]
    assert set(d.artifacts) == {"best.pt", "last.pt"} and len(d.artifacts["best.pt"]) > 1000
    last = d.applied[-1]
    assert last["status"] == "completed" and last["checkpoint_s3_uri"].endswith("/best.pt")
    assert callbacks.checkpoints["best.pt"] == last["checkpoint_s3_uri"]


def test_ultralytics_stops_when_the_job_is_cancelled(tmp_path, yolo):
    YOLO, attach, data, d = yolo
    d.status = "cancelled"
    model = YOLO("yolov8n.yaml")
    callbacks = attach(model, reporter(d))
    model.train(data=str(data / "data.yaml"), epochs=5, imgsz=64, batch=2, device="cpu", workers=0,
                plots=False, amp=False, project=str(tmp_path / "runs"), name="t", exist_ok=True)
    assert callbacks.ended is not None and callbacks.ended.status == "cancelled"
    assert not d.artifacts and not d.applied


def test_lightning_reports_steps_epochs_and_the_checkpoint(tmp_path):
    if importlib.util.find_spec("lightning") is None:
        need("pytorch_lightning", "lightning")
    import torch
    from torch.utils.data import DataLoader, TensorDataset

    try:
        import lightning.pytorch as pl
        from lightning.pytorch.callbacks import ModelCheckpoint
    except ImportError:
        import pytorch_lightning as pl
        from pytorch_lightning.callbacks import ModelCheckpoint

    from platform_client.trainer.lightning import PlatformCallback

    class Regression(pl.LightningModule):
        def __init__(self):
            super().__init__()
            self.layer = torch.nn.Linear(2, 1)

        def training_step(self, batch, i):
            x, y = batch
            loss = torch.nn.functional.mse_loss(self.layer(x), y)
            self.log("train_loss", loss, on_step=True, on_epoch=True)
            return loss

        def validation_step(self, batch, i):
            x, y = batch
            self.log("val_loss", torch.nn.functional.mse_loss(self.layer(x), y))

        def configure_optimizers(self):
            return torch.optim.SGD(self.parameters(), lr=0.1)

    x = torch.randn(64, 2)
    data = DataLoader(TensorDataset(x, x.sum(1, keepdim=True)), batch_size=8)
    d = FakeDaemon().start()
    callback = PlatformCallback(reporter(d), log_every_n_steps=1)
    trainer = pl.Trainer(max_epochs=2, accelerator="cpu", logger=False, enable_progress_bar=False,
                         default_root_dir=str(tmp_path), enable_model_summary=False,
                         callbacks=[callback, ModelCheckpoint(dirpath=str(tmp_path / "ckpt"),
                                                              monitor="val_loss", save_last=True)])
    trainer.fit(Regression(), data, data)
    steps = [p["step"] for b in d.applied if "points" in b for p in b["points"]]
    assert steps == list(range(1, 17)), steps
    epochs = [b["metrics"] for b in d.applied if b.get("metrics")]
    assert [m["epoch"] for m in epochs] == [1, 2] and all("val_loss" in m for m in epochs)
    assert "last.ckpt" in d.artifacts and len(d.artifacts) == 2
    assert d.applied[-1]["status"] == "completed" and d.applied[-1]["checkpoint_s3_uri"]
