"""The executable ends without tearing the interpreter down: nothing it said may be lost."""

from __future__ import annotations

import json

import pytest

from tests.run.conftest import run_backfill

pytestmark = pytest.mark.e2e


def test_a_piped_run_says_everything_before_its_fast_exit(sim, lake, monkeypatch):
    # --json to a pipe: block-buffered (as in a user's shell, so not PYTHONUNBUFFERED), so
    # an exit that skipped the flush would cut the last kilobytes and leave a torn line.
    monkeypatch.delenv("PYTHONUNBUFFERED", raising=False)
    done = run_backfill(
        sim, lake, ["BTC-USD", "ETH-USD"], "2025-07-01", "2025-07-07", "--json", "--rate", "50"
    )
    assert done.returncode == 0, done.stderr[-2000:]
    events = [json.loads(line) for line in done.stdout.splitlines()]
    assert len(done.stdout) > 16_384, "more than one buffer's worth, or the test proves little"
    finished = {e["symbol"] for e in events if e["event"] == "finished"}
    assert finished == {"BTC-USD", "ETH-USD"}
    assert done.stdout.endswith("\n")


def test_bad_input_still_exits_2_with_its_line(sim, lake):
    done = run_backfill(sim, lake, ["BTC-USD"], "2025-07-09", "2025-07-01")
    assert done.returncode == 2
    assert done.stderr.strip().count("\n") == 0 and "backfill: error:" in done.stderr
    assert not lake.exists()
