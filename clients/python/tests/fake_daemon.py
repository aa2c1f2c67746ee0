"""A stand-in daemon for the Reporter's unit tests: it records what a
trainer sends to its trainer routes, applies sequences like the real one,
and can answer 409 (cancelled) or be started late (an outage)."""

import json
import socket
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any, Dict, List, Optional

JOB = "0190f000-0000-7000-8000-000000000001"
TOKEN = "t" * 43


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def contract_env(port: int, timeout: float = 600, **extra: str) -> Dict[str, str]:
    base = f"http://127.0.0.1:{port}"
    env = {"JOB_ID": JOB, "CALLBACK_URL": f"{base}/api/v1/training/jobs/{JOB}/callback",
           "CALLBACK_TOKEN": TOKEN, "BACKEND_BASE_URL": base,
           "PLATFORM_REPORT_TIMEOUT": str(timeout), "CONFIG": "{}"}
    env.update(extra)
    return env


class FakeDaemon:
    def __init__(self, port: Optional[int] = None) -> None:
        self.port = port or free_port()
        self.applied: List[Dict[str, Any]] = []  # bodies applied, in order
        self.requests: List[str] = []
        self.artifacts: Dict[str, bytes] = {}
        self.status = "running"  # "cancelled": every report gets 409
        self.fail_next: List[int] = []  # statuses to answer before applying
        self.last_sequence = 0
        self.lock = threading.Lock()
        self.server: Optional[ThreadingHTTPServer] = None

    def start(self) -> "FakeDaemon":
        daemon = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args: Any) -> None:
                pass

            def _answer(self, code: int, body: Any) -> None:
                data = json.dumps(body).encode()
                self.send_response(code)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def _read(self) -> bytes:
                return self.rfile.read(int(self.headers.get("Content-Length") or 0))

            def do_POST(self) -> None:
                body = json.loads(self._read())
                daemon.requests.append(self.path)
                if self.headers.get("Authorization") != f"Bearer {TOKEN}":
                    return self._answer(401, {"detail": "wrong callback token"})
                with daemon.lock:
                    if daemon.fail_next:
                        code = daemon.fail_next.pop(0)
                        return self._answer(code, {"detail": f"answer {code}"})
                    if daemon.status != "running":
                        seq = body.get("sequence")
                        if seq is not None and seq <= daemon.last_sequence:
                            return self._answer(200, {"status": "ok", "job_id": JOB, "applied": False})
                        return self._answer(409, {"detail": "the job already ended", "status": daemon.status})
                    seq = body.get("sequence")
                    if seq is None or seq > daemon.last_sequence:
                        daemon.last_sequence = seq or daemon.last_sequence
                        daemon.applied.append(body)
                        if body.get("status") in ("completed", "failed", "cancelled"):
                            daemon.status = body["status"]
                self._answer(200, {"status": "ok", "job_id": JOB, "applied": True})

            def do_PUT(self) -> None:
                data = self._read()
                name = self.path.rsplit("/artifacts/", 1)[-1]
                daemon.artifacts[name] = data
                self._answer(201, {"path": name, "uri": f"file:///store/jobs/{JOB}/outputs/{name}",
                                   "size": len(data), "last_modified": "2025-01-01T00:00:00Z"})

        self.server = ThreadingHTTPServer(("127.0.0.1", self.port), Handler)
        threading.Thread(target=self.server.serve_forever, daemon=True).start()
        return self

    def stop(self) -> None:
        if self.server is not None:
            self.server.shutdown()
            self.server.server_close()
            self.server = None

    def sequences(self) -> List[int]:
        return [b["sequence"] for b in self.applied]
