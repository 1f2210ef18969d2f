"""--refetch: which days it asks again (one planning rule for plan and run), and a store that
never lets a refetch's answer lose a bar or lower a complete day's record."""

from __future__ import annotations

from datetime import date, datetime, timedelta

import pyarrow as pa

from backfill import plan as planning
from backfill.domain import UTC, DayCoverage, Month, days_between
from backfill.lake.paths import part_path
from backfill.lake.store import read_part, read_part_coverage, write_batch
from backfill.run.launch import RunRequest, replan_symbol
from backfill.settings import GatewayAddress, RunSettings
from tests.lake.helpers import BTC, day_bars

JULY = days_between(date(2025, 7, 1), date(2025, 7, 10))
OLD = datetime(2025, 8, 1, tzinfo=UTC)
START = datetime(2025, 9, 1, tzinfo=UTC)


def record(day: date, fetched_at: datetime, complete: bool = True) -> DayCoverage:
    return DayCoverage(day, 1440, fetched_at, complete)


def test_only_days_this_refetch_recorded_count_as_recorded():
    coverage = {
        JULY[0]: record(JULY[0], OLD),  # recorded complete before: asked again
        JULY[1]: record(JULY[1], START + timedelta(minutes=5)),  # by this refetch: done
        JULY[2]: record(JULY[2], START + timedelta(days=3)),  # a clock ahead: not trusted
    }
    now = START + timedelta(hours=1)
    kept = planning.refetch_coverage(coverage, START, now)
    assert list(kept) == [JULY[1]]
    plan = planning.plan_symbol(BTC, JULY[0], JULY[-1], kept, window_days=7)
    assert plan.days_missing == tuple(d for d in JULY if d != JULY[1])
    # plan --refetch: the run has not begun, so no day counts.
    assert planning.refetch_coverage(coverage, now, now) == {}


def test_a_worker_restarted_mid_refetch_resumes_where_it_got_to(tmp_path):
    lake = tmp_path / "lake"
    write_batch(lake, BTC, pa.concat_tables([day_bars(BTC, d) for d in JULY]), JULY, fetched_at=OLD)
    request = RunRequest(
        lake=lake,
        symbols=(BTC,),
        first=JULY[0],
        last=JULY[-1],
        gateway=GatewayAddress.parse("127.0.0.1:7497"),
        settings=RunSettings(window_days=3),
        refetch_since=datetime.now(UTC) - timedelta(seconds=1),
    )
    today = date(2025, 9, 1)
    assert replan_symbol(request, BTC, today).days_missing == tuple(JULY)
    write_batch(lake, BTC, day_bars(BTC, JULY[0]), JULY[:1], fetched_at=datetime.now(UTC))
    assert replan_symbol(request, BTC, today).days_missing == tuple(JULY[1:])
    plain = RunRequest(
        lake=lake,
        symbols=(BTC,),
        first=JULY[0],
        last=JULY[-1],
        gateway=GatewayAddress.parse("127.0.0.1:7497"),
        settings=RunSettings(),
    )
    assert replan_symbol(plain, BTC, today).days_missing == ()


def test_a_refetch_answered_while_the_day_ran_keeps_the_complete_record_and_every_bar(tmp_path):
    lake = tmp_path / "lake"
    day = JULY[0]
    write_batch(lake, BTC, day_bars(BTC, day), [day], fetched_at=OLD)
    path = part_path(lake, BTC, Month.of(day))
    # Half the day, fetched "while it ran" (a clock that says so): no bar lost, and the
    # record stays the complete one.
    write_batch(
        lake,
        BTC,
        day_bars(BTC, day, price=101.0, skip=range(720, 1440)),
        [day],
        fetched_at=START,
        partial_days=[day],
    )
    [after] = read_part_coverage(path).values()
    assert (after.complete, after.rows, after.fetched_at) == (True, 1440, OLD)
    table = read_part(path)
    assert table.num_rows == 1440
    assert table["open"].to_pylist()[:720] == [101.0] * 720  # the newest fetch wins per bar


def test_an_empty_refetch_removes_no_bar(tmp_path):
    lake = tmp_path / "lake"
    day = JULY[0]
    write_batch(lake, BTC, day_bars(BTC, day, skip=[0]), [day], fetched_at=OLD)
    # IB says "no data" this time: the day's bars stay, and the record is not "no data".
    write_batch(
        lake, BTC, day_bars(BTC, day, skip=range(1440)), [day], fetched_at=START, no_data_days=[day]
    )
    [after] = read_part_coverage(part_path(lake, BTC, Month.of(day))).values()
    assert (after.complete, after.rows, after.no_data) == (True, 1439, False)


def test_a_refetch_that_covers_the_day_replaces_its_record_and_fills_the_lost_bar(tmp_path):
    lake = tmp_path / "lake"
    day = JULY[0]
    write_batch(lake, BTC, day_bars(BTC, day, skip=[0]), [day], fetched_at=OLD)
    write_batch(lake, BTC, day_bars(BTC, day), [day], fetched_at=START)
    [after] = read_part_coverage(part_path(lake, BTC, Month.of(day))).values()
    assert (after.complete, after.rows, after.fetched_at) == (True, 1440, START)


def test_refetch_is_not_a_setting_of_backfill_toml(tmp_path, monkeypatch):
    from typer.testing import CliRunner

    from backfill.cli import app

    monkeypatch.chdir(tmp_path)
    (tmp_path / "backfill.toml").write_text("refetch = true\n")
    result = CliRunner().invoke(
        app,
        [
            "plan",
            "--symbols",
            "BTC-USD",
            "--from",
            "2025-07-01",
            "--to",
            "2025-07-02",
            "--lake",
            str(tmp_path / "lake"),
        ],
    )
    assert result.exit_code == 2 and "refetch is not a setting" in result.output
    assert not (tmp_path / "lake").exists()
