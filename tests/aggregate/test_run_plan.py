"""``run --aggregate`` (a real run against the simulator) and ``plan --tf``."""

from __future__ import annotations

import json
import subprocess
from datetime import date
from pathlib import Path

import pyarrow.parquet as pq
import pytest
from typer.testing import CliRunner

from backfill.cli import app
from backfill.domain import Month, Symbol
from backfill.lake.paths import aggregate_part_path
from tests.aggregate.conftest import BTC
from tests.aggregate.helpers import LATER, write_m1
from tests.run.conftest import backfill, run_backfill

runner = CliRunner()


@pytest.mark.e2e
def test_run_aggregate_builds_what_the_run_wrote(sim, tmp_path: Path) -> None:
    lake = tmp_path / "lake"
    done = run_backfill(
        sim,
        lake,
        ["ETH-USD"],
        "2025-07-30",
        "2025-08-02",
        "--rate",
        "50",
        "--aggregate",
        "H1,D1",
        "--json",
    )
    assert done.returncode == 0, done.stderr + done.stdout[-2000:]
    [event] = [
        json.loads(line)
        for line in done.stdout.splitlines()
        if line.startswith('{"event": "aggregate"')
    ]
    assert event["ok"] and event["timeframes"] == ["H1", "D1"]
    eth = Symbol("ETH", "USD")
    d1 = pq.read_table(aggregate_part_path(lake, eth, "D1", Month(2025, 8)))
    # the D1 bars of 07-31 and 08-01 (08-02's needs 08-03, which the run did not fetch)
    assert [str(t) for t in d1["ts"].to_pylist()] == [
        "2025-08-01 00:00:00+00:00",
        "2025-08-02 00:00:00+00:00",
    ]
    assert aggregate_part_path(lake, eth, "H1", Month(2025, 7)).is_file()
    verify = subprocess.run(
        backfill("verify", "--lake", str(lake), "--json"),
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert json.loads(verify.stdout)["ok"], verify.stdout[-2000:]


def test_run_aggregate_with_an_unknown_timeframe_is_bad_input_before_the_run(
    tmp_path: Path,
) -> None:
    result = runner.invoke(
        app,
        [
            "run",
            "--gateway",
            "127.0.0.1:9",
            "--symbols",
            "BTC-USD",
            "--from",
            "2025-07-01",
            "--lake",
            str(tmp_path / "lake"),
            "--aggregate",
            "H2",
        ],
    )
    assert result.exit_code == 2 and "unknown timeframe 'H2'" in result.stderr
    assert not (tmp_path / "lake").exists()


def test_plan_tf_shows_missing_and_stale_aggregates(tmp_path: Path) -> None:
    lake = tmp_path / "lake"
    write_m1(lake, BTC, date(2025, 6, 28), date(2025, 7, 5))
    assert runner.invoke(app, ["aggregate", "--lake", str(lake), "--tf", "H1"]).exit_code == 0
    write_m1(lake, BTC, date(2025, 7, 2), date(2025, 7, 2), fetched_at=LATER)
    args = [
        "plan",
        "--lake",
        str(lake),
        "--symbols",
        "BTC-USD",
        "--from",
        "2025-06-28",
        "--to",
        "2025-07-05",
        "--tf",
        "H1,D1",
    ]
    result = runner.invoke(app, [*args, "--json"])
    assert result.exit_code == 0, result.output
    assert json.loads(result.stdout)["aggregates"] == [
        {"symbol": "BTC-USD", "timeframe": "H1", "missing": [], "stale": ["2025-07"]},
        {"symbol": "BTC-USD", "timeframe": "D1", "missing": ["2025-06", "2025-07"], "stale": []},
    ]
    lines = runner.invoke(app, args).stdout.splitlines()
    assert "aggregates BTC-USD H1: 1 stale (2025-07)" in lines
    assert "aggregates BTC-USD D1: 2 missing (2025-06, 2025-07)" in lines
    assert runner.invoke(app, ["aggregate", "--lake", str(lake), "--tf", "H1,D1"]).exit_code == 0
    assert runner.invoke(app, args).stdout.splitlines()[-1] == "aggregates H1,D1: up to date"
    bad = runner.invoke(app, [*args[:-1], "X1"])
    assert bad.exit_code == 2 and "unknown timeframe" in bad.stderr
