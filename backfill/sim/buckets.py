"""Bars longer than a minute, aggregated from the 1-minute rows (pure, no I/O).

Buckets are stamped by their START and counted from midnight in the login zone (so ``1 day``
is a login-zone day and ``4 hours`` start at 00:00, 04:00, ... there); a bucket holds the
window's minutes that fall in it, and a bucket without a trade has no bar, as IB does.
"""

from __future__ import annotations

from collections.abc import Iterable
from datetime import datetime, timedelta, tzinfo

from backfill.sim.market import Row

DAY_S = 86400
# Sizes IB serves for crypto, all served here; seconds bars, weeks and months are not.
SERVED_BAR_SECONDS = frozenset(
    {60, 120, 180, 300, 600, 900, 1200, 1800, 3600, 7200, 10800, 14400, 28800, DAY_S}
)


def bucket_start(start: int, size_s: int, zone: tzinfo) -> int:
    """Epoch second at which the ``size_s`` bar holding the minute starting at ``start``
    begins: whole ``size_s`` steps from that minute's midnight in ``zone``, or the midnight
    itself for a day (a DST day has 23 or 25 hours)."""
    return bucket_span(start, size_s, zone)[0]


def bucket_span(start: int, size_s: int, zone: tzinfo) -> tuple[int, int]:
    """[begin, end) epoch seconds of that bucket; it ends at the next midnight at the latest."""
    local = datetime.fromtimestamp(start, zone)
    day = datetime(local.year, local.month, local.day, tzinfo=zone)
    midnight = int(day.timestamp())
    following = int((day.replace(tzinfo=None) + timedelta(days=1)).replace(tzinfo=zone).timestamp())
    if size_s >= DAY_S:
        return midnight, following
    begin = midnight + (start - midnight) // size_s * size_s
    return begin, min(begin + size_s, following)


def aggregate(rows: Iterable[Row], size_s: int, zone: tzinfo, decimals: int) -> list[Row]:
    """Rows (in time order) merged per bucket: open first, high max, low min, close last,
    volume summed, wap volume-weighted (rounded to the price's ``decimals``), counts summed."""
    out: list[Row] = []
    current: int | None = None
    ends = 0
    open_ = high = low = close = volume = notional = 0.0
    count = 0

    def flush() -> None:
        wap = round(notional / volume, decimals) if volume > 0 else close
        out.append(
            (
                current,
                open_,
                high,
                low,
                close,
                round(volume, 8),  # type: ignore[arg-type]
                min(max(wap, low), high),
                count,
            )
        )

    for start, o, h, lo, c, v, w, n in rows:
        if current is None or start >= ends:  # rows are in time order: a new bucket
            if current is not None:
                flush()
            bucket, ends = bucket_span(start, size_s, zone)
            current, open_, high, low, volume, notional, count = bucket, o, h, lo, 0.0, 0.0, 0
        high, low, close = max(high, h), min(low, lo), c
        volume += v
        notional += w * v
        count += n
    if current is not None:
        flush()
    return out
