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


def download_dataset(to: PathLike, *, contract: Optional[Contract] = None,
                     copy_local: bool = True) -> Path:
    """Copies the job's dataset (``DATASET_S3_URI``) into directory ``to``
    and returns it, keeping the files' relative paths.

    A ``file://`` dataset the trainer can see (the daemon's local store on
    the same machine) is copied directly; any other is downloaded through
    the daemon's API for the job's own dataset
    (``GET /api/v1/training/jobs/{id}/dataset`` and its files) with the
    job's callback token: no API token or storage credentials needed.
    ``copy_local=False`` always downloads, for a trainer whose view of the
    file system is not the daemon's.
    """
    c = contract or Contract.from_env()
    dest = Path(to)
    dest.mkdir(parents=True, exist_ok=True)
    uri = c.dataset_uri
    if not uri:
        raise ReportFailed("DATASET_S3_URI is not set")
    if copy_local and uri.startswith("file://"):
        local = Path(urllib.parse.unquote(urllib.parse.urlparse(uri).path))
        if local.is_dir():
            shutil.copytree(local, dest, dirs_exist_ok=True)
            return dest
        if local.is_file():
            shutil.copy2(local, dest / local.name)
            return dest
    token = c.token
    base = c.job_url("/dataset")
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
