"""Issue 19, item 2's remedy end to end: a lake that lost each window's 00:00 bar while its
days stay recorded complete is flagged by verify, and `run --refetch` (the command verify
names) repairs it; a refetch that fails loses nothing."""

from __future__ import annotations

import json
import shlex
import subprocess
from datetime import date, datetime, timezone
from pathlib import Path

import pyarrow as pa
import pyarrow.compute as pc
import pytest
from filelock import FileLock

from backfill.domain import DayCoverage, Symbol, day_start, days_between
from backfill.lake import store
from backfill.lake.paths import iter_parts, lock_path
from backfill.sim import Behaviour
from backfill.sim.faults import FaultConfig
from tests.lake.helpers import read_coverage
from tests.oracle import expected_bars, lake_rows
from tests.run.conftest import FAST_RULES, backfill, run_backfill
from tests.run.test_run_e2e import historical

BTC = Symbol("BTC", "USD")


def lose_through_the_store(lake: Path, symbol: Symbol, lost: list[datetime]) -> None:
    """What a wrong window-edge rule leaves: the bars gone, the days still recorded complete
    (with their true row counts), written as the store writes a part."""
    for _, _, path in iter_parts(lake, [symbol]):
        with FileLock(lock_path(path)):
            table = store.read_part(path).replace_schema_metadata(None)
            coverage = store.read_part_coverage(path)
            kept = table.filter(pc.invert(pc.is_in(table["ts"], pa.array(lost, table["ts"].type))))
            counts = store.rows_per_day(kept)
            coverage = {
                d: DayCoverage(d, counts.get(d, 0), c.fetched_at, c.complete, c.no_data)
                for d, c in coverage.items()
            }
            store._replace_atomically(path, kept, coverage)


def verify(lake: Path) -> tuple[int, dict]:
    done = subprocess.run(
        backfill("verify", "--lake", str(lake), "--json"),
        capture_output=True,
        text=True,
        timeout=120,
    )
    return done.returncode, json.loads(done.stdout)


def plan_json(lake: Path, first: str, last: str, *extra: str) -> dict:
    done = subprocess.run(
        backfill(
            "plan",
            "--lake",
            str(lake),
            "--symbols",
            "BTC-USD",
            "--from",
            first,
            "--to",
            last,
            "--window-days",
            "3",
            "--json",
            *extra,
        ),
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 0, done.stderr
    return json.loads(done.stdout)["totals"]


def parts_bytes(lake: Path) -> dict[str, bytes]:
    return {str(p): p.read_bytes() for _, _, p in iter_parts(lake, [BTC])}


@pytest.mark.e2e
def test_lost_window_edges_are_flagged_and_refetch_repairs_them(make_sim, lake):
    first, last = "2025-07-01", "2025-07-31"
    before = make_sim()  # serves "[)": the lake remembers that rule for its address
    done = run_backfill(
        before, lake, ["BTC-USD"], first, last, "--rate", "50", "--window-days", "3"
    )
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr
    # Another gateway behind the same address now serves neither edge: the remembered rule
    # is wrong, and the refetch must not trust it (else it loses the same bars again).
    before.stop()
    sim = make_sim(port=before.port, behaviour=Behaviour(window_edges="()"))
    days = days_between(date(2025, 7, 1), date(2025, 7, 31))
    lost = [day_start(d) for d in days[::3]]  # each 3-day window's first bar: 11 of them
    lose_through_the_store(lake, BTC, lost)
    expected = expected_bars(sim.market, BTC, days[0], days[-1])
    assert len(lake_rows(lake, BTC)) == len(expected) - 11

    started = datetime.now(timezone.utc)
    code, report = verify(lake)
    assert code == 1
    [found] = [f for f in report["findings"] if f["kind"] == "edge_minute_missing"]
    assert found["day"] == first and "on every 3rd day 11 of 11" in found["detail"]
    # A plain rerun asks nothing (every day recorded complete); --refetch asks every day.
    assert plan_json(lake, first, last)["days_missing"] == 0
    refetch = plan_json(lake, first, last, "--refetch")
    assert (refetch["days_missing"], refetch["requests"]) == (31, 11)

    # The repair verify names, pointed at this gateway.
    command = shlex.split(found["detail"].split("Repair: ")[1])
    assert command[:3] == ["backfill", "run", "--refetch"]
    asked = len(historical(sim))
    again = subprocess.run(
        backfill(
            *command[1:],
            "--gateway",
            f"{sim.host}:{sim.port}",
            *FAST_RULES,
            "--rate",
            "50",
            "--window-days",
            "3",
        ),
        capture_output=True,
        text=True,
        timeout=120,
        stdin=subprocess.DEVNULL,
    )
    assert again.returncode == 0, again.stdout[-3000:] + again.stderr
    assert "Window edges (): learned from the gateway" in again.stdout
    assert len(historical(sim)) - asked == 11  # from the first lost day to the last
    assert lake_rows(lake, BTC) == expected
    code, report = verify(lake)
    assert code == 0, [f for f in report["findings"] if f["severity"] == "error"]
    assert not [f for f in report["findings"] if f["kind"] == "edge_minute_missing"]
    # Every refetched day's record is this run's.
    coverage = read_coverage(lake, [BTC], days[0], days[-1])[BTC]
    assert all(c.complete and c.fetched_at > started for c in coverage.values())


@pytest.mark.e2e
def test_a_refetch_that_fails_loses_nothing(sim, lake):
    first, last = "2025-07-01", "2025-07-14"
    done = run_backfill(sim, lake, ["BTC-USD"], first, last, "--rate", "50", "--window-days", "7")
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr
    before = parts_bytes(lake)
    sim.set_faults(FaultConfig(drop_share=1.0))  # every request drops the connection
    failed = run_backfill(
        sim,
        lake,
        ["BTC-USD"],
        first,
        last,
        "--rate",
        "50",
        "--refetch",
        "--window-days",
        "7",
        "--reconnect-for",
        "2",
    )
    assert failed.returncode == 1, failed.stdout[-3000:] + failed.stderr
    assert [r for r in historical(sim) if r.outcome != "bars"], "the refetch must be asked"
    assert parts_bytes(lake) == before
    # The rerun hint asks again as this run did, and says so.
    assert "it asks every day of the range again, losing nothing" in failed.stdout
    assert "--refetch" in failed.stdout.split("losing nothing")[1]
    sim.set_faults(FaultConfig())
    assert verify(lake)[0] == 0
    assert lake_rows(lake, BTC) == expected_bars(
        sim.market, BTC, date(2025, 7, 1), date(2025, 7, 14)
    )
