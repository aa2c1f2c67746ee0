"""Moving files through the daemon's API from inside a trainer: the job's
outputs up (``PUT …/artifacts/{path}``, with the job's token: no storage
credentials needed) and its dataset down."""

import http.client
import json
import os
import shutil
import urllib.parse
from pathlib import Path
from typing import Any, Dict, List, Optional, Union
from urllib.parse import quote

from . import _http
from ._contract import Contract
from ._errors import ReportFailed

PathLike = Union[str, "os.PathLike[str]"]


def _quote_path(path: str) -> str:
    return "/".join(quote(seg, safe="-._~") for seg in path.split("/"))


def put_artifact(contract: Contract, name: Optional[str], *, data: Optional[bytes] = None,
                 path: Optional[PathLike] = None, patience: Optional[_http.Patience] = None) -> str:
    """Uploads ``data`` or the file at ``path`` as output ``name``; returns its URI."""
    if path is not None:
        path = Path(path)
        name = name or path.name
        if not path.is_file():
            raise ReportFailed(f"cannot upload {path}: not a file")
    if not name:
        raise ValueError("an artifact needs a name")
    url = contract.job_url(f"/artifacts/{_quote_path(name)}")
    patience = patience or _http.Patience(contract.report_timeout)

    def attempt() -> Any:
        if path is None:
            return _http.request("PUT", url, contract.token, data or b"",
                                 "application/octet-stream", len(data or b""))
        with open(path, "rb") as f:
            return _http.request("PUT", url, contract.token, f, "application/octet-stream",
                                 os.fstat(f.fileno()).st_size)

    stored = patience.run(attempt)
    return str(stored["uri"])


def upload_artifact(path: PathLike, name: Optional[str] = None) -> str:
    """Uploads a file (streamed) as one of the job's outputs, named ``name``
    (default: the file's name); returns its URI in the object store, to
    report as ``checkpoint``. Reads the trainer contract from the environment."""
    return put_artifact(Contract.from_env(), name, path=path)


def _dataset_name(uri: str) -> Optional[str]:
    """The dataset name in a store URI (``…/datasets/<name>/…``)."""
    parts = [p for p in urllib.parse.urlparse(uri).path.split("/") if p]
    for i, part in enumerate(parts[:-1]):
        if part == "datasets":
            return urllib.parse.unquote(parts[i + 1])
    return None


def download_dataset(to: PathLike, *, contract: Optional[Contract] = None) -> Path:
    """Copies the job's dataset (``DATASET_S3_URI``) into directory ``to``
    and returns it, keeping the files' relative paths.

    A ``file://`` dataset the trainer can see (the daemon's local store on
    the same machine) is copied directly; any other is downloaded through
    the daemon's dataset API (``GET /api/v1/datasets/{name}`` and its files),
    which takes the API token from ``PLATFORM_TOKEN`` in the trainer's
    environment when the daemon requires one.
    """
    c = contract or Contract.from_env()
    dest = Path(to)
    dest.mkdir(parents=True, exist_ok=True)
    uri = c.dataset_uri
    if not uri:
        raise ReportFailed("DATASET_S3_URI is not set")
    if uri.startswith("file://"):
        local = Path(urllib.parse.unquote(urllib.parse.urlparse(uri).path))
        if local.is_dir():
            shutil.copytree(local, dest, dirs_exist_ok=True)
            return dest
        if local.is_file():
            shutil.copy2(local, dest / local.name)
            return dest
    name = _dataset_name(uri)
    if name is None:
        raise ReportFailed(f"{uri} is not a dataset of the daemon's store (…/datasets/<name>/)")
    token = os.environ.get("PLATFORM_TOKEN") or None
    base = f"{c.base_url}/api/v1/datasets/{_quote_path(name)}"
    patience = _http.Patience(c.report_timeout)

    def listing() -> Dict[str, Any]:
        resp = _http.request("GET", base, token)
        with resp:
            try:
                return json.loads(resp.read())
            except (ValueError, OSError, http.client.HTTPException) as e:
                raise _http.Retry(f"an unreadable dataset listing ({e})") from None

    files: List[Dict[str, Any]] = patience.run(listing).get("files") or []
    for f in files:
        rel = str(f["path"])
        target = dest.joinpath(*rel.split("/"))
        if dest.resolve() not in target.resolve().parents:
            raise ReportFailed(f"refusing to write {rel!r} outside {dest}")
        target.parent.mkdir(parents=True, exist_ok=True)
        tmp = target.with_name(f".{target.name}.part")

        def fetch() -> None:
            resp = _http.request("GET", f"{base}/files/{_quote_path(rel)}", token)
            try:
                with resp, open(tmp, "wb") as out:
                    shutil.copyfileobj(resp, out, 256 * 1024)
            except (OSError, http.client.HTTPException) as e:
                raise _http.Retry(f"the download of {rel} broke ({e})") from None

        patience.run(fetch)
        os.replace(tmp, target)
    return dest
