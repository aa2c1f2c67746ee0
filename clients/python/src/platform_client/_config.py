"""Where the client finds the daemon and its token, the way the ``platform``
CLI does: an explicit argument, else ``PLATFORM_SERVER``/``PLATFORM_TOKEN``,
else a ``.env`` file (the working directory or a parent), else the CLI's
current context (``platform login``: ``contexts.toml`` in the user's config
directory, the context named by ``$PLATFORM_CONTEXT`` or its ``current``
key), else the CLI's config file (``$PLATFORM_CONFIG``, else ``config.toml``
in the user's config directory: keys ``server``/``token`` or
``platform_server``/``platform_token``), else ``http://127.0.0.1:8000``
without a token.
"""

import os
import sys
from pathlib import Path
from typing import Dict, Optional, Tuple

DEFAULT_SERVER = "http://127.0.0.1:8000"

# Config-file keys (lower case) for each variable, as the CLI reads them.
_KEYS = {"PLATFORM_SERVER": ("server", "platform_server"),
         "PLATFORM_TOKEN": ("token", "platform_token")}


def config_dir() -> Optional[Path]:
    """The user's config directory for platform (the CLI's ``directories`` rule)."""
    home = Path.home()
    if sys.platform == "darwin":
        return home / "Library" / "Application Support" / "platform"
    if os.name == "nt":
        appdata = os.environ.get("APPDATA")
        return Path(appdata) / "platform" / "config" if appdata else None
    xdg = os.environ.get("XDG_CONFIG_HOME")
    base = Path(xdg) if xdg and os.path.isabs(xdg) else home / ".config"
    return base / "platform"


def config_file() -> Optional[Path]:
    """``$PLATFORM_CONFIG``, else ``config.toml`` in :func:`config_dir`."""
    explicit = os.environ.get("PLATFORM_CONFIG")
    if explicit:
        return Path(explicit)
    d = config_dir()
    return d / "config.toml" if d else None


def _unquote(value: str) -> str:
    value = value.strip()
    if len(value) >= 2 and value[0] == value[-1] and value[0] in "\"'":
        inner = value[1:-1]
        if value[0] == '"':
            return inner.encode("utf-8").decode("unicode_escape") if "\\" in inner else inner
        return inner
    return value


def _read_toml_top_level(path: Path) -> Dict[str, str]:
    """The top-level ``key = value`` pairs of a TOML file (strings and scalars)."""
    text = path.read_text(encoding="utf-8")
    try:
        import tomllib  # Python 3.11+
    except ImportError:
        tomllib = None  # type: ignore[assignment]
    if tomllib is not None:
        table = tomllib.loads(text)
        return {k: v if isinstance(v, str) else str(v).lower() if isinstance(v, bool) else str(v)
                for k, v in table.items() if not isinstance(v, (dict, list))}
    out: Dict[str, str] = {}
    for line in text.splitlines():
        line = line.strip()
        if line.startswith("["):
            break  # tables follow; the keys the client needs are top-level
        if not line or line.startswith("#") or "=" not in line:
            continue
        key, value = line.split("=", 1)
        value = value.strip()
        quote = value[:1]
        if quote in ("\"", "'"):
            end = 1
            while end < len(value) and value[end] != quote:
                end += 2 if quote == '"' and value[end] == "\\" else 1
            value = value[:end + 1]
        else:
            value = value.split("#", 1)[0]
        out[key.strip().strip("\"'")] = _unquote(value)
    return out


def _read_dotenv() -> Dict[str, str]:
    """``.env`` in the working directory or the nearest parent that has one."""
    try:
        here = Path.cwd()
    except OSError:
        return {}
    for d in (here, *here.parents):
        path = d / ".env"
        if path.is_file():
            out: Dict[str, str] = {}
            try:
                lines = path.read_text(encoding="utf-8").splitlines()
            except OSError:
                return {}
            for line in lines:
                line = line.strip()
                if line.startswith("export "):
                    line = line[len("export "):]
                if not line or line.startswith("#") or "=" not in line:
                    continue
                key, value = line.split("=", 1)
                out[key.strip()] = _unquote(value)
            return out
    return {}


def _context() -> Dict[str, str]:
    """The selected CLI context's ``server`` and ``token`` (empty if none)."""
    d = config_dir()
    path = d / "contexts.toml" if d else None
    if path is None or not path.is_file():
        return {}
    try:
        import tomllib  # Python 3.11+
    except ImportError:
        return {}  # the CLI writes this file; older Pythons fall back to config.toml
    try:
        doc = tomllib.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return {}
    name = os.environ.get("PLATFORM_CONTEXT") or doc.get("current")
    ctx = doc.get("contexts", {}).get(name) if isinstance(name, str) else None
    if not isinstance(ctx, dict):
        return {}
    return {k: v for k, v in ctx.items() if k in ("server", "token") and isinstance(v, str)}


def _from_files(var: str) -> Optional[str]:
    value = _read_dotenv().get(var)
    if value:
        return value
    value = _context().get(_KEYS[var][0])
    if value:
        return value
    path = config_file()
    if path is None or not path.is_file():
        return None
    try:
        table = _read_toml_top_level(path)
    except (OSError, ValueError):
        return None  # the CLI only warns about a broken file; so does this client
    for key in _KEYS[var]:
        if table.get(key):
            return table[key]
    return None


def resolve(server: Optional[str], token: Optional[str]) -> Tuple[str, Optional[str]]:
    """The server URL and token to use, by the rule in the module documentation."""
    if not server:
        server = os.environ.get("PLATFORM_SERVER") or _from_files("PLATFORM_SERVER") or DEFAULT_SERVER
    if token is None:
        token = os.environ.get("PLATFORM_TOKEN") or _from_files("PLATFORM_TOKEN") or None
    return server.rstrip("/"), (token.strip() or None) if token else None
