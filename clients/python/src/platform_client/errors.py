"""The exceptions the client raises, each carrying what the daemon said.

Every API error body is JSON ``{"detail": ...}``, plus ``field`` on a 422 and
``status`` (the job's current status) on a lifecycle conflict; an
:class:`ApiError` keeps the whole body in :attr:`ApiError.body`.
"""

from typing import Any, Dict, List, Optional


class PlatformError(Exception):
    """Base class of everything this package raises on purpose."""


class UnreachableError(PlatformError):
    """The daemon could not be reached (connection refused, timeout, DNS)."""

    def __init__(self, server: str, reason: str) -> None:
        super().__init__(
            f"cannot reach the platform server at {server}: {reason} "
            "(is `platform serve` running?)"
        )
        self.server = server
        self.reason = reason


class ApiError(PlatformError):
    """The daemon answered with an error status."""

    def __init__(self, status_code: int, body: Dict[str, Any], method: str = "", url: str = "") -> None:
        self.status_code = status_code
        self.body = body
        self.detail: str = str(body.get("detail") or f"HTTP {status_code}")
        self.field: Optional[str] = body.get("field")
        self.job_status: Optional[str] = body.get("status")
        self.method = method
        self.url = url
        super().__init__(f"the platform server answered {status_code}: {self.detail}")


class BadRequest(ApiError):
    """400: e.g. cancelling a job that already ended."""


class AuthenticationError(ApiError):
    """401/403: a missing or wrong API token (``PLATFORM_TOKEN``)."""


class NotFound(ApiError):
    """404: no such job, dataset, file or route."""


class Conflict(ApiError):
    """409: the request conflicts with the job's state (``job_status`` says which)."""


class ValidationError(ApiError):
    """422: the request is malformed; ``field`` names the offending field."""


class RateLimited(ApiError):
    """429: too many wrong tokens from this address; retry later."""


class ServerError(ApiError):
    """5xx: the daemon failed or is not ready (503), or the disk is full (507)."""


_BY_STATUS = {400: BadRequest, 401: AuthenticationError, 403: AuthenticationError,
              404: NotFound, 409: Conflict, 422: ValidationError, 429: RateLimited}


def api_error(status_code: int, body: Any, method: str = "", url: str = "") -> ApiError:
    """The exception for an error answer (``body``: its decoded JSON, or text)."""
    if not isinstance(body, dict):
        text = body if isinstance(body, str) else ""
        body = {"detail": text.strip()[:500] or f"HTTP {status_code}"}
    cls = _BY_STATUS.get(status_code)
    if cls is None:
        cls = ServerError if status_code >= 500 else ApiError
    return cls(status_code, body, method, url)


class JobLookupError(PlatformError, LookupError):
    """A job reference (number, id prefix) names no job, or several."""

    def __init__(self, message: str, candidates: Optional[List[Any]] = None) -> None:
        super().__init__(message)
        #: The jobs an ambiguous prefix matches (newest first, at most 10).
        self.candidates: List[Any] = candidates or []


class WaitTimeout(PlatformError, TimeoutError):
    """:meth:`Client.wait` ran out of time; ``job`` is the last state seen."""

    def __init__(self, job: Any, timeout: float) -> None:
        super().__init__(f"job #{getattr(job, 'number', '?')} is still {getattr(job, 'status', '?')} after {timeout:g}s")
        self.job = job
        self.timeout = timeout
