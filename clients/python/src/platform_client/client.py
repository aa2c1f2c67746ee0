"""The HTTP client for scripts and notebooks (needs ``httpx``).

One :class:`Client` per daemon; it is cheap to keep and safe to share
between threads. Job arguments accept a :class:`~platform_client.models.Job`,
its id, a unique id prefix (at least 4 characters) or its number (``42``,
``"42"``, ``"#42"``), like the CLI.
"""

import os
import random
import time
import uuid
from pathlib import Path
from typing import Any, Dict, Iterator, List, Optional, Sequence, Union
from urllib.parse import quote

import httpx

from . import _config, _jobref
from ._sse import SseParser
from .errors import (ApiError, JobLookupError, PlatformError, UnreachableError,
                     WaitTimeout, api_error)
from .models import Dataset, DatasetSummary, Event, Framework, Job, Metric, StoredFile

__all__ = ["Client", "JobRef"]

JobRef = Union[Job, str, int]

API = "/api/v1/training"
#: Attempts for a request that is safe to repeat (GET, DELETE, uploads, a
#: create with its idempotency key) while the daemon restarts.
ATTEMPTS = 4
#: Keep-alive comments come every 10 s: this long without a byte means the
#: stream is dead.
STREAM_IDLE = 35.0
#: Points per page when reading a job's whole history.
METRICS_PAGE = 10_000
#: How long a live stream keeps reconnecting before it gives up.
STREAM_GIVE_UP = 120.0


def _quote_path(path: str) -> str:
    return "/".join(quote(seg, safe="-._~") for seg in path.split("/"))


def _file_chunks(path: Path, size: int = 256 * 1024) -> Iterator[bytes]:
    with open(path, "rb") as f:
        while True:
            chunk = f.read(size)
            if not chunk:
                return
            yield chunk


def _default_user() -> str:
    for var in ("PLATFORM_USER", "USER", "USERNAME"):
        if os.environ.get(var):
            return os.environ[var]
    return "unknown"


class Client:
    """A client of one ``platform serve`` daemon.

    ``server`` and ``token`` default to ``PLATFORM_SERVER`` and
    ``PLATFORM_TOKEN``, then the CLI's ``.env`` and config file, then
    ``http://127.0.0.1:8000`` without a token.
    """

    def __init__(self, server: Optional[str] = None, token: Optional[str] = None, *,
                 timeout: float = 60.0, transport: Optional[httpx.BaseTransport] = None) -> None:
        self.server, self.token = _config.resolve(server, token)
        headers = {"User-Agent": "platform-client-python"}
        if self.token:
            headers["Authorization"] = f"Bearer {self.token}"
        self._http = httpx.Client(base_url=self.server, headers=headers, timeout=timeout,
                                  follow_redirects=True, transport=transport)

    def __repr__(self) -> str:
        return f"Client(server={self.server!r})"

    def close(self) -> None:
        """Closes the connection pool."""
        self._http.close()

    def __enter__(self) -> "Client":
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()

    # -- plumbing ---------------------------------------------------------

    def _request(self, method: str, path: str, *, retry: bool = False,
                 body_path: Optional[Path] = None, **kwargs: Any) -> httpx.Response:
        """One request; errors become :class:`ApiError`/:class:`UnreachableError`.
        With ``retry``, connection failures and 502/503/504 are retried with
        backoff (only for requests that are safe to repeat). ``body_path``
        streams a file as the body (read afresh on each attempt)."""
        attempts = ATTEMPTS if retry else 1
        for attempt in range(1, attempts + 1):
            if body_path is not None:
                kwargs["content"] = _file_chunks(body_path)
            try:
                resp = self._http.request(method, path, **kwargs)
            except httpx.TransportError as e:
                if attempt == attempts:
                    raise UnreachableError(self.server, str(e) or type(e).__name__) from None
            else:
                if resp.status_code < 400:
                    return resp
                if attempt == attempts or resp.status_code not in (502, 503, 504):
                    raise self._error(resp)
            time.sleep(min(0.25 * 2 ** attempt, 4.0) * random.uniform(0.8, 1.2))
        raise AssertionError("unreachable")

    @staticmethod
    def _error(resp: httpx.Response) -> ApiError:
        try:
            body: Any = resp.json()
        except ValueError:
            body = resp.text
        return api_error(resp.status_code, body, resp.request.method, str(resp.request.url))

    def _json(self, method: str, path: str, **kwargs: Any) -> Any:
        resp = self._request(method, path, **kwargs)
        try:
            return resp.json()
        except ValueError:
            raise PlatformError(f"the platform server sent an answer that is not JSON for {method} {path}") from None

    # -- jobs -------------------------------------------------------------

    def health(self) -> Dict[str, Any]:
        """``GET /health``: the daemon's status, version and checks."""
        return self._json("GET", "/health", retry=True)

    def frameworks(self) -> List[Framework]:
        """The trainers the daemon has registered."""
        return [Framework.from_dict(f) for f in self._json("GET", f"{API}/frameworks", retry=True)]

    def create_job(self, framework: str, model: str, dataset: str, *,
                   config: Optional[Dict[str, Any]] = None, user: Optional[str] = None,
                   idempotency_key: Optional[str] = None) -> Job:
        """Submits a job and returns it (``pending``).

        ``dataset`` is a URI (``s3://…``, ``file://…``) or the name of a
        dataset in the daemon's store (``platform dataset list``). ``user``
        defaults to ``PLATFORM_USER``, else ``USER``. Every call sends an
        ``Idempotency-Key`` (a fresh one unless given), so the client's own
        retries of the same call cannot submit the job twice on a daemon
        that honours it.
        """
        if "://" not in dataset and dataset:
            dataset = self._dataset_uri(dataset)
        body: Dict[str, Any] = {"user_id": user or _default_user(), "model_name": model,
                                "framework": framework, "dataset_s3_uri": dataset}
        if config is not None:
            body["config"] = config
        key = idempotency_key or uuid.uuid4().hex
        return Job.from_dict(self._json("POST", f"{API}/jobs", json=body, retry=True,
                                        headers={"Idempotency-Key": key}))

    def _dataset_uri(self, name: str) -> str:
        found = self.get_dataset(name)
        if found is None:
            raise JobLookupError(
                f"there is no dataset named {name!r} in the store; upload one with "
                f"Client.upload_dataset(dir, {name!r}) or pass a URI")
        return found.uri

    def list_jobs(self, *, status: Optional[str] = None, user: Optional[str] = None,
                  limit: int = 50, offset: int = 0) -> List[Job]:
        """Jobs, newest first (``limit`` 1–1000)."""
        params: Dict[str, Any] = {"limit": limit, "offset": offset}
        if status:
            params["status"] = str(status)
        if user:
            params["user_id"] = user
        return [Job.from_dict(j) for j in self._json("GET", f"{API}/jobs", params=params, retry=True)]

    def resolve(self, job: JobRef) -> str:
        """The UUID of ``job`` (a Job, an id, a unique prefix or a number)."""
        if isinstance(job, Job):
            return job.id
        try:
            kind, value = _jobref.parse(job)
        except ValueError as e:
            raise JobLookupError(str(e)) from None
        if kind == "id":
            return str(value)
        if kind == "number":
            found = self._json("GET", f"{API}/jobs", params={"number": value, "limit": 1}, retry=True)
            if not found:
                raise JobLookupError(f"there is no job #{value}")
            return found[0]["id"]
        found = self._json("GET", f"{API}/jobs", params={"id_prefix": value, "limit": 11}, retry=True)
        if len(found) == 1:
            return found[0]["id"]
        if not found:
            raise JobLookupError(f"no job id starts with {value!r}")
        jobs = [Job.from_dict(j) for j in found[:10]]
        listed = ", ".join(f"{j.ref} ({j.id})" for j in jobs)
        raise JobLookupError(
            f"the prefix {value!r} matches more than one job; give more characters or the "
            f"job number: {listed}{' and more' if len(found) > 10 else ''}", jobs)

    def get_job(self, job: JobRef) -> Job:
        """The job's current state."""
        return Job.from_dict(self._json("GET", f"{API}/jobs/{self.resolve(job)}", retry=True))

    def cancel(self, job: JobRef) -> Job:
        """Cancels a job and returns its new state. A job that already ended
        raises :class:`~platform_client.errors.BadRequest` (400)."""
        job_id = self.resolve(job)
        self._request("DELETE", f"{API}/jobs/{job_id}")
        return self.get_job(job_id)

    def logs(self, job: JobRef, *, tail: Optional[int] = None) -> str:
        """The trainer's output so far (the last ``tail`` lines when given)."""
        params = {"tail": tail} if tail is not None else None
        return self._request("GET", f"{API}/jobs/{self.resolve(job)}/logs", params=params, retry=True).text

    # -- following jobs -----------------------------------------------------

    def wait(self, job: JobRef, timeout: Optional[float] = None, *, poll_interval: float = 2.0) -> Job:
        """Blocks until the job ends and returns its final state.

        Follows the job's live event stream; when the stream cannot be had
        (the daemon's stream cap, a proxy that buffers) it polls every
        ``poll_interval`` seconds instead. Raises
        :class:`~platform_client.errors.WaitTimeout` after ``timeout`` seconds.
        """
        job_id = self.resolve(job)
        deadline = None if timeout is None else time.monotonic() + timeout
        last: Optional[Job] = None
        try:
            for event in self._events(f"{API}/jobs/{job_id}/events", None, deadline):
                if event.job is not None:
                    last = event.job
                    if last.finished:
                        return last
            # The stream ended (it does after the terminal state): read it.
            last = self.get_job(job_id)
            if last.finished:
                return last
        except _Deadline:
            raise WaitTimeout(last or self.get_job(job_id), timeout or 0.0) from None
        except (UnreachableError, ApiError) as e:
            if isinstance(e, ApiError) and e.status_code in (401, 403, 404, 422):
                raise
        while True:
            last = self.get_job(job_id)
            if last.finished:
                return last
            if deadline is not None and time.monotonic() >= deadline:
                raise WaitTimeout(last, timeout or 0.0)
            pause = poll_interval if deadline is None else min(poll_interval, max(0.0, deadline - time.monotonic()))
            time.sleep(pause)

    def stream_events(self, job: Optional[JobRef] = None, *, last_event_id: Optional[str] = None) -> Iterator[Event]:
        """Live events: of one job (its snapshot first, then ``job`` and
        ``metric`` events; the iterator ends after the job ends), or of every
        job when ``job`` is None (``ready`` first; it never ends on its own).
        Dropped connections are resumed with ``Last-Event-ID``, so no event
        is lost or repeated; pass an event's ``id`` as ``last_event_id`` to
        resume later."""
        path = f"{API}/jobs/{self.resolve(job)}/events" if job is not None else f"{API}/events"
        return self._events(path, last_event_id, None)

    def _events(self, path: str, last_id: Optional[str], deadline: Optional[float]) -> Iterator[Event]:
        parser = SseParser(last_id)
        failing_since: Optional[float] = None
        connected = False
        attempt = 0
        while True:
            headers = {"Accept": "text/event-stream"}
            if parser.last_id:
                headers["Last-Event-ID"] = parser.last_id
            reason = ""
            try:
                read = STREAM_IDLE
                if deadline is not None:
                    read = max(0.05, min(read, deadline - time.monotonic()))
                with self._http.stream("GET", path, headers=headers,
                                       timeout=httpx.Timeout(30.0, read=read)) as resp:
                    if resp.status_code == 204:
                        return
                    if resp.status_code >= 400:
                        resp.read()
                        raise self._error(resp)
                    connected = True
                    parser.reset()
                    for chunk in resp.iter_bytes():
                        failing_since, attempt = None, 0
                        for kind, event_id, data in parser.feed(chunk):
                            yield Event.parse(kind, event_id, data)
                        if deadline is not None and time.monotonic() >= deadline:
                            raise _Deadline()
                    # A job's stream ends after its terminal state; resuming
                    # then gets 204. A daemon restarting closes it too.
                    reason = "the server closed the stream"
            except httpx.ReadTimeout:
                if deadline is not None and time.monotonic() >= deadline:
                    raise _Deadline() from None
                reason = "no data for too long"
            except httpx.TransportError as e:
                if not connected:
                    raise UnreachableError(self.server, str(e) or type(e).__name__) from None
                reason = str(e) or type(e).__name__
            except ApiError as e:
                if not connected or e.status_code < 500:
                    raise
                reason = e.detail
            now = time.monotonic()
            failing_since = failing_since or now
            if now - failing_since > STREAM_GIVE_UP:
                raise UnreachableError(self.server, f"the event stream stayed down for {STREAM_GIVE_UP:.0f}s ({reason})")
            if deadline is not None and now >= deadline:
                raise _Deadline()
            attempt += 1
            time.sleep(min(0.25 * 2 ** min(attempt, 4), 4.0))

    # -- metrics ------------------------------------------------------------

    def metrics(self, job: JobRef, as_dataframe: bool = False, *, after_id: Optional[int] = None) -> Any:
        """Every metric point of the job, oldest first: a list of
        :class:`~platform_client.models.Metric`, or with ``as_dataframe`` a
        pandas DataFrame (one row per point; ``id``, ``epoch``, ``step``,
        ``created_at`` and a column per metric name)."""
        job_id = self.resolve(job)
        points: List[Metric] = []
        cursor = after_id
        while True:
            params: Dict[str, Any] = {"order": "asc", "limit": METRICS_PAGE}
            if cursor is not None:
                params["after_id"] = cursor
            page = self._json("GET", f"{API}/jobs/{job_id}/metrics", params=params, retry=True)
            points.extend(Metric.from_dict(p) for p in page)
            if len(page) < METRICS_PAGE:
                break
            cursor = page[-1]["id"]
        if not as_dataframe:
            return points
        try:
            import pandas as pd
        except ImportError:
            raise ImportError("metrics(as_dataframe=True) needs pandas: pip install pandas") from None
        rows = [{"id": p.id, "epoch": p.epoch, "step": p.step, "created_at": p.created_at, **p.metrics}
                for p in points]
        return pd.DataFrame(rows, columns=None if rows else ["id", "epoch", "step", "created_at"])

    # -- datasets and artifacts -------------------------------------------

    def list_datasets(self) -> List[DatasetSummary]:
        """Datasets in the daemon's store."""
        return [DatasetSummary.from_dict(d) for d in self._json("GET", "/api/v1/datasets", retry=True)]

    def get_dataset(self, name: str) -> Optional[Dataset]:
        """A dataset with its files, or None when there is none by that name."""
        try:
            return Dataset.from_dict(self._json("GET", f"/api/v1/datasets/{_quote_path(name)}", retry=True))
        except ApiError as e:
            if e.status_code == 404:
                return None
            raise

    def upload_dataset(self, dir: Union[str, os.PathLike], name: str) -> Dataset:
        """Uploads every file under ``dir`` as dataset ``name`` (paths kept
        relative to ``dir``). Files already in the dataset with the same size
        are skipped, so a failed upload resumes by calling it again."""
        root = Path(dir)
        if not root.is_dir():
            raise PlatformError(f"{root} is not a directory")
        files = sorted(p for p in root.rglob("*") if p.is_file())
        if not files:
            raise PlatformError(f"{root} holds no files to upload")
        existing = self.get_dataset(name)
        sizes = {f.path: f.size for f in existing.files} if existing else {}
        for path in files:
            rel = path.relative_to(root).as_posix()
            size = path.stat().st_size
            if sizes.get(rel) == size:
                continue
            self._request("PUT", f"/api/v1/datasets/{_quote_path(name)}/files/{_quote_path(rel)}",
                          body_path=path, retry=True,
                          headers={"Content-Type": "application/octet-stream",
                                   "Content-Length": str(size)})
        found = self.get_dataset(name)
        if found is None:
            raise PlatformError(f"dataset {name!r} is missing after the upload")
        return found

    def artifacts(self, job: JobRef) -> List[StoredFile]:
        """The job's stored outputs (checkpoints, plots)."""
        return [StoredFile.from_dict(f)
                for f in self._json("GET", f"{API}/jobs/{self.resolve(job)}/artifacts", retry=True)]

    def download_artifacts(self, job: JobRef, to: Union[str, os.PathLike],
                           paths: Optional[Sequence[str]] = None) -> List[Path]:
        """Downloads the job's artifacts (all, or those in ``paths``) into
        directory ``to``, keeping their relative paths; returns the files
        written. Each file appears whole or not at all."""
        job_id = self.resolve(job)
        dest = Path(to)
        wanted = [f.path for f in self.artifacts(job_id)] if paths is None else list(paths)
        written = []
        for rel in wanted:
            target = dest.joinpath(*rel.split("/"))
            if dest.resolve() not in target.resolve().parents:
                raise PlatformError(f"refusing to write {rel!r} outside {dest}")
            target.parent.mkdir(parents=True, exist_ok=True)
            tmp = target.with_name(f".{target.name}.part")
            try:
                with self._http.stream("GET", f"{API}/jobs/{job_id}/artifacts/{_quote_path(rel)}") as resp:
                    if resp.status_code >= 400:
                        resp.read()
                        raise self._error(resp)
                    with open(tmp, "wb") as out:
                        for chunk in resp.iter_bytes(256 * 1024):
                            out.write(chunk)
            except httpx.TransportError as e:
                tmp.unlink(missing_ok=True)
                raise UnreachableError(self.server, str(e) or type(e).__name__) from None
            os.replace(tmp, target)
            written.append(target)
        return written


class _Deadline(Exception):
    """Internal: a wait's timeout passed while following a stream."""
