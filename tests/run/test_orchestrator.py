"""The orchestrator: its pure reactions, and its run loop with real workers and a simulator."""

from __future__ import annotations

import random
import time
from collections import deque
from datetime import date, datetime
from pathlib import Path

from backfill.domain import UTC, DayCoverage, Symbol, days_between
from backfill.plan import plan_symbol
from backfill.run import events as ev
from backfill.run.orchestrator import Orchestrator, RunConfig, SharedControls
from backfill.run.state import RunState
from backfill.run.worker import claim_in_flight_room
from backfill.settings import IBRules, RunSettings
from backfill.sim import FAST_PACING, PacingConfig

BTC, ETH = Symbol("BTC", "USD"), Symbol("ETH", "USD")
JULY_1 = date(2025, 7, 1)


def orchestrator(
    tmp_path: Path, rate: float = 8.0, session_max: int | None = None
) -> tuple[Orchestrator, list[ev.Event]]:
    strict = session_max is not None
    settings = RunSettings(
        rate=rate, workers=2, strict_pacing=strict, ib=IBRules(session_max=session_max or 60)
    )
    config = RunConfig(lake=tmp_path, host="127.0.0.1", port=1, settings=settings)
    seen: list[ev.Event] = []
    jobs = [plan_symbol(s, JULY_1, JULY_1, {}, window_days=1) for s in (BTC, ETH)]
    # resume(): the lake, as if another run had just fetched the day, lacks nothing.
    fetched = {JULY_1: DayCoverage(JULY_1, 1440, datetime(2025, 7, 2, tzinfo=UTC), True)}
    return Orchestrator(
        config,
        jobs,
        seen.append,
        resume=lambda s: plan_symbol(s, JULY_1, JULY_1, fetched, window_days=1),
    ), seen


def test_a_violation_anywhere_pauses_everyone_and_steps_the_rate_down(tmp_path):
    orch, seen = orchestrator(tmp_path)
    for slot in (0, 1):
        orch._apply(orch.budget.start(slot))
    assert list(orch.rates) == [4.0, 4.0]
    before = time.time()
    # A 162 arrives as the request's end, then as the violation that pauses everyone.
    orch._on_event(
        ev.RequestDone(
            "BTC-USD", window="2025-07-01", outcome="pacing", latency_s=0.1, at=time.time()
        )
    )
    orch._on_event(ev.PacingViolation("BTC-USD", backoff_s=2.0))
    assert orch.pause.value >= before + 2.0, "every worker reads this pause"
    assert orch.controller.rate == 4.0
    assert list(orch.rates) == [2.0, 2.0]
    budget = next(e for e in seen if isinstance(e, ev.BudgetChanged))
    assert (budget.rate, budget.reason) == (4.0, "pacing violation (162): stepped down")
    assert isinstance(seen[-1], ev.PacingViolation)


def test_shares_never_sum_above_the_budget_as_workers_come_and_go(tmp_path):
    orch, _ = orchestrator(tmp_path, rate=6.0)
    orch._apply(orch.budget.start(0))
    assert sum(orch.rates) == 6.0
    orch._apply(orch.budget.start(1))
    assert list(orch.rates) == [3.0, 3.0]
    orch._apply(orch.budget.finish(0))
    assert list(orch.rates) == [0.0, 6.0]


def test_a_symbol_with_nothing_left_finishes_without_a_process(tmp_path):
    orch, seen = orchestrator(tmp_path)
    orch.run()  # resume() says nothing is missing for either symbol
    state = RunState([str(BTC), str(ETH)], 2, 8.0)
    for event in seen:
        state.apply(event)
    assert [(p.symbol, p.status) for p in state.snapshot().symbols] == [
        ("BTC-USD", ev.Status.DONE),
        ("ETH-USD", ev.Status.DONE),
    ]
    assert not state.snapshot().incomplete
    assert [type(e) for e in seen].count(ev.WorkerFinished) == 2


def test_strict_mode_grants_sends_across_workers_within_the_session_window(tmp_path):
    orch, _ = orchestrator(tmp_path, session_max=3)
    workers = [
        SharedControls(orch.rates, slot, orch.pause, orch.stop, orch.grants) for slot in (0, 1)
    ]
    active = dict.fromkeys((0, 1))
    sent = 0
    for _ in range(5):  # both workers keep asking; the window allows three sends in all
        for worker in workers:
            if worker.may_send():
                worker.note_sent()
                sent += 1
        orch._grant_sends(active)  # type: ignore[arg-type]
    assert sent == 3
    assert not any(worker.may_send() for worker in workers)


def test_strict_mode_a_dead_workers_grant_is_not_inherited(tmp_path):
    orch, _ = orchestrator(tmp_path, session_max=1)
    dying = SharedControls(orch.rates, 0, orch.pause, orch.stop, orch.grants)
    assert not dying.may_send()  # asks
    orch._grant_sends({0: None})  # type: ignore[dict-item]
    assert dying.may_send()  # granted, then killed before it could say whether it sent
    orch._release_grant(0)
    successor = SharedControls(orch.rates, 0, orch.pause, orch.stop, orch.grants)
    assert not successor.may_send(), "the grant may have been used: it counts as sent"
    orch._grant_sends({0: None})  # type: ignore[dict-item]
    assert not successor.may_send(), "the window is full for 600 s"


def shares_seen_by_workers(orch: Orchestrator) -> list[float]:
    """Each slot's rate as its worker reads it: through the controls shared with it."""
    return [
        SharedControls(orch.rates, slot, orch.pause, orch.stop).rate()
        for slot in range(len(orch.rates))
    ]


def test_the_run_loop_hands_every_new_share_to_the_workers(sim, tmp_path):
    # Two workers share 8 req/s. BTC has one day, ETH many: when BTC ends, ETH's share must
    # rise to the whole budget; when a 162 halves the budget, ETH's share must follow.
    days = {BTC: (date(2025, 7, 1),), ETH: tuple(days_between(date(2025, 7, 1), date(2025, 7, 16)))}
    settings = RunSettings(
        rate=8.0,
        workers=2,
        client_id_base=100,
        rate_hold_s=120.0,  # no climbing back within the test
        ib=IBRules(
            identical_s=FAST_PACING.identical_window_s,
            contract_window_s=FAST_PACING.contract_window_s,
        ),
    )
    config = RunConfig(lake=tmp_path, host=sim.host, port=sim.port, settings=settings)

    def job(symbol: Symbol):
        return plan_symbol(symbol, days[symbol][0], days[symbol][-1], {}, window_days=1)

    # The gateway turns strict (one request per 5 s) once ETH runs alone: it draws a 162.
    strict = PacingConfig(
        identical_window_s=1.5, contract_window_s=5.0, contract_max=1, soft_rate=None, max_rate=None
    )
    phase = "both"  # → "alone" once BTC ended → "violated" after the 162
    seen: dict[str, list[list[float]]] = {"both": [], "alone": [], "violated": []}
    events: list[ev.Event] = []
    tightened = False

    def sink(event: ev.Event) -> None:
        nonlocal phase, tightened
        events.append(event)
        shares = shares_seen_by_workers(orch)
        seen[phase].append(shares)
        if isinstance(event, ev.WorkerFinished) and event.symbol == str(BTC):
            phase = "alone"
        elif phase == "alone" and not tightened and sorted(shares) == [0.0, 8.0]:
            tightened = True
            sim.set_pacing(strict)
        elif phase == "alone" and isinstance(event, ev.PacingViolation):
            phase = "violated"
            sim.set_pacing(FAST_PACING)
        elif phase == "violated" and sorted(shares) == [0.0, 4.0]:
            orch.request_stop()  # seen what this test is about: no need to finish ETH

    orch = Orchestrator(config, [job(s) for s in days], sink, resume=job)
    orch.run()

    state = RunState([str(s) for s in days], 17, 8.0)
    for event in events:
        state.apply(event)
    assert state.symbol(str(BTC)).status is ev.Status.DONE
    assert [4.0, 4.0] in seen["both"]
    alone, violated = ([sorted(s) for s in seen[p]] for p in ("alone", "violated"))
    assert [0.0, 8.0] in alone, f"ETH's share never rose once BTC ended: {alone[-3:]}"
    assert [0.0, 4.0] in violated, f"the halved budget never reached ETH: {violated[-3:]}"
    budgets = [e.rate for e in events if isinstance(e, ev.BudgetChanged)]
    assert budgets[0] == 8.0 and 4.0 in budgets
    for shares in (*seen["both"], *seen["alone"], *seen["violated"]):
        assert sum(shares) <= 8.0 + 1e-9


def test_a_worker_has_its_in_flight_share_before_its_process_starts(tmp_path):
    # Measured: workers that found no share waited 50 ms polls before their first send; one
    # in a reused slot would have read what the slot's last worker held.
    orch, _ = orchestrator(tmp_path)
    orch.resume = lambda s: plan_symbol(s, JULY_1, JULY_1, {}, window_days=1)  # all missing
    orch.in_flight.allowance[1] = 7  # what a finished worker in slot 1 was last given
    seen_at_start: dict[int, int] = {}

    def spawn(job, slot, lock):
        # What the worker reads first, through the controls shared with it.
        controls = SharedControls(
            orch.rates, slot, orch.pause, orch.stop, orch.grants, orch.in_flight
        )
        seen_at_start[slot] = controls.in_flight_allowance()
        lock.release()
        return object()

    orch._spawn = spawn  # type: ignore[method-assign]
    queue = deque((job, 0.0) for job in orch.jobs)
    active: dict = {}
    orch._start_ready(queue, active, [0, 1], time.monotonic())
    cap = orch.controller.in_flight_cap(workers=2)
    assert set(seen_at_start) == {0, 1}
    assert all(share >= 1 for share in seen_at_start.values()), seen_at_start
    assert sum(seen_at_start.values()) <= max(cap, orch.controller.in_flight_cap(workers=1))
    assert seen_at_start[1] <= cap, "the slot's last worker's share is not inherited"


class _SplitAnyMoment(SharedControls):
    """A worker's controls between whose every read and write of the shared counts the
    orchestrator may split the cap (the interleavings two processes can give)."""

    def __init__(self, orch: Orchestrator, slot: int, rng: random.Random) -> None:
        super().__init__(orch.rates, slot, orch.pause, orch.stop, orch.grants, orch.in_flight)
        self.orch, self.rng = orch, rng

    def _maybe_split(self) -> None:
        for _ in range(self.rng.choice((0, 0, 1, 2))):  # the run loop may go round twice
            self.orch._split_in_flight([0, 1, 2])

    def in_flight_allowance(self) -> int:
        self._maybe_split()
        return super().in_flight_allowance()

    def note_in_flight(self, count: int) -> None:
        self._maybe_split()
        super().note_in_flight(count)


def test_workers_claiming_room_never_hold_more_than_the_cap_whatever_the_interleaving(tmp_path):
    # Measured: under load, a worker read its share, two splits (the shares rotate when the
    # cap is below the workers) gave its room away before it told its count: 4 open, cap 3.
    settings = RunSettings(rate=50.0, workers=3, max_in_flight_total=2)
    config = RunConfig(lake=tmp_path, host="127.0.0.1", port=1, settings=settings)
    orch = Orchestrator(config, [], lambda e: None, resume=lambda s: None)  # type: ignore[arg-type,return-value]
    cap = orch.controller.in_flight_cap(workers=3)
    for seed in range(200):
        rng = random.Random(seed)
        workers = [_SplitAnyMoment(orch, slot, rng) for slot in range(3)]
        open_now = [0, 0, 0]
        orch._allowance = {}
        for slot in range(3):
            orch.in_flight.counts[slot] = orch.in_flight.allowance[slot] = 0
        for _ in range(300):
            slot = rng.randrange(3)
            if open_now[slot] and rng.random() < 0.4:  # an answer came back
                open_now[slot] -= 1
                workers[slot].note_in_flight(open_now[slot])
            elif claim_in_flight_room(workers[slot], open_now[slot]):
                open_now[slot] += 1  # sent
                assert sum(open_now) <= cap, (seed, open_now, cap)
            if rng.random() < 0.5:
                orch._split_in_flight([0, 1, 2])
