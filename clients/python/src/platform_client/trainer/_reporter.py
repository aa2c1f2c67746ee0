"""The :class:`Reporter`: a trainer's callbacks and metric points go into a
bounded, ordered queue that one background thread delivers, so training
goes on while the daemon is away (restarting, upgrading) and the backlog
arrives, in order and exactly once, when it is back.

It mirrors the Rust reporter (``src/trainer/``): every report carries a
``sequence`` from one counter (callbacks and metric batches share it), so a
report retried after a lost answer is applied once; a progress-only update
is merged into a progress-only update queued just before it (never into the
first, which may be on its way); metric points and terminal reports are
never dropped — when the queue is full the producer waits for room.
"""

import contextlib
import json
import math
import signal
import sys
import threading
import time
from collections import deque
from typing import Any, Deque, Dict, Iterable, Iterator, List, Mapping, Optional, Union

from . import _http
from ._contract import Contract
from ._errors import JobEnded, ReportFailed

Number = Union[int, float]

#: Queue capacity in metric points (a callback counts as one).
CAPACITY = 100_000
#: Most points in one metric batch (the daemon's limit).
MAX_BATCH_POINTS = 1000
#: How long step points wait for company before their batch is sent.
BATCH_LINGER = 0.5
#: How long the SIGTERM handler waits for the ``cancelled`` report (the
#: daemon's kill grace is 10 s by default).
SIGTERM_FLUSH = 5.0

STATUSES = ("running", "completed", "failed", "cancelled")


def _clean_metrics(metrics: Mapping[str, Any]) -> Dict[str, Number]:
    """A flat map of finite numbers (non-finite values and non-numbers are
    dropped, since the daemon refuses a whole report for one NaN); ``epoch``
    and ``step`` become integers."""
    out: Dict[str, Number] = {}
    for key, value in metrics.items():
        if hasattr(value, "item") and callable(value.item):
            value = value.item()  # numpy / torch scalars
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            continue
        if isinstance(value, float) and not math.isfinite(value):
            continue
        key = str(key)[:255]
        out[key] = int(value) if key in ("epoch", "step") else value
    return out


class _Report:
    __slots__ = ("kind", "body", "sealed", "since")

    def __init__(self, kind: str, body: Dict[str, Any]) -> None:
        self.kind = kind  # "callback" or "points"
        self.body = body
        self.sealed = kind == "callback"  # a batch takes points until sent
        self.since = time.monotonic()

    @property
    def weight(self) -> int:
        return max(1, len(self.body["points"])) if self.kind == "points" else 1

    @property
    def progress_only(self) -> bool:
        b = self.body
        return (self.kind == "callback" and b["status"] == "running" and not b.get("metrics")
                and "checkpoint_s3_uri" not in b and "error" not in b)


class Reporter:
    """Queues a trainer's reports and delivers them in order from a thread.

    ``send`` and ``log`` return as soon as the report is queued (they wait
    only when the queue is full); once the job has ended (409) or delivery
    has given up they raise :class:`JobEnded` / :class:`ReportFailed`.
    ``finish`` sends the last report and waits until everything is
    delivered. With ``handle_sigterm`` (the default, from the main thread)
    SIGTERM reports ``cancelled`` and raises :class:`JobEnded` in the main
    thread, so training stops through the same path as a 409.
    """

    def __init__(self, contract: Optional[Contract] = None, *, capacity: int = CAPACITY,
                 handle_sigterm: bool = True, batch_linger: float = BATCH_LINGER) -> None:
        self.contract = contract or Contract.from_env()
        self.capacity = capacity
        self.batch_linger = batch_linger
        self._queue: Deque[_Report] = deque()
        self._weight = 0
        self._sequence = 0
        self._cond = threading.Condition()
        self._stopped: Optional[BaseException] = None
        self._closed = False
        self._patience = _http.Patience(self.contract.report_timeout)
        self._thread = threading.Thread(target=self._deliver_in_order, name="platform-reporter",
                                        daemon=True)
        self._thread.start()
        self._old_sigterm: Any = None
        if handle_sigterm and threading.current_thread() is threading.main_thread():
            self._old_sigterm = signal.signal(signal.SIGTERM, self._on_sigterm)

    # -- producing ----------------------------------------------------------

    def send(self, status: str = "running", *, progress: Optional[float] = None,
             message: Optional[str] = None, metrics: Optional[Mapping[str, Any]] = None,
             checkpoint: Optional[str] = None, error: Optional[str] = None) -> None:
        """Queues a callback. ``metrics`` (one point: ``epoch``, ``loss``,
        ``mAP50``, …) is a flat map of numbers; ``checkpoint`` is the URI an
        artifact upload answered."""
        if status not in STATUSES:
            raise ValueError(f"status must be one of {', '.join(STATUSES)}, not {status!r}")
        body: Dict[str, Any] = {"status": status}
        if progress is not None:
            body["progress"] = min(1.0, max(0.0, float(progress)))
        if message is not None:
            body["message"] = str(message)[:10_000]
        if metrics:
            cleaned = _clean_metrics(metrics)
            if cleaned:
                body["metrics"] = cleaned
        if checkpoint is not None:
            body["checkpoint_s3_uri"] = checkpoint
        if error is not None:
            body["error"] = str(error)[:65_536]
        self._enqueue(_Report("callback", body))

    def log(self, metrics: Mapping[str, Any], *, step: Optional[int] = None,
            epoch: Optional[int] = None) -> None:
        """Queues one step-level metric point. Points are sent in batches
        (``POST …/metrics``, up to 1,000 per request), in order with the
        callbacks around them."""
        point = _clean_metrics(metrics)
        if step is not None:
            point["step"] = int(step)
        if epoch is not None:
            point["epoch"] = int(epoch)
        if point:
            self.log_many([point])

    def log_many(self, points: Iterable[Mapping[str, Any]]) -> None:
        """Queues many metric points at once (see :meth:`log`)."""
        for point in points:
            cleaned = _clean_metrics(point)
            if not cleaned:
                continue
            with self._cond:
                tail = self._queue[-1] if self._queue else None
                if (tail is not None and tail.kind == "points" and not tail.sealed
                        and len(tail.body["points"]) < MAX_BATCH_POINTS
                        and self._weight < self.capacity and self._stopped is None):
                    tail.body["points"].append(cleaned)
                    self._weight += 1
                    self._cond.notify_all()
                    continue
            self._enqueue(_Report("points", {"points": [cleaned]}))

    def finish(self, status: str = "completed", *, timeout: Optional[float] = None, **fields: Any) -> None:
        """Sends the trainer's last report and waits until it and everything
        before it are delivered (``timeout`` seconds at most, when given)."""
        self.send(status, **fields)
        self.flush(timeout)

    def flush(self, timeout: Optional[float] = None) -> bool:
        """Waits until every queued report is delivered; False when
        ``timeout`` passed first. Raises when delivery stopped."""
        deadline = None if timeout is None else time.monotonic() + timeout
        with self._cond:
            if self._queue:
                self._queue[-1].sealed = True
            self._cond.notify_all()
            while self._stopped is None and self._queue:
                remaining = None if deadline is None else deadline - time.monotonic()
                if remaining is not None and remaining <= 0:
                    return False
                self._cond.wait(remaining)
            if self._stopped is not None:
                raise self._stopped
        return True

    def upload(self, name: str, data: bytes) -> str:
        """Uploads bytes as output file ``name`` (``PUT …/artifacts/{name}``,
        the job's token, no storage credentials); returns its URI, to report
        as ``checkpoint``. Retried while the daemon is away."""
        from ._files import put_artifact

        return put_artifact(self.contract, name, data=data, patience=self._patience)

    def upload_artifact(self, path: Any, name: Optional[str] = None) -> str:
        """Uploads a file from disk (streamed) as output ``name`` (default:
        its file name); returns its URI."""
        from ._files import put_artifact

        return put_artifact(self.contract, name, path=path, patience=self._patience)

    def close(self) -> None:
        """Restores the previous SIGTERM handler (the thread ends with the process)."""
        if self._old_sigterm is not None and threading.current_thread() is threading.main_thread():
            signal.signal(signal.SIGTERM, self._old_sigterm)
            self._old_sigterm = None

    @contextlib.contextmanager
    def training(self) -> Iterator["Reporter"]:
        """Wraps a training run: an ended job (:class:`JobEnded`, e.g. a
        cancel) stops it quietly; any other error is reported as ``failed``
        with its text before it propagates, so a crash never ends the job
        by silence."""
        try:
            yield self
        except JobEnded as ended:
            print(f"the job is {ended.status}; stopping", flush=True)
        except Exception as e:
            try:
                self.finish("failed", error=f"{type(e).__name__}: {e}", timeout=30)
            except Exception:
                pass  # the original error matters more
            raise

    def __enter__(self) -> "Reporter":
        return self

    def __exit__(self, exc_type: Any, exc: Any, tb: Any) -> None:
        self.close()

    @property
    def stopped(self) -> Optional[BaseException]:
        """Why delivery stopped for good (:class:`JobEnded`, :class:`ReportFailed`), once it has."""
        return self._stopped

    # -- the queue ----------------------------------------------------------

    def _enqueue(self, report: _Report) -> None:
        with self._cond:
            while True:
                if self._stopped is not None:
                    raise self._stopped
                if self._merged(report):
                    return
                if not self._queue or self._weight + report.weight <= self.capacity:
                    break
                self._cond.wait()
            if self._queue and report.kind == "callback":
                self._queue[-1].sealed = True  # later points go after this callback
            self._sequence += 1
            report.body["sequence"] = self._sequence
            self._queue.append(report)
            self._weight += report.weight
            self._cond.notify_all()

    def _merged(self, report: _Report) -> bool:
        if not report.progress_only or len(self._queue) < 2 or not self._queue[-1].progress_only:
            return False
        last = self._queue[-1].body
        self._sequence += 1
        last["sequence"] = self._sequence
        for key in ("progress", "message"):
            if key in report.body:
                last[key] = report.body[key]
        return True

    def _next(self) -> Optional[_Report]:
        """The report to deliver next, once it is ready (a batch lingers a
        little for more points unless something is queued behind it)."""
        with self._cond:
            while True:
                if not self._queue:
                    self._cond.wait()
                    continue
                head = self._queue[0]
                wait = head.since + self.batch_linger - time.monotonic()
                if (head.sealed or len(self._queue) > 1 or wait <= 0
                        or len(head.body["points"]) >= MAX_BATCH_POINTS):
                    head.sealed = True
                    return head
                self._cond.wait(wait)

    def _deliver_in_order(self) -> None:
        while True:
            report = self._next()
            if report is None:
                return
            try:
                self._patience.run(lambda: self._attempt(report))
            except (JobEnded, ReportFailed) as e:
                with self._cond:
                    self._stopped = e
                    self._queue.clear()
                    self._weight = 0
                    self._cond.notify_all()
                if isinstance(e, ReportFailed):
                    print(f"platform: cannot report to the platform server: {e}", file=sys.stderr, flush=True)
                return
            with self._cond:
                self._queue.popleft()
                self._weight -= report.weight
                self._cond.notify_all()

    def _attempt(self, report: _Report) -> None:
        c = self.contract
        data = json.dumps(report.body).encode()
        if report.kind == "points":
            _http.request("POST", c.job_url("/metrics"), c.token, data)
            return
        try:
            _http.request("POST", c.callback_url, c.token, data)
        except JobEnded as ended:
            # The job already is where this report puts it (e.g. the
            # daemon's cancel and this trainer's `cancelled`).
            if ended.status != report.body["status"]:
                raise

    # -- SIGTERM --------------------------------------------------------------

    def _on_sigterm(self, signum: int, frame: Any) -> None:
        """Reports ``cancelled`` (waiting a few seconds for it to arrive) and
        raises :class:`JobEnded` in the main thread."""
        if self._stopped is None:
            def report() -> None:
                try:
                    self.finish("cancelled", message="stopped by SIGTERM", timeout=SIGTERM_FLUSH)
                except (JobEnded, ReportFailed):
                    pass
            # Another thread, so a main thread caught inside the queue's lock
            # cannot deadlock the handler.
            t = threading.Thread(target=report, daemon=True)
            t.start()
            t.join(SIGTERM_FLUSH + 1)
        with self._cond:
            if self._stopped is None:
                self._stopped = JobEnded("cancelled")
                self._cond.notify_all()
        raise JobEnded("cancelled")
