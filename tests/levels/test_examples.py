"""levels.md section 7's worked examples, through the store with coverage, field by field."""

from __future__ import annotations

from datetime import date, datetime
from pathlib import Path

import pytest

import backfill
from backfill.levels.build import LevelsRequest, levels_lake
from backfill.levels.events import EventParams
from backfill.levels.tolerance import Tolerance
from tests.levels.helpers import BTC, at, flat_days, write_lake

CONSUMER = EventParams(Tolerance("consumer"))
DAY = date(2025, 7, 15)


def base() -> dict[datetime, tuple[float, float, float, float]]:
    rows = flat_days(date(2025, 7, 14), date(2025, 7, 16))
    rows[at("2025-07-14T18:00")] = (100, 110, 90, 100)
    rows[at("2025-07-15T10:00")] = (100, 105, 95, 100)
    for m in range(31, 36):
        rows[at(f"2025-07-15T13:{m}")] = (100, 101, 99, 100)
    return rows


def build(
    lake: Path, rows, first: date, last: date, params: EventParams = CONSUMER, **request
) -> None:
    write_lake(lake, rows, first, last)
    result = levels_lake(LevelsRequest(lake, symbols=(BTC,), params=params, **request))
    assert result.ok


def levels_of(lake: Path, day: date = DAY) -> dict[str, dict]:
    table = backfill.read_levels(lake, "BTC-USD", day, day)
    return {row["level"]: row for row in table.to_pylist()}


def events_of(lake: Path, day: date = DAY, tolerance: str = "consumer") -> list[dict]:
    return backfill.read_events(lake, "BTC-USD", day, day, tolerance=tolerance).to_pylist()


def test_base_levels(tmp_path: Path) -> None:
    build(tmp_path, base(), date(2025, 7, 14), date(2025, 7, 16))
    got = levels_of(tmp_path)
    assert [r for r in got] == ["PDH", "PDL", "PDC", "PMH", "PML", "ORH", "ORL"]
    assert {k: v["value"] for k, v in got.items()} == {
        "PDH": 110,
        "PDL": 90,
        "PDC": 100,
        "PMH": 105,
        "PML": 95,
        "ORH": 101,
        "ORL": 99,
    }
    assert all(r["complete"] for r in got.values())
    assert got["PDH"]["value_ts"] == at("2025-07-14T18:00")
    assert got["ORH"]["value_ts"] == at("2025-07-15T13:31")  # the first bar reaching it
    assert got["PDC"]["direction"] is None and got["PDH"]["direction"] == "up"
    assert got["PML"]["inside_or"] is False and got["PDC"]["inside_or"] is None
    assert got["ORH"]["valid_to_utc"] == at("2025-07-16T04:00")
    assert events_of(tmp_path) == []


def test_a_window_edges(tmp_path: Path) -> None:
    rows = base()
    rows[at("2025-07-15T04:00")] = (100, 112, 100, 101)  # last bar of PD
    rows[at("2025-07-15T04:01")] = (100, 113, 100, 100)  # session D, not PD
    rows[at("2025-07-15T08:00")] = (100, 120, 80, 100)  # 03:59-04:00 New York: not PM
    rows[at("2025-07-15T08:01")] = (100, 106, 100, 100)  # first PM bar
    rows[at("2025-07-15T13:30")] = (100, 100, 94, 100)  # last PM bar, not OR
    rows[at("2025-07-15T13:35")] = (100, 101.5, 99, 100)  # last OR bar
    rows[at("2025-07-15T13:36")] = (100, 125, 75, 100)  # not OR
    build(tmp_path, rows, date(2025, 7, 14), date(2025, 7, 16))
    got = levels_of(tmp_path)
    assert {k: v["value"] for k, v in got.items()} == {
        "PDH": 112,
        "PDL": 90,
        "PDC": 101,
        "PMH": 106,
        "PML": 94,
        "ORH": 101.5,
        "ORL": 99,
    }
    pd_, pm, or_ = got["PDH"], got["PMH"], got["ORH"]
    assert (pd_["window_start_utc"], pd_["window_end_utc"], pd_["available_from_utc"]) == (
        at("2025-07-14T04:00"),
        at("2025-07-15T04:00"),
        at("2025-07-15T04:00"),
    )
    assert (pd_["minutes"], pd_["expected_minutes"]) == (1440, 1440)
    assert (pm["window_start_utc"], pm["window_end_utc"], pm["available_from_utc"]) == (
        at("2025-07-15T08:00"),
        at("2025-07-15T13:30"),
        at("2025-07-15T13:30"),
    )
    assert pm["expected_minutes"] == 330
    assert (or_["window_start_utc"], or_["available_from_utc"], or_["expected_minutes"]) == (
        at("2025-07-15T13:30"),
        at("2025-07-15T13:35"),
        5,
    )
    assert got["PDC"]["value_ts"] == at("2025-07-15T04:00")
    assert got["PML"]["value_ts"] == at("2025-07-15T13:30")


def test_b_spring_forward(tmp_path: Path) -> None:
    rows = flat_days(date(2025, 3, 8), date(2025, 3, 10))
    rows[at("2025-03-08T18:00")] = (100, 110, 90, 100)
    rows[at("2025-03-09T08:00")] = (100, 120, 100, 100)  # not PM
    rows[at("2025-03-09T08:30")] = (100, 104, 100, 100)
    rows[at("2025-03-09T09:00")] = (100, 100, 96, 100)
    for m in range(31, 36):
        rows[at(f"2025-03-09T13:{m}")] = (100, 101, 99, 100)
        rows[at(f"2025-03-09T14:{m}")] = (100, 130, 70, 100)  # decoy: the fixed -5 h OR
    build(tmp_path, rows, date(2025, 3, 8), date(2025, 3, 10))
    got = levels_of(tmp_path, date(2025, 3, 9))
    assert {k: v["value"] for k, v in got.items()} == {
        "PDH": 110,
        "PDL": 90,
        "PDC": 100,
        "PMH": 104,
        "PML": 96,
        "ORH": 101,
        "ORL": 99,
    }
    assert (got["PDH"]["window_start_utc"], got["PDH"]["window_end_utc"]) == (
        at("2025-03-08T05:00"),
        at("2025-03-09T05:00"),
    )
    assert got["PDH"]["expected_minutes"] == 1440
    assert (got["PMH"]["window_start_utc"], got["PMH"]["window_end_utc"]) == (
        at("2025-03-09T08:00"),
        at("2025-03-09T13:30"),
    )
    assert got["ORH"]["available_from_utc"] == at("2025-03-09T13:35")
    assert got["ORH"]["valid_to_utc"] == at("2025-03-10T04:00")
    nxt = levels_of(tmp_path, date(2025, 3, 10))
    assert (nxt["PDH"]["expected_minutes"], nxt["PDH"]["value"], nxt["PDL"]["value"]) == (
        1380,
        130,
        70,
    )


def example_c() -> dict:
    rows = base()
    rows[at("2025-07-15T13:36")] = (100, 100.5, 99.8, 100.2)
    rows[at("2025-07-15T13:37")] = (100.2, 102.2, 100.1, 102.0)
    rows[at("2025-07-15T13:38")] = (102.0, 102.3, 101.5, 102.1)
    rows[at("2025-07-15T13:39")] = (102.1, 102.2, 101.1, 101.6)
    rows[at("2025-07-15T13:40")] = (101.6, 101.9, 101.4, 101.8)
    for t in list(rows):
        if at("2025-07-15T13:40") < t < at("2025-07-16T00:00"):
            rows[t] = (101.8,) * 4
    return rows


@pytest.mark.parametrize("signal_bar", ["next", "same"])
def test_c_break_retest_signal(tmp_path: Path, signal_bar: str) -> None:
    build(
        tmp_path,
        example_c(),
        date(2025, 7, 14),
        date(2025, 7, 16),
        EventParams(Tolerance("consumer"), signal_bar=signal_bar),
    )
    (event,) = events_of(tmp_path)
    signal = at("2025-07-15T13:40") if signal_bar == "next" else at("2025-07-15T13:39")
    assert event["level"] == "ORH" and event["attempt"] == 1 and event["direction"] == "up"
    assert event["break_ts"] == at("2025-07-15T13:37")
    assert event["prev_ts"] == at("2025-07-15T13:36") and event["prev_mid"] == 100.1
    assert event["retest_ts"] == at("2025-07-15T13:39")
    assert (event["signal_ts"], event["end_ts"], event["outcome"]) == (signal, signal, "signal")
    assert (event["break_close"], event["retest_close"]) == (102.0, 101.6)
    assert event["signal_close"] == (101.8 if signal_bar == "next" else 101.6)
    assert event["bars_to_retest"] == 2
    assert (event["tolerance_spec"], event["tolerance_abs"]) == ("consumer", 0.2)
    assert event["level_value"] == 101 and event["complete"] is True
    assert (event["max_retest_bars"], event["retest_unit"], event["signal_bar"]) == (
        15,
        "bars",
        signal_bar,
    )


def test_d_a_touch_before_the_break_is_not_a_retest(tmp_path: Path) -> None:
    rows = base()
    rows[at("2025-07-15T13:36")] = (100.0, 101.3, 99.9, 101.1)
    rows[at("2025-07-15T13:37")] = (101.1, 101.5, 101.0, 101.2)
    rows[at("2025-07-15T13:38")] = (101.2, 101.8, 101.3, 101.7)
    rows[at("2025-07-15T13:39")] = (101.7, 101.8, 101.15, 101.5)
    for t in list(rows):
        if at("2025-07-15T13:39") < t < at("2025-07-16T00:00"):
            rows[t] = (101.5,) * 4
    build(tmp_path, rows, date(2025, 7, 14), date(2025, 7, 16))
    (event,) = events_of(tmp_path)
    assert (event["level"], event["break_ts"], event["retest_ts"], event["signal_ts"]) == (
        "ORH",
        at("2025-07-15T13:37"),
        at("2025-07-15T13:39"),
        at("2025-07-15T13:40"),
    )


def test_default_tolerance_is_relative_and_names_its_folder(tmp_path: Path) -> None:
    build(
        tmp_path,
        example_c(),
        date(2025, 7, 14),
        date(2025, 7, 16),
        EventParams(Tolerance("bps", 5.0)),
    )
    (event,) = events_of(tmp_path, tolerance="bps:5")
    assert event["tolerance_spec"] == "bps:5"
    assert event["tolerance_abs"] == pytest.approx(101 * 5 / 10_000)
    # 101.0505 < 101.1: the 13:39 low is no retest at 5 bps; nothing else comes back to it.
    assert event["outcome"] == "invalidated_time" and event["retest_ts"] is None
    # 15 bars after the break may still retest; the 16th ends the attempt.
    assert (event["end_ts"], event["bars_to_end"], event["minutes_to_end"]) == (
        at("2025-07-15T13:53"),
        16,
        16,
    )
    assert (
        tmp_path / "br_events/source=ibkr/market=crypto/profile=us_equity_open/"
        "tolerance=bps:5/symbol=BTC-USD/year=2025/month=07/part-2025-07.parquet"
    ).is_file()


def test_inside_or_is_strict(tmp_path: Path) -> None:
    rows = base()
    rows[at("2025-07-15T10:00")] = (100, 100.5, 99, 100)  # PMH 100.5 inside, PML 99 = ORL
    build(tmp_path, rows, date(2025, 7, 14), date(2025, 7, 16))
    got = levels_of(tmp_path)
    assert (got["PMH"]["value"], got["PML"]["value"], got["ORL"]["value"]) == (100.5, 99, 99)
    assert (got["PMH"]["inside_or"], got["PML"]["inside_or"]) == (True, False)
    assert got["ORH"]["inside_or"] is None and got["PDC"]["inside_or"] is None
