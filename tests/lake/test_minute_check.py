"""verify: the same minute missing on nearly every day is an error naming it and its cause."""

from __future__ import annotations

from datetime import date, datetime, timezone
from pathlib import Path

import pyarrow as pa
import pyarrow.compute as pc

from backfill.domain import days_between
from backfill.lake.minute_check import MinuteCheckThresholds
from backfill.lake.store import write_batch
from backfill.lake.verify import Kind, verify_lake
from tests.lake.helpers import BTC, day_bars, sim_bars

JULY = days_between(date(2025, 7, 1), date(2025, 7, 10))


def write(lake: Path, table: pa.Table, days: list[date]) -> None:
    write_batch(lake, BTC, table, days, fetched_at=datetime(2025, 8, 1, tzinfo=timezone.utc))


def daily(lake: Path, **thresholds):
    report = verify_lake(lake, minute_thresholds=MinuteCheckThresholds(**thresholds))
    return [f for f in report.findings if f.kind is Kind.MINUTE_MISSING_DAILY]


def test_the_first_bar_of_every_day_lost_is_an_error_naming_the_minute_and_the_edges(tmp_path):
    lake = tmp_path / "lake"
    # The simulator's bars (2% of minutes without trades), minus every day's 00:00 bar.
    bars = sim_bars(BTC, JULY[0], len(JULY))
    minutes = pc.divide(pc.cast(bars["ts"], pa.int64()), 60_000_000)
    first = pc.equal(pc.subtract(minutes, pc.multiply(pc.divide(minutes, 1440), 1440)), 0)
    write(lake, bars.filter(pc.invert(first)), JULY)
    [finding] = daily(lake)
    assert finding.severity.value == "error"
    assert "00:00 UTC is missing on 10 of 10" in finding.detail
    assert "window-edge rule" in finding.detail


def test_a_quiet_market_and_a_one_off_gap_are_not_an_error(tmp_path):
    lake = tmp_path / "lake"
    bars = sim_bars(BTC, JULY[0], len(JULY))  # random minutes without trades
    write(lake, bars, JULY)
    # One day also loses its 00:00 and 12:00 bars: once is not a pattern.
    assert daily(lake) == []
    write(lake, day_bars(BTC, JULY[3], skip=[0, 720]), [JULY[3]])
    assert daily(lake) == []


def test_a_minute_missing_every_day_inside_the_day_names_another_cause(tmp_path):
    lake = tmp_path / "lake"
    write(lake, pa.concat_tables([day_bars(BTC, d, skip=[600]) for d in JULY]), JULY)
    [finding] = daily(lake)
    assert "the bar ending 10:00 UTC" in finding.detail and "daily gap" in finding.detail


def test_the_thresholds_decide(tmp_path):
    lake = tmp_path / "lake"
    days = JULY[:6]
    write(lake, pa.concat_tables([day_bars(BTC, d, skip=[0]) for d in days]), days)
    assert daily(lake) == []  # 6 days: fewer than the default 7 needed to judge
    assert len(daily(lake, min_days=5)) == 1
    # Days that are themselves thin do not count.
    assert daily(lake, min_days=5, full_share=1.0) == []


def test_the_thresholds_are_flags_of_verify(tmp_path):
    from typer.testing import CliRunner

    from backfill.cli import app

    lake = tmp_path / "lake"
    days = JULY[:6]
    # 10:00, not 00:00: six full days each without their 00:00 bar are already an
    # edge_minute_missing error (test_verify_edges), whatever these thresholds say.
    write(lake, pa.concat_tables([day_bars(BTC, d, skip=[600]) for d in days]), days)
    assert CliRunner().invoke(app, ["verify", "--lake", str(lake)]).exit_code == 0
    strict = CliRunner().invoke(app, ["verify", "--lake", str(lake), "--daily-gap-days", "5"])
    assert strict.exit_code == 1
    assert "10:00 UTC is missing on 6 of 6" in strict.output
