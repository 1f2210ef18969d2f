"""The run log: every event of a run, one JSON object a line, under ``<lake>/_runs/``."""

from __future__ import annotations

import secrets
from datetime import datetime, timezone
from pathlib import Path
from types import TracebackType
from typing import TextIO

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
