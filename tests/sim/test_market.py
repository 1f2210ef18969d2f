"""The bar oracle: pure, window-independent, plausible."""

from __future__ import annotations

import itertools
from datetime import date, datetime, timedelta

import pytest

from backfill.sim import market as market_module
from backfill.sim.market import Market, bars_between, day_bars
from backfill.sim.protocol import fmt_float
from tests.sim.helpers import UTC

START = datetime(2024, 5, 10, tzinfo=UTC)


def test_bars_are_window_independent() -> None:
    whole = bars_between(3, "ETH", START - timedelta(days=1), START + timedelta(days=1))
    part = bars_between(3, "ETH", START - timedelta(minutes=7), START + timedelta(hours=5))
    assert part and part == [b for b in whole if b.start in {p.start for p in part}]
    assert [b.start for b in part] == [
        b.start
        for b in whole
        if START - timedelta(minutes=7) <= b.start < START + timedelta(hours=5)
    ]


def test_pure_function_of_seed_symbol_minute() -> None:
    a = day_bars(1, "BTC", START.date(), no_trade_share=0.02)
    assert a == day_bars(1, "BTC", START.date(), no_trade_share=0.02)
    assert a != day_bars(2, "BTC", START.date(), no_trade_share=0.02)
    assert [b.start for b in a] != [
        b.start for b in day_bars(1, "ETH", START.date(), no_trade_share=0.02)
    ]
    hour = [b for b in a if b.start < START + timedelta(hours=1)]
    assert Market(1).bars("btc-usd", START, START + timedelta(hours=1)) == hour


def test_bars_are_plausible() -> None:
    bars = Market(0).bars("BTC", START, START + timedelta(days=3))
    assert 0.95 * 3 * 1440 < len(bars) < 3 * 1440  # ~2% of minutes have no trade
    for prev, bar in itertools.pairwise(bars):
        assert bar.low <= min(bar.open, bar.close) <= max(bar.open, bar.close) <= bar.high
        assert bar.low <= bar.wap <= bar.high
        assert bar.volume > 0 and bar.bar_count >= 1
        if bar.start - prev.start == timedelta(minutes=1):
            assert bar.open == prev.close  # a continuous walk, also across midnight
        assert abs(bar.close / prev.close - 1) < 0.02
    for bar in bars[:200]:
        for value in (bar.open, bar.high, bar.low, bar.close, bar.volume, bar.wap):
            assert float(fmt_float(value)) == value


def test_no_trade_share_and_listing() -> None:
    none_missing = bars_between(0, "SOL", START, START + timedelta(days=1), no_trade_share=0.0)
    assert len(none_missing) == 1440
    listing = datetime(2024, 5, 10, 12, 0, tzinfo=UTC)
    listed = bars_between(0, "SOL", START, START + timedelta(days=1), listing=listing)
    assert listed and listed[0].start >= listing
    assert bars_between(0, "SOL", START - timedelta(days=5), listing, listing=listing) == []


def test_a_day_once_made_is_served_from_the_cache(monkeypatch: pytest.MonkeyPatch) -> None:
    made: list[date] = []
    make = market_module.day_rows

    def counted(seed: int, symbol: str, day: date, *, no_trade_share: float) -> tuple:
        made.append(day)
        return make(seed, symbol, day, no_trade_share=no_trade_share)

    monkeypatch.setattr(market_module, "day_rows", counted)
    market = Market(0)
    span = (START - timedelta(minutes=1), START + timedelta(days=1))
    first = market.bars("LINK", *span)
    assert sorted(made) == [START.date() - timedelta(days=1), START.date()]
    for _ in range(20):
        assert market.bars("LINK", *span) == first
    assert len(made) == 2, "a cached day was made again"


def test_first_bar_is_head_timestamp() -> None:
    market = Market(0, listings={"AVAX": datetime(2021, 3, 1, 14, 30, tzinfo=UTC)})
    first = market.first_bar("AVAX")
    assert first >= datetime(2021, 3, 1, 14, 30, tzinfo=UTC)
    assert market.bars("AVAX", first - timedelta(days=2), first) == []
    assert first.date() == date(2021, 3, 1)
