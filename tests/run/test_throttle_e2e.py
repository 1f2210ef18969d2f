"""``--rate auto`` against a gateway that throttles softly and drops an overloading client.

The simulator's soft throttle and overload disconnect, scaled so the run takes seconds:
capacity 10 req/s after a burst of 3 (hidden from the run); a queue of 10 (the simulator's
default), or answers slowed for 6 s (its 20 s at 3 req/s, scaled to 10), drop the
connection that adds one more.
"""

from __future__ import annotations

import dataclasses
import json

import pytest

from backfill.sim import FAST_PACING, FaultConfig
from backfill.sim.behaviour import Behaviour
from tests.run.conftest import run_backfill
from tests.run.test_run_e2e import assert_lake_equals_simulator, historical

pytestmark = pytest.mark.e2e

SYMBOLS = ["BTC-USD", "ETH-USD", "SOL-USD", "LTC-USD"]
CAPACITY = 10.0
# 84 requests: auto climbs past the capacity, reads the slowdown and settles near it within
# some 50 (about 6 s); the rest are sent at the settled rate. (Its next climb is 20 s away.)
# Six symbols: the in-flight cap (one a worker at least) bounds the queue at IB, so the
# answers of four workers waited some 0.4 s there, barely above the latency line (base +
# 0.25 s), and a busy machine's slower base hid it; six wait some 0.6 s.
AUTO_SYMBOLS = [*SYMBOLS, "BCH-USD", "LINK-USD"]
AUTO_LAST = "2025-07-14"


@pytest.fixture
def throttled(make_sim):
    return make_sim(
        pacing=dataclasses.replace(FAST_PACING, soft_rate=CAPACITY, soft_burst=3, max_rate=None),
        behaviour=Behaviour(overload="disconnect", overload_after_s=6.0),
        # Jitter under the controller's queue mark (a quarter of its 0.25 s slack above the
        # fastest answer): with 50-150 ms, five answers in a row above it now and then ended
        # the start-up at its first round, and the additive climb that follows reached the
        # capacity after the run's last request.
        faults=FaultConfig(latency_ms=(50, 100), seed=11),
    )


def dropped(gateway) -> list:
    return [r for r in historical(gateway) if r.outcome == "dropped"]


def budgets(lake) -> list[dict]:
    [log] = (lake / "_runs").glob("*.jsonl")
    return [e for e in map(json.loads, log.read_text().splitlines()) if e["event"] == "budget"]


def test_auto_finds_the_capacity_without_a_dropped_connection(throttled, lake):
    done = run_backfill(
        throttled,
        lake,
        AUTO_SYMBOLS,
        "2025-07-01",
        AUTO_LAST,
        "--rate",
        "auto",
        "--auto-start-rate",
        "5",
        "--max-rate",
        "40",
    )
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr
    assert not dropped(throttled), "auto overloaded the gateway into a disconnect"
    moves = budgets(lake)
    assert moves[0]["rate"] == 5.0 and moves[0]["reason"].startswith("auto")
    said = "\n".join(f"{m['rate']:.2f} {m['reason']}" for m in moves)
    assert max(m["rate"] for m in moves) > CAPACITY, f"it never probed past the capacity:\n{said}"
    assert any(m["reason"].startswith("latency p50") for m in moves), f"nor read it:\n{said}"
    assert 0.6 * CAPACITY <= moves[-1]["rate"] <= 1.1 * CAPACITY, f"nor settled near it:\n{said}"
    assert_lake_equals_simulator(lake, throttled, AUTO_SYMBOLS, "2025-07-01", AUTO_LAST)


def test_a_fixed_rate_far_above_capacity_draws_drops_and_survives_them(make_sim, lake):
    # A touchier gateway than `throttled`: two requests queued at its soft throttle, or answers
    # slowed for a second, drop the connection. The in-flight cap keeps the queue at IB short,
    # so against `throttled` a fixed rate may never be dropped; here it is, at once.
    touchy = make_sim(
        pacing=dataclasses.replace(FAST_PACING, soft_rate=CAPACITY, soft_burst=3, max_rate=None),
        behaviour=Behaviour(overload="disconnect", overload_queue=2, overload_after_s=1.0),
        faults=FaultConfig(latency_ms=(50, 150), seed=11),
    )
    done = run_backfill(
        touchy,
        lake,
        SYMBOLS,
        "2025-07-01",
        "2025-07-15",
        "--rate",
        "40",
        "--max-in-flight-total",
        "40",
    )
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr
    assert dropped(touchy), "the test must overload the gateway"
    assert any("connection dropped" in m["reason"] for m in budgets(lake))
    assert_lake_equals_simulator(lake, touchy, SYMBOLS, "2025-07-01", "2025-07-15")
