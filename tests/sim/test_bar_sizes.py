"""Bar sizes IB serves for crypto (issue 18): served, aggregated from the 1-minute market and
checked against an independent aggregation of the oracle; others refused, never left open."""

from __future__ import annotations

import time
from datetime import date, datetime, timedelta
from zoneinfo import ZoneInfo

import pytest

from backfill.ib.client import RequestError
from backfill.sim import NO_PACING, bars_between
from tests.sim.helpers import UTC, crypto

END = datetime(2024, 3, 4, tzinfo=UTC)  # a 2-day window: 2024-03-02 and 03 (UTC)
SIZES = {
    "2 mins": 2,
    "3 mins": 3,
    "5 mins": 5,
    "10 mins": 10,
    "15 mins": 15,
    "20 mins": 20,
    "30 mins": 30,
    "1 hour": 60,
    "2 hours": 120,
    "3 hours": 180,
    "4 hours": 240,
    "8 hours": 480,
    "1 day": 1440,
}


def expected(minutes: int, zone: str = "UTC", start=END - timedelta(days=2), end=END):
    """The oracle's minutes grouped by hand: bucket = whole steps of elapsed time from
    login-zone midnight, cut at the next midnight (a DST day has 23 or 25 hours)."""
    tz = ZoneInfo(zone)
    groups: dict[datetime, list] = {}
    for bar in bars_between(0, "BTC", start, end):
        local = bar.start.astimezone(tz)
        midnight = local.replace(hour=0, minute=0, second=0).astimezone(UTC)
        elapsed = bar.start - midnight  # in UTC: real time, not wall-clock time
        step = elapsed // timedelta(minutes=minutes) if minutes < 1440 else 0
        groups.setdefault(midnight + step * timedelta(minutes=minutes), []).append(bar)
    out = []
    for begin_utc, bars in sorted(groups.items()):
        begin = begin_utc.astimezone(tz)
        volume = sum(b.volume for b in bars)
        wap = sum(b.wap * b.volume for b in bars) / volume
        out.append(
            (
                begin,
                bars[0].open,
                max(b.high for b in bars),
                min(b.low for b in bars),
                bars[-1].close,
                volume,
                wap,
                sum(b.bar_count for b in bars),
            )
        )
    return out


def fetch(ib, size: str, end=END, duration: str = "2 D", fmt: int = 2):
    return ib.reqHistoricalData(crypto(), end, duration, size, "AGGTRADES", False, fmt)


def same(bars, oracle, *, daily: bool = False) -> None:
    assert len(bars) == len(oracle)
    for bar, (begin, o, h, lo, c, v, w, n) in zip(bars, oracle, strict=True):
        when = begin.date() if daily else begin
        assert (bar.date, bar.open, bar.high, bar.low, bar.close, bar.barCount) == (
            when,
            o,
            h,
            lo,
            c,
            n,
        )
        assert bar.volume == pytest.approx(v, abs=1e-7)
        assert bar.average == pytest.approx(w, abs=0.011)  # wap is rounded to the cent


@pytest.mark.parametrize("size", list(SIZES))
def test_each_crypto_bar_size_is_the_oracle_aggregated(make_sim, connect, size) -> None:
    ib = connect(make_sim(pacing=NO_PACING))
    bars = fetch(ib, size)
    oracle = expected(SIZES[size])
    if size == "1 day":
        same(bars, oracle, daily=True)
        assert [b.date for b in bars] == [date(2024, 3, 2), date(2024, 3, 3)]
    else:
        same(bars, [(b.astimezone(UTC), *rest) for b, *rest in oracle])
        assert len(bars) == 2 * 1440 // SIZES[size]  # every bucket traded at this share


@pytest.mark.parametrize("size", ["4 hours", "1 day"])
def test_buckets_count_from_midnight_in_the_login_zone(make_sim, connect, size) -> None:
    # Hong Kong's midnight is 16:00 UTC: a 4-hour bar starts at 16:00, 20:00, 00:00 UTC ...
    zone = "Asia/Hong_Kong"
    ib = connect(make_sim(pacing=NO_PACING, timezone=zone))
    bars = fetch(ib, size, fmt=1)
    oracle = expected(SIZES[size], zone)
    if size == "1 day":
        same(bars, oracle, daily=True)
        assert [b.date for b in bars] == [date(2024, 3, 2), date(2024, 3, 3), date(2024, 3, 4)]
    else:
        same(bars, oracle)
        assert bars[0].date == datetime(2024, 3, 2, 8, tzinfo=ZoneInfo(zone))


@pytest.mark.parametrize(("size", "count"), [("8 hours", 7), ("1 day", 2)])
def test_buckets_across_a_25_hour_day(make_sim, connect, size, count) -> None:
    # New York's clocks went back on 2024-11-03: its last 8-hour bar is 23:00-24:00 local.
    zone = "America/New_York"
    ib = connect(make_sim(pacing=NO_PACING, timezone=zone))
    end = datetime(2024, 11, 5, 5, tzinfo=UTC)  # 2024-11-05 00:00 EST
    start = datetime(2024, 11, 3, 4, tzinfo=UTC)  # 2024-11-03 00:00 EDT
    bars = fetch(ib, size, end, "176400 S", fmt=1)  # 49 hours
    oracle = expected(SIZES[size], zone, start, end)
    same(bars, oracle, daily=size == "1 day")
    assert len(bars) == count


def test_a_bucket_without_a_trade_has_no_bar(make_sim, connect) -> None:
    ib = connect(make_sim(pacing=NO_PACING, no_trade_share=0.9))
    bars = fetch(ib, "2 mins", duration="3600 S")
    starts = {
        b.start.replace(minute=b.start.minute // 2 * 2)
        for b in bars_between(0, "BTC", END - timedelta(hours=1), END, no_trade_share=0.9)
    }
    assert 0 < len(bars) == len(starts) < 30
    assert {b.date for b in bars} == starts


@pytest.mark.parametrize(
    ("size", "code"),
    [
        ("5 secs", 162),
        ("30 secs", 162),
        ("1 week", 162),
        ("1 month", 162),
        ("7 mins", 321),
        ("1 year", 321),
        ("45 mins", 321),
    ],
)
def test_other_sizes_are_refused_at_once(make_sim, connect, size, code) -> None:
    ib = connect(make_sim(pacing=NO_PACING))
    began = time.monotonic()
    with pytest.raises(RequestError) as err:
        ib.reqHistoricalData(crypto(), END, "3600 S", size, "AGGTRADES", False, 2, timeout=10)
    assert err.value.code == code and time.monotonic() - began < 8  # under the 10 s timeout
