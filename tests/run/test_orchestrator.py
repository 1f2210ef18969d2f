"""The orchestrator's pure reactions, without starting a process."""

from __future__ import annotations

import time
from datetime import date, datetime
from pathlib import Path

from backfill.domain import UTC, DayCoverage, Symbol
from backfill.plan import plan_symbol
from backfill.run import events as ev
from backfill.run.orchestrator import Orchestrator, RunConfig, SharedControls
from backfill.run.state import RunState
from backfill.settings import IBRules, RunSettings

BTC, ETH = Symbol("BTC", "USD"), Symbol("ETH", "USD")
JULY_1 = date(2025, 7, 1)


def orchestrator(
    tmp_path: Path, rate: float = 8.0, session_max: int | None = None
) -> tuple[Orchestrator, list[ev.Event]]:
    strict = session_max is not None
    settings = RunSettings(rate=rate, workers=2, strict_pacing=strict,
                           ib=IBRules(session_max=session_max or 60))
    config = RunConfig(lake=tmp_path, host="127.0.0.1", port=1, settings=settings)
    seen: list[ev.Event] = []
    jobs = [plan_symbol(s, JULY_1, JULY_1, {}, window_days=1) for s in (BTC, ETH)]
    # resume(): the lake, as if another run had just fetched the day, lacks nothing.
    fetched = {JULY_1: DayCoverage(JULY_1, 1440, datetime(2025, 7, 2, tzinfo=UTC), True)}
    return Orchestrator(
        config, jobs, seen.append,
        resume=lambda s: plan_symbol(s, JULY_1, JULY_1, fetched, window_days=1),
    ), seen


def test_a_violation_anywhere_pauses_everyone_and_steps_the_rate_down(tmp_path):
    orch, seen = orchestrator(tmp_path)
    for slot in (0, 1):
        orch._apply(orch.budget.start(slot))
    assert list(orch.rates) == [4.0, 4.0]
    before = time.time()
    orch._on_event(ev.PacingViolation("BTC-USD", backoff_s=2.0))
    assert orch.pause.value >= before + 2.0, "every worker reads this pause"
    assert orch.controller.current_rate() == 4.0
    orch._apply(orch.budget.set_global(orch.controller.current_rate()))
    assert list(orch.rates) == [2.0, 2.0]
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
        ("BTC-USD", ev.Status.DONE), ("ETH-USD", ev.Status.DONE)]
    assert not state.snapshot().incomplete
    assert [type(e) for e in seen].count(ev.WorkerFinished) == 2


def test_strict_mode_grants_sends_across_workers_within_the_session_window(tmp_path):
    orch, _ = orchestrator(tmp_path, session_max=3)
    workers = [SharedControls(orch.rates, slot, orch.pause, orch.stop, orch.grants)
               for slot in (0, 1)]
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
