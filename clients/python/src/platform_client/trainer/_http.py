"""One request to the daemon with the job's token (standard library only),
what each answer means, and patient retries while the daemon is away —
the same rules as the Rust reporter (``src/trainer/delivery.rs``):

- 2xx: delivered; 409: the job ended (:class:`JobEnded`);
- connection failures, timeouts, 429, 5xx and unreadable answers: retried
  with backoff from 0.2 s doubling to 5 s (±20 %), until the daemon has
  been unreachable for ``PLATFORM_REPORT_TIMEOUT`` seconds;
- any other answer (400, 401, 403, 404, 413, 422): :class:`ReportFailed`,
  since sending it again cannot help.
"""

import http.client
import json
import random
import sys
import time
import urllib.error
import urllib.request
from typing import Any, Callable, Dict, Optional, TypeVar

from ._errors import JobEnded, ReportFailed

#: One request's limit: a daemon that accepted the connection but does not
#: answer counts as unreachable.
REQUEST_TIMEOUT = 60.0
FIRST_BACKOFF = 0.2
MAX_BACKOFF = 5.0

T = TypeVar("T")


class Retry(Exception):
    """Internal: this attempt failed in a way worth retrying."""


class _NoRedirect(urllib.request.HTTPRedirectHandler):
    def redirect_request(self, *args: Any, **kwargs: Any) -> None:
        return None


_opener = urllib.request.build_opener(_NoRedirect)


def request(method: str, url: str, token: Optional[str], data: Any = None,
            content_type: str = "application/json", length: Optional[int] = None,
            timeout: float = REQUEST_TIMEOUT) -> Any:
    """One request; returns the decoded JSON answer (or the raw response for
    a GET of a file, to stream). Raises :class:`Retry`, :class:`JobEnded`
    or :class:`ReportFailed`. A redirect (a presigned download) is followed
    without the token."""
    headers = {"Content-Type": content_type, "User-Agent": "platform-client-python-trainer"}
    if token:
        headers["Authorization"] = f"Bearer {token}"
    if length is not None:
        headers["Content-Length"] = str(length)
    req = urllib.request.Request(url, data=data, method=method, headers=headers)
    try:
        resp = _opener.open(req, timeout=timeout)
    except urllib.error.HTTPError as e:
        if e.code in (301, 302, 303, 307, 308) and method == "GET" and e.headers.get("Location"):
            e.close()
            try:
                return urllib.request.urlopen(e.headers["Location"], timeout=timeout)
            except (urllib.error.URLError, OSError) as e2:
                raise Retry(str(e2)) from None
        raise _answer_error(e) from None
    except (urllib.error.URLError, OSError, http.client.HTTPException) as e:
        # Refused, reset, timed out, DNS: the daemon is away (restarting).
        raise Retry(str(getattr(e, "reason", e))) from None
    if method == "GET":
        return resp
    with resp:
        try:
            return json.loads(resp.read() or b"null")
        except (ValueError, OSError, http.client.HTTPException) as e:
            raise Retry(f"an unreadable answer ({e})") from None


def _answer_error(e: urllib.error.HTTPError) -> Exception:
    try:
        raw = e.read()
    except OSError:
        raw = b""
    finally:
        e.close()
    try:
        body: Dict[str, Any] = json.loads(raw)
        if not isinstance(body, dict):
            body = {}
    except ValueError:
        body = {}
    detail = body.get("detail") or raw[:200].decode("utf-8", "replace") or f"HTTP {e.code}"
    if e.code == 409 and body.get("status"):
        return JobEnded(str(body["status"]))
    if e.code == 429 or e.code >= 500 or not body:
        # A proxy's error page while the daemon restarts reads as no JSON.
        return Retry(f"the platform server answered {e.code}: {detail}")
    return ReportFailed(f"the platform server refused the request ({e.code}): {detail}")


class Patience:
    """Retries attempts while the daemon is away, remembering when the
    outage began so one outage's limit spans every report sent during it."""

    def __init__(self, timeout: float, sleep: Callable[[float], None] = time.sleep) -> None:
        self.timeout = timeout
        self.down_since: Optional[float] = None
        self._sleep = sleep

    def run(self, attempt: Callable[[], T]) -> T:
        pause = FIRST_BACKOFF
        while True:
            try:
                result = attempt()
            except Retry as e:
                now = time.monotonic()
                if self.down_since is None:
                    self.down_since = now
                    print(f"platform: the server is unreachable ({e}); reports stay queued and are "
                          f"retried for up to {self.timeout:.0f}s", file=sys.stderr, flush=True)
                waited = now - self.down_since
                if waited >= self.timeout:
                    self.down_since = None
                    raise ReportFailed(
                        f"gave up after {waited:.0f}s without reaching the platform server "
                        f"(PLATFORM_REPORT_TIMEOUT={self.timeout:g}): {e}") from None
                self._sleep(min(pause, max(0.0, self.timeout - waited) + 0.01) * random.uniform(0.8, 1.2))
                pause = min(pause * 2, MAX_BACKOFF)
                continue
            except (JobEnded, ReportFailed):
                self.down_since = None
                raise
            self.down_since = None
            return result
