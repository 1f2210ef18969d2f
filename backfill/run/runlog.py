"""The run log: every event of a run, one JSON object a line, under ``<lake>/_runs/``."""

from __future__ import annotations

import contextlib
import json
import re
import secrets
import time
from dataclasses import dataclass
from datetime import datetime, timezone
from types import TracebackType
from typing import Any

from backfill.congestion import held_rate
from backfill.lake.lakeio import open_append_log
from backfill.lake.objpath import LakePath, lake_path
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


def run_log_path(lake_root: LakePath, run_id: str) -> LakePath:
    """Where the run log of ``run_id`` lives."""
    return lake_path(lake_root) / RUNS_DIR / f"{run_id}.jsonl"


def prune_run_logs(runs: LakePath, keep: int) -> list[LakePath]:
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
    """Appends events to ``<lake>/_runs/<run-id>.jsonl``; the log exists from the start.

    A local log takes each line in one ``write`` as it comes, so a crash loses at most that
    line; an object store's is put whole at most every ``FLUSH_S`` (``lakeio``).
    A write that fails (disk full) is undone to the last whole line and ends the log:
    ``failure`` says why, and the caller decides what the run does about it.
    """

    def __init__(
        self, lake_root: LakePath, run_id: str | None = None, keep: int = DEFAULT_KEEP
    ) -> None:
        self.run_id = run_id or new_run_id()
        self.path = run_log_path(lake_root, self.run_id)
        self.failure = ""
        self._sink = open_append_log(self.path)
        prune_run_logs(self.path.parent, keep)

    def on_event(self, event: Event) -> None:
        """Append one event as a JSON line (nothing once the log has failed)."""
        if not self._sink.append((event.to_json() + "\n").encode()):
            self.failure = self.failure or self._sink.failure

    def note(self, text: str) -> None:
        """A line that is not an event (what the operator must know about this run)."""
        line = (
            json.dumps({"event": "note", "at": time.time(), "text": text}, separators=(",", ":"))
            + "\n"
        ).encode()
        self._sink.note(line)

    def close(self) -> None:
        """Close the log; further events raise (unless the log had failed)."""
        self._sink.close()
        self.failure = self.failure or self._sink.failure

    def __enter__(self) -> RunLog:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()


@dataclass(frozen=True)
class MeasuredRate:
    """The rate an earlier ``--rate auto`` run held on this lake, and which run."""

    rate: float
    run_id: str
    held_s: float


def measured_rate(lake_root: LakePath, min_held_s: float = 60.0) -> MeasuredRate | None:
    """What the newest ``--rate auto`` run on this lake held (time-weighted), if any ran
    for ``min_held_s`` or more; what ``plan --rate auto`` estimates with."""
    # By name, newest first: run ids sort by time.
    runs = sorted((lake_path(lake_root) / RUNS_DIR).glob("*.jsonl"), key=_name, reverse=True)
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


def _name(path: LakePath) -> str:
    return path.name


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
