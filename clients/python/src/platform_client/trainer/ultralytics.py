"""Ultralytics YOLO callbacks: per-epoch metrics under their native names,
progress within epochs, best/last checkpoint upload and the final report.

::

    from ultralytics import YOLO
    from platform_client.trainer import JobEnded
    from platform_client.trainer.ultralytics import attach

    model = YOLO("yolo11n.yaml")
    callbacks = attach(model)          # a Reporter from the trainer contract
    try:
        model.train(data="data.yaml", epochs=50)
    except JobEnded:
        pass                           # cancelled (SIGTERM): exit 0

Each epoch (``on_fit_epoch_end``) becomes one metric point: ``epoch``,
Ultralytics' own keys (``train/box_loss``, ``metrics/mAP50(B)``,
``metrics/mAP50-95(B)``, ``val/cls_loss``, ``lr/pg0``, …) and ``loss`` (the
sum of the training losses, which the platform keeps as a column). As in
Ultralytics' own loggers, the final validation of ``best.pt`` is one more
point at epoch ``epochs + 1``. When training ends, ``best.pt`` and
``last.pt`` are uploaded as the job's outputs and ``completed`` is reported
with ``best.pt`` as the checkpoint. A cancelled job (409) stops training at
the next batch. Importing this module does not import Ultralytics.
"""

import time
from pathlib import Path
from typing import Any, Dict, Optional

from ._errors import JobEnded
from ._reporter import Reporter

__all__ = ["PlatformCallbacks", "attach"]

#: Least time between two progress updates within an epoch.
PROGRESS_EVERY = 2.0


def _floats(items: Any) -> Dict[str, float]:
    out: Dict[str, float] = {}
    for key, value in dict(items or {}).items():
        try:
            out[str(key)] = float(value)
        except (TypeError, ValueError):
            continue
    return out


class PlatformCallbacks:
    """The callbacks; :meth:`register` adds them to a model (``add_callback``)."""

    def __init__(self, reporter: Optional[Reporter] = None, *, upload_checkpoints: bool = True,
                 finish: bool = True) -> None:
        self.reporter = reporter or Reporter()
        self.upload_checkpoints = upload_checkpoints
        self.finish = finish
        #: Set when the job ended under the trainer (cancelled): training stops.
        self.ended: Optional[JobEnded] = None
        #: URIs of the uploaded checkpoints, by file name.
        self.checkpoints: Dict[str, str] = {}
        self._batch = 0
        self._last_progress = 0.0

    def register(self, model: Any) -> "PlatformCallbacks":
        for event in ("on_train_start", "on_train_epoch_start", "on_train_batch_end",
                      "on_fit_epoch_end", "on_train_end"):
            model.add_callback(event, getattr(self, event))
        return self

    def _report(self, trainer: Any, **fields: Any) -> None:
        if self.ended is not None:
            trainer.stop = True
            return
        try:
            self.reporter.send("running", **fields)
        except JobEnded as e:
            self.ended = e
            trainer.stop = True  # Ultralytics stops cleanly at the next batch

    def on_train_start(self, trainer: Any) -> None:
        self._report(trainer, progress=0.0, message=f"training {trainer.epochs} epochs")

    def on_train_epoch_start(self, trainer: Any) -> None:
        self._batch = 0

    def on_train_batch_end(self, trainer: Any) -> None:
        self._batch += 1
        now = time.monotonic()
        if now - self._last_progress < PROGRESS_EVERY:
            return
        self._last_progress = now
        batches = max(1, len(getattr(trainer, "train_loader", None) or []) or 1)
        done = trainer.epoch + min(1.0, self._batch / batches)
        self._report(trainer, progress=done / max(1, trainer.epochs),
                     message=f"epoch {trainer.epoch + 1}/{trainer.epochs}, batch {self._batch}/{batches}")

    def on_fit_epoch_end(self, trainer: Any) -> None:
        epoch = trainer.epoch + 1
        final = epoch > trainer.epochs  # Ultralytics' final validation of best.pt
        metrics: Dict[str, float] = {}
        if not final:
            losses = _floats(trainer.label_loss_items(trainer.tloss, prefix="train"))
            metrics.update(losses)
            if losses:
                metrics["loss"] = sum(losses.values())
            metrics.update(_floats(getattr(trainer, "lr", None)))
        metrics.update(_floats(trainer.metrics))
        metrics["epoch"] = epoch
        message = "validated best.pt" if final else f"epoch {epoch}/{trainer.epochs}"
        self._report(trainer, progress=min(1.0, epoch / max(1, trainer.epochs)),
                     message=message, metrics=metrics)

    def on_train_end(self, trainer: Any) -> None:
        if self.ended is not None:
            return
        if self.upload_checkpoints:
            for path in (Path(trainer.best), Path(trainer.last)):
                if path.is_file():
                    self.checkpoints[path.name] = self.reporter.upload_artifact(path)
        if self.finish:
            best = self.checkpoints.get(Path(trainer.best).name)
            try:
                self.reporter.finish("completed", progress=1.0, checkpoint=best,
                                     message=f"finished {trainer.epochs} epochs")
            except JobEnded as e:
                self.ended = e


def attach(model: Any, reporter: Optional[Reporter] = None, **options: Any) -> PlatformCallbacks:
    """Adds platform reporting to an Ultralytics model; returns the callbacks."""
    return PlatformCallbacks(reporter, **options).register(model)
