"""What a person types for a job, read the way the CLI reads it: a full
UUID; ``#N`` or 1–12 digits without a leading zero (a job number: ids are
UUIDv7, whose first digit stays ``0`` for millennia); else an id prefix of
at least 4 hexadecimal characters (dashes allowed)."""

import uuid
from typing import Tuple, Union

MAX_NUMBER_DIGITS = 12
MIN_PREFIX = 4


def parse(ref: Union[str, int]) -> Tuple[str, Union[str, int]]:
    """``("id", uuid)``, ``("number", n)`` or ``("prefix", lowercase prefix)``."""
    if isinstance(ref, bool):
        raise ValueError(f"{ref!r} is not a job")
    if isinstance(ref, int):
        if ref < 1:
            raise ValueError(f"{ref!r} is not a job number (they start at 1)")
        return "number", ref
    text = str(ref).strip()
    bad = ValueError(
        f"{text!r} is not a job: give a job number (42 or #42), the full id, "
        "or a prefix of at least 4 hexadecimal characters"
    )
    try:
        return "id", str(uuid.UUID(text))
    except ValueError:
        pass
    if text.startswith("#"):
        digits = text[1:]
        if digits.isdigit() and digits.isascii() and int(digits) >= 1:
            return "number", int(digits)
        raise bad
    if (text.isdigit() and text.isascii() and not text.startswith("0")
            and len(text) <= MAX_NUMBER_DIGITS):
        return "number", int(text)
    hexchars = text.replace("-", "")
    if len(hexchars) < MIN_PREFIX or not all(c in "0123456789abcdefABCDEF-" for c in text):
        raise bad
    return "prefix", text.lower()
