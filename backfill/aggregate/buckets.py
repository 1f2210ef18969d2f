"""Pure bucketing: minutes (or finer buckets) in, buckets ``(end - w, end]`` out.

Tables in, tables out; no I/O. The working form ("sums") keeps what a coarser bucket needs
from a finer one, so M15 can be built from M5 exactly as from M1:
``ts`` (bucket end), open, high, low, close, volume, ``wv`` (Σ wap·volume), ``wm`` (Σ wap
over the minutes, for buckets without volume), bar_count, minutes.
"""

from __future__ import annotations

from collections.abc import Collection
from datetime import date, datetime

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from backfill.aggregate.timeframes import US_PER_DAY, US_PER_MINUTE, Timeframe
from backfill.lake.schema import AGGREGATE_SCHEMA, TS_TYPE

_EPOCH_ORDINAL = date(1970, 1, 1).toordinal()
_SUM_COLUMNS = ("ts", "open", "high", "low", "close", "volume", "wv", "wm", "bar_count", "minutes")


def to_sums(bars: pa.Table) -> pa.Table:
    """A lake table (M1, or an aggregate with ``minutes``) in the working form, ``ts`` as int64."""
    volume = bars["volume"]
    wap = bars["wap"]
    if "minutes" in bars.column_names:
        minutes = bars["minutes"]
        # A bucket without volume carries the plain mean of its minutes' wap: × minutes
        # gives back their sum (with volume, wm only matters to a parent without volume,
        # whose children all have none).
        wm = pc.multiply(wap, pc.cast(minutes, pa.float64()))
    else:
        minutes = pa.repeat(pa.scalar(1, pa.int64()), bars.num_rows)
        wm = wap
    return pa.table(
        {
            "ts": pc.cast(bars["ts"], pa.int64()),
            "open": bars["open"],
            "high": bars["high"],
            "low": bars["low"],
            "close": bars["close"],
            "volume": volume,
            "wv": pc.multiply(wap, volume),
            "wm": wm,
            "bar_count": bars["bar_count"],
            "minutes": minutes,
        }
    )


def bucket_ends(ts_us: pa.Array | pa.ChunkedArray, timeframe: Timeframe) -> pa.Array:
    """The end of the bucket ``(end - w, end]`` holding each bar end (µs since the epoch).

    The grid is anchored at the epoch, which is 00:00 UTC, and w divides a day: so it is
    anchored at every day's 00:00 too. ``ts`` itself on the grid is the end of its bucket.
    """
    width = timeframe.width_us
    # ceil(ts / w) * w for ts > 0 (the lake holds nothing before 1970)
    return pc.multiply(pc.divide(pc.add(ts_us, width - 1), width), width)


def rebucket(sums: pa.Table, timeframe: Timeframe) -> pa.Table:
    """Buckets of ``timeframe`` from a finer working table; empty buckets absent.

    Computed over runs of equal bucket end in ``ts`` order, never from a hash grouping:
    pyarrow's ``group_by`` emits groups in no promised order (sparse keys come back
    shuffled), and "first"/"last" would then take another bucket's rows downstream.
    """
    n = sums.num_rows
    if not n:
        return _empty_sums()
    ts = _np(sums["ts"])
    order = None
    if n > 1 and bool(np.any(ts[1:] < ts[:-1])):
        # The lake's parts are sorted; should a caller's table not be, sort it (stable:
        # rows with the same ts keep their order).
        order = np.argsort(ts, kind="stable")
        ts = ts[order]
    width = timeframe.width_us
    ends = (ts + (width - 1)) // width * width  # ceil(ts / w) * w, as bucket_ends
    starts = np.flatnonzero(np.concatenate(([True], ends[1:] != ends[:-1])))
    lasts = np.append(starts[1:], n) - 1

    def column(name: str) -> np.ndarray:
        values = _np(sums[name])
        return values if order is None else values[order]

    def total(name: str) -> np.ndarray:
        return np.add.reduceat(column(name), starts)

    return pa.table(
        {
            "ts": ends[starts],
            "open": column("open")[starts],
            # fmax/fmin skip NaN as Arrow's max/min do
            "high": np.fmax.reduceat(column("high"), starts),
            "low": np.fmin.reduceat(column("low"), starts),
            "close": column("close")[lasts],
            "volume": total("volume"),
            "wv": total("wv"),
            "wm": total("wm"),
            "bar_count": total("bar_count"),
            "minutes": total("minutes"),
        }
    )


def _np(column: pa.ChunkedArray | pa.Array) -> np.ndarray:
    """A non-null column as numpy (zero-copy when it is one chunk)."""
    if isinstance(column, pa.ChunkedArray):
        column = column.combine_chunks()
    values: np.ndarray = column.to_numpy(zero_copy_only=False)  # pyarrow has no stubs
    return values


def _empty_sums() -> pa.Table:
    return pa.table(
        {
            "ts": pa.array([], pa.int64()),
            **{c: pa.array([], pa.float64()) for c in _SUM_COLUMNS[1:8]},
            "bar_count": pa.array([], pa.int64()),
            "minutes": pa.array([], pa.int64()),
        }
    )


def bucket_days(ends_us: pa.Array, timeframe: Timeframe) -> tuple[pa.Array, pa.Array]:
    """Lake days (days since the epoch) of each bucket's first and last possible minute.

    The bucket ending D+1 00:00 holds the M1 bar stamped D+1 00:00, which lives in lake
    day D+1: so that bucket spans two lake days (and every D1 bucket does).
    """
    first_minute = pc.subtract(ends_us, timeframe.width_us - US_PER_MINUTE)
    return pc.divide(first_minute, US_PER_DAY), pc.divide(ends_us, US_PER_DAY)


def complete_mask(
    ends_us: pa.Array, timeframe: Timeframe, whole_days: Collection[date], now: datetime
) -> pa.Array:
    """A bucket is complete when every lake day its minutes belong to was recorded whole,
    and it has ended (a bucket holding the present is never final)."""
    whole = pa.array(sorted(d.toordinal() - _EPOCH_ORDINAL for d in whole_days), pa.int64())
    first_day, last_day = bucket_days(ends_us, timeframe)
    now_us = _us(now)
    return pc.and_(
        pc.and_(pc.is_in(first_day, value_set=whole), pc.is_in(last_day, value_set=whole)),
        pc.less_equal(ends_us, now_us),
    )


def _us(when: datetime) -> int:
    delta = when - datetime(1970, 1, 1, tzinfo=when.tzinfo)
    return (delta.days * 86_400 + delta.seconds) * 1_000_000 + delta.microseconds


def finish(
    sums: pa.Table,
    complete: pa.Array,
    constants: dict[str, str],
    *,
    include_partial: bool,
) -> pa.Table:
    """The lake form of working buckets: partial ones dropped (or kept, ``complete=false``)."""
    if not include_partial:
        sums = sums.filter(complete)
        complete = pa.repeat(pa.scalar(True), sums.num_rows)
    n = sums.num_rows
    volume = sums["volume"]
    with_volume = pc.greater(volume, 0.0)
    wap = pc.if_else(
        with_volume,
        pc.divide(sums["wv"], pc.if_else(with_volume, volume, 1.0)),
        pc.divide(sums["wm"], pc.cast(sums["minutes"], pa.float64())),
    )
    columns = {
        "ts": pc.cast(sums["ts"], TS_TYPE),
        "open": sums["open"],
        "high": sums["high"],
        "low": sums["low"],
        "close": sums["close"],
        "volume": volume,
        **{name: pa.repeat(pa.scalar(constants.get(name, "")), n) for name in _CONSTANTS},
        "wap": wap,
        "bar_count": sums["bar_count"],
        "minutes": sums["minutes"],
        "complete": complete,
    }
    return pa.table(columns, schema=AGGREGATE_SCHEMA)


_CONSTANTS = ("source", "market", "symbol", "exchange", "what_to_show")


def in_span(sums: pa.Table, start: datetime, stop: datetime) -> pa.Table:
    """The buckets whose end is in ``[start, stop)``: a month's part holds those."""
    ts = sums["ts"]
    return sums.filter(pc.and_(pc.greater_equal(ts, _us(start)), pc.less(ts, _us(stop))))


def aggregate(
    bars: pa.Table,
    timeframe: Timeframe,
    whole_days: Collection[date],
    now: datetime,
    *,
    include_partial: bool = False,
) -> pa.Table:
    """Lake bars (M1 or a finer aggregate) → ``timeframe`` buckets in lake form, in one call."""
    sums = rebucket(to_sums(bars), timeframe)
    constants = {name: bars[name][0].as_py() for name in _CONSTANTS} if bars.num_rows else {}
    mask = complete_mask(sums["ts"], timeframe, whole_days, now)
    return finish(sums, mask, constants, include_partial=include_partial)


def held_back(
    ends_us: pa.Array, timeframe: Timeframe, whole_days: Collection[date], now: datetime
) -> datetime | None:
    """The latest end among buckets left out only because they had not ended at ``now``."""
    whole = pa.array(sorted(d.toordinal() - _EPOCH_ORDINAL for d in whole_days), pa.int64())
    first_day, last_day = bucket_days(ends_us, timeframe)
    waiting = pc.and_(
        pc.and_(pc.is_in(first_day, value_set=whole), pc.is_in(last_day, value_set=whole)),
        pc.greater(ends_us, _us(now)),
    )
    latest = pc.max(pc.filter(ends_us, waiting)).as_py()
    return None if latest is None else datetime.fromtimestamp(latest / 1e6, tz=now.tzinfo)
