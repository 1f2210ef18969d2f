"""The run as the parent sees it: per-symbol progress and global pacing, folded from events.

Pure: no I/O, time comes from an injected clock. ``RunState.apply`` folds one event;
``RunState.snapshot`` returns a frozen ``RunSnapshot`` that every renderer reads, so a
live refresh thread never sees a half-applied event.
"""

from __future__ import annotations

import bisect
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace
from datetime import date

from backfill.congestion import RollingLatency
from backfill.run import events as ev
from backfill.run.events import Status

Clock = Callable[[], float]

TERMINAL = frozenset({Status.DONE, Status.FAILED, Status.SKIPPED})
# Outcomes of a RequestDone that settled a window; the others are sent again.
ANSWERED = frozenset({"bars", "no_data"})
# Outcomes counted as errors; "pacing" is counted as a violation instead (PacingViolation).
ERROR_OUTCOMES = frozenset({"timeout", "upstream", "disconnect", "error"})
# Weight of the newest latency in the moving average: about the last ten requests.
LATENCY_ALPHA = 0.2
# A worker waiting on the run's in-flight cap is shown "paced" only once the wait has lasted
# this long, or three of its answers' average latency if longer: a pipelined worker waits on
# an answer with its share open nearly all the time, and that is fetching, not pacing.
CAP_QUIET_S = 2.0
IN_FLIGHT_CAP = "in-flight cap"


@dataclass(frozen=True)
class SymbolProgress:
    """One symbol's worker as last reported: a value, replaced on each event."""

    symbol: str
    status: Status = Status.QUEUED
    detail: str = ""
    client_id: int | None = None
    days_total: int = 0
    days_done: int = 0  # written to the lake: what counts
    days_fetched: int = 0  # answered, perhaps not written yet: the live progress
    days_failed: int = 0
    failed_days: tuple[date, ...] = ()
    rows: int = 0  # written to the lake
    rows_fetched: int = 0  # answered, perhaps not written yet (as ``days_fetched``)
    current_day: date | None = None
    requests: int = 0
    last_latency_s: float | None = None
    avg_latency_s: float | None = None
    retries: int = 0
    gaps: int = 0
    missing_minutes: int = 0
    parts_written: int = 0
    starts: int = 0
    failed_reason: str = ""
    since: float = 0.0  # when the status (or its detail) last changed, event time

    def shown_status(self, now: float) -> tuple[Status, str]:
        """The status and note to show at ``now``: a short wait on the in-flight cap is
        fetching (see ``CAP_QUIET_S``)."""
        if self.status is Status.PACED and self.detail == IN_FLIGHT_CAP:
            quiet = max(CAP_QUIET_S, 3 * (self.avg_latency_s or 0.0))
            if now - self.since < quiet:
                return Status.FETCHING, ""
        return self.status, self.detail

    @property
    def fraction(self) -> float:
        """Share of the planned days fetched, 0..1 (failed days do not count as progress)."""
        if self.days_total <= 0:
            return 1.0 if self.status in TERMINAL else 0.0
        return min(max(self.days_done, self.days_fetched) / self.days_total, 1.0)

    @property
    def needs_rerun(self) -> bool:
        """The worker failed or gave up on some days: a rerun would fetch more."""
        return self.status is Status.FAILED or self.days_failed > 0

    def apply(self, event: ev.Event) -> SymbolProgress:
        """The progress after ``event``; events of other kinds leave it unchanged."""
        after = _handle(self, event)
        if after is None:
            return self
        if (after.status, after.detail) != (self.status, self.detail):
            after = replace(after, since=event.at)
        return after

    def _settle(self, status: Status, detail: str = "") -> SymbolProgress:
        # Activity events imply a status for workers that never send StatusChanged, but a
        # finished or failed worker stays so until it is started again.
        if self.status in TERMINAL:
            return self
        return replace(self, status=status, detail=detail)


def _queued(p: SymbolProgress, e: ev.WorkerQueued) -> SymbolProgress:
    return replace(p, status=Status.QUEUED, days_total=max(p.days_total, e.days_total))


def _started(p: SymbolProgress, e: ev.WorkerStarted) -> SymbolProgress:
    if p.starts == 0:
        return replace(
            p,
            status=Status.CONNECTING,
            client_id=e.client_id,
            days_total=max(p.days_total, e.days_total),
            starts=1,
        )
    # A restarted worker resumes from the lake and is given only the days still missing
    # there: the lake is the truth, so what it lacks is neither done nor failed yet.
    return replace(
        p,
        status=Status.CONNECTING,
        detail="",
        client_id=e.client_id,
        days_done=max(p.days_total - e.days_total, 0),
        days_fetched=max(p.days_total - e.days_total, 0),
        rows_fetched=p.rows,  # what was fetched and not written is fetched again
        days_failed=0,
        failed_days=(),
        starts=p.starts + 1,
        failed_reason="",
    )


def _status(p: SymbolProgress, e: ev.StatusChanged) -> SymbolProgress:
    # A bare "failed" (gave up on some days) keeps the reason the DayFailed events gave.
    reason = (e.detail or p.failed_reason) if e.status is Status.FAILED else p.failed_reason
    return replace(p, status=e.status, detail=e.detail, failed_reason=reason)


def _day_fetched(p: SymbolProgress, e: ev.DayFetched) -> SymbolProgress:
    # Counted as done only once written (PartWritten): a day fetched and then lost (a full
    # disk, a killed worker) is not in the lake.
    p = replace(
        p, days_fetched=p.days_fetched + 1, rows_fetched=p.rows_fetched + e.rows, current_day=e.day
    )
    return p._settle(Status.FETCHING)


def _request(p: SymbolProgress, e: ev.RequestDone) -> SymbolProgress:
    avg = (
        e.latency_s
        if p.avg_latency_s is None
        else LATENCY_ALPHA * e.latency_s + (1 - LATENCY_ALPHA) * p.avg_latency_s
    )
    p = replace(p, requests=p.requests + 1, last_latency_s=e.latency_s, avg_latency_s=avg)
    return p._settle(Status.FETCHING) if e.outcome in ANSWERED else p


def _retry(p: SymbolProgress, e: ev.Retry) -> SymbolProgress:
    p = replace(p, retries=p.retries + 1)
    return p._settle(Status.RETRYING, f"{e.reason} #{e.attempt}, in {e.delay_s:.1f}s")


def _gap(p: SymbolProgress, e: ev.GapFound) -> SymbolProgress:
    return replace(p, gaps=p.gaps + 1, missing_minutes=p.missing_minutes + e.missing_minutes)


def _paced(p: SymbolProgress, e: ev.Paced) -> SymbolProgress:
    return p._settle(Status.PACED, f"{e.rule} wait {e.wait_s:.1f}s")


def _violation(p: SymbolProgress, e: ev.PacingViolation) -> SymbolProgress:
    return p._settle(Status.PACED, f"162 backoff {e.backoff_s:.0f}s")


def _part_written(p: SymbolProgress, e: ev.PartWritten) -> SymbolProgress:
    return replace(
        p,
        parts_written=p.parts_written + 1,
        days_done=p.days_done + e.days,
        rows=p.rows + e.rows_added,
    )


def _day_failed(p: SymbolProgress, e: ev.DayFailed) -> SymbolProgress:
    return replace(
        p,
        days_failed=p.days_failed + 1,
        failed_days=(*p.failed_days, e.day),
        failed_reason=e.reason,
    )


def _worker_failed(p: SymbolProgress, e: ev.WorkerFailed) -> SymbolProgress:
    return replace(
        p,
        status=Status.FAILED,
        detail=e.reason,
        failed_reason=e.reason,
        days_failed=max(p.days_failed, e.days_failed),
    )


def _finished(p: SymbolProgress, e: ev.WorkerFinished) -> SymbolProgress:
    # Finished but gave up on some days is a failure the operator must see (exit code 1).
    days_failed = max(p.days_failed, e.days_failed)
    status = Status.FAILED if days_failed else Status.DONE
    return replace(p, status=status, detail="", days_failed=days_failed)


def _handle(p: SymbolProgress, e: ev.Event) -> SymbolProgress | None:
    """``p`` after ``e``, or None for an event of a kind no symbol's progress folds (a
    ``match`` rather than a table by type, so each handler is checked against its kind)."""
    match e:
        case ev.WorkerQueued():
            return _queued(p, e)
        case ev.WorkerStarted():
            return _started(p, e)
        case ev.StatusChanged():
            return _status(p, e)
        case ev.DayFetched():
            return _day_fetched(p, e)
        case ev.RequestDone():
            return _request(p, e)
        case ev.Retry():
            return _retry(p, e)
        case ev.GapFound():
            return _gap(p, e)
        case ev.Paced():
            return _paced(p, e)
        case ev.PacingViolation():
            return _violation(p, e)
        case ev.PartWritten():
            return _part_written(p, e)
        case ev.DayFailed():
            return _day_failed(p, e)
        case ev.WorkerFailed():
            return _worker_failed(p, e)
        case ev.WorkerFinished():
            return _finished(p, e)
        case _:
            return None


@dataclass(frozen=True)
class RunSnapshot:
    """The whole run at one instant: what the dashboard, footer and summary render."""

    symbols: tuple[SymbolProgress, ...]
    now: float
    elapsed_s: float
    requests_done: int
    requests_answered: int
    requests_total: int
    rate: float
    budget: float
    eta_s: float | None
    violations: int
    errors: int
    budget_reason: str = ""  # why the global rate last moved
    latency_p50: float | None = None  # of the answers in the last minute
    latency_p95: float | None = None

    @property
    def finished(self) -> bool:
        """Every worker has reached a terminal status."""
        return all(s.status in TERMINAL for s in self.symbols)

    @property
    def needs_rerun(self) -> tuple[SymbolProgress, ...]:
        """Symbols a rerun would fetch more of."""
        return tuple(s for s in self.symbols if s.needs_rerun)

    @property
    def incomplete(self) -> tuple[SymbolProgress, ...]:
        """Symbols the run did not finish: failed, gave up on days, or never ended."""
        return tuple(s for s in self.symbols if s.needs_rerun or s.status not in TERMINAL)

    def count(self, status: Status) -> int:
        """How many symbols are shown in ``status`` now (``SymbolProgress.shown_status``)."""
        return sum(1 for s in self.symbols if s.shown_status(self.now)[0] is status)


class RunState:
    """Folds worker events into per-symbol progress and global rate, ETA and error counts.

    The run's one per-symbol ledger, fed every event by the run's event sink (the one caller
    of ``apply``, in the orchestrator's thread); thread-safe so a Rich Live
    refresh thread may take snapshots while events are applied.
    """

    def __init__(
        self,
        symbols: Sequence[str],
        requests_total: int,
        rate_budget: float,
        clock: Clock = time.time,
        *,
        window_s: float = 10.0,
        started_at: float | None = None,
    ) -> None:
        self._clock = clock
        self._lock = threading.Lock()
        self._symbols: dict[str, SymbolProgress] = {s: SymbolProgress(s) for s in symbols}
        self._request_times: list[float] = []  # sorted RequestDone times inside the window
        self.window_s = window_s
        self.started_at = clock() if started_at is None else started_at
        self.requests_total = requests_total
        self.budget = rate_budget
        self.budget_reason = ""
        self.latency = RollingLatency(60.0, clock=clock)
        self.requests_done = 0
        self.requests_answered = 0
        self.violations = 0
        self.errors = 0

    def apply(self, event: ev.Event) -> None:
        """Fold one event into the state."""
        with self._lock:
            if isinstance(event, ev.BudgetChanged):
                self.budget = event.rate  # run-wide: no symbol row
                self.budget_reason = event.reason
                return
            progress = self._symbols.get(event.symbol) or SymbolProgress(event.symbol)
            self._symbols[event.symbol] = progress.apply(event)
            if isinstance(event, ev.RequestDone):
                self._count_request(event)
            elif isinstance(event, ev.PacingViolation):
                self.violations += 1
            elif isinstance(event, ev.WorkerFailed):
                self.errors += 1

    def _count_request(self, event: ev.RequestDone) -> None:
        self.requests_done += 1
        if event.outcome in ANSWERED:
            self.requests_answered += 1
            self.latency.add(event.latency_s, at=event.at or None)
        elif event.outcome in ERROR_OUTCOMES:
            self.errors += 1
        # Events from several workers may arrive slightly out of order: keep the list sorted.
        bisect.insort(self._request_times, event.at or self._clock())
        self._prune(self._clock())

    def _prune(self, now: float) -> None:
        cut = bisect.bisect_right(self._request_times, now - self.window_s)
        del self._request_times[:cut]

    def rate(self, now: float | None = None) -> float:
        """Requests per second over the sliding window (shorter at the start of the run)."""
        with self._lock:
            return self._rate(self._clock() if now is None else now)

    def _rate(self, now: float) -> float:
        self._prune(now)
        elapsed = now - self.started_at
        if elapsed < self.window_s:
            # The run so far fits the window: count all of it, over at least a second so a
            # first burst does not read as a flood.
            return bisect.bisect_right(self._request_times, now) / max(elapsed, 1.0)
        inside = bisect.bisect_right(self._request_times, now) - bisect.bisect_right(
            self._request_times, now - self.window_s
        )
        return inside / self.window_s

    def _eta(self, now: float, rate: float) -> float | None:
        remaining = max(self.requests_total - self.requests_answered, 0)
        if remaining == 0:
            return 0.0
        if self.requests_done == 0:
            pace = self.budget  # nothing observed yet: the plan's estimate is all there is
        else:
            # The budget caps any rate we observe, so never promise more than it; an idle
            # window (everyone backing off) falls back to the average since the start.
            elapsed = max(now - self.started_at, 1e-9)
            observed = rate or self.requests_answered / elapsed
            pace = min(self.budget, observed) if self.budget > 0 else observed
        return remaining / pace if pace > 0 else None

    def snapshot(self, now: float | None = None) -> RunSnapshot:
        """A frozen copy of the run at ``now`` (default: the clock)."""
        with self._lock:
            now = self._clock() if now is None else now
            rate = self._rate(now)
            return RunSnapshot(
                symbols=tuple(self._symbols.values()),
                now=now,
                elapsed_s=max(now - self.started_at, 0.0),
                requests_done=self.requests_done,
                requests_answered=self.requests_answered,
                requests_total=self.requests_total,
                rate=rate,
                budget=self.budget,
                eta_s=self._eta(now, rate),
                violations=self.violations,
                errors=self.errors,
                budget_reason=self.budget_reason,
                latency_p50=self.latency.p50(),
                latency_p95=self.latency.p95(),
            )

    def symbol(self, symbol: str) -> SymbolProgress:
        """One symbol's progress (KeyError if no event and no plan named it)."""
        with self._lock:
            return self._symbols[symbol]
