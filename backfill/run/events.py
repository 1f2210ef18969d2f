"""Events a worker emits; the dashboard, plain lines, --json and the run log render them.

Events are frozen dataclasses so they pickle across a multiprocessing queue and serialise
to one JSON object each (``to_json``), with ``event`` naming the type.
"""

from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass, field
from datetime import date, datetime
from enum import Enum
from typing import Any


class Status(str, Enum):
    QUEUED = "queued"
    CONNECTING = "connecting"
    FETCHING = "fetching"
    PACED = "paced"
    RETRYING = "retrying"
    DONE = "done"
    FAILED = "failed"
    SKIPPED = "skipped"
    WAITING = "waiting"  # another run holds the symbol: taken over when it lets go
    STOPPED = "stopped"  # interrupted (Ctrl-C): what was fetched is flushed, the rest is not
    STALLED = "stalled"  # its worker sent nothing for --stall-after s (set by the orchestrator)


@dataclass(frozen=True)
class Event:
    symbol: str
    at: float = field(default=0.0, kw_only=True)  # wall clock (time.time()) when emitted

    def to_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {"event": EVENT_NAMES[type(self)]}
        for f in dataclasses.fields(self):
            value = getattr(self, f.name)
            if isinstance(value, (date, datetime)):
                value = value.isoformat()
            elif isinstance(value, Enum):
                value = value.value
            elif isinstance(value, tuple):
                value = [list(v) if isinstance(v, tuple) else v for v in value]
            out[f.name] = value
        return out

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), separators=(",", ":"), default=str)


@dataclass(frozen=True)
class RunStarted(Event):
    """The run log's first record (run-wide: ``symbol`` is empty): what ran this run."""

    version: str  # backfill's
    client: str  # the IB client library the workers use (backfill/ib/client.py)
    client_version: str


@dataclass(frozen=True)
class WorkerQueued(Event):
    days_total: int


@dataclass(frozen=True)
class WorkerStarted(Event):
    client_id: int
    days_total: int
    pid: int = 0


@dataclass(frozen=True)
class StatusChanged(Event):
    status: Status
    detail: str = ""


@dataclass(frozen=True)
class DayFetched(Event):
    day: date
    rows: int
    latency_s: float
    complete: bool = True
    no_data: bool = False


@dataclass(frozen=True)
class RequestDone(Event):
    """One historical-data request answered (or not): every request sent emits one."""

    window: str
    # "bars", "no_data", "pacing", "timeout", "upstream" (a timeout while IB had lost its
    # own connectivity), "disconnect", "error", ...
    outcome: str
    latency_s: float


@dataclass(frozen=True)
class Retry(Event):
    reason: str
    attempt: int
    delay_s: float
    day: date | None = None


@dataclass(frozen=True)
class GapFound(Event):
    day: date
    missing_minutes: int
    ranges: tuple[tuple[str, str], ...] = ()  # (first missing bar end, last), ISO strings


@dataclass(frozen=True)
class Paced(Event):
    wait_s: float
    rule: str = "rate"


@dataclass(frozen=True)
class PacingViolation(Event):
    """IB (or the simulator) answered 162 pacing: every worker backs off."""

    backoff_s: float


@dataclass(frozen=True)
class BudgetChanged(Event):
    """The global request budget changed (run-wide: ``symbol`` is empty)."""

    rate: float
    reason: str = ""


@dataclass(frozen=True)
class PartWritten(Event):
    """A month's part written: ``rows`` in the part now; ``days`` and ``rows_added`` are
    what this write brought to the lake (what the run counts as done)."""

    month: str
    rows: int
    path: str
    days: int = 0
    rows_added: int = 0


@dataclass(frozen=True)
class DayFailed(Event):
    day: date
    reason: str


@dataclass(frozen=True)
class WorkerFailed(Event):
    reason: str
    days_failed: int = 0


@dataclass(frozen=True)
class WorkerFinished(Event):
    """``rows`` are the rows written; ``days_written`` the days recorded in the lake."""

    days_fetched: int
    rows: int
    days_failed: int = 0
    days_written: int = 0


@dataclass(frozen=True)
class BeforeListing(Event):
    """Days of the asked range left out as before the symbol's head (its first bar at the
    gateway), said once at the start: ``head`` (ISO time) and where it came from."""

    days: int
    head: str
    source: str


@dataclass(frozen=True)
class Heartbeat(Event):
    """A worker is alive (sent while it has work, however quiet): the orchestrator's stall
    watch takes it and passes it on to nobody."""


EVENT_NAMES: dict[type, str] = {
    RunStarted: "run_started",
    WorkerQueued: "queued",
    WorkerStarted: "started",
    StatusChanged: "status",
    DayFetched: "day_fetched",
    RequestDone: "request",
    Retry: "retry",
    GapFound: "gap",
    Paced: "paced",
    PacingViolation: "pacing_violation",
    BudgetChanged: "budget",
    PartWritten: "part_written",
    DayFailed: "day_failed",
    WorkerFailed: "failed",
    WorkerFinished: "finished",
    Heartbeat: "heartbeat",
    BeforeListing: "before_listing",
}
