"""Python client for ``platform``: submit and follow training jobs from
scripts and notebooks (:class:`Client`, needs ``httpx``), and report from
inside a trainer (:mod:`platform_client.trainer`, standard library only).

Importing this package does not import ``httpx``: ``Client`` is loaded on
first use, so trainers can use :mod:`platform_client.trainer` with nothing
else installed.
"""

from typing import TYPE_CHECKING, Any

from .errors import (ApiError, AuthenticationError, BadRequest, Conflict, JobLookupError,
                     NotFound, PlatformError, RateLimited, ServerError, UnreachableError,
                     ValidationError, WaitTimeout)
from .models import (Dataset, DatasetSummary, Event, Framework, Job, JobStatus, Metric,
                     StoredFile)

if TYPE_CHECKING:
    from .client import Client

__version__ = "0.1.0"

__all__ = [
    "Client", "Job", "JobStatus", "Metric", "StoredFile", "Dataset", "DatasetSummary",
    "Framework", "Event", "PlatformError", "ApiError", "BadRequest", "AuthenticationError",
    "NotFound", "Conflict", "ValidationError", "RateLimited", "ServerError",
    "UnreachableError", "JobLookupError", "WaitTimeout",
]


def __getattr__(name: str) -> Any:
    if name == "Client":
        from .client import Client
        return Client
    raise AttributeError(f"module 'platform_client' has no attribute {name!r}")
