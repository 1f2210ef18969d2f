"""Completeness from coverage, incremental rebuilds, verify, plan, CLI input, and a real
run against the simulator with ``run --levels``."""

from __future__ import annotations

import json
import subprocess
from datetime import date
from pathlib import Path

import pyarrow.parquet as pq
import pytest
from typer.testing import CliRunner

import backfill as bf
from backfill.cli import app
from backfill.domain import Month
from backfill.levels.paths import levels_part_path
from tests.aggregate.helpers import LATER
from tests.levels.helpers import BTC, flat_days, write_lake
from tests.run.conftest import backfill, run_backfill

runner = CliRunner()
JULY = Month(2025, 7)


def lake_with(tmp_path: Path, partial=()) -> Path:  # type: ignore[no-untyped-def]
    lake = tmp_path / "lake"
    write_lake(
        lake,
        flat_days(date(2025, 7, 14), date(2025, 7, 17)),
        date(2025, 7, 14),
        date(2025, 7, 17),
        partial=partial,
    )
    return lake


def levels_cli(lake: Path, *args: str):  # type: ignore[no-untyped-def]
    return runner.invoke(app, ["levels", "--lake", str(lake), "--json", *args])


def test_a_partial_day_makes_exactly_the_windows_touching_it_incomplete(tmp_path: Path) -> None:
    # 07-16 partial: session 07-16's PM and OR (08:00Z-13:35Z of 07-16) and its PD
    # ((07-15 04:00Z, 07-16 04:00Z]) touch it; session 07-15's windows do not.
    lake = lake_with(tmp_path, partial=[date(2025, 7, 16)])
    assert levels_cli(lake, "--include-partial").exit_code == 0
    rows = bf.read_levels(lake, "BTC-USD", "2025-07-15", "2025-07-17").to_pylist()
    got = {(r["session_date"].day, r["level"]): r["complete"] for r in rows}
    assert all(got[(15, lv)] for lv in ("PDH", "PMH", "ORH"))
    assert not any(got[(16, lv)] for lv in ("PDH", "PDC", "PMH", "PML", "ORH", "ORL"))
    assert not got[(17, "PDH")]  # session 07-17's PD is (07-16 04:00Z, 07-17 04:00Z]
    assert got[(17, "ORH")]  # 13:30Z-13:35Z of 07-17 only
    # Without --include-partial, no incomplete row at all.
    assert levels_cli(lake).exit_code == 0
    rows = bf.read_levels(lake, "BTC-USD", "2025-07-15", "2025-07-17").to_pylist()
    assert rows and all(r["complete"] for r in rows)
    assert {(r["session_date"].day, r["level"]) for r in rows} == {k for k, v in got.items() if v}


def test_rerun_writes_nothing_and_a_changed_day_rebuilds_only_its_parts(tmp_path: Path) -> None:
    lake = lake_with(tmp_path)
    first = json.loads(levels_cli(lake, "--profiles", "us_equity_open,asia_open").stdout)
    assert first["ok"] and first["totals"]["built"] == 4
    path = levels_part_path(lake, "us_equity_open", BTC, JULY)
    stamp = path.stat().st_mtime_ns
    again = json.loads(levels_cli(lake, "--profiles", "us_equity_open,asia_open").stdout)
    assert again["totals"]["built"] == 0 and path.stat().st_mtime_ns == stamp
    # One M1 day fetched again: July's parts use it, and only they are rebuilt.
    write_lake(
        lake,
        flat_days(date(2025, 7, 16), date(2025, 7, 16)),
        date(2025, 7, 16),
        date(2025, 7, 16),
        fetched_at=LATER,
    )
    verify = runner.invoke(app, ["verify", "--lake", str(lake), "--json"])
    stale = [f for f in json.loads(verify.stdout)["findings"] if f["kind"] == "levels_stale"]
    assert len(stale) == 4 and "backfill levels --lake" in stale[0]["detail"]
    third = json.loads(levels_cli(lake, "--profiles", "us_equity_open,asia_open").stdout)
    assert {(b["profile"], b["dataset"], b["reason"]) for b in third["built"]} == {
        (p, d, "stale") for p in ("us_equity_open", "asia_open") for d in ("levels", "br_events")
    }
    assert json.loads(runner.invoke(app, ["verify", "--lake", str(lake), "--json"]).stdout)["ok"]


def test_other_parameters_rebuild_the_events_not_the_levels(tmp_path: Path) -> None:
    lake = lake_with(tmp_path)
    assert levels_cli(lake).exit_code == 0
    doc = json.loads(levels_cli(lake, "--max-retest-bars", "5").stdout)
    assert [(b["dataset"], b["reason"]) for b in doc["built"]] == [("br_events", "mode")]


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--profiles", "london"], "unknown london"),
        (["--tolerance", "pct:3"], "--tolerance"),
        (["--retest-unit", "hours"], "--retest-unit"),
        (["--signal-bar", "later"], "--signal-bar"),
        (["--scan", "11:30-09:30"], "--scan"),
        (["--from", "2025-07-20", "--to", "2025-07-10"], "after"),
        (["--symbols", "ETH-USD"], "no M1 data"),
    ],
)
def test_bad_input_is_one_line_and_nothing_written(tmp_path: Path, args, message) -> None:  # type: ignore[no-untyped-def]
    lake = lake_with(tmp_path)
    result = runner.invoke(app, ["levels", "--lake", str(lake), *args])
    assert result.exit_code == 2 and message in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1
    assert not (lake / "levels").exists() and not (lake / "br_events").exists()


def test_verify_finds_a_window_off_the_profile_rule(tmp_path: Path) -> None:
    lake = lake_with(tmp_path)
    assert levels_cli(lake).exit_code == 0
    path = levels_part_path(lake, "us_equity_open", BTC, JULY)
    table = pq.read_table(path)
    i = table.schema.get_field_index("available_from_utc")
    shifted = table.set_column(i, table.schema.field(i), table["window_start_utc"])
    pq.write_table(shifted, path)
    doc = json.loads(runner.invoke(app, ["verify", "--lake", str(lake), "--json"]).stdout)
    assert not doc["ok"]
    assert [f["kind"] for f in doc["findings"] if f["severity"] == "error"] == ["levels_window"]


def test_plan_levels_lists_parts_not_built(tmp_path: Path) -> None:
    lake = lake_with(tmp_path)
    args = [
        "plan",
        "--lake",
        str(lake),
        "--symbols",
        "BTC-USD",
        "--from",
        "2025-07-14",
        "--to",
        "2025-07-17",
        "--levels",
        "--json",
    ]
    doc = json.loads(runner.invoke(app, args).stdout)
    assert doc["levels"] == [
        {"symbol": "BTC-USD", "profile": "us_equity_open", "missing": ["2025-07"], "stale": []}
    ]
    assert levels_cli(lake).exit_code == 0
    assert json.loads(runner.invoke(app, args).stdout)["levels"] == []


@pytest.mark.e2e
def test_run_levels_against_the_simulator_then_verify_clean(sim, tmp_path: Path) -> None:
    lake = tmp_path / "lake"
    done = run_backfill(
        sim, lake, ["ETH-USD"], "2025-07-14", "2025-07-17", "--rate", "50", "--levels", "--json"
    )
    assert done.returncode == 0, done.stderr + done.stdout[-2000:]
    [event] = [
        json.loads(line)
        for line in done.stdout.splitlines()
        if line.startswith('{"event": "levels"')
    ]
    assert event["ok"] and event["totals"]["rows"] > 0
    rows = bf.read_levels(lake, "ETH-USD", "2025-07-15", "2025-07-17").to_pylist()
    assert {r["session_date"].day for r in rows} >= {15, 16}
    verify = subprocess.run(
        backfill("verify", "--lake", str(lake), "--json"),
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert json.loads(verify.stdout)["ok"], verify.stdout[-2000:]
    rerun = subprocess.run(
        backfill("levels", "--lake", str(lake), "--json"),
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert json.loads(rerun.stdout)["totals"]["built"] == 0


def test_an_unreadable_m1_part_fails_its_months_and_exits_1(tmp_path: Path) -> None:
    lake = lake_with(tmp_path)
    from backfill.lake.paths import part_path

    part_path(lake, BTC, JULY).write_bytes(b"not parquet")
    result = levels_cli(lake)
    assert result.exit_code == 1
    doc = json.loads(result.stdout)
    assert not doc["ok"] and doc["failed"] and "unreadable" in doc["failed"][0]["reason"]
    assert not (lake / "levels").exists()


def test_verify_finds_an_event_out_of_order(tmp_path: Path) -> None:
    from backfill.levels.events import EventParams
    from backfill.levels.paths import events_part_path
    from backfill.levels.tolerance import Tolerance
    from tests.levels.test_examples import build, example_c

    lake = tmp_path / "lake"
    build(
        lake, example_c(), date(2025, 7, 14), date(2025, 7, 16), EventParams(Tolerance("consumer"))
    )
    assert json.loads(runner.invoke(app, ["verify", "--lake", str(lake), "--json"]).stdout)["ok"]
    path = events_part_path(lake, "us_equity_open", "consumer", BTC, JULY)
    table = pq.read_table(path)
    i = table.schema.get_field_index("retest_ts")  # a retest before its break
    pq.write_table(table.set_column(i, table.schema.field(i), table["prev_ts"]), path)
    doc = json.loads(runner.invoke(app, ["verify", "--lake", str(lake), "--json"]).stdout)
    assert [f["kind"] for f in doc["findings"] if f["severity"] == "error"] == ["event_order"]
