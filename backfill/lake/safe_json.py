"""Reading the JSON the lake holds as the input it is: whoever can write the lake folder
(a buggy script, a bad copy, an attacker) wrote it.

One reader for every JSON file and footer record: a regular file only (a FIFO or a device
in its place is refused without blocking: opened non-blocking, checked with ``fstat``), at
most a size per kind (read no further), parsed with deep nesting refused, and then checked by the
caller's typed validation (the ``expect_*`` helpers below). Anything wrong is one
``BadJson`` (a ``ValueError``) with a short reason; what a bad file means is the caller's
call (a cache ignored, a footer a corrupt part, a findings file absent).
"""

from __future__ import annotations

import json
import math
from collections.abc import Iterator
from typing import TYPE_CHECKING, Any, BinaryIO

from backfill.lake.errors import BadJson
from backfill.lake.lakeio import open_bounded, read_bounded

if TYPE_CHECKING:
    from backfill.lake.objpath import LakePath

# Size caps per kind: far above what the tool writes, far below what would hurt to parse.
CACHE_MAX_BYTES = 32 << 20  # coverage.json: ~80 bytes a part, 400,000 parts
SMALL_FILE_MAX_BYTES = 1 << 20  # heads.json, a gateway's findings, a symbol's sends
FOOTER_MAX_BYTES = 1 << 20  # a part's coverage or provenance record (a month: ~3 KB)


def read_json_file(path: LakePath | str, max_bytes: int) -> Any | None:
    """The parsed JSON of ``path``, or None if there is no such file.

    Raises ``BadJson`` for anything else that is wrong: not a regular file, larger than
    ``max_bytes``, unreadable (the ``OSError`` is wrapped), not UTF-8 JSON, nested deeper
    than the interpreter's recursion limit.
    """
    raw = read_regular_file(path, max_bytes)
    return None if raw is None else parse_json(raw, max_bytes)


def read_regular_file(path: LakePath | str, max_bytes: int) -> bytes | None:
    """The bytes of ``path`` if it is a regular file of at most ``max_bytes``; None if there
    is no such file; else ``BadJson`` (never blocks on a FIFO, never reads past the cap)."""
    return read_bounded(path, max_bytes)


def open_regular(path: LakePath | str) -> BinaryIO:
    """``path`` opened for reading if it is a regular file (a FIFO is refused without
    blocking); ``FileNotFoundError`` if absent, ``BadJson`` if not a regular file."""
    return open_bounded(path)


def bounded_lines(file: BinaryIO, max_bytes: int) -> Iterator[bytes]:
    """The file's lines; a line longer than ``max_bytes`` is skipped, never held whole."""
    while True:
        line = file.readline(max_bytes + 1)
        if not line:
            return
        if len(line) > max_bytes and not line.endswith(b"\n"):
            while line and not line.endswith(b"\n"):  # skip the rest of the long line
                line = file.readline(1 << 20)
            continue
        yield line


def parse_json(raw: bytes | str, max_bytes: int = FOOTER_MAX_BYTES) -> Any:
    """``raw`` parsed, or ``BadJson``: too long, not UTF-8, not JSON, nested too deep."""
    if len(raw) > max_bytes:
        raise BadJson(f"{len(raw)} bytes, more than {max_bytes}")
    try:
        text = raw.decode("utf-8") if isinstance(raw, bytes) else raw
        return _DECODER.decode(text)
    except RecursionError as exc:  # '[' * 200000: the C parser gives up at the limit, fast
        raise BadJson("nested too deep") from exc
    except (ValueError, UnicodeError) as exc:
        raise BadJson(f"not JSON: {str(exc)[:80]}") from exc


def _no_constant(name: str) -> float:
    raise BadJson(f"not JSON: {name}")  # NaN, Infinity: Python's json takes them, JSON does not


_DECODER = json.JSONDecoder(parse_constant=_no_constant)  # one: json.loads builds one a call


# ---------------------------------------------------------------- typed validation


def expect_dict(value: Any, what: str) -> dict[str, Any]:
    if not isinstance(value, dict):
        raise BadJson(f"{what}: expected an object, got {type(value).__name__}")
    return value


def expect_list(value: Any, what: str) -> list[Any]:
    if not isinstance(value, list):
        raise BadJson(f"{what}: expected a list, got {type(value).__name__}")
    return value


def expect_str(value: Any, what: str, max_len: int = 200) -> str:
    if not isinstance(value, str) or len(value) > max_len:
        raise BadJson(f"{what}: expected a string of at most {max_len} characters")
    return value


def expect_int(value: Any, what: str, low: int, high: int) -> int:
    """An integer (not a bool, not a float) in ``[low, high]``."""
    if isinstance(value, bool) or not isinstance(value, int) or not low <= value <= high:
        raise BadJson(f"{what}: expected an integer in [{low}, {high}]")
    return value


def expect_number(value: Any, what: str, low: float, high: float) -> float:
    """A finite number (not a bool) in ``[low, high]``."""
    if (
        isinstance(value, bool)
        or not isinstance(value, (int, float))
        or not math.isfinite(value)
        or not low <= value <= high
    ):
        raise BadJson(f"{what}: expected a number in [{low:g}, {high:g}]")
    return float(value)


def expect_bool(value: Any, what: str) -> bool:
    """``true`` or ``false``, strictly: ``"false"`` and ``0`` are not booleans."""
    if not isinstance(value, bool):
        raise BadJson(f"{what}: expected true or false")
    return value
