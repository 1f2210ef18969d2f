"""Deterministic 1-minute crypto bars: each bar is a pure function of (seed, symbol, minute).

A day's path is a Brownian bridge in log price between two daily anchors; each anchor is a
closed-form function of (seed, symbol, day), so no cumulative state is needed and a window
asking part of a day gets exactly the bars of a window asking the whole day.
"""

from __future__ import annotations

import bisect
import hashlib
import itertools
import math
import random
import struct
from array import array
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from datetime import date, datetime, timedelta, timezone
from typing import Any

from backfill.sim.cache import ByteLRU

UTC = timezone.utc
MINUTE = timedelta(minutes=1)
MINUTES_PER_DAY = 1440
_EPOCH_DAY = date(1970, 1, 1)

# Rough price levels so the walks look like the real assets.
BASE_PRICES: dict[str, float] = {
    "BTC": 30000.0,
    "ETH": 2000.0,
    "LTC": 80.0,
    "BCH": 250.0,
    "SOL": 50.0,
    "AVAX": 25.0,
    "LINK": 12.0,
    "DOGE": 0.1,
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


# One generated bar: (start epoch seconds, open, high, low, close, volume, wap, bar_count).
Row = tuple[int, float, float, float, float, float, float, int]
_U53 = 2.0**-53
_U16 = 1.0 / 65536.0


def day_rows(seed: int, symbol: str, day: date, *, no_trade_share: float) -> tuple[Row, ...]:
    """Every bar of one UTC day as plain tuples, ignoring listing: the unit of generation.

    Random numbers come in bulk from one seeded stream (two 64-bit words per minute for the
    walk and one for the bar's shape), so the day costs a few milliseconds in pure Python.
    """
    n = MINUTES_PER_DAY
    day_index = (day - _EPOCH_DAY).days
    a0 = _anchor_log_price(seed, symbol, day_index)
    a1 = _anchor_log_price(seed, symbol, day_index + 1)
    rng = random.Random(_seed_int(seed, symbol, day_index, "day"))
    words = struct.unpack(f"<{3 * n}Q", rng.randbytes(24 * n))
    sigma = DAILY_VOL / math.sqrt(n)
    log, sqrt, cos, tau = math.log, math.sqrt, math.cos, 2 * math.pi
    # Box-Muller on the first 2n words: one normal step per minute.
    steps = [
        sigma
        * sqrt(-2.0 * log(((words[2 * i] >> 11) + 1) * _U53))
        * cos(tau * (words[2 * i + 1] >> 11) * _U53)
        for i in range(n)
    ]
    walk = [0.0, *itertools.accumulate(steps)]
    drift = (a1 - a0 - walk[-1]) / n
    decimals = price_decimals(base_price(symbol))
    exp = math.exp
    # int(x * scale + 0.5) / scale is round(x, decimals) for positive x, at half the cost:
    # the quotient is the double nearest the decimal, so "%.{decimals}f" prints it back.
    scale = 10.0**decimals
    prices = [int(exp(a0 + w + drift * k) * scale + 0.5) / scale for k, w in enumerate(walk)]
    volume_scale = 1000.0 / prices[0] ** 0.5
    skip_below = int(no_trade_share * 65536)
    epoch0 = day_index * 86400
    rows: list[Row] = []
    append_row = rows.append
    for i, word in enumerate(words[2 * n :]):
        if word & 0xFFFF < skip_below:
            continue
        open_, close = prices[i], prices[i + 1]
        top, bottom = (open_, close) if open_ > close else (close, open_)
        wick_hi = ((word >> 16) & 0xFFFF) * _U16
        wick_lo = ((word >> 32) & 0xFFFF) * _U16
        wap_u = ((word >> 48) & 0x3FF) / 1024.0
        vol_u = ((word >> 58) + wick_hi) / 64.0
        high = int(top * (1.0 + sigma * wick_hi * wick_hi * 2.0) * scale + 0.5) / scale
        low = int(bottom * (1.0 - sigma * wick_lo * wick_lo * 2.0) * scale + 0.5) / scale
        if high < top:
            high = top
        if low > bottom:
            low = bottom
        wap = int((low + wap_u * (high - low)) * scale + 0.5) / scale
        if wap > high:
            wap = high
        elif wap < low:
            wap = low
        volume = int(volume_scale * exp(3.0 * vol_u - 1.5) * 1e8 + 1.5) / 1e8
        append_row(
            (epoch0 + 60 * i, open_, high, low, close, volume, wap, 1 + int(40.0 * vol_u * wap_u))
        )
    return tuple(rows)


def to_bar(row: Row) -> SimBar:
    return SimBar(datetime.fromtimestamp(row[0], UTC), *row[1:])


def day_bars(seed: int, symbol: str, day: date, *, no_trade_share: float) -> tuple[SimBar, ...]:
    """Every bar of one UTC day as ``SimBar`` values, ignoring listing."""
    return tuple(map(to_bar, day_rows(seed, symbol, day, no_trade_share=no_trade_share)))


@dataclass(frozen=True)
class DayColumns:
    """One day's bars as compact columns (about 90 KB a day, where tuples take 0.77 MB)."""

    starts: array[int]  # epoch seconds of each bar's START
    open: array[float]
    high: array[float]
    low: array[float]
    close: array[float]
    volume: array[float]
    wap: array[float]
    bar_count: array[int]

    @classmethod
    def from_rows(cls, rows: Sequence[Row]) -> DayColumns:
        columns = list(zip(*rows, strict=True)) or [()] * 8  # no rows: 8 empty columns
        op, hi, lo, cl, vol, wap = (array("d", c) for c in columns[1:7])
        return cls(array("q", columns[0]), op, hi, lo, cl, vol, wap, array("q", columns[7]))

    def __len__(self) -> int:
        return len(self.starts)

    @property
    def nbytes(self) -> int:
        return sum(c.itemsize * len(c) for c in self._columns())

    def rows(self, first: int = 0, stop: int | None = None) -> Iterator[Row]:
        """The bars ``first:stop`` as ``Row`` tuples, built on the fly."""
        part = slice(first, stop)
        return zip(*(c[part] for c in self._columns()), strict=True)  # type: ignore[return-value]

    def index(self, start: datetime, stop: datetime) -> range:
        """Indices of the bars whose start is in [start, stop)."""
        return range(
            bisect.bisect_left(self.starts, start.timestamp()),
            bisect.bisect_left(self.starts, stop.timestamp()),
        )

    def _columns(self) -> tuple[array[Any], ...]:
        return (
            self.starts,
            self.open,
            self.high,
            self.low,
            self.close,
            self.volume,
            self.wap,
            self.bar_count,
        )


# Generated days kept for reuse; a day is asked once in a backfill, more often in tests.
DEFAULT_CACHE_BYTES = 16 << 20
_SIMBAR_DAYS = 32


class Market:
    """Bars for a set of symbols, cached per (symbol, day) within a byte budget; thread-safe."""

    def __init__(
        self,
        seed: int = 0,
        *,
        no_trade_share: float = 0.02,
        listings: dict[str, datetime] | None = None,
        cache_bytes: int = DEFAULT_CACHE_BYTES,
    ) -> None:
        self.seed = seed
        self.no_trade_share = no_trade_share
        self.listings = dict(DEFAULT_LISTINGS if listings is None else listings)
        self._cache: ByteLRU[tuple[str, date], DayColumns] = ByteLRU(cache_bytes)
        # SimBar values are for tests and the oracle; the gateway never builds them.
        self._bars: ByteLRU[tuple[str, date], tuple[SimBar, ...]] = ByteLRU(_SIMBAR_DAYS)

    def listing(self, symbol: str) -> datetime:
        """The first minute at which the symbol can trade."""
        return self.listings.get(base_of(symbol), DEFAULT_LISTING)

    def columns(self, symbol: str, day: date) -> DayColumns:
        """All bars of one day (listing applied) as compact columns, cached."""
        key = (base_of(symbol), day)
        cached = self._cache.get(key)
        if cached is not None:
            return cached
        rows = day_rows(self.seed, key[0], day, no_trade_share=self.no_trade_share)
        listed = self.listing(key[0]).timestamp()
        if rows and rows[0][0] < listed:
            rows = tuple(r for r in rows if r[0] >= listed)
        columns = DayColumns.from_rows(rows)
        self._cache.put(key, columns, columns.nbytes)
        return columns

    @property
    def cached_bytes(self) -> int:
        """Bytes of generated days held now (at most the ``cache_bytes`` budget)."""
        return self._cache.nbytes

    def day(self, symbol: str, day: date) -> tuple[SimBar, ...]:
        """All bars of one day (listing applied) as ``SimBar`` values."""
        key = (base_of(symbol), day)
        bars = self._bars.get(key)
        if bars is None:
            bars = tuple(map(to_bar, self.columns(symbol, day).rows()))
            self._bars.put(key, bars, 1)
        return bars

    def bars(self, symbol: str, start: datetime, stop: datetime) -> list[SimBar]:
        """Bars whose START is in [start, stop), in time order."""
        result: list[SimBar] = []
        for day in days_touching(max(start, self.listing(symbol)), stop):
            span = self.columns(symbol, day).index(start, stop)
            result.extend(self.day(symbol, day)[span.start : span.stop])
        return result

    def first_bar(self, symbol: str) -> datetime:
        """Start of the earliest bar (what reqHeadTimeStamp reports)."""
        day = self.listing(symbol).date()
        while True:
            columns = self.columns(symbol, day)
            if len(columns):
                return datetime.fromtimestamp(columns.starts[0], UTC)
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
    listings = {base_of(symbol): listing} if listing is not None else None
    market = Market(seed, no_trade_share=no_trade_share, listings=listings)
    return market.bars(symbol, start, stop)
