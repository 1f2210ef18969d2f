"""Levels from M1 rows (levels.md section 2): pure, numpy over whole windows at once.

Input bars are the lake's rows (``ts`` = bar END), sorted and unique on ``ts``; the
coverage is the set of lake days recorded complete. Nothing here reads a file or a clock.
"""

from __future__ import annotations

from collections.abc import Collection, Sequence
from dataclasses import dataclass
from datetime import date, datetime
from functools import lru_cache

import numpy as np
import pyarrow as pa

from backfill.domain import MARKET, SOURCE
from backfill.levels.profiles import Profile, Scan, SessionWindows, Window, windows
from backfill.levels.tables import DIRECTION, LEVELS_SCHEMA

_US = 1_000_000
_MIN_US = 60 * _US
_EPOCH_ORDINAL = date(1970, 1, 1).toordinal()


@dataclass(frozen=True)
class Bars:
    """M1 rows as numpy arrays: ``ts`` in microseconds since the epoch (bar end)."""

    ts: np.ndarray
    open: np.ndarray
    high: np.ndarray
    low: np.ndarray
    close: np.ndarray

    @classmethod
    def of(cls, table: pa.Table) -> Bars:
        def column(name: str) -> np.ndarray:
            return table[name].combine_chunks().to_numpy(zero_copy_only=False)

        ts = table["ts"].combine_chunks().cast(pa.int64()).to_numpy(zero_copy_only=False)
        return cls(ts, column("open"), column("high"), column("low"), column("close"))

    @property
    def mid(self) -> np.ndarray:
        return (self.open + self.close) / 2

    def until(self, t_us: int) -> Bars:
        """The rows with ``ts <= t_us`` (the lake as it was at ``t``)."""
        n = int(np.searchsorted(self.ts, t_us, side="right"))
        return Bars(self.ts[:n], self.open[:n], self.high[:n], self.low[:n], self.close[:n])


def us(when: datetime) -> int:
    return int(when.timestamp()) * _US


@lru_cache(maxsize=4096)
def session_windows(profile: Profile, day: date, scan: Scan | None) -> SessionWindows:
    return windows(profile, day, scan)


@dataclass(frozen=True)
class WindowStats:
    """Per window: bar count, max high and its first bar, min low and its first bar, last bar."""

    n: np.ndarray
    high: np.ndarray
    high_at: np.ndarray  # bar index, -1 when empty
    low: np.ndarray
    low_at: np.ndarray
    last_at: np.ndarray


def window_stats(bars: Bars, starts_us: np.ndarray, ends_us: np.ndarray) -> WindowStats:
    """Statistics of the bars with ``start < ts <= end`` for each window (may overlap)."""
    lo = np.searchsorted(bars.ts, starts_us, side="right")
    hi = np.searchsorted(bars.ts, ends_us, side="right")
    n = hi - lo
    m = len(n)
    high = np.full(m, np.nan)
    low = np.full(m, np.nan)
    high_at = np.full(m, -1, dtype=np.int64)
    low_at = np.full(m, -1, dtype=np.int64)
    last_at = np.where(n > 0, hi - 1, -1)
    full = np.flatnonzero(n > 0)
    if len(full):
        counts = n[full]
        offsets = np.concatenate(([0], np.cumsum(counts)[:-1]))
        # Every bar of every non-empty window, window after window.
        index = np.arange(counts.sum()) - np.repeat(offsets - lo[full], counts)
        h, lw = bars.high[index], bars.low[index]
        hmax = np.maximum.reduceat(h, offsets)
        lmin = np.minimum.reduceat(lw, offsets)
        big = np.iinfo(np.int64).max
        # The first bar reaching the value: value_ts is when the level became what it is.
        high_at[full] = np.minimum.reduceat(
            np.where(h == np.repeat(hmax, counts), index, big), offsets
        )
        low_at[full] = np.minimum.reduceat(
            np.where(lw == np.repeat(lmin, counts), index, big), offsets
        )
        high[full], low[full] = hmax, lmin
    return WindowStats(n, high, high_at, low, low_at, last_at)


def window_complete(window: Window, complete_days: Collection[date]) -> bool:
    """Every lake day the window's bars belong to is recorded complete (levels.md section 2)."""
    first, last = window.lake_days()
    day = first
    while day <= last:
        if day not in complete_days:
            return False
        day = date.fromordinal(day.toordinal() + 1)
    return True


def compute_levels(
    bars: Bars,
    symbol: str,
    profile: Profile,
    days: Sequence[date],
    complete_days: Collection[date],
) -> pa.Table:
    """Every level row of ``days`` (session dates), sorted by day then level order, all rows
    (complete or not): the caller drops incomplete rows unless asked for them."""
    wins = [session_windows(profile, d, None) for d in days]
    kinds: list[tuple[str, list[Window]]] = [("PD", [w.pd for w in wins])]
    if profile.premarket is not None:
        kinds.append(("PM", [w.pm for w in wins]))  # type: ignore[misc]
    kinds.append(("OR", [w.opening for w in wins]))
    ts = bars.ts
    per: dict[str, dict[str, np.ndarray]] = {}
    stats: dict[str, WindowStats] = {}
    for kind, ws in kinds:
        starts = np.array([us(w.start) for w in ws], dtype=np.int64)
        ends = np.array([us(w.end) for w in ws], dtype=np.int64)
        s = stats[kind] = window_stats(bars, starts, ends)
        common: dict[str, np.ndarray] = {
            "window_start_utc": starts,
            "window_end_utc": ends,
            "available_from_utc": ends,
            "minutes": s.n.astype(np.int32),
            "expected_minutes": ((ends - starts) // _MIN_US).astype(np.int32),
            "complete": np.array([window_complete(w, complete_days) for w in ws], dtype=bool),
        }

        def at(index: np.ndarray) -> np.ndarray:
            return np.where(index >= 0, ts[np.maximum(index, 0)] if len(ts) else 0, 0)

        empty = s.n == 0
        if kind == "PD":
            close = bars.close[np.maximum(s.last_at, 0)] if len(ts) else np.zeros(len(ws))
            per["PDH"] = {**common, "value": s.high, "value_ts": at(s.high_at), "null": empty}
            per["PDL"] = {**common, "value": s.low, "value_ts": at(s.low_at), "null": empty}
            per["PDC"] = {
                **common,
                "value": np.where(empty, np.nan, close),
                "value_ts": at(s.last_at),
                "null": empty,
            }
        else:
            h, lo_ = f"{kind}H", f"{kind}L"
            per[h] = {**common, "value": s.high, "value_ts": at(s.high_at), "null": empty}
            per[lo_] = {**common, "value": s.low, "value_ts": at(s.low_at), "null": empty}
    orh, orl = stats["OR"].high, stats["OR"].low
    or_empty = stats["OR"].n == 0
    names = list(per)
    n_days, k = len(days), len(names)
    valid_to = np.array([us(w.session.end) for w in wins], dtype=np.int64)

    def stack(field: str) -> np.ndarray:
        return np.stack([per[name][field] for name in names], axis=1).ravel()

    value = stack("value")
    null = stack("null")
    inside = np.zeros((n_days, k), dtype=bool)
    inside_null = np.ones((n_days, k), dtype=bool)
    for j, name in enumerate(names):
        if name in ("PDH", "PDL", "PMH", "PML"):
            v = per[name]["value"]
            inside[:, j] = (orl < v) & (v < orh)
            inside_null[:, j] = or_empty | per[name]["null"]
    rows = n_days * k
    ts_type = LEVELS_SCHEMA.field("value_ts").type

    def stamps(values: np.ndarray, mask: np.ndarray | None = None) -> pa.Array:
        return pa.array(values.astype(np.int64), pa.int64(), mask=mask).cast(ts_type)

    columns = {
        "source": pa.array([SOURCE] * rows, pa.string()),
        "market": pa.array([MARKET] * rows, pa.string()),
        "symbol": pa.array([symbol] * rows, pa.string()),
        "profile": pa.array([profile.name] * rows, pa.string()),
        "tz": pa.array([profile.tz] * rows, pa.string()),
        # From day numbers: pa.array of numpy datetime64 imports pandas (1 s at start-up).
        "session_date": pa.array(
            np.repeat(np.array([d.toordinal() - _EPOCH_ORDINAL for d in days], dtype=np.int32), k)
        ).cast(pa.date32()),
        "level": pa.array(names * n_days, pa.string()),
        "direction": pa.array([DIRECTION[name] for name in names] * n_days, pa.string()),
        "value": pa.array(value, pa.float64(), mask=null),
        "value_ts": stamps(stack("value_ts"), null),
        "window_start_utc": stamps(stack("window_start_utc")),
        "window_end_utc": stamps(stack("window_end_utc")),
        "available_from_utc": stamps(stack("available_from_utc")),
        "valid_to_utc": stamps(np.repeat(valid_to, k)),
        "minutes": pa.array(stack("minutes"), pa.int32()),
        "expected_minutes": pa.array(stack("expected_minutes"), pa.int32()),
        "complete": pa.array(stack("complete"), pa.bool_()),
        "inside_or": pa.array(inside.ravel(), pa.bool_(), mask=inside_null.ravel()),
    }
    return pa.table(columns, schema=LEVELS_SCHEMA)
