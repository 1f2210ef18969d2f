"""Deterministic 1-minute crypto bars: each bar is a pure function of (seed, symbol, minute).

A day's path is a Brownian bridge in log price between two daily anchors; each anchor is a
closed-form function of (seed, symbol, day), so no cumulative state is needed and a window
asking part of a day gets exactly the bars of a window asking the whole day.
"""

from __future__ import annotations

import bisect
import hashlib
import math
import random
import threading
from collections import OrderedDict
from dataclasses import dataclass
from datetime import date, datetime, timedelta, timezone

UTC = timezone.utc
MINUTE = timedelta(minutes=1)
MINUTES_PER_DAY = 1440
_EPOCH_DAY = date(1970, 1, 1)

# Rough price levels so the walks look like the real assets.
BASE_PRICES: dict[str, float] = {
    "BTC": 30000.0, "ETH": 2000.0, "LTC": 80.0, "BCH": 250.0, "SOL": 50.0,
    "AVAX": 25.0, "LINK": 12.0, "DOGE": 0.1,
}
DEFAULT_LISTINGS: dict[str, datetime] = {
    "BTC": datetime(2017, 1, 1, tzinfo=UTC),
    "ETH": datetime(2017, 6, 1, tzinfo=UTC),
    "LTC": datetime(2018, 1, 1, tzinfo=UTC),
    "BCH": datetime(2018, 6, 1, tzinfo=UTC),
    "SOL": datetime(2020, 9, 1, tzinfo=UTC),
    "AVAX": datetime(2021, 3, 1, 14, 30, tzinfo=UTC),
    "LINK": datetime(2020, 1, 1, tzinfo=UTC),
    "DOGE": datetime(2021, 6, 1, tzinfo=UTC),
}
DEFAULT_LISTING = datetime(2019, 1, 1, tzinfo=UTC)
DAILY_VOL = 0.03


@dataclass(frozen=True)
class SimBar:
    """One simulated 1-minute bar, stamped with its START (as IB does)."""

    start: datetime
    open: float
    high: float
    low: float
    close: float
    volume: float
    wap: float
    bar_count: int


def base_of(symbol: str) -> str:
    """``BTC-USD`` or ``btc`` → ``BTC``: bars are keyed by the base asset."""
    return symbol.split("-")[0].strip().upper()


def _seed_int(*parts: object) -> int:
    # hashlib, not hash(): str hashing is salted per process and bars must match across them.
    digest = hashlib.blake2b("|".join(map(str, parts)).encode(), digest_size=8).digest()
    return int.from_bytes(digest, "big")


def price_decimals(base_price: float) -> int:
    """About six significant digits, as an exchange tick would give."""
    return min(8, max(2, 5 - math.floor(math.log10(base_price))))


def base_price(symbol: str) -> float:
    """Typical price level of a symbol; unknown symbols get a stable made-up level."""
    if symbol in BASE_PRICES:
        return BASE_PRICES[symbol]
    return 10 ** (_seed_int("base", symbol) % 400 / 100 - 1)  # 0.1 .. 1000


def _anchor_log_price(seed: int, symbol: str, day_index: int) -> float:
    """Log price at 00:00 UTC of a day: slow cycles plus daily noise, no cumulative state."""
    rng = random.Random(_seed_int(seed, symbol, "cycles"))
    level = math.log(base_price(symbol))
    for period, amplitude in ((13.0, 0.04), (59.0, 0.1), (241.0, 0.25), (877.0, 0.45)):
        phase = rng.uniform(0, 2 * math.pi)
        stretch = rng.uniform(0.8, 1.25)
        level += amplitude * math.sin(2 * math.pi * day_index / (period * stretch) + phase)
    noise = random.Random(_seed_int(seed, symbol, day_index, "anchor")).gauss(0.0, 0.015)
    return level + noise


def day_bars(
    seed: int, symbol: str, day: date, *, no_trade_share: float
) -> tuple[SimBar, ...]:
    """Every bar of one UTC day, ignoring listing: the unit of generation and caching."""
    day_index = (day - _EPOCH_DAY).days
    a0 = _anchor_log_price(seed, symbol, day_index)
    a1 = _anchor_log_price(seed, symbol, day_index + 1)
    rng = random.Random(_seed_int(seed, symbol, day_index, "day"))
    gauss, uniform = rng.gauss, rng.random
    sigma = DAILY_VOL / math.sqrt(MINUTES_PER_DAY)
    walk = [0.0]
    for _ in range(MINUTES_PER_DAY):
        walk.append(walk[-1] + gauss(0.0, sigma))
    drift = (a1 - a0 - walk[-1]) / MINUTES_PER_DAY
    decimals = price_decimals(base_price(symbol))
    prices = [round(math.exp(a0 + w + drift * k), decimals) for k, w in enumerate(walk)]
    start0 = datetime(day.year, day.month, day.day, tzinfo=UTC)
    exp = math.exp
    bars = []
    for i in range(MINUTES_PER_DAY):
        # Draw every number for every minute so a no-trade minute never shifts the stream.
        skip = uniform() < no_trade_share
        wick_hi, wick_lo, wap_u = abs(gauss(0.0, sigma)), abs(gauss(0.0, sigma)), uniform()
        volume = round(exp(gauss(0.0, 1.0)) * 1000.0 / prices[i] ** 0.5, 8)
        if skip:
            continue
        open_, close = prices[i], prices[i + 1]
        high = max(round(max(open_, close) * (1 + wick_hi / 2), decimals), open_, close)
        low = min(round(min(open_, close) * (1 - wick_lo / 2), decimals), open_, close)
        wap = min(high, max(low, round(low + wap_u * (high - low), decimals)))
        bar_count = 1 + int(wap_u * 40 + volume**0.5)
        bars.append(
            SimBar(start0 + i * MINUTE, open_, high, low, close, max(volume, 1e-8), wap,
                   bar_count)
        )
    return tuple(bars)


class Market:
    """Bars for a set of symbols, cached per (symbol, day); safe to share between threads."""

    def __init__(
        self,
        seed: int = 0,
        *,
        no_trade_share: float = 0.02,
        listings: dict[str, datetime] | None = None,
        cache_days: int = 4096,
    ) -> None:
        self.seed = seed
        self.no_trade_share = no_trade_share
        self.listings = dict(DEFAULT_LISTINGS if listings is None else listings)
        self._cache: OrderedDict[tuple[str, date], tuple[SimBar, ...]] = OrderedDict()
        self._starts: dict[tuple[str, date], list[datetime]] = {}
        self._cache_days = cache_days
        self._lock = threading.Lock()

    def listing(self, symbol: str) -> datetime:
        """The first minute at which the symbol can trade."""
        return self.listings.get(base_of(symbol), DEFAULT_LISTING)

    def day(self, symbol: str, day: date) -> tuple[SimBar, ...]:
        """All bars of one day (listing applied), cached."""
        symbol = base_of(symbol)
        key = (symbol, day)
        with self._lock:
            cached = self._cache.get(key)
            if cached is not None:
                self._cache.move_to_end(key)
                return cached
        bars = day_bars(self.seed, symbol, day, no_trade_share=self.no_trade_share)
        listing = self.listing(symbol)
        if bars and bars[0].start < listing:
            bars = tuple(b for b in bars if b.start >= listing)
        with self._lock:
            self._cache[key] = bars
            self._starts[key] = [b.start for b in bars]
            while len(self._cache) > self._cache_days:
                old, _ = self._cache.popitem(last=False)
                self._starts.pop(old, None)
        return bars

    def day_slice(self, symbol: str, day: date, start: datetime, stop: datetime) -> range:
        """Indices into ``day(symbol, day)`` of the bars whose start is in [start, stop)."""
        self.day(symbol, day)
        starts = self._starts[(base_of(symbol), day)]
        return range(bisect.bisect_left(starts, start), bisect.bisect_left(starts, stop))

    def bars(self, symbol: str, start: datetime, stop: datetime) -> list[SimBar]:
        """Bars whose START is in [start, stop), in time order."""
        result: list[SimBar] = []
        for day in days_touching(start, stop):
            if datetime(day.year, day.month, day.day, tzinfo=UTC) + timedelta(days=1) <= (
                self.listing(symbol)
            ):
                continue
            bars = self.day(symbol, day)
            result.extend(bars[i] for i in self.day_slice(symbol, day, start, stop))
        return result

    def first_bar(self, symbol: str) -> datetime:
        """Start of the earliest bar (what reqHeadTimeStamp reports)."""
        day = self.listing(symbol).date()
        while True:
            bars = self.day(symbol, day)
            if bars:
                return bars[0].start
            day += timedelta(days=1)


def days_touching(start: datetime, stop: datetime) -> list[date]:
    """UTC days that overlap [start, stop)."""
    if stop <= start:
        return []
    first = start.astimezone(UTC).date()
    last = (stop.astimezone(UTC) - timedelta(microseconds=1)).date()
    return [first + timedelta(days=i) for i in range((last - first).days + 1)]


def bars_between(
    seed: int,
    symbol: str,
    start: datetime,
    stop: datetime,
    *,
    no_trade_share: float = 0.02,
    listing: datetime | None = None,
) -> list[SimBar]:
    """The oracle: bars whose START is in [start, stop), exactly as the gateway serves them."""
    listings = {symbol: listing} if listing is not None else None
    market = Market(seed, no_trade_share=no_trade_share, listings=listings)
    return market.bars(symbol, start, stop)
