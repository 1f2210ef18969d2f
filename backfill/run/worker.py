"""The per-symbol worker: connect, qualify, then pace → fetch → retry → buffer → flush.

A worker owns one symbol and one IB clientId. It runs several requests in flight when its
budget allows, so one symbol alone can use a large rate. Every day it was given ends either
fetched (recorded in the lake's coverage, no-data days included) or reported failed.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import os
import random
import time
import zlib
from collections import deque
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field, replace
from datetime import date, datetime
from pathlib import Path
from typing import NoReturn, Protocol

import pyarrow as pa
import pyarrow.compute as pc

from backfill.congestion import IB_MAX_IN_FLIGHT
from backfill.domain import (
    UTC,
    Month,
    Symbol,
    Window,
    day_start,
    group_windows,
    missing_minute_ranges,
)
from backfill.edges import (
    DEFAULT_RULE,
    RULES,
    UNKNOWN,
    EdgeRule,
    asked_span,
    covered_days,
    request_for,
)
from backfill.ib.served import CLOCKS, HeaderClock
from backfill.ib.session import (
    ClientIdInUse,
    Disconnected,
    DurationTooLong,
    EmptyAnswer,
    GatewayUnreachable,
    IBSession,
    IBSessionError,
    NoPermission,
    PacingViolation,
    RequestTimeout,
    SessionBlocked,
    UnknownSymbol,
    WindowBars,
    connect_free_id,
)
from backfill.lake.schema import empty_bars
from backfill.lake.storage import StorageError
from backfill.lake.store import (
    CommitConflict,
    NonConformingPart,
    PartUnreadable,
    PartWrite,
    write_batch,
)
from backfill.pacing import Pacer, Rule, worker_rules
from backfill.run import events as ev
from backfill.run.sendlog import load_recent_sends, save_recent_sends
from backfill.run.stall import heartbeat_every
from backfill.settings import RunSettings

EventSink = Callable[[ev.Event], None]


class Controls(Protocol):
    """What the orchestrator steers while a worker runs (shared memory across processes)."""

    def rate(self) -> float: ...
    def paused_until(self) -> float: ...
    def report_violation(self, backoff_s: float) -> None: ...
    def stop_requested(self) -> bool: ...
    def may_send(self) -> bool:
        """Strict mode: whether the session window grants one more send (asks if not)."""
        ...

    def note_sent(self) -> None:
        """A request left: it used the grant ``may_send`` gave."""
        ...

    def in_flight_allowance(self) -> int:
        """This worker's share of the global in-flight cap: send only while under it."""
        ...

    def note_in_flight(self, count: int) -> None:
        """How many requests this worker has open now."""
        ...


def claim_in_flight_room(controls: Controls, open_now: int) -> bool:
    """Claim room for one more request (True: send it now); False withdraws the claim.

    Claimed first, the share read after: the orchestrator splits the cap by what workers
    claim, so room a worker is about to use is never also handed to another one (read
    first, a cut and a second split could land before the count was told).
    """
    controls.note_in_flight(open_now + 1)
    if open_now < controls.in_flight_allowance():
        return True
    controls.note_in_flight(open_now)
    return False


@dataclass
class LocalControls:
    """Controls for a worker run alone in this process at a fixed rate (the tests)."""

    fixed_rate: float
    pause_until: float = 0.0
    stop: bool = False

    def rate(self) -> float:
        return self.fixed_rate

    def paused_until(self) -> float:
        return self.pause_until

    def report_violation(self, backoff_s: float) -> None:
        self.pause_until = max(self.pause_until, time.time() + backoff_s)

    def stop_requested(self) -> bool:
        return self.stop

    def may_send(self) -> bool:
        return True  # alone, the worker's own strict rule (WorkerConfig) is the session's

    def note_sent(self) -> None:
        pass

    def in_flight_allowance(self) -> int:
        return IB_MAX_IN_FLIGHT  # alone: the worker's own limit (RunSettings) binds

    def note_in_flight(self, count: int) -> None:
        pass


@dataclass(frozen=True)
class WorkerConfig:
    """One worker's job: its symbol's windows (from the plan), where to connect, and the
    run's settings, whole."""

    lake: Path
    symbol: Symbol
    windows: tuple[Window, ...]
    host: str
    port: int
    client_id: int
    settings: RunSettings = field(default_factory=RunSettings)
    # Strict mode under an orchestrator: it grants every send within IB's session rule
    # across all workers, so the worker need not keep that rule itself.
    session_granted: bool = False
    initial_tokens: float = 1.0  # of its rate bucket; the orchestrator staggers workers
    # The gateway's window-edge rule as learned at start-up ("unknown": rely on neither end).
    edges: str = DEFAULT_RULE
    # How the served-window header reads, learned with the edges ("untrusted": windows are
    # asked in seconds and the asked window is taken as served).
    header_clock: str = "login"
    seed: int = 0
    # The niceness it runs at (the run's plus ``worker_niceness``; None: as it started).
    niceness: int | None = None

    @property
    def days(self) -> list[date]:
        return [day for window in self.windows for day in window.days]


@dataclass(frozen=True)
class WorkerOutcome:
    symbol: Symbol
    days_fetched: int
    days_failed: tuple[date, ...]
    rows: int
    client_id: int
    interrupted: bool = False
    failure: str = ""


@dataclass
class _Job:
    window: Window
    attempt: int = 0
    excused_failures: int = 0  # pacing refusals, timeouts while IB had lost connectivity
    timeouts: int = 0  # timeouts of this window not excused by IB's own outage
    not_before: float = 0.0
    sent_mono: float = 0.0
    sent_wall: float = 0.0


@dataclass
class _MonthBuffer:
    tables: list[pa.Table] = field(default_factory=list)
    days: list[date] = field(default_factory=list)
    partial: list[date] = field(default_factory=list)
    no_data: list[date] = field(default_factory=list)  # IB said so
    fetched_at: datetime | None = None


class Worker:
    """Fetch every given day of one symbol; see the module docstring."""

    def __init__(self, config: WorkerConfig, emit: EventSink, controls: Controls) -> None:
        self.config = config
        self.emit_event = emit
        self.controls = controls
        self.symbol = config.symbol
        self.name = str(config.symbol)
        self.client_id = config.client_id
        self.rng = random.Random(config.seed ^ zlib.crc32(self.name.encode()))
        self.settings = settings = config.settings
        self.pacer = Pacer(
            controls.rate(),
            clock=time.monotonic,
            rng=self.rng,
            initial_tokens=config.initial_tokens,
            rules=worker_rules(
                settings,
                clock=time.monotonic,
                strict=settings.strict_pacing and not config.session_granted,
            ),
        )
        # What the previous worker for this symbol sent lately still counts at IB.
        self.pacer.rules.restore(load_recent_sends(config.lake, config.symbol, time.time()))
        self.window_days = settings.window_days
        self.edges = EdgeRule.parse(config.edges) if config.edges in RULES else UNKNOWN
        self.clock = HeaderClock(
            config.header_clock if config.header_clock in CLOCKS else "untrusted"
        )
        self.pending: deque[_Job] = deque(_Job(w) for w in config.windows)
        self.days_left_in_month: dict[Month, int] = {}
        for day in config.days:
            month = Month.of(day)
            self.days_left_in_month[month] = self.days_left_in_month.get(month, 0) + 1
        self.buffers: dict[Month, _MonthBuffer] = {}
        self.months_due: deque[Month] = deque()  # every day resolved, not yet written
        self.writing: asyncio.Task[None] | None = None  # the due months' write, off the loop
        self.writer: ThreadPoolExecutor | None = None
        self.last_flush = time.monotonic()
        self.days_fetched = 0
        self.days_written = 0
        self.days_failed: list[date] = []
        self.rows_written = 0
        self.session: IBSession | None = None
        self.reconnects = 0  # in the current outage
        self.outage_since: float | None = None  # monotonic; cleared by the next answer
        self.status = ev.Status.QUEUED
        self.status_detail = ""
        self.blocked_next_try = 0.0  # monotonic: the next probe of a blocked session

    # -- events -------------------------------------------------------------------------

    def emit(self, event_type: type[ev.Event], **fields: object) -> None:
        self.emit_event(event_type(self.name, at=time.time(), **fields))

    def set_status(self, status: ev.Status, detail: str = "", *, tell: bool = False) -> None:
        """Emit a status change (``tell``: even if only the detail is new)."""
        if status != self.status or tell:
            self.status, self.status_detail = status, detail
            self.emit(ev.StatusChanged, status=status, detail=detail)

    # -- main loop ----------------------------------------------------------------------

    async def run(self) -> WorkerOutcome:
        days_total = len(self.config.days)
        self.emit(
            ev.WorkerStarted, client_id=self.client_id, days_total=days_total, pid=os.getpid()
        )
        failure = ""
        beat = asyncio.ensure_future(self._heartbeat())
        try:
            if self.pending:
                await self._connect()
                await self._fetch_all()
        except _Stopped:
            pass  # Ctrl-C while (re)connecting: an interruption like any other
        except (UnknownSymbol, NoPermission) as exc:
            failure = str(exc)
        except (GatewayUnreachable, ClientIdInUse) as exc:
            failure = f"gave up connecting: {exc}"
        except _LakeUnwritable as exc:
            failure = str(exc)
        finally:
            beat.cancel()
            try:
                await self._finish_writing()
            except _LakeUnwritable as exc:
                failure = failure or str(exc)
            try:
                self._flush_all()
            except _LakeUnwritable as exc:
                failure = failure or str(exc)
            finally:
                self._hand_on_recent_sends()
                if self.session is not None:
                    self.session.disconnect()
        interrupted = self.controls.stop_requested()
        if failure or (self.pending and not interrupted):
            self._fail_remaining(failure or "not fetched")
        if failure:
            self.set_status(ev.Status.FAILED, failure)
            self.emit(ev.WorkerFailed, reason=failure, days_failed=len(self.days_failed))
        elif interrupted and self.pending:
            left = sum(job.window.n_days for job in self.pending)
            self.set_status(ev.Status.STOPPED, f"interrupted, {left} day{'s' * (left != 1)} left")
        else:
            self.set_status(ev.Status.FAILED if self.days_failed else ev.Status.DONE)
            self.emit(
                ev.WorkerFinished,
                days_fetched=self.days_fetched,
                rows=self.rows_written,
                days_failed=len(self.days_failed),
                days_written=self.days_written,
            )
        return WorkerOutcome(
            self.symbol,
            self.days_fetched,
            tuple(sorted(self.days_failed)),
            self.rows_written,
            self.client_id,
            interrupted,
            failure,
        )

    async def _heartbeat(self) -> None:
        """Tell the orchestrator this worker runs, however long it waits (a pacing delay,
        IB's 1100 held, a request hung within its timeout): only a worker whose event loop
        does not run goes silent, and is taken as stalled (``run.stall``)."""
        if self.settings.stall_after_s <= 0:
            return
        every = heartbeat_every(self.settings.stall_after_s)
        while True:
            await asyncio.sleep(every)
            self.emit(ev.Heartbeat)

    async def _connect(self) -> None:
        """Connect with backoff; a taken clientId moves to the next one."""
        self.set_status(ev.Status.CONNECTING, f"client id {self.client_id}")
        id_tries = 0
        attempt = 0

        def taken(next_id: int) -> None:
            nonlocal id_tries
            id_tries += 1
            self.client_id = next_id
            self.emit(
                ev.Retry,
                reason=f"client id in use, trying {self.client_id}",
                attempt=id_tries,
                delay_s=0.0,
            )

        while True:
            session: IBSession | None = None
            try:
                session = await connect_free_id(
                    self.config.host,
                    self.config.port,
                    self.client_id,
                    tries=self.settings.client_id_tries - id_tries,
                    timeout_s=self.settings.connect_timeout_s,
                    on_taken=taken,
                )
                await session.qualify(self.symbol)
                session.header_clock = self.clock
                self.session = session
                return
            except (ClientIdInUse, UnknownSymbol):
                if session is not None:
                    session.disconnect()
                raise
            except IBSessionError as exc:
                if session is not None:
                    session.disconnect()
                attempt += 1
                delay = self._backoff(attempt)
                if self.controls.stop_requested():
                    raise _Stopped from exc
                self._check_outage(delay, str(exc))
                self.set_status(ev.Status.RETRYING, "reconnecting")
                self.emit(ev.Retry, reason=f"connect: {exc}", attempt=attempt, delay_s=delay)
                await self._sleep(delay)

    async def _fetch_all(self) -> None:
        in_flight: dict[asyncio.Task[WindowBars], _Job] = {}
        try:
            await self._fetch_loop(in_flight)
        finally:
            # Whatever ends the loop (a stop, or giving up on the gateway), a request still
            # out is dropped and its days go back to the queue: reported, never forgotten.
            for task, job in in_flight.items():
                task.cancel()
                self.pending.appendleft(job)

    async def _fetch_loop(self, in_flight: dict[asyncio.Task[WindowBars], _Job]) -> None:
        while (self.pending or in_flight) and not self.controls.stop_requested():
            if self.session is None or not self.session.connected:
                await self._drain(in_flight)
                self.session = None
                self.reconnects += 1
                delay = self._backoff(self.reconnects)
                self._check_outage(delay, "the connection keeps dropping")
                self.set_status(ev.Status.RETRYING, "reconnecting")
                self.emit(ev.Retry, reason="disconnected", attempt=self.reconnects, delay_s=delay)
                await self._sleep(delay)
                if self.controls.stop_requested():
                    raise _Stopped
                await self._connect()
                continue
            self._check_writing()
            self.controls.note_in_flight(len(in_flight))
            wait = self._dispatch_wait(len(in_flight))
            if wait == 0.0:
                if not claim_in_flight_room(self.controls, len(in_flight)):
                    continue  # cut meanwhile: the loop's next look waits for room
                job = self.pending.popleft()
                self._send(job, in_flight)
                self.controls.note_in_flight(len(in_flight))
                continue
            if self.months_due and self.writing is None:
                # Only now, when the loop would wait: the next send is already out, and
                # the write runs off the loop, so no send waits for it.
                self.writing = asyncio.ensure_future(self._write_due())
            if in_flight:
                # Bounded, so a stop request is seen while every request hangs.
                done, _ = await asyncio.wait(
                    in_flight, timeout=min(wait, 0.25), return_when=asyncio.FIRST_COMPLETED
                )
                for task in done:
                    self._settle(task, in_flight.pop(task))
            else:
                await self._sleep(wait)
            self._maybe_flush()
        if self.controls.stop_requested() and in_flight:
            # Ctrl-C: give the requests in flight a moment, then drop them; their days
            # stay missing in the lake and the next run asks for them again.
            done, _ = await asyncio.wait(in_flight, timeout=2.0)
            for task in done:
                self._settle(task, in_flight.pop(task))

    def _dispatch_wait(self, n_in_flight: int) -> float:
        """Seconds until the next request may go out (inf: wait for one in flight)."""
        hold = self._upstream_hold(n_in_flight)  # first: it also ends a too-long outage
        if hold:
            return hold
        if not self.pending or n_in_flight >= self.settings.worker_in_flight:
            return float("inf")
        if n_in_flight >= self.controls.in_flight_allowance():
            # The run's in-flight cap: another worker's request must end first.
            self.set_status(ev.Status.PACED, "in-flight cap")
            return float("inf") if n_in_flight else 0.05
        self._next_ready_first()
        job = self.pending[0]
        if job.window.n_days > self.window_days:
            self.pending.popleft()
            self.pending.extendleft(reversed([replace(job, window=w) for w in job.window.split()]))
            job = self.pending[0]
        self.pacer.set_rate(self.controls.rate())
        now_wall = time.time()
        pause = max(0.0, self.controls.paused_until() - now_wall)
        not_before = max(0.0, job.not_before - time.monotonic())
        pace, rule = self.pacer.delay(self._key(job.window))
        wait = max(pause, not_before, pace)
        if wait > 0 and pace >= wait and pace > 0.05:
            self.set_status(ev.Status.PACED, rule.value)
            if pace > 1.0:
                self.emit(ev.Paced, wait_s=round(pace, 3), rule=rule.value)
        if wait <= 0 and not self.controls.may_send():
            # Strict mode: the orchestrator grants sends within IB's session window.
            self.set_status(ev.Status.PACED, Rule.STRICT.value)
            return 0.05
        return 0.0 if wait <= 0 else min(wait, 5.0)

    def _upstream_hold(self, n_in_flight: int = 0) -> float:
        """Seconds to hold requests while IB says nothing will be answered, else 0.

        1100 (connectivity lost) and 2105 (historical farm broken) hold every request until
        IB says it is back. A competing session (10197) sends no such news: one request at a
        time goes out every ``blocked_retry_s`` to find out. Past ``reconnect_for_s`` of
        either, give up as for any outage.
        """
        if self.session is None:
            return 0.0
        now = time.monotonic()
        hold = self.session.hold()
        if hold is not None:
            since, why = hold
            if now - since > self.settings.reconnect_for_s:
                raise GatewayUnreachable(f"{why} for {now - since:.0f}s")
            detail = f"{why}: holding requests"
            self.set_status(ev.Status.PACED, detail, tell=self.status_detail != detail)
            return 0.25
        blocked = self.session.blocked_since
        if blocked is None:
            return 0.0
        if now - blocked > self.settings.reconnect_for_s:
            raise GatewayUnreachable(
                f"{self.session.blocked_text} for {now - blocked:.0f}s: another session "
                "holds this account's market data"
            )
        detail = (
            f"blocked: {self.session.blocked_text} (another session holds the "
            "account's market data); retrying slowly"
        )
        self.set_status(ev.Status.PACED, detail, tell=self.status_detail != detail)
        if n_in_flight or now < self.blocked_next_try:
            return 0.25
        self.blocked_next_try = now + self._blocked_retry_s()
        return 0.0

    def _blocked_retry_s(self) -> float:
        """How often a blocked session is probed: slowly, and at least 20 times before the
        worker gives up after ``reconnect_for_s``."""
        return min(self.settings.blocked_retry_s, self.settings.reconnect_for_s / 20)

    def _next_ready_first(self, look_ahead: int = 16) -> None:
        """Move the first job that may go now to the front of the queue.

        A retry waiting out its backoff, or IB's identical-request interval (a request lost
        with its connection), must not hold back the days queued behind it.
        """
        now = time.monotonic()
        for index, job in enumerate(itertools.islice(self.pending, look_ahead)):
            if job.not_before <= now and not self.pacer.rules.identical_wait(self._key(job.window)):
                if index:
                    del self.pending[index]
                    self.pending.appendleft(job)
                return

    def _send(self, job: _Job, in_flight: dict[asyncio.Task[WindowBars], _Job]) -> None:
        assert self.session is not None
        try:
            sent = self.session.send_window(
                self.symbol, job.window, self.edges, in_seconds=not self.clock.trusted
            )
        except IBSessionError as exc:
            self._on_error(job, exc)
            return
        # Noted the moment the bytes leave: the gateway times its rules on arrival.
        self.pacer.record(self._key(job.window))
        self.controls.note_sent()
        job.sent_mono, job.sent_wall = time.monotonic(), time.time()
        self.set_status(ev.Status.FETCHING, str(job.window))
        task = asyncio.ensure_future(
            self.session.await_window(sent, timeout_s=self.settings.request_timeout_s)
        )
        in_flight[task] = job

    def _settle(self, task: asyncio.Task[WindowBars], job: _Job) -> None:
        latency = time.monotonic() - job.sent_mono
        try:
            result = task.result()
        except asyncio.CancelledError:
            self.pending.appendleft(job)
            return
        except IBSessionError as exc:
            outcome = _outcome(exc)
            if (
                outcome == "timeout"
                and self.session is not None
                and self.session.upstream_lost_after(job.sent_mono)
            ):
                outcome = "upstream"  # IB lost its own link: not the session's congestion
            self.emit(
                ev.RequestDone, window=str(job.window), outcome=outcome, latency_s=round(latency, 4)
            )
            self._on_error(job, exc)
            return
        self.emit(
            ev.RequestDone,
            window=str(job.window),
            outcome="no_data" if result.no_data else "bars",
            latency_s=round(result.latency_s, 4),
        )
        self.outage_since, self.reconnects = None, 0  # the gateway answers: any outage is over
        whole = self._served_whole(result, job)
        if whole is not None:
            self._accept(whole, job.sent_wall)

    def _on_error(self, job: _Job, exc: IBSessionError) -> None:
        if isinstance(exc, (UnknownSymbol, NoPermission)):
            # The symbol cannot be read at all: its other days are not asked (reported).
            self.pending.appendleft(job)
            raise exc
        lost_upstream = (
            isinstance(exc, RequestTimeout)
            and self.session is not None
            and self.session.upstream_lost_after(job.sent_mono)
        )
        if isinstance(exc, RequestTimeout) and not lost_upstream and job.window.n_days > 1:
            # Real gateways answer some too-long windows by never answering: the second
            # timeout of a multi-day window reads as "too long", as IB's refusal does.
            job.timeouts += 1
            if job.timeouts >= 2:
                exc = DurationTooLong(f"{exc} (twice: taken as too long)")
        if isinstance(exc, DurationTooLong) and job.window.n_days > 1:
            # The gateway refuses this duration: every later window is cut shorter too.
            self.window_days = max(1, job.window.n_days // 2)
            self.emit(
                ev.Retry,
                reason=f"duration too long, windows of {self.window_days} day(s)",
                attempt=job.attempt,
                delay_s=0.0,
                day=job.window.first_day,
            )
            self.pending.extendleft(reversed([_Job(w) for w in job.window.split()]))
            return
        if isinstance(exc, SessionBlocked):
            # Not the request's fault, nor the day's: the hold above retries slowly and
            # gives up after reconnect_for_s.
            self.set_status(ev.Status.RETRYING, _outcome(exc))
            self.emit(
                ev.Retry,
                reason=f"{_outcome(exc)}: {exc}",
                attempt=job.attempt,
                delay_s=self._blocked_retry_s(),
                day=job.window.first_day,
            )
            self.pending.appendleft(job)
            return
        if isinstance(exc, PacingViolation):
            backoff = self.pacer.violation(self._key(job.window))
            self.controls.report_violation(backoff)
            self.emit(ev.PacingViolation, backoff_s=round(backoff, 3))
        if isinstance(exc, Disconnected) and self.session is not None:
            # The whole session is gone: reconnect once, not once per request in flight.
            self.session.disconnect()
        if isinstance(exc, PacingViolation) or lost_upstream:
            # Not the request's fault: the session was asked too much (everyone backs off),
            # or IB lost its own connectivity while the request was out. The request keeps
            # its attempts, within a bound of its own.
            job.excused_failures += 1
            exhausted = job.excused_failures >= 3 * self.settings.max_attempts
        else:
            job.attempt += 1
            exhausted = job.attempt >= self.settings.max_attempts
        if not exc.retryable or exhausted:
            for day in job.window.days:
                self.days_failed.append(day)
                self.emit(ev.DayFailed, day=day, reason=f"{_outcome(exc)}: {exc}")
            self._resolve_days(job.window.days)
            return
        delay = self._backoff(max(1, job.attempt + job.excused_failures))
        job.not_before = time.monotonic() + delay
        self.set_status(ev.Status.RETRYING, _outcome(exc))
        self.emit(
            ev.Retry,
            reason=f"{_outcome(exc)}: {exc}",
            attempt=job.attempt,
            delay_s=round(delay, 3),
            day=job.window.first_day,
        )
        self.pending.appendleft(job)

    def _served_whole(self, result: WindowBars, job: _Job) -> WindowBars | None:
        """The answer cut to the days the window IB says it served covers whole.

        The other days are asked again (never recorded): a gateway may serve a different
        window than asked ("N D" counted in its own sessions), and a day it did not cover
        would be written with bars missing and nothing to tell.
        """
        if result.no_data:
            return result
        asked = datetime.fromtimestamp(job.sent_wall, UTC)
        if not self.clock.trusted:
            # The header cannot be read: a window asked in seconds is the window served.
            span = asked_span(request_for(job.window, self.edges, in_seconds=True))
            if span is not None:
                result = replace(result, served_start=span[0], served_end=span[1])
        covered = covered_days(
            job.window, self.edges, result.served_start, result.served_end, asked
        )
        missed = [day for day in job.window.days if day not in covered]
        if missed:
            served = (
                f"{_iso_dt(result.served_start)} to {_iso_dt(result.served_end)}"
                if result.served_start and result.served_end
                else "unreadable"
            )
            reason = f"not served whole: IB served {served} (edges {self.edges})"
            job.attempt += 1
            if job.attempt >= self.settings.max_attempts:
                for day in missed:
                    self.days_failed.append(day)
                    self.emit(ev.DayFailed, day=day, reason=reason)
                self._resolve_days(missed)
            else:
                self.emit(ev.Retry, reason=reason, attempt=job.attempt, delay_s=0.0, day=missed[0])
                self.pending.extendleft(
                    reversed(
                        [
                            _Job(w, attempt=job.attempt)
                            for w in group_windows(missed, self.window_days)
                        ]
                    )
                )
        if not covered:
            return None
        window = Window(covered[0], covered[-1])
        bars = result.bars
        if bars.num_rows:
            ts = bars.column("ts")
            bars = bars.filter(
                pc.and_(
                    pc.greater_equal(ts, pa.scalar(window.ts_start, ts.type)),
                    pc.less(ts, pa.scalar(window.ts_stop, ts.type)),
                )
            )
        return replace(result, window=window, bars=bars)

    def _accept(self, result: WindowBars, asked_at: float) -> None:
        now = datetime.now(UTC)
        bars = result.bars
        # The buffers take a window's days and bars together, before anything else can
        # fail: a day in a buffer without its bars would be written as an empty, whole day.
        if bars.num_rows:
            months = pc.strftime(bars.column("ts"), format="%Y-%m")
            for month in {Month.of(d) for d in result.window.days}:
                buffer = self.buffers.setdefault(month, _MonthBuffer())
                buffer.tables.append(bars.filter(pc.equal(months, str(month))))
        settled: dict[date, bool] = {}
        for day in result.window.days:
            # Whole only if the day had ended (and settled) when the gateway was asked.
            day_end = day_start(day).timestamp() + 86_400
            settled[day] = day_end + self.settings.settle_s <= asked_at
            buffer = self.buffers.setdefault(Month.of(day), _MonthBuffer())
            buffer.days.append(day)
            if not settled[day]:
                buffer.partial.append(day)
            if result.no_data:
                buffer.no_data.append(day)
            buffer.fetched_at = now
        self.days_fetched += len(result.window.days)
        ts_us = bars.column("ts").cast(pa.int64()).to_pylist() if bars.num_rows else []
        for day, complete in settled.items():
            start_us = int(day_start(day).timestamp()) * 1_000_000
            stop_us = start_us + 86_400_000_000
            day_ts = [t for t in ts_us if start_us <= t < stop_us]
            self.emit(
                ev.DayFetched,
                day=day,
                rows=len(day_ts),
                latency_s=round(result.latency_s, 4),
                complete=complete,
                no_data=result.no_data,
            )
            if not result.no_data:
                # Minutes that had not ended when asked cannot be missing yet.
                horizon_us = min(stop_us, int(asked_at) // 60 * 60_000_000)
                gaps = missing_minute_ranges(day_ts, start_us, horizon_us)
                missing = sum((b - a) // 60_000_000 + 1 for a, b in gaps)
                if missing:
                    self.emit(
                        ev.GapFound,
                        day=day,
                        missing_minutes=missing,
                        ranges=tuple((_iso(a), _iso(b)) for a, b in gaps[:20]),
                    )
        self._resolve_days(result.window.days)

    def _resolve_days(self, days: list[date]) -> None:
        for day in days:
            month = Month.of(day)
            self.days_left_in_month[month] -= 1
            if self.days_left_in_month[month] == 0:
                # Written once the next request is out (``_write_due``): a part's write
                # must not hold back a send the pacing already allows.
                self.months_due.append(month)

    async def _write_due(self) -> None:
        """Write the months whose every day is resolved, one by one, on the writer thread.

        pyarrow and the disk let go of the GIL while a part is encoded and written, so the
        loop goes on sending at its pace; the events are told from the loop, as always.
        """
        if self.writer is None:
            self.writer = ThreadPoolExecutor(1, thread_name_prefix="part-writer")
        loop = asyncio.get_running_loop()
        while self.months_due:
            taken = self._take(self.months_due.popleft())
            if taken is None:
                continue
            buffer, bars = taken
            try:
                writes = await loop.run_in_executor(self.writer, self._write, buffer, bars)
            except _WRITE_ERRORS as exc:
                self._write_failed(buffer, exc)
            self._written(buffer, bars, writes)

    def _check_writing(self) -> None:
        """Forget a finished write; raise what made it fail (``_LakeUnwritable``)."""
        if self.writing is not None and self.writing.done():
            task, self.writing = self.writing, None
            task.result()

    async def _finish_writing(self) -> None:
        """Wait for the write in progress, if any (a part is never left half-told)."""
        if self.writing is not None:
            task, self.writing = self.writing, None
            await task
        if self.writer is not None:
            self.writer.shutdown(wait=True)
            self.writer = None

    def _maybe_flush(self) -> None:
        if self.writing is not None:
            return  # the write in progress ends first; the next loop flushes
        if time.monotonic() - self.last_flush >= self.settings.flush_interval_s:
            self._flush_all()

    def _flush_all(self) -> None:
        # Every month gets its chance: one that cannot be written fails only its own days.
        first: _LakeUnwritable | None = None
        for month in list(self.buffers):
            try:
                self._flush(month)
            except _LakeUnwritable as exc:
                first = first or exc
        self.last_flush = time.monotonic()
        if first is not None:
            raise first

    def _flush(self, month: Month) -> None:
        taken = self._take(month)
        if taken is None:
            return
        buffer, bars = taken
        try:
            writes = self._write(buffer, bars)
        except _WRITE_ERRORS as exc:
            self._write_failed(buffer, exc)
        self._written(buffer, bars, writes)

    def _take(self, month: Month) -> tuple[_MonthBuffer, pa.Table] | None:
        """A month's buffer, out of ``buffers`` (a write owns it), with its bars as one table."""
        buffer = self.buffers.pop(month, None)
        if buffer is None or not buffer.days:
            return None
        bars = pa.concat_tables(buffer.tables) if buffer.tables else empty_bars()
        return buffer, bars

    def _write(self, buffer: _MonthBuffer, bars: pa.Table) -> list[PartWrite]:
        """Merge a month's bars into the lake (no events: may run on the writer thread)."""
        assert buffer.fetched_at is not None
        return write_batch(
            self.config.lake,
            self.symbol,
            bars,
            buffer.days,
            fetched_at=buffer.fetched_at,
            partial_days=buffer.partial,
            no_data_days=buffer.no_data,
        )

    def _write_failed(self, buffer: _MonthBuffer, exc: Exception) -> NoReturn:
        # Disk full, permissions, a path in the way: no restart would fix it. The days
        # stay missing in the lake (nothing half-written), fetched but not written: they
        # count as failed, and the run says why. An unreadable part (EACCES, EIO, a
        # folder in its place) is not corruption, nor is a readable part that does not
        # conform (its days may be good): the store moved nothing.
        # On an object store: other writers kept winning the part (CommitConflict), or
        # the store failed; their bars are in the part, these days a rerun fetches.
        reason = (
            str(exc)
            if isinstance(exc, (PartUnreadable, NonConformingPart, CommitConflict))
            else f"cannot write the lake: {exc}"
        )
        for day in sorted(buffer.days):
            self.days_failed.append(day)
            self.emit(ev.DayFailed, day=day, reason=reason)
        raise _LakeUnwritable(reason) from exc

    def _written(self, buffer: _MonthBuffer, bars: pa.Table, writes: list[PartWrite]) -> None:
        self.rows_written += bars.num_rows
        self.days_written += len(buffer.days)
        for write in writes:
            added = (
                bars.num_rows
                if len(writes) == 1
                else pc.sum(
                    pc.equal(pc.strftime(bars.column("ts"), format="%Y-%m"), str(write.month))
                ).as_py()
                or 0
            )
            self.emit(
                ev.PartWritten,
                month=str(write.month),
                rows=write.rows,
                path=str(write.path),
                days=len(write.days),
                rows_added=added,
            )
            if write.quarantined is not None:
                self.emit(
                    ev.Retry,
                    reason=f"corrupt part moved aside to {write.quarantined}",
                    attempt=0,
                    delay_s=0.0,
                )

    def _fail_remaining(self, reason: str) -> None:
        for job in self.pending:
            for day in job.window.days:
                self.days_failed.append(day)
                self.emit(ev.DayFailed, day=day, reason=reason)
        self.pending.clear()

    async def _drain(self, in_flight: dict[asyncio.Task[WindowBars], _Job]) -> None:
        """Settle what is in flight on a lost connection; requeue what does not end soon."""
        deadline = time.monotonic() + self.settings.request_timeout_s
        while in_flight and not self.controls.stop_requested() and time.monotonic() < deadline:
            done, _ = await asyncio.wait(in_flight, timeout=0.25)
            for task in done:
                self._settle(task, in_flight.pop(task))
        for task, job in in_flight.items():
            task.cancel()
            self.pending.appendleft(job)
        in_flight.clear()

    async def _sleep(self, seconds: float) -> None:
        deadline = time.monotonic() + seconds
        while not self.controls.stop_requested():
            left = deadline - time.monotonic()
            if left <= 0:
                return
            await asyncio.sleep(min(left, 0.2))

    def _hand_on_recent_sends(self) -> None:
        recent = self.pacer.rules.recent()
        if recent:
            with contextlib.suppress(OSError, StorageError):  # a courtesy, not data
                save_recent_sends(
                    self.config.lake, self.symbol, [(str(k), a) for k, a in recent], time.time()
                )

    def _check_outage(self, next_delay: float, why: str) -> None:
        """Give up once the current outage would outlast ``reconnect_for_s``."""
        now = time.monotonic()
        if self.outage_since is None:
            self.outage_since = now
        down = now - self.outage_since
        if down + next_delay > self.settings.reconnect_for_s:
            raise GatewayUnreachable(f"{why}; no answer for {down:.0f}s, giving up")

    def _backoff(self, attempt: int) -> float:
        base = min(self.settings.retry_cap_s, self.settings.retry_base_s * 2 ** (attempt - 1))
        return base * (0.5 + self.rng.random() / 2)

    def _key(self, window: Window) -> str:
        request = request_for(window, self.edges, in_seconds=not self.clock.trusted)
        return f"{self.name}|{request.end.isoformat()}|{request.duration}"


class _LakeUnwritable(Exception):
    """The lake store could not write a part (an OSError underneath)."""


_WRITE_ERRORS = (OSError, NonConformingPart, CommitConflict, StorageError)


class _Stopped(Exception):
    """Ctrl-C / SIGTERM arrived while the worker waited to (re)connect."""


_OUTCOMES: tuple[tuple[type[IBSessionError], str], ...] = (
    (PacingViolation, "pacing"),
    (RequestTimeout, "timeout"),
    (Disconnected, "disconnect"),
    (EmptyAnswer, "empty"),
    (DurationTooLong, "duration"),
    (UnknownSymbol, "unknown_symbol"),
    (NoPermission, "no_permission"),
    (SessionBlocked, "session_blocked"),
)


def _outcome(exc: IBSessionError) -> str:
    return next((name for cls, name in _OUTCOMES if isinstance(exc, cls)), "error")


def _iso_dt(when: datetime | None) -> str:
    return when.strftime("%Y-%m-%d %H:%M:%S") if when else "?"


def _iso(micros: int) -> str:
    return datetime.fromtimestamp(micros / 1_000_000, UTC).strftime("%Y-%m-%d %H:%M")


def run_worker(config: WorkerConfig, emit: EventSink, controls: Controls) -> WorkerOutcome:
    """Run one worker to the end in this process (its own event loop)."""
    return asyncio.run(Worker(config, emit, controls).run())
