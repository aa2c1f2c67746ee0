"""The trainer side of ``platform`` (standard library only: importable
without ``httpx``). A trainer launched by ``platform serve`` reports its
progress, metrics and end through a :class:`Reporter`, moves files with
:func:`download_dataset` and :func:`upload_artifact`, and reads its
configuration with :func:`config`::

    from platform_client.trainer import JobEnded, Reporter, config, upload_artifact

    reporter = Reporter()
    try:
        for epoch in range(1, config().get("epochs", 10) + 1):
            loss = train_one_epoch()
            reporter.send(progress=epoch / 10, message=f"epoch {epoch}/10",
                          metrics={"epoch": epoch, "loss": loss})
        reporter.finish("completed", checkpoint=upload_artifact("best.pt"))
    except JobEnded:
        pass  # cancelled: stop, exit 0

Adapters for training libraries: :mod:`platform_client.trainer.ultralytics`
and :mod:`platform_client.trainer.lightning`.
"""

from ._contract import Contract, config
from ._errors import JobEnded, ReportFailed
from ._files import download_dataset, upload_artifact
from ._reporter import Reporter

__all__ = ["Reporter", "JobEnded", "ReportFailed", "Contract", "config",
           "download_dataset", "upload_artifact"]
