"""The pure core: bucket arithmetic, completeness, provenance, and the rebuild decisions."""

from __future__ import annotations

from datetime import date, datetime, timedelta

import pyarrow as pa
import pytest

from backfill.aggregate import buckets
from backfill.aggregate.planner import (
    Reason,
    Unreadable,
    built_from,
    candidate_months,
    plan_part,
    plan_symbol,
)
from backfill.aggregate.provenance import Provenance, source_days
from backfill.aggregate.timeframes import D1, H1, H4, M5, M15, TIMEFRAMES, parse_timeframes
from backfill.domain import UTC, BadInput, DayCoverage, Month, Symbol

BTC = Symbol("BTC", "USD")
FETCHED = datetime(2025, 9, 1, tzinfo=UTC)
NOW = datetime(2025, 9, 2, tzinfo=UTC)


def us(when: datetime) -> int:
    return int(when.timestamp()) * 1_000_000


def at(*args: int) -> datetime:
    return datetime(*args, tzinfo=UTC)


def covered(first: date, last: date, *, partial: tuple[date, ...] = ()) -> dict[date, DayCoverage]:
    days = [first + timedelta(days=i) for i in range((last - first).days + 1)]
    return {d: DayCoverage(d, 1400, FETCHED, d not in partial) for d in days}


def test_parse_timeframes_sorted_unique_and_strict() -> None:
    assert parse_timeframes("d1, m5,H1,M5") == (M5, H1, D1)
    for bad in ("M7", "M1", "", "H1,,X"):
        with pytest.raises(BadInput):
            parse_timeframes(bad)


@pytest.mark.parametrize(
    ("ts", "tf", "end"),
    [
        (at(2025, 7, 1, 0, 1), M5, at(2025, 7, 1, 0, 5)),
        (at(2025, 7, 1, 0, 5), M5, at(2025, 7, 1, 0, 5)),  # a bar on the grid ends its bucket
        (at(2025, 7, 1, 0, 6), M5, at(2025, 7, 1, 0, 10)),
        (at(2025, 7, 1, 0, 0), H1, at(2025, 7, 1, 0, 0)),  # the 00:00 bar closes the day before
        (at(2025, 7, 1, 0, 0), D1, at(2025, 7, 1)),
        (at(2025, 7, 1, 0, 1), D1, at(2025, 7, 2)),
        (at(2025, 12, 31, 23, 59), D1, at(2026, 1, 1)),
        (at(2025, 7, 1, 3, 59), H4, at(2025, 7, 1, 4, 0)),
        (at(2025, 7, 1, 4, 1), H4, at(2025, 7, 1, 8, 0)),
    ],
)
def test_bucket_end_is_the_right_edge_of_a_right_closed_bucket(ts, tf, end) -> None:
    assert buckets.bucket_ends(pa.array([us(ts)], pa.int64()), tf).to_pylist() == [us(end)]


def test_the_last_bucket_of_a_day_needs_the_next_lake_day_whole() -> None:
    ends = pa.array([us(at(2025, 7, 1, 23, 55)), us(at(2025, 7, 2))], pa.int64())
    only_july_1 = [date(2025, 7, 1)]
    assert buckets.complete_mask(ends, M5, only_july_1, NOW).to_pylist() == [True, False]
    both = [date(2025, 7, 1), date(2025, 7, 2)]
    assert buckets.complete_mask(ends, M5, both, NOW).to_pylist() == [True, True]
    d1 = pa.array([us(at(2025, 7, 2))], pa.int64())  # the D1 bar of July 1
    assert buckets.complete_mask(d1, D1, only_july_1, NOW).to_pylist() == [False]
    assert buckets.complete_mask(d1, D1, [date(2025, 7, 2)], NOW).to_pylist() == [False]
    assert buckets.complete_mask(d1, D1, both, NOW).to_pylist() == [True]


def test_a_bucket_holding_the_present_is_never_complete() -> None:
    ends = pa.array([us(at(2025, 7, 1, 10)), us(at(2025, 7, 1, 11))], pa.int64())
    now = at(2025, 7, 1, 10, 30)
    whole = [date(2025, 7, 1)]  # recorded whole, say by a clock running ahead
    assert buckets.complete_mask(ends, H1, whole, now).to_pylist() == [True, False]
    assert buckets.held_back(ends, H1, whole, now) == at(2025, 7, 1, 11)
    assert buckets.held_back(ends, H1, whole, at(2025, 7, 2)) is None


def _m1(rows: list[tuple[datetime, float, float]]) -> pa.Table:
    """M1 bars (ts, price, volume) with wap = price."""
    n = len(rows)
    return pa.table(
        {
            "ts": pa.array([r[0] for r in rows], pa.timestamp("us", tz="UTC")),
            "open": [r[1] for r in rows],
            "high": [r[1] + 1 for r in rows],
            "low": [r[1] - 1 for r in rows],
            "close": [r[1] + 0.5 for r in rows],
            "volume": [r[2] for r in rows],
            "source": ["ibkr"] * n,
            "market": ["crypto"] * n,
            "symbol": ["BTC-USD"] * n,
            "exchange": ["PAXOS"] * n,
            "what_to_show": ["AGGTRADES"] * n,
            "wap": [r[1] for r in rows],
            "bar_count": [2] * n,
        }
    )


def test_aggregate_values_and_absent_empty_buckets() -> None:
    bars = _m1(
        [
            (at(2025, 7, 1, 0, 1), 10.0, 1.0),
            (at(2025, 7, 1, 0, 3), 20.0, 3.0),
            (at(2025, 7, 1, 0, 5), 30.0, 0.0),
            # 00:06-00:10 has no minute: no bucket, nothing forward-filled
            (at(2025, 7, 1, 0, 12), 40.0, 0.0),
            (at(2025, 7, 1, 0, 14), 60.0, 0.0),
        ]
    )
    out = buckets.aggregate(bars, M5, [date(2025, 7, 1)], NOW)
    assert out["ts"].to_pylist() == [at(2025, 7, 1, 0, 5), at(2025, 7, 1, 0, 15)]
    assert out["open"].to_pylist() == [10.0, 40.0]
    assert out["high"].to_pylist() == [31.0, 61.0]
    assert out["low"].to_pylist() == [9.0, 39.0]
    assert out["close"].to_pylist() == [30.5, 60.5]
    assert out["volume"].to_pylist() == [4.0, 0.0]
    assert out["bar_count"].to_pylist() == [6, 4]
    assert out["minutes"].to_pylist() == [3, 2]
    # volume-weighted where there is volume, the plain mean where there is none
    assert out["wap"].to_pylist() == [pytest.approx((10 * 1 + 20 * 3) / 4), 50.0]
    assert out["complete"].to_pylist() == [True, True]
    assert out["symbol"].to_pylist() == ["BTC-USD", "BTC-USD"]


def test_coarser_from_finer_equals_from_minutes_even_without_volume() -> None:
    rows = [
        (at(2025, 7, 1) + timedelta(minutes=m), 100.0 + m, 0.0 if m > 20 else 0.5 * m)
        for m in range(1, 61)
    ]
    bars = _m1(rows)
    whole = [date(2025, 7, 1)]
    from_m1 = buckets.aggregate(bars, H1, whole, NOW)
    from_m15 = buckets.aggregate(buckets.aggregate(bars, M15, whole, NOW), H1, whole, NOW)
    assert from_m1.num_rows == from_m15.num_rows == 1
    for name in ("ts", "open", "high", "low", "close", "bar_count", "minutes"):
        assert from_m1[name].to_pylist() == from_m15[name].to_pylist()
    assert from_m15["wap"][0].as_py() == pytest.approx(from_m1["wap"][0].as_py(), rel=1e-12)
    # and a bucket whose minutes all lack volume: the plain mean of their wap
    quiet = _m1([(at(2025, 7, 1, 1) + timedelta(minutes=m), 200.0 + m, 0.0) for m in range(1, 61)])
    from_m5 = buckets.aggregate(buckets.aggregate(quiet, M5, whole, NOW), H1, whole, NOW)
    assert from_m5["wap"][0].as_py() == pytest.approx(sum(200.0 + m for m in range(1, 61)) / 60)


def test_source_days_are_the_day_before_the_month_to_its_end() -> None:
    assert source_days(Month(2025, 1)) == (date(2024, 12, 31), date(2025, 1, 31))


def test_candidate_months_include_the_month_a_last_day_feeds() -> None:
    assert candidate_months([date(2025, 7, 30), date(2025, 7, 31)]) == [
        Month(2025, 7),
        Month(2025, 8),
    ]
    assert candidate_months([date(2025, 7, 30)]) == [Month(2025, 7)]
    assert candidate_months(
        covered(date(2025, 6, 1), date(2025, 8, 31)), date(2025, 7, 5), date(2025, 7, 6)
    ) == [Month(2025, 7)]


def test_provenance_round_trips_through_the_footer_encoding() -> None:
    coverage = covered(date(2025, 6, 30), date(2025, 7, 31), partial=(date(2025, 7, 31),))
    record = built_from(
        H1, Month(2025, 7), coverage, include_partial=True, held_back=[at(2025, 7, 31, 12)]
    )
    assert Provenance.decode(record.encode()) == record
    assert set(record.source) == set(coverage)


def test_a_part_is_rebuilt_only_when_its_source_coverage_changed() -> None:
    coverage = covered(date(2025, 6, 1), date(2025, 8, 31))
    july = Month(2025, 7)
    built = built_from(H1, july, coverage, include_partial=False)

    def decide(cov, existing, include_partial=False, now=NOW):
        return plan_part(
            BTC, H1, july, cov, existing, include_partial=include_partial, now=now
        ).reason

    assert decide(coverage, None) is Reason.MISSING
    assert decide(coverage, built) is Reason.FRESH
    refetched = {**coverage, date(2025, 7, 9): DayCoverage(date(2025, 7, 9), 1400, NOW, True)}
    assert decide(refetched, built) is Reason.STALE
    # the day before the month feeds the month's first bucket: its change counts
    edge = {**coverage, date(2025, 6, 30): DayCoverage(date(2025, 6, 30), 7, FETCHED, True)}
    assert decide(edge, built) is Reason.STALE
    # days outside the month's source do not
    other = {**coverage, date(2025, 6, 29): DayCoverage(date(2025, 6, 29), 7, FETCHED, True)}
    assert decide(other, built) is Reason.FRESH
    assert decide(coverage, built, include_partial=True) is Reason.MODE
    assert decide(coverage, Unreadable("x")) is Reason.UNREADABLE
    waiting = built_from(H1, july, coverage, include_partial=False, held_back=[at(2025, 7, 31, 23)])
    assert decide(coverage, waiting, now=at(2025, 7, 31, 22)) is Reason.FRESH
    assert decide(coverage, waiting, now=at(2025, 7, 31, 23)) is Reason.PENDING


def test_nothing_to_build_without_a_complete_bucket() -> None:
    july = Month(2025, 7)
    # only the day before the month: its last bucket needs July 1 whole
    before = covered(date(2025, 6, 30), date(2025, 6, 30))
    for tf in TIMEFRAMES:
        assert (
            plan_part(BTC, tf, july, before, None, include_partial=False, now=NOW).reason
            is Reason.NOTHING
        )
        assert (
            plan_part(BTC, tf, july, before, None, include_partial=True, now=NOW).reason
            is Reason.MISSING
        )
    # one whole day in the month: intraday buckets yes, its D1 bar needs the next day
    one = covered(date(2025, 7, 5), date(2025, 7, 5))
    assert (
        plan_part(BTC, H1, july, one, None, include_partial=False, now=NOW).reason is Reason.MISSING
    )
    assert (
        plan_part(BTC, D1, july, one, None, include_partial=False, now=NOW).reason is Reason.NOTHING
    )
    partial = covered(date(2025, 7, 5), date(2025, 7, 6), partial=(date(2025, 7, 6),))
    assert (
        plan_part(BTC, D1, july, partial, None, include_partial=False, now=NOW).reason
        is Reason.NOTHING
    )


def test_plan_symbol_scopes_months_by_the_asked_days() -> None:
    coverage = covered(date(2025, 6, 1), date(2025, 8, 31))
    plans = plan_symbol(
        BTC,
        (M5, D1),
        coverage,
        {},
        include_partial=False,
        now=NOW,
        first=date(2025, 7, 31),
        last=date(2025, 7, 31),
    )
    assert [(p.timeframe, p.month) for p in plans] == [
        (M5, Month(2025, 7)),
        (D1, Month(2025, 7)),
        (M5, Month(2025, 8)),
        (D1, Month(2025, 8)),
    ]
