"""The orchestrator: one worker process per symbol under one global request budget.

It owns what is global: the rate (split into per-worker shares, rebalanced as workers come
and go, stepped down after any pacing violation), the pause-all signal, client ids, the
run lock of each symbol, and supervision (a crashed worker restarts and resumes from the
lake). Workers talk back through one pipe each, so a worker killed mid-message can only
break its own channel.
"""

from __future__ import annotations

import contextlib
import multiprocessing as mp
import random
import signal
import time
from collections import deque
from collections.abc import Callable, Collection, Sequence
from dataclasses import dataclass, field
from multiprocessing.connection import Connection, wait
from multiprocessing.sharedctypes import Synchronized, SynchronizedArray
from pathlib import Path

from backfill.congestion import (
    IB_MAX_IN_FLIGHT,
    RateChange,
    RateController,
    Signal,
    split_in_flight,
)
from backfill.domain import Symbol
from backfill.edges import DEFAULT_RULE
from backfill.lake.lease import RunLock, RunLockHeld, run_lock
from backfill.pacing import Budget, SessionGrants, staggered_start
from backfill.plan import SymbolPlan
from backfill.run import events as ev
from backfill.run.processes import (
    become_nicer,
    current_niceness,
    unblock_interrupts,
    worker_context,
)
from backfill.run.stall import StallWatch, Verdict
from backfill.run.worker import WorkerConfig, WorkerOutcome, run_worker
from backfill.settings import RunSettings

EventSink = Callable[[ev.Event], None]

# How often a symbol held by another run is tried again.
LOCK_RETRY_S = 0.5


@dataclass(frozen=True)
class RunConfig:
    """Where the workers connect and write, and the run's settings, whole."""

    lake: Path
    host: str
    port: int
    settings: RunSettings
    # Sends made before the workers (time.monotonic()): the session window counts them.
    prior_sends: tuple[float, ...] = ()
    edges: str = DEFAULT_RULE  # the gateway's window-edge rule, learned at start-up
    header_clock: str = "login"  # how its served-window header reads, learned with it


@dataclass(frozen=True)
class GrantArrays:
    """Strict mode's shared counters, one entry per slot, each with a single writer.

    The orchestrator adds to ``granted``; the slot's worker adds to ``sent`` and sets
    ``wanted`` while it waits for a grant. A worker may send while ``sent < granted``.
    """

    granted: SynchronizedArray
    sent: SynchronizedArray
    wanted: SynchronizedArray


@dataclass(frozen=True)
class InFlightArrays:
    """The global in-flight cap, one entry per slot, each with a single writer.

    The slot's worker writes ``counts`` (its requests open now); the orchestrator writes
    ``allowance`` (how many it may have open), shares of the cap (``split_in_flight``).
    """

    counts: SynchronizedArray
    allowance: SynchronizedArray


# How each request outcome a worker reports reads as a congestion signal.
SIGNALS = {
    "bars": Signal.ANSWERED,
    "no_data": Signal.ANSWERED,
    "timeout": Signal.TIMEOUT,  # while connected and IB's own link up (else "upstream")
    "pacing": Signal.PACING,
    "disconnect": Signal.DROPPED,
}


class SharedControls:
    """A worker's view of what the orchestrator steers: its rate, pause-all, stop, grants,
    its share of the global in-flight cap.

    Every value has one writer and no lock guards them: a worker killed while holding a
    lock would freeze every other worker.
    """

    def __init__(
        self,
        rates: SynchronizedArray,
        slot: int,
        pause: Synchronized,
        stop: Synchronized,
        grants: GrantArrays | None = None,
        in_flight: InFlightArrays | None = None,
    ) -> None:
        self.rates, self.slot, self.pause, self.stop = rates, slot, pause, stop
        self.grants = grants
        self.in_flight = in_flight
        self.signalled = False  # this process got SIGINT/SIGTERM itself
        self.orphaned = False  # the orchestrator is gone (killed): stop as for Ctrl-C
        self._parent = mp.parent_process()
        self._parent_checked = 0.0

    def rate(self) -> float:
        return float(self.rates[self.slot])

    def paused_until(self) -> float:
        return float(self.pause.value)

    def report_violation(self, backoff_s: float) -> None:
        """The orchestrator hears of it through the PacingViolation event."""

    def stop_requested(self) -> bool:
        return self.signalled or bool(self.stop.value) or self._parent_gone()

    def _parent_gone(self) -> bool:
        """Whether the orchestrator died (SIGKILL runs no handler); looked at 4 times a second."""
        now = time.monotonic()
        if not self.orphaned and self._parent is not None and now - self._parent_checked > 0.25:
            self._parent_checked = now
            self.orphaned = not self._parent.is_alive()
        return self.orphaned

    def may_send(self) -> bool:
        grants = self.grants
        if grants is None or grants.sent[self.slot] < grants.granted[self.slot]:
            return True
        grants.wanted[self.slot] = 1
        return False

    def note_sent(self) -> None:
        grants = self.grants
        if grants is not None:
            grants.sent[self.slot] += 1
            grants.wanted[self.slot] = 0

    def in_flight_allowance(self) -> int:
        if self.in_flight is None:
            return IB_MAX_IN_FLIGHT
        return int(self.in_flight.allowance[self.slot])

    def note_in_flight(self, count: int) -> None:
        if self.in_flight is not None:
            self.in_flight.counts[self.slot] = count


def _worker_main(
    config: WorkerConfig,
    conn: Connection,
    rates: SynchronizedArray,
    slot: int,
    pause: Synchronized,
    stop: Synchronized,
    grants: GrantArrays | None,
    in_flight: InFlightArrays,
) -> None:
    """Entry point of a worker process."""
    controls = SharedControls(rates, slot, pause, stop, grants, in_flight)
    become_nicer(config.niceness)  # its forkserver may have made it so already

    def request_stop(signum: int, frame: object) -> None:
        controls.signalled = True

    # Ctrl-C at the terminal reaches every process of the group: stop sending, flush, exit.
    signal.signal(signal.SIGINT, request_stop)
    signal.signal(signal.SIGTERM, request_stop)
    unblock_interrupts()  # the forkserver started with SIGINT blocked

    def send(message: object) -> None:
        # A parent that died leaves a broken pipe: stop, flush what is held, exit quietly.
        if controls.orphaned:
            return
        try:
            conn.send(message)
        except OSError:
            controls.orphaned = True

    outcome = run_worker(config, send, controls)
    send(outcome)
    with contextlib.suppress(OSError):
        conn.close()


@dataclass
class _Active:
    job: SymbolPlan
    slot: int
    process: mp.process.BaseProcess
    conn: Connection
    lock: RunLock
    outcome: WorkerOutcome | None = None
    started: float = field(default_factory=time.monotonic)
    # Its last status (what a stall hides, shown again when it resumes), and why it was
    # killed if the orchestrator killed it.
    status: ev.StatusChanged | None = None
    killed: str = ""


class Orchestrator:
    """Run the jobs to the end; see the module docstring.

    Per-symbol status is not kept here: every change is an event, folded by the one ledger
    (``RunState``). The orchestrator keeps only what supervision needs (restarts).
    """

    def __init__(
        self,
        config: RunConfig,
        jobs: Sequence[SymbolPlan],
        emit: EventSink,
        *,
        resume: Callable[[Symbol], SymbolPlan],
    ) -> None:
        self.config = config
        self.settings = settings = config.settings
        self.jobs = list(jobs)
        self.emit = emit
        self.resume = resume
        self.ctx = worker_context()
        run_niceness = current_niceness()
        self.worker_niceness = (
            None if run_niceness is None else run_niceness + max(0, self.settings.worker_niceness)
        )
        n = max(1, settings.workers)
        self.rates = self.ctx.Array("d", n, lock=False)
        self.pause = self.ctx.Value("d", 0.0, lock=False)
        self.stop = self.ctx.Value("b", 0, lock=False)
        self.grants: GrantArrays | None = None
        self.session: SessionGrants | None = None
        if settings.strict_pacing:
            # Every send needs a grant from IB's session window, kept here for all workers.
            self.grants = GrantArrays(*(self.ctx.Array("q", n, lock=False) for _ in range(3)))
            self.session = SessionGrants(
                settings.ib.session_max,
                settings.ib.session_window_s,
                clock=time.monotonic,
                margin_s=settings.pacing_margin_s,
            )
            for at in config.prior_sends:
                self.session.note_sent(at)
            self._seen_sent = [0] * n
        self.in_flight = InFlightArrays(
            self.ctx.Array("i", n, lock=False), self.ctx.Array("i", n, lock=False)
        )
        self._allowance: dict[int, int] = {}
        self._split_turn = 0
        self.controller = RateController(settings.congestion(), clock=time.monotonic)
        self.budget = Budget(self.controller.rate)
        self.restarts: dict[Symbol, int] = {}
        self.stalls = StallWatch(
            settings.stall_after_s, settings.stall_restart_after_s, clock=time.monotonic
        )
        self.waiting: set[Symbol] = set()  # symbols whose run lock another run holds
        self._only_waiting_since: float | None = None
        self.interrupted = False
        self.aborted = ""  # why the run stopped itself (e.g. its run log could not be written)
        self.rng = random.Random(0)
        self._grant_turn = 0

    def request_stop(self) -> None:
        """Ctrl-C / SIGTERM in the parent: every worker stops sending, flushes and exits."""
        self.interrupted = True
        self.stop.value = 1

    def abort(self, reason: str) -> None:
        """Stop the run as Ctrl-C does (workers flush and exit), but as a failure."""
        if not self.aborted:
            self.aborted = reason
            self.stop.value = 1

    @property
    def stopping(self) -> bool:
        return self.interrupted or bool(self.aborted)

    def run(self) -> None:
        """Until every job has ended, or every worker has stopped after ``request_stop``."""
        queue: deque[tuple[SymbolPlan, float]] = deque()
        for job in self.jobs:
            self.emit(
                ev.WorkerQueued(str(job.symbol), at=time.time(), days_total=len(job.days_missing))
            )
            queue.append((job, 0.0))
        active: dict[int, _Active] = {}
        free_slots = list(range(max(1, self.settings.workers)))
        self.emit(
            ev.BudgetChanged(
                "", at=time.time(), rate=self.controller.rate, reason=self.controller.reason
            )
        )
        while (queue or active) and not (self.stopping and not active):
            now = time.monotonic()
            if not self.stopping:
                self._start_ready(queue, active, free_slots, now)
                self._give_up_waiting(queue, active, now)
            self._set_rate(self.controller.tick())
            self._grant_sends(active)
            self._split_in_flight(active)
            conns = [a.conn for a in active.values()]
            if not conns:
                time.sleep(0.05)
                continue
            for conn in wait(conns, timeout=0.1):
                slot = next(s for s, a in active.items() if a.conn is conn)
                self._receive(active[slot])
            self._check_stalls(active)
            for slot, worker in list(active.items()):
                if worker.process.is_alive():
                    continue
                self._receive(worker)  # what it sent before it ended is still in the pipe
                worker.process.join()
                worker.conn.close()
                worker.lock.release()
                del active[slot]
                self.stalls.forget(slot)
                free_slots.append(slot)
                self._apply(self.budget.finish(slot))
                self._release_grant(slot)
                self.in_flight.counts[slot] = 0  # what it had open ended with it
                self._settle(worker, queue)

    # -- starting and ending workers ----------------------------------------------------

    def _start_ready(
        self,
        queue: deque[tuple[SymbolPlan, float]],
        active: dict[int, _Active],
        free_slots: list[int],
        now: float,
    ) -> None:
        starting: list[tuple[SymbolPlan, int, RunLock]] = []
        for _ in range(len(queue)):
            if not free_slots:
                break
            job, not_before = queue.popleft()
            if not_before > now:
                queue.append((job, not_before))
                continue
            lock = run_lock(self.config.lake, job.symbol)
            try:
                lock.acquire()
            except RunLockHeld:
                # Another run is fetching it: wait, and take over if that run stops early
                # (the lake, read under the lock, then says what is still missing).
                if job.symbol not in self.waiting:
                    self.waiting.add(job.symbol)
                    self.emit(
                        ev.StatusChanged(
                            str(job.symbol),
                            at=time.time(),
                            status=ev.Status.WAITING,
                            detail="another backfill run is fetching this symbol; waiting for it",
                        )
                    )
                queue.append((job, now + LOCK_RETRY_S))
                continue
            self.waiting.discard(job.symbol)
            # Under the run lock, the lake is the truth: a crashed attempt or another run
            # may have fetched some of these days since the plan was made.
            fresh = self.resume(job.symbol)
            if not fresh.windows:
                lock.release()
                self.emit(
                    ev.WorkerFinished(str(job.symbol), at=time.time(), days_fetched=0, rows=0)
                )
                continue
            slot = free_slots.pop(0)
            self._apply(self.budget.start(slot))
            starting.append((fresh, slot, lock))
        # Each worker's share of the in-flight cap before any starts: one that found none
        # would poll until the next split, one in a reused slot would take what the slot's
        # last worker held.
        if starting:
            self._split_in_flight([*active, *(slot for _, slot, _ in starting)])
        for fresh, slot, lock in starting:
            active[slot] = self._spawn(fresh, slot, lock)

    def _give_up_waiting(
        self, queue: deque[tuple[SymbolPlan, float]], active: dict[int, _Active], now: float
    ) -> None:
        """Once only symbols held by other runs are left, wait for them a bounded time."""
        if active or not queue or any(job.symbol not in self.waiting for job, _ in queue):
            self._only_waiting_since = None
            return
        if self._only_waiting_since is None:
            self._only_waiting_since = now
        if now - self._only_waiting_since < self.settings.wait_for_other_run_s:
            return
        while queue:
            job, _ = queue.popleft()
            self.emit(
                ev.StatusChanged(
                    str(job.symbol),
                    at=time.time(),
                    status=ev.Status.SKIPPED,
                    detail="another backfill run is fetching this symbol",
                )
            )

    def _spawn(self, job: SymbolPlan, slot: int, lock: RunLock) -> _Active:
        settings = self.settings
        config = WorkerConfig(
            lake=self.config.lake,
            symbol=job.symbol,
            windows=job.windows,
            host=self.config.host,
            port=self.config.port,
            client_id=settings.client_id_base + slot,
            settings=settings,
            session_granted=self.grants is not None,
            edges=self.config.edges,
            header_clock=self.config.header_clock,
            seed=self.rng.randrange(1 << 30),
            initial_tokens=staggered_start(slot, max(1, settings.workers), self.controller.rate),
            niceness=self.worker_niceness,
        )
        parent_conn, child_conn = self.ctx.Pipe(duplex=False)
        process = self.ctx.Process(
            target=_worker_main,
            args=(
                config,
                child_conn,
                self.rates,
                slot,
                self.pause,
                self.stop,
                self.grants,
                self.in_flight,
            ),
            name=f"backfill-{job.symbol}",
            daemon=True,
        )
        process.start()
        child_conn.close()
        self.stalls.watch(slot)
        return _Active(job, slot, process, parent_conn, lock)

    def _receive(self, worker: _Active) -> None:
        try:
            while worker.conn.poll():
                message = worker.conn.recv()
                self._heard(worker)
                if isinstance(message, WorkerOutcome):
                    worker.outcome = message
                elif isinstance(message, ev.StatusChanged):
                    worker.status = message
                    self._on_event(message)
                elif isinstance(message, ev.Event) and not isinstance(message, ev.Heartbeat):
                    self._on_event(message)
        except (EOFError, OSError):
            pass  # the worker is gone; supervision below decides what that means

    # -- stalled workers ----------------------------------------------------------------

    def _heard(self, worker: _Active) -> None:
        if self.stalls.heard(worker.slot) is not Verdict.RESUMED:
            return
        self._apply(self.budget.start(worker.slot))  # its share comes back
        last = worker.status
        self.emit(
            ev.StatusChanged(
                str(worker.job.symbol),
                at=time.time(),
                status=last.status if last is not None else ev.Status.CONNECTING,
                detail=f"resumed after a stall{'; ' + last.detail if last and last.detail else ''}",
            )
        )

    def _check_stalls(self, active: dict[int, _Active]) -> None:
        """Workers silent too long (checked after reading every pipe): a stall hands their
        share of the rate to the others; past the restart limit they are killed, and
        supervision restarts them as it does a crashed worker."""
        for slot, verdict, silent in self.stalls.check():
            worker = active.get(int(slot))  # type: ignore[call-overload]
            if worker is None:
                continue
            symbol = str(worker.job.symbol)
            if verdict is Verdict.STALLED:
                self._apply(self.budget.finish(worker.slot))
                self.emit(
                    ev.StatusChanged(
                        symbol,
                        at=time.time(),
                        status=ev.Status.STALLED,
                        detail=f"no word from its worker for {silent:.0f}s; its share of the "
                        "rate goes to the others",
                    )
                )
            elif verdict is Verdict.RESTART:
                worker.killed = f"worker stalled (no word for {silent:.0f}s), killed"
                with contextlib.suppress(OSError):
                    worker.process.kill()  # SIGKILL ends a stopped process too

    def _on_event(self, event: ev.Event) -> None:
        if isinstance(event, ev.PacingViolation):
            # One worker's 162 means the session is unhappy: everyone pauses (the rate
            # steps down on the 162's RequestDone, below).
            self.pause.value = max(self.pause.value, time.time() + event.backoff_s)
        self.emit(event)
        if isinstance(event, ev.RequestDone) and event.outcome in SIGNALS:
            # Events carry wall time; the controller runs on the monotonic clock.
            sent_at = time.monotonic() - (time.time() - event.at) - event.latency_s
            self._set_rate(
                self.controller.observe(
                    SIGNALS[event.outcome],
                    sent_at,
                    event.latency_s,
                    key=(event.symbol, event.window),
                )
            )

    def _set_rate(self, change: RateChange | None) -> None:
        """Share a new global rate among the workers and say why it moved."""
        if change is None:
            return
        self._apply(self.budget.set_global(change.rate))
        self.emit(
            ev.BudgetChanged("", at=time.time(), rate=round(change.rate, 4), reason=change.reason)
        )

    def _split_in_flight(self, slots: Collection[int]) -> None:
        """Share the global in-flight cap among the active workers' slots (cuts first)."""
        counts = {slot: int(self.in_flight.counts[slot]) for slot in slots}
        cap = self.controller.in_flight_cap(workers=len(counts))
        self._split_turn += 1
        self._allowance = split_in_flight(cap, counts, self._allowance, turn=self._split_turn)
        for slot, allowance in self._allowance.items():
            self.in_flight.allowance[slot] = allowance

    def _settle(self, worker: _Active, queue: deque[tuple[SymbolPlan, float]]) -> None:
        if worker.outcome is not None or self.stopping:
            return  # it ended and told how in its events; or it stopped as asked
        symbol = worker.job.symbol
        reason = worker.killed or f"worker process died (exit code {worker.process.exitcode})"
        restarts = self.restarts[symbol] = self.restarts.get(symbol, 0) + 1
        settings = self.settings
        if restarts > settings.max_restarts:
            self.emit(
                ev.WorkerFailed(
                    str(symbol),
                    at=time.time(),
                    reason=f"{reason}; gave up after {settings.max_restarts} restarts",
                    days_failed=len(worker.job.days_missing),
                )
            )
            return
        # A killed worker could not hand on what it sent: wait until IB has forgotten it
        # (identical requests within 15 s), or the restart repeats its requests in flight.
        delay = max(
            settings.restart_backoff_s * 2 ** (restarts - 1),
            settings.ib.identical_s + settings.pacing_margin_s,
        )
        self.emit(
            ev.Retry(
                str(symbol),
                at=time.time(),
                reason=f"{reason}, restarting",
                attempt=restarts,
                delay_s=delay,
            )
        )
        queue.append((worker.job, time.monotonic() + delay))

    # -- strict mode: IB's session window, one grant per send ------------------------------

    def _grant_sends(self, active: dict[int, _Active]) -> None:
        """Note the grants workers used, then grant those waiting, while the window has room."""
        if self.grants is None or self.session is None:
            return
        for slot in active:
            if self.grants.sent[slot] > self._seen_sent[slot]:
                self._seen_sent[slot] = self.grants.sent[slot]
                self.session.used(slot)
        # Longest-waiting first would need timestamps; rotating the start is fair enough.
        slots = sorted(active)
        if slots:
            turn = self._grant_turn % len(slots)
            self._grant_turn += 1
            for slot in slots[turn:] + slots[:turn]:
                if self.grants.wanted[slot] and self.session.grant(slot):
                    self.grants.granted[slot] += 1

    def _release_grant(self, slot: int) -> None:
        """A worker ended: count its unused grant as sent, so its successor starts even."""
        if self.grants is None or self.session is None:
            return
        self.session.release(slot)
        self.grants.sent[slot] = self.grants.granted[slot]
        self.grants.wanted[slot] = 0
        self._seen_sent[slot] = self.grants.granted[slot]

    def _apply(self, changes: list[tuple[object, float]]) -> None:
        for slot, rate in changes:
            self.rates[int(slot)] = rate  # type: ignore[call-overload]


def install_parent_stop(orchestrator: Orchestrator) -> dict[int, object]:
    """Route Ctrl-C / SIGTERM of the parent to ``request_stop``; the handlers replaced."""

    def handler(signum: int, frame: object) -> None:
        orchestrator.request_stop()

    return {sig: signal.signal(sig, handler) for sig in (signal.SIGINT, signal.SIGTERM)}


def restore_signals(previous: dict[int, object]) -> None:
    for sig, handler in previous.items():
        signal.signal(sig, handler)  # type: ignore[arg-type]
