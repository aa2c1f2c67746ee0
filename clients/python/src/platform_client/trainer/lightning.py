"""A PyTorch Lightning ``Callback`` that reports to the platform.

::

    import lightning.pytorch as pl
    from platform_client.trainer import JobEnded
    from platform_client.trainer.lightning import PlatformCallback

    trainer = pl.Trainer(max_epochs=10, callbacks=[PlatformCallback()])
    try:
        trainer.fit(model, datamodule)
    except JobEnded:
        pass                            # cancelled (SIGTERM): exit 0

Every ``log_every_n_steps`` training steps, the scalars in
``trainer.logged_metrics`` become a step-level metric point (sent in
batches); at each epoch's end ``trainer.callback_metrics`` become one point
with ``epoch`` and the progress. When fitting ends, the checkpoint
callback's best and last checkpoints are uploaded and ``completed`` is
reported with the best as the checkpoint; an exception reports ``failed``.
A cancelled job (409) sets ``trainer.should_stop``. Works with
``lightning`` or ``pytorch_lightning``.
"""

import time
from pathlib import Path
from typing import Any, Dict, Optional

try:
    from lightning.pytorch.callbacks import Callback
except ImportError:  # the older package name
    from pytorch_lightning.callbacks import Callback  # type: ignore[no-redef]

from ._errors import JobEnded, ReportFailed
from ._reporter import Reporter

__all__ = ["PlatformCallback"]

PROGRESS_EVERY = 2.0


def _scalars(metrics: Any) -> Dict[str, float]:
    out: Dict[str, float] = {}
    for key, value in dict(metrics or {}).items():
        try:
            if hasattr(value, "numel") and value.numel() != 1:
                continue
            out[str(key)] = float(value)
        except (TypeError, ValueError, RuntimeError):
            continue
    return out


class PlatformCallback(Callback):  # type: ignore[misc]
    """Reports a Lightning fit: step points, epoch points, checkpoints, the end."""

    def __init__(self, reporter: Optional[Reporter] = None, *, log_every_n_steps: Optional[int] = None,
                 upload_checkpoints: bool = True, finish: bool = True) -> None:
        super().__init__()
        self.reporter = reporter or Reporter()
        self.log_every_n_steps = log_every_n_steps
        self.upload_checkpoints = upload_checkpoints
        self.finish = finish
        self.ended: Optional[JobEnded] = None
        self.checkpoints: Dict[str, str] = {}
        self._last_progress = 0.0

    def _guard(self, trainer: Any, action: Any) -> None:
        if self.ended is not None:
            trainer.should_stop = True
            return
        try:
            action()
        except JobEnded as e:
            self.ended = e
            trainer.should_stop = True

    def _progress(self, trainer: Any, batch_idx: int = -1) -> float:
        epochs = trainer.max_epochs if trainer.max_epochs and trainer.max_epochs > 0 else None
        if trainer.max_steps and trainer.max_steps > 0 and not epochs:
            return min(1.0, trainer.global_step / trainer.max_steps)
        if not epochs:
            return 0.0
        batches = trainer.num_training_batches
        within = (batch_idx + 1) / batches if batch_idx >= 0 and isinstance(batches, int) and batches > 0 else 0.0
        return min(1.0, (trainer.current_epoch + within) / epochs)

    def on_train_start(self, trainer: Any, pl_module: Any) -> None:
        self._guard(trainer, lambda: self.reporter.send(
            "running", progress=self._progress(trainer), message=f"training {trainer.max_epochs} epochs"))

    def on_train_batch_end(self, trainer: Any, pl_module: Any, outputs: Any, batch: Any, batch_idx: int) -> None:
        every = self.log_every_n_steps or trainer.log_every_n_steps or 50
        step = trainer.global_step

        def report() -> None:
            if step % every == 0:
                point = {k: v for k, v in _scalars(trainer.logged_metrics).items() if not k.endswith("_epoch")}
                if point:
                    self.reporter.log(point, step=step, epoch=trainer.current_epoch + 1)
            now = time.monotonic()
            if now - self._last_progress >= PROGRESS_EVERY:
                self._last_progress = now
                self.reporter.send("running", progress=self._progress(trainer, batch_idx),
                                   message=f"epoch {trainer.current_epoch + 1}/{trainer.max_epochs}, step {step}")

        self._guard(trainer, report)

    def on_train_epoch_end(self, trainer: Any, pl_module: Any) -> None:
        if trainer.sanity_checking:
            return
        epoch = trainer.current_epoch + 1
        metrics = {k: v for k, v in _scalars(trainer.callback_metrics).items() if not k.endswith("_step")}
        metrics["epoch"] = epoch
        self._guard(trainer, lambda: self.reporter.send(
            "running", progress=min(1.0, epoch / trainer.max_epochs) if trainer.max_epochs and trainer.max_epochs > 0
            else self._progress(trainer), message=f"epoch {epoch}/{trainer.max_epochs}", metrics=metrics))

    def on_fit_end(self, trainer: Any, pl_module: Any) -> None:
        if self.ended is not None or trainer.interrupted:
            return
        ckpt = getattr(trainer, "checkpoint_callback", None)
        best: Optional[str] = None
        if self.upload_checkpoints and ckpt is not None:
            for attr in ("best_model_path", "last_model_path"):
                path = getattr(ckpt, attr, None)
                if path and Path(path).is_file() and Path(path).name not in self.checkpoints:
                    uri = self.reporter.upload_artifact(path)
                    self.checkpoints[Path(path).name] = uri
                    best = best or uri
        if self.finish:
            self._guard(trainer, lambda: self.reporter.finish(
                "completed", progress=1.0, checkpoint=best,
                message=f"finished {trainer.current_epoch} epochs"))

    def on_exception(self, trainer: Any, pl_module: Any, exception: BaseException) -> None:
        if isinstance(exception, (JobEnded, KeyboardInterrupt)) or self.ended is not None:
            return
        try:
            self.reporter.finish("failed", error=f"{type(exception).__name__}: {exception}", timeout=30)
        except (JobEnded, ReportFailed):
            pass
