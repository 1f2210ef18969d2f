"""The run log: every event of a run, one JSON object a line, under ``<lake>/_runs/``."""

from __future__ import annotations

import contextlib
import json
import os
import re
import secrets
import threading
import time
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from types import TracebackType
from typing import Any

from backfill.congestion import held_rate
from backfill.lake.objpath import is_object, lake_path
from backfill.lake.safe_json import (
    BadJson,
    bounded_lines,
    expect_dict,
    expect_number,
    open_regular,
    parse_json,
)
from backfill.lake.storage import StorageError
from backfill.run.events import Event

RUNS_DIR = "_runs"
DEFAULT_KEEP = 100
# Only files named as run logs are pruned: anything else an operator puts there stays.
_RUN_LOG_NAME = re.compile(r"\d{8}T\d{6}Z-[0-9a-f]+\.jsonl")


def new_run_id(now: datetime | None = None, token: str | None = None) -> str:
    """A sortable, unique-enough run id such as ``20251125T130501Z-3fa9``."""
    now = now or datetime.now(timezone.utc)
    stamp = now.astimezone(timezone.utc).strftime("%Y%m%dT%H%M%SZ")
    return f"{stamp}-{token or secrets.token_hex(2)}"


def run_log_path(lake_root: Path, run_id: str) -> Path:
    """Where the run log of ``run_id`` lives."""
    return lake_path(lake_root) / RUNS_DIR / f"{run_id}.jsonl"


def prune_run_logs(runs: Path, keep: int) -> list[Path]:
    """Delete all but the newest ``keep`` run logs in ``runs`` (by name: ids sort by time).

    Best effort: a log another run deletes first, or one that cannot go, is left be.
    """
    logs = sorted(p for p in runs.iterdir() if _RUN_LOG_NAME.fullmatch(p.name))
    gone = logs[: max(0, len(logs) - keep)]
    for path in gone:
        with contextlib.suppress(OSError, StorageError):
            path.unlink()
    return gone


class RunLog:
    """Appends events to ``<lake>/_runs/<run-id>.jsonl``; the file exists from the start.

    Each line goes out in one ``write`` as it comes, so a crash loses at most that line.
    A write that fails (disk full) is undone to the last whole line and ends the log:
    ``failure`` says why, and the caller decides what the run does about it.
    """

    def __init__(
        self, lake_root: Path, run_id: str | None = None, keep: int = DEFAULT_KEEP
    ) -> None:
        self.run_id = run_id or new_run_id()
        self.path = run_log_path(lake_root, self.run_id)
        self.failure = ""
        if is_object(self.path):
            # No append on an object store: the log is one object replaced whole at most
            # every FLUSH_S (and at close), so a crash loses at most that interval's lines.
            self._fd = None
            self._object: _ObjectLog | None = _ObjectLog(self.path)
            prune_run_logs(self.path.parent, keep)
            return
        self._object = None
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._fd: int | None = os.open(self.path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
        self._size = os.fstat(self._fd).st_size
        self.failure = ""
        prune_run_logs(self.path.parent, keep)

    def on_event(self, event: Event) -> None:
        """Append one event as a JSON line (nothing once the log has failed)."""
        if self._object is not None:
            if not self._object.append((event.to_json() + "\n").encode()):
                self.failure = self.failure or self._object.failure
            return
        if self._fd is None:
            if self.failure:
                return
            raise ValueError(f"run log {self.path} is closed")
        line = (event.to_json() + "\n").encode()
        try:
            written = os.write(self._fd, line)
            if written != len(line):
                raise OSError(28, os.strerror(28))  # a short write is the disk filling up
        except OSError as exc:
            with contextlib.suppress(OSError):
                os.ftruncate(self._fd, self._size)  # no half line left behind
            self.failure = f"cannot write the run log {self.path}: {exc.strerror or exc}"
            self.close()
            return
        self._size += written

    def note(self, text: str) -> None:
        """A line that is not an event (what the operator must know about this run)."""
        line = (
            json.dumps({"event": "note", "at": time.time(), "text": text}, separators=(",", ":"))
            + "\n"
        ).encode()
        if self._object is not None:
            self._object.append(line)
        elif self._fd is not None:
            with contextlib.suppress(OSError):
                self._size += os.write(self._fd, line)

    def close(self) -> None:
        """Close the file; further events raise (unless the log had failed)."""
        if self._object is not None:
            self._object.close()
            self.failure = self.failure or self._object.failure
        if self._fd is not None:
            os.close(self._fd)
            self._fd = None

    def __enter__(self) -> RunLog:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()


FLUSH_S = 2.0  # an object-store run log is put whole at most this often


class _ObjectLog:
    """A run log on an object store: lines kept in memory, the whole object put when
    ``FLUSH_S`` has passed since the last put (by the next line, or by a timer), and at
    close. Puts are unconditional: the run id makes the key this run's own."""

    def __init__(self, path: Any) -> None:
        self.path = path
        self.failure = ""
        self._lines = bytearray()
        self._dirty = False
        self._closed = False
        self._lock = threading.Lock()
        self._last = time.monotonic()
        self._flush()  # the log exists from the start, as a local one does
        self._timer = threading.Thread(target=self._tick, name="runlog-flush", daemon=True)
        self._wake = threading.Event()
        self._timer.start()

    def append(self, line: bytes) -> bool:
        with self._lock:
            if self._closed:
                if self.failure:
                    return False
                raise ValueError(f"run log {self.path} is closed")
            self._lines += line
            self._dirty = True
            due = time.monotonic() - self._last >= FLUSH_S
        if due:
            self._flush()
        return not self.failure

    def _tick(self) -> None:
        while not self._wake.wait(FLUSH_S):
            if self._dirty:
                self._flush()

    def _flush(self) -> None:
        with self._lock:
            if self.failure:
                return
            data, self._dirty, self._last = bytes(self._lines), False, time.monotonic()
            try:
                self.path.write_bytes(data)
            except (OSError, StorageError) as exc:
                self.failure = f"cannot write the run log {self.path}: {exc}"

    def close(self) -> None:
        if self._closed:
            return
        self._wake.set()
        if self._dirty:
            self._flush()
        self._closed = True


@dataclass(frozen=True)
class MeasuredRate:
    """The rate an earlier ``--rate auto`` run held on this lake, and which run."""

    rate: float
    run_id: str
    held_s: float


def measured_rate(lake_root: Path, min_held_s: float = 60.0) -> MeasuredRate | None:
    """What the newest ``--rate auto`` run on this lake held (time-weighted), if any ran
    for ``min_held_s`` or more; what ``plan --rate auto`` estimates with."""
    runs = sorted((lake_path(lake_root) / RUNS_DIR).glob("*.jsonl"), reverse=True)
    for path in runs:
        changes: list[tuple[float, float]] = []
        auto = False
        last = ""
        try:
            with open_regular(path) as file:  # a FIFO among the logs must not hang plan
                for raw in bounded_lines(file, _LINE_MAX_BYTES):
                    line = raw.decode("utf-8", "replace")
                    # Only budget lines and the last one are parsed: a long run logs millions.
                    if '"event":"budget"' not in line:
                        last = line
                        continue
                    event = _event(line)
                    if event is None:
                        continue
                    if not changes:
                        auto = str(event.get("reason", "")).startswith("auto")
                    changes.append((float(event["at"]), float(event["rate"])))
                    last = line
        except (OSError, BadJson, StorageError):
            continue
        final = _event(last) if changes else None
        last_at = max(changes[-1][0], float(final["at"])) if final else 0.0
        if not auto or not changes:
            continue
        held = held_rate(changes, last_at)
        if held is not None and last_at - changes[0][0] >= min_held_s:
            return MeasuredRate(held, path.stem, last_at - changes[0][0])
    return None


_LINE_MAX_BYTES = 64 << 10  # a run-log line is a few hundred bytes


def _event(line: str) -> dict[str, Any] | None:
    """One run-log line's event with a finite ``at`` (and, for budget lines, a ``rate``
    above 0), or None for a line cut short by a crash or not written by a run (a rate of
    0, negative or NaN is no rate a run held: the record is ignored)."""
    try:
        event = expect_dict(parse_json(line, _LINE_MAX_BYTES), "event")
        expect_number(event.get("at"), "at", 0.0, 1e11)
        if event.get("event") == "budget":
            expect_number(event.get("rate"), "rate", 1e-9, 1e9)
    except BadJson:
        return None
    return event
