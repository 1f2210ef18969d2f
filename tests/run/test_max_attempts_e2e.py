"""``run --max-attempts``: docs/run.md's flag bounds the sends of a request IB keeps refusing."""

from __future__ import annotations

import pytest

from backfill.sim import FaultConfig
from tests.run.conftest import run_backfill

pytestmark = pytest.mark.e2e


def test_max_attempts_bounds_the_requests_for_a_day(make_sim, lake):
    """docs/run.md's ``--max-attempts``: a request IB keeps refusing is sent that many times."""
    sim = make_sim(faults=FaultConfig(error_share=1.0))
    done = run_backfill(
        sim, lake, ["BTC-USD"], "2025-07-01", "2025-07-01", "--rate", "50", "--max-attempts", "2"
    )
    assert done.returncode == 1, done.stdout[-2000:] + done.stderr
    asked = [
        (r.duration, r.window_end)
        for r in sim.requests()
        if r.kind == "historical" and r.client_id == 100
    ]  # the worker's, not learning
    assert len(asked) == 2, asked
