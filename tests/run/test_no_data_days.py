"""Days IB said it had no data for: recorded why they are empty, shown apart by plan/verify."""

from __future__ import annotations

import json
from datetime import date, datetime, timezone

from typer.testing import CliRunner

from backfill.cli import app
from backfill.domain import Symbol
from backfill.lake.heads import Head, record_heads
from backfill.lake.store import write_batch
from tests.lake.helpers import day_bars, read_coverage
from tests.run.conftest import run_backfill

SOL = Symbol("SOL", "USD")
runner = CliRunner()


def test_the_store_records_no_data_days_until_bars_arrive(tmp_path):
    lake = tmp_path / "lake"
    day = date(2025, 7, 1)
    fetched = datetime(2025, 8, 1, tzinfo=timezone.utc)
    write_batch(
        lake, SOL, day_bars(SOL, day).slice(0, 0), [day], fetched_at=fetched, no_data_days=[day]
    )
    assert read_coverage(lake, [SOL], day, day)[SOL][day].no_data
    # Bars for the day later: it is no longer empty, so no longer "no data".
    write_batch(lake, SOL, day_bars(SOL, day), [day], fetched_at=fetched)
    record = read_coverage(lake, [SOL], day, day)[SOL][day]
    assert record.rows == 1440 and not record.no_data


def test_no_data_days_are_recorded_and_shown_apart_by_plan_and_verify(sim, lake):
    # SOL lists on 2020-09-01 in the simulator: IB answers "HMDS query returned no data".
    # A run asks from the head timestamp, so to meet no-data days it needs a head earlier
    # than the first bars (as IB's can be): recorded in the lake, it is not asked again.
    record_heads(
        lake, {SOL: Head(datetime(2020, 8, 30, tzinfo=timezone.utc), datetime.now(timezone.utc))}
    )
    done = run_backfill(sim, lake, ["SOL-USD"], "2020-08-30", "2020-09-02", "--rate", "50")
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr
    coverage = read_coverage(lake, [SOL], date(2020, 8, 30), date(2020, 9, 2))[SOL]
    assert [coverage[date(2020, 8, d)].no_data for d in (30, 31)] == [True, True]
    assert not coverage[date(2020, 9, 1)].no_data and coverage[date(2020, 9, 1)].rows

    plan = runner.invoke(
        app,
        [
            "plan",
            "--lake",
            str(lake),
            "--symbols",
            "SOL-USD",
            "--from",
            "2020-08-30",
            "--to",
            "2020-09-02",
            "--json",
        ],
    )
    assert plan.exit_code == 0, plan.output
    [symbol] = json.loads(plan.output)["symbols"]
    assert (symbol["days_done"], symbol["days_no_data"]) == (4, 2)
    text = runner.invoke(
        app,
        [
            "plan",
            "--lake",
            str(lake),
            "--symbols",
            "SOL-USD",
            "--from",
            "2020-08-30",
            "--to",
            "2020-09-02",
        ],
    )
    assert "4/4 (2 IB had no data for)" in text.output

    verify = runner.invoke(app, ["verify", "--lake", str(lake), "--json"])
    document = json.loads(verify.output)
    assert document["symbols"][0]["days_no_data"] == 2
    empty = [f for f in document["findings"] if f["kind"] == "empty_day"]
    assert [f["day"] for f in empty] == ["2020-08-30", "2020-08-31"]
    assert all(f["detail"] == "IB said it has no data" for f in empty)
