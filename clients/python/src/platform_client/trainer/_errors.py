"""What stops a trainer's reports."""


class JobEnded(Exception):
    """The job already ended (the daemon answered 409, or the trainer got
    SIGTERM): stop training and exit 0. ``status`` is the job's status."""

    def __init__(self, status: str = "cancelled") -> None:
        super().__init__(status)
        self.status = status

    def __str__(self) -> str:
        return f"the job is already {self.status}; stop training"


class ReportFailed(Exception):
    """A report cannot be delivered: the daemon rejected it (4xx), refuses
    this trainer (wrong token, unknown job), or stayed unreachable for
    longer than ``PLATFORM_REPORT_TIMEOUT``."""
