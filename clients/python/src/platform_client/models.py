"""The API's objects as dataclasses, field for field as ``/openapi.json``
describes them (``Job``, ``Metric``, ``StoredFile``, ``Dataset``,
``DatasetSummary``, ``Framework``) plus :class:`Event` for the live streams.

Each model keeps the JSON it was read from in ``raw``, so fields a newer
daemon adds are not lost; timestamps are timezone-aware ``datetime``s.
"""

import json
import re
from dataclasses import dataclass, field, fields
from datetime import datetime, timedelta, timezone
from enum import Enum
from typing import Any, Dict, List, Optional, Type, TypeVar

__all__ = [
    "JobStatus", "Job", "Metric", "StoredFile", "DatasetSummary", "Dataset",
    "Framework", "Event", "parse_time",
]


class JobStatus(str, Enum):
    """Where a job is in its life; compares equal to its string value."""

    PENDING = "pending"
    RUNNING = "running"
    COMPLETED = "completed"
    FAILED = "failed"
    CANCELLED = "cancelled"

    @property
    def finished(self) -> bool:
        """Whether this status is terminal (completed, failed or cancelled)."""
        return self in (JobStatus.COMPLETED, JobStatus.FAILED, JobStatus.CANCELLED)

    def __str__(self) -> str:
        return self.value


_TIME = re.compile(
    r"^(\d{4})-(\d{2})-(\d{2})[Tt ](\d{2}):(\d{2}):(\d{2})(?:\.(\d+))?"
    r"(?:([Zz])|([+-])(\d{2}):?(\d{2}))$"
)


def parse_time(value: Optional[str]) -> Optional[datetime]:
    """An RFC 3339 timestamp (any number of fractional digits) as an aware datetime."""
    if value is None:
        return None
    m = _TIME.match(value.strip())
    if not m:
        raise ValueError(f"{value!r} is not an RFC 3339 timestamp")
    y, mo, d, h, mi, s, frac, z, sign, oh, om = m.groups()
    micro = int((frac or "0")[:6].ljust(6, "0"))
    tz = timezone.utc
    if not z and sign:
        offset = timedelta(hours=int(oh), minutes=int(om))
        tz = timezone(offset if sign == "+" else -offset)
    return datetime(int(y), int(mo), int(d), int(h), int(mi), int(s), micro, tzinfo=tz)


M = TypeVar("M", bound="_Model")


class _Model:
    """Shared reading of a JSON object into a dataclass."""

    _times: tuple = ()

    @classmethod
    def from_dict(cls: Type[M], data: Dict[str, Any]) -> M:
        """Builds the model from the API's JSON object (unknown keys stay in ``raw``)."""
        kwargs: Dict[str, Any] = {}
        for f in fields(cls):  # type: ignore[arg-type]
            if f.name == "raw" or f.name not in data:
                continue
            value = data[f.name]
            if f.name in cls._times:
                value = parse_time(value)
            kwargs[f.name] = value
        obj = cls(**kwargs)
        obj.raw = dict(data)  # type: ignore[attr-defined]
        return obj

    def to_dict(self) -> Dict[str, Any]:
        """The JSON object this model was read from."""
        return dict(self.raw)  # type: ignore[attr-defined]


@dataclass
class Job(_Model):
    """A training job (``GET /api/v1/training/jobs/{id}``)."""

    id: str
    user_id: str
    model_name: str
    framework: str
    dataset_s3_uri: str
    status: JobStatus
    progress: float
    created_at: datetime
    updated_at: datetime
    number: Optional[int] = None
    config: Optional[Dict[str, Any]] = None
    message: Optional[str] = None
    checkpoint_s3_uri: Optional[str] = None
    error: Optional[str] = None
    exit_code: Optional[int] = None
    runner: Optional[str] = None
    started_at: Optional[datetime] = None
    completed_at: Optional[datetime] = None
    raw: Dict[str, Any] = field(default_factory=dict, repr=False, compare=False)

    _times = ("created_at", "updated_at", "started_at", "completed_at")

    def __post_init__(self) -> None:
        self.status = JobStatus(self.status)

    @property
    def finished(self) -> bool:
        """Whether the job has ended (completed, failed or cancelled)."""
        return self.status.finished

    @property
    def ref(self) -> str:
        """``#N`` when the job has a number, else its id."""
        return f"#{self.number}" if self.number is not None else self.id


@dataclass
class Metric(_Model):
    """A stored metric point; ``metrics`` holds every reported number by name."""

    id: int
    job_id: str
    epoch: int
    metrics: Dict[str, float]
    created_at: datetime
    step: Optional[int] = None
    loss: Optional[float] = None
    accuracy: Optional[float] = None
    raw: Dict[str, Any] = field(default_factory=dict, repr=False, compare=False)

    _times = ("created_at",)


@dataclass
class StoredFile(_Model):
    """A dataset file or a job artifact in the object store."""

    path: str
    size: int
    uri: str
    last_modified: datetime
    raw: Dict[str, Any] = field(default_factory=dict, repr=False, compare=False)

    _times = ("last_modified",)


@dataclass
class DatasetSummary(_Model):
    """A dataset in ``GET /api/v1/datasets``; pass ``uri`` (or the name) as a job's dataset."""

    name: str
    uri: str
    file_count: int
    total_bytes: int
    raw: Dict[str, Any] = field(default_factory=dict, repr=False, compare=False)


@dataclass
class Dataset(DatasetSummary):
    """A dataset with every file (``GET /api/v1/datasets/{name}``)."""

    files: List[StoredFile] = field(default_factory=list)

    @classmethod
    def from_dict(cls, data: Dict[str, Any]) -> "Dataset":  # type: ignore[override]
        d = super().from_dict(data)
        d.files = [StoredFile.from_dict(f) for f in data.get("files") or []]
        return d


@dataclass
class Framework(_Model):
    """A registered trainer (``GET /api/v1/training/frameworks``)."""

    name: str
    source: str
    command: List[str] = field(default_factory=list)
    env: List[str] = field(default_factory=list)
    image: Optional[str] = None
    workdir: Optional[str] = None
    resources: Dict[str, Any] = field(default_factory=dict)
    node_selector: Dict[str, str] = field(default_factory=dict)
    tolerations: List[Dict[str, Any]] = field(default_factory=list)
    raw: Dict[str, Any] = field(default_factory=dict, repr=False, compare=False)


@dataclass
class Event:
    """One Server-Sent Event of a live stream.

    ``type`` is ``job`` (``job`` holds the job's new state), ``metric``
    (``metric`` holds the new point) or ``ready`` (the all-jobs stream is
    live); ``id`` resumes the stream after this event (``last_event_id``).
    """

    type: str
    id: Optional[str]
    data: Any
    job: Optional[Job] = None
    metric: Optional[Metric] = None

    @classmethod
    def parse(cls, type: str, id: Optional[str], data: str) -> "Event":
        """Decodes an event's ``data`` (JSON for ``job`` and ``metric``)."""
        try:
            value: Any = json.loads(data)
        except ValueError:
            value = data
        job = Job.from_dict(value) if type == "job" and isinstance(value, dict) else None
        metric = Metric.from_dict(value) if type == "metric" and isinstance(value, dict) else None
        return cls(type=type, id=id, data=value, job=job, metric=metric)
