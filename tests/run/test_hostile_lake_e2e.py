"""``run`` on a lake whose side files were replaced by hostile ones (nested 200,000 deep, or
FIFOs): no traceback, no hang, every day fetched."""

from __future__ import annotations

import os

import pytest

from backfill.domain import Symbol
from backfill.lake.coverage_index import cache_path
from backfill.lake.gateway import gateway_facts_path
from backfill.lake.heads import heads_path
from backfill.lake.paths import recent_sends_path
from tests.run.conftest import run_backfill
from tests.run.test_run_e2e import assert_lake_equals_simulator

pytestmark = pytest.mark.e2e

BTC = Symbol.parse("BTC-USD")


@pytest.mark.timeout(120)
@pytest.mark.parametrize("attack", ["nested", "fifo"])
def test_a_run_over_hostile_side_files_fetches_every_day(sim, lake, attack):
    first = run_backfill(sim, lake, ["BTC-USD"], "2025-07-01", "2025-07-02", "--rate", "50")
    assert first.returncode == 0, first.stderr + first.stdout
    for path in (
        cache_path(lake),
        heads_path(lake),
        recent_sends_path(lake, BTC),
        gateway_facts_path(lake, sim.host, sim.port),
    ):
        path.parent.mkdir(parents=True, exist_ok=True)
        path.unlink(missing_ok=True)
        if attack == "nested":
            path.write_text("[" * 200_000 + "]" * 200_000)
        else:
            os.mkfifo(path)
    done = run_backfill(
        sim, lake, ["BTC-USD"], "2025-07-01", "2025-07-05", "--rate", "50", timeout=60
    )
    assert "Traceback" not in done.stderr, done.stderr[-3000:]
    assert done.returncode == 0, done.stderr + done.stdout
    assert_lake_equals_simulator(lake, sim, ["BTC-USD"], "2025-07-01", "2025-07-05")
