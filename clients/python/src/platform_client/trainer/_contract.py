"""The trainer contract (SPEC §4): what the daemon tells a trainer through
its environment, read once into a :class:`Contract`."""

import json
import os
import re
from dataclasses import dataclass, field
from typing import Any, Dict, Mapping, Optional

from ._errors import ReportFailed

#: Seconds reports are retried while the daemon is unreachable, unless
#: ``PLATFORM_REPORT_TIMEOUT`` says otherwise.
DEFAULT_REPORT_TIMEOUT = 3600.0

_UUID_IN_URL = re.compile(r"/jobs/([0-9a-fA-F-]{36})/callback/?$")


@dataclass
class Contract:
    """The job's contract variables."""

    callback_url: str
    token: Optional[str]
    base_url: str
    job_id: Optional[str]
    model_name: str = ""
    framework: str = ""
    dataset_uri: str = ""
    output_uri: str = ""
    config: Dict[str, Any] = field(default_factory=dict)
    report_timeout: float = DEFAULT_REPORT_TIMEOUT

    @classmethod
    def from_env(cls, env: Optional[Mapping[str, str]] = None) -> "Contract":
        """Reads ``CALLBACK_URL``, ``CALLBACK_TOKEN``, ``BACKEND_BASE_URL``,
        ``JOB_ID``, ``MODEL_NAME``, ``FRAMEWORK``, ``DATASET_S3_URI``,
        ``OUTPUT_S3_URI``, ``CONFIG`` and ``PLATFORM_REPORT_TIMEOUT``."""
        env = os.environ if env is None else env

        def var(name: str) -> str:
            return (env.get(name) or "").strip()

        url = var("CALLBACK_URL")
        if not url:
            raise ReportFailed(
                "CALLBACK_URL is not set: run this inside a trainer launched by "
                "`platform serve` (it sets CALLBACK_URL and CALLBACK_TOKEN)")
        base = var("BACKEND_BASE_URL") or url.split("/api/v1/")[0]
        job_id = var("JOB_ID") or None
        if job_id is None:
            m = _UUID_IN_URL.search(url)
            job_id = m.group(1) if m else None
        timeout_text = var("PLATFORM_REPORT_TIMEOUT")
        timeout = DEFAULT_REPORT_TIMEOUT
        if timeout_text:
            try:
                timeout = float(timeout_text)
            except ValueError:
                timeout = -1.0
            if not (0 <= timeout < 1e12):
                raise ReportFailed(f"PLATFORM_REPORT_TIMEOUT={timeout_text!r} is not a number of seconds")
        try:
            config = json.loads(var("CONFIG") or "{}")
        except ValueError:
            raise ReportFailed("CONFIG is not a JSON object") from None
        return cls(callback_url=url, token=var("CALLBACK_TOKEN") or None,
                   base_url=base.rstrip("/"), job_id=job_id,
                   model_name=var("MODEL_NAME"), framework=var("FRAMEWORK"),
                   dataset_uri=var("DATASET_S3_URI"), output_uri=var("OUTPUT_S3_URI"),
                   config=config if isinstance(config, dict) else {},
                   report_timeout=timeout)

    def job_url(self, suffix: str) -> str:
        """``<base>/api/v1/training/jobs/<id><suffix>``."""
        if not self.job_id:
            raise ReportFailed("JOB_ID is not set: metric batches and artifacts need it")
        return f"{self.base_url}/api/v1/training/jobs/{self.job_id}{suffix}"


def config() -> Dict[str, Any]:
    """The job's ``config`` (``CONFIG``) as a dict (``{}`` when none)."""
    try:
        value = json.loads(os.environ.get("CONFIG") or "{}")
    except ValueError:
        raise ReportFailed("CONFIG is not a JSON object") from None
    return value if isinstance(value, dict) else {}
