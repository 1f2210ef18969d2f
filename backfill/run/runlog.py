"""The run log: every event of a run, one JSON object a line, under ``<lake>/_runs/``."""

from __future__ import annotations

import json
import secrets
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from types import TracebackType
from typing import Any, TextIO

from backfill.congestion import held_rate
from backfill.run.events import Event

RUNS_DIR = "_runs"


def new_run_id(now: datetime | None = None, token: str | None = None) -> str:
    """A sortable, unique-enough run id such as ``20251125T130501Z-3fa9``."""
    now = now or datetime.now(timezone.utc)
    stamp = now.astimezone(timezone.utc).strftime("%Y%m%dT%H%M%SZ")
    return f"{stamp}-{token or secrets.token_hex(2)}"


def run_log_path(lake_root: Path, run_id: str) -> Path:
    """Where the run log of ``run_id`` lives."""
    return Path(lake_root) / RUNS_DIR / f"{run_id}.jsonl"


class RunLog:
    """Appends events to ``<lake>/_runs/<run-id>.jsonl``; the file exists from the start.

    Each line is flushed as written, so a crash loses at most the line being written.
    """

    def __init__(self, lake_root: Path, run_id: str | None = None) -> None:
        self.run_id = run_id or new_run_id()
        self.path = run_log_path(lake_root, self.run_id)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._file: TextIO | None = self.path.open("a", encoding="utf-8")

    def on_event(self, event: Event) -> None:
        """Append one event as a JSON line."""
        if self._file is None:
            raise ValueError(f"run log {self.path} is closed")
        self._file.write(event.to_json() + "\n")
        self._file.flush()

    def close(self) -> None:
        """Close the file; further events raise."""
        if self._file is not None:
            self._file.close()
            self._file = None

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


def measured_rate(lake_root: Path, min_held_s: float = 60.0) -> MeasuredRate | None:
    """What the newest ``--rate auto`` run on this lake held (time-weighted), if any ran
    for ``min_held_s`` or more; what ``plan --rate auto`` estimates with."""
    runs = sorted((Path(lake_root) / RUNS_DIR).glob("*.jsonl"), reverse=True)
    for path in runs:
        changes: list[tuple[float, float]] = []
        auto = False
        last = ""
        try:
            with path.open(encoding="utf-8") as file:
                for line in file:
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
        except OSError:
            continue
        final = _event(last) if changes else None
        last_at = max(changes[-1][0], float(final["at"])) if final else 0.0
        if not auto or not changes:
            continue
        held = held_rate(changes, last_at)
        if held is not None and last_at - changes[0][0] >= min_held_s:
            return MeasuredRate(held, path.stem, last_at - changes[0][0])
    return None


def _event(line: str) -> dict[str, Any] | None:
    """One run-log line's event with a numeric ``at`` (and ``rate`` for budget lines), or
    None for a line cut short by a crash."""
    try:
        event = json.loads(line)
        float(event["at"])
        if event.get("event") == "budget":
            float(event["rate"])
    except (ValueError, KeyError, TypeError):
        return None
    return event if isinstance(event, dict) else None
