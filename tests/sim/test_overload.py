"""``--overload slow|disconnect``: IB's soft throttle, then a dropped connection (issue 12)."""

from __future__ import annotations

import asyncio
import contextlib
import time
from datetime import timedelta

import pytest

from backfill.sim import Behaviour, PacingConfig
from tests.sim.helpers import DAY_END, crypto

pytestmark = pytest.mark.ib  # exercises the IB client: run under both (.ci/run)

# Only the soft throttle: 10 req/s after a burst of one, so each request waits 0.1 s more.
THROTTLE = PacingConfig(
    soft_rate=10.0, soft_burst=1, max_rate=None, contract_max=1000, identical_window_s=0.0
)


def ask(ib, n: int):
    """Request ``n`` (distinct hours, so no two are identical), without waiting for it."""
    return asyncio.ensure_future(
        ib.reqHistoricalDataAsync(
            crypto(), DAY_END - timedelta(hours=n), "3600 S", "1 min", "AGGTRADES", False, 2
        )
    )


def settle(ib, tasks, timeout: float = 5.0) -> None:
    deadline = time.monotonic() + timeout
    while not all(t.done() for t in tasks):
        assert time.monotonic() < deadline, "requests never settled"
        pause(ib, 0.01)
    for task in tasks:  # retrieved, so asyncio does not report them at exit
        task.exception()


def pause(ib, seconds: float) -> None:
    """Run the client's loop a little; a lost connection is seen after, by isConnected()."""
    with contextlib.suppress(ConnectionError):  # ib_insync raises it out of whatever runs
        ib.sleep(seconds)


def outcomes(sim) -> list[tuple[str, str | None]]:
    return [(r.outcome, r.detail) for r in sim.requests() if r.kind == "historical"]


@pytest.mark.parametrize("mode", ["slow", "disconnect"])
def test_a_deep_queue(make_sim, connect, mode: str) -> None:
    sim = make_sim(pacing=THROTTLE, behaviour=Behaviour(overload=mode, overload_queue=3))
    ib = connect(sim)
    tasks = [ask(ib, n) for n in range(6)]
    settle(ib, tasks)
    if mode == "slow":  # every request answered, each later than the one before
        assert all(t.result() for t in tasks)
        assert [o for o, _ in outcomes(sim)] == ["bars"] * 6
        return
    # One passes, three wait; the fifth finds 3 waiting: the connection is dropped.
    assert not ib.isConnected()
    assert ("dropped", "overload: 3 requests already waiting") in outcomes(sim)
    assert sum(o == "bars" for o, _ in outcomes(sim)) == 1
    # The dropped client's waiting requests left the queue with it: a reconnect is served
    # without waiting behind them (they held the throttle until about 0.4 s after the burst).
    again = connect(sim, client_id=2)
    assert again.reqHistoricalData(crypto("ETH"), DAY_END, "3600 S", "1 min", "AGGTRADES", False, 2)
    last = sim.requests()[-1]
    assert last.outcome == "bars" and last.answered - last.received < 0.2


def test_slowed_for_too_long(make_sim, connect) -> None:
    sim = make_sim(
        pacing=PacingConfig(
            soft_rate=5.0, soft_burst=1, max_rate=None, contract_max=1000, identical_window_s=0.0
        ),
        behaviour=Behaviour(overload="disconnect", overload_queue=1000, overload_after_s=0.3),
    )
    ib = connect(sim)
    tasks = []
    began = time.monotonic()
    while ib.isConnected():  # 20 requests a second against a throttle serving 5
        assert time.monotonic() - began < 5, "never dropped"
        tasks.append(ask(ib, len(tasks)))
        pause(ib, 0.05)
    settle(ib, tasks)
    assert time.monotonic() - began >= 0.3
    dropped = [d for o, d in outcomes(sim) if o == "dropped"]
    assert len(dropped) == 1 and dropped[0].startswith("overload: answers slowed for")
