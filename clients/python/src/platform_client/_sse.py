"""An incremental parser for ``text/event-stream`` (the part of the WHATWG
algorithm the daemon uses: ``event:``, ``data:``, ``id:``, comments,
dispatch on a blank line), shared by the client's live streams."""

from typing import List, Optional, Tuple

RawEvent = Tuple[str, Optional[str], str]  # (event type, id in force, data)


class SseParser:
    """Feed bytes in, get complete events out; ``last_id`` resumes a stream."""

    def __init__(self, last_id: Optional[str] = None) -> None:
        self.last_id = last_id
        self._buf = b""
        self._event = ""
        self._data: List[str] = []

    def reset(self) -> None:
        """Drops a partial event (the connection carrying it broke)."""
        self._buf, self._event, self._data = b"", "", []

    def feed(self, chunk: bytes) -> List[RawEvent]:
        self._buf += chunk
        out: List[RawEvent] = []
        while True:
            cut = min((i for i in (self._buf.find(b"\n"), self._buf.find(b"\r")) if i >= 0), default=-1)
            if cut < 0:
                break
            if self._buf[cut:cut + 1] == b"\r" and cut + 1 == len(self._buf):
                break  # maybe the first half of CR LF: wait for more
            skip = 2 if self._buf[cut:cut + 2] == b"\r\n" else 1
            line = self._buf[:cut].decode("utf-8", "replace")
            self._buf = self._buf[cut + skip:]
            event = self._line(line)
            if event is not None:
                out.append(event)
        return out

    def _line(self, line: str) -> Optional[RawEvent]:
        if not line:
            event, data = self._event or "message", self._data
            self._event, self._data = "", []
            return (event, self.last_id, "\n".join(data)) if data else None
        if line.startswith(":"):
            return None
        name, _, value = line.partition(":")
        if value.startswith(" "):
            value = value[1:]
        if name == "event":
            self._event = value
        elif name == "data":
            self._data.append(value)
        elif name == "id" and "\0" not in value:
            self.last_id = value
        return None
