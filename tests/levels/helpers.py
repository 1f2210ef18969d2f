"""M1 lakes of hand-made bars for the levels tests, written through the store with coverage."""

from __future__ import annotations

from collections.abc import Collection, Mapping
from datetime import date, datetime, timedelta
from pathlib import Path

import pyarrow as pa

from backfill.domain import EXCHANGE, MARKET, SOURCE, UTC, WHAT_TO_SHOW, Month, Symbol, days_between
from backfill.lake import store
from backfill.lake.schema import BAR_SCHEMA

BTC = Symbol("BTC", "USD")
FETCHED = datetime(2026, 1, 10, 12, 0, tzinfo=UTC)
OHLC = tuple[float, float, float, float]


def at(text: str) -> datetime:
    """``2025-07-15T13:37`` as a UTC bar end."""
    return datetime.fromisoformat(text).replace(tzinfo=UTC)


def bars_table(symbol: Symbol, rows: Mapping[datetime, OHLC]) -> pa.Table:
    ts = sorted(rows)
    o, h, lo, c = (list(x) for x in zip(*(rows[t] for t in ts), strict=True)) if ts else ([],) * 4
    n = len(ts)
    return pa.table(
        {
            "ts": ts,
            "open": o,
            "high": h,
            "low": lo,
            "close": c,
            "volume": [1.0] * n,
            "source": [SOURCE] * n,
            "market": [MARKET] * n,
            "symbol": [str(symbol)] * n,
            "exchange": [EXCHANGE] * n,
            "what_to_show": [WHAT_TO_SHOW] * n,
            "wap": c,
            "bar_count": [1] * n,
        },
        schema=BAR_SCHEMA,
    )


def flat_days(first: date, last: date, price: float = 100.0) -> dict[datetime, OHLC]:
    """Every minute of lake days ``first`` … ``last`` flat at ``price``."""
    start = datetime(first.year, first.month, first.day, tzinfo=UTC)
    n = ((last - first).days + 1) * 1440
    return {start + timedelta(minutes=i): (price,) * 4 for i in range(n)}


def write_lake(
    lake: Path,
    rows: Mapping[datetime, OHLC],
    first: date,
    last: date,
    *,
    symbol: Symbol = BTC,
    partial: Collection[date] = (),
    fetched_at: datetime = FETCHED,
) -> None:
    """Record lake days ``first`` … ``last`` holding ``rows``, a month per batch."""
    days = days_between(first, last)
    table = bars_table(symbol, rows)
    for month in sorted({Month.of(d) for d in days}):
        month_days = [d for d in days if Month.of(d) == month]
        lo = datetime(month_days[0].year, month_days[0].month, month_days[0].day, tzinfo=UTC)
        hi = datetime.combine(month_days[-1] + timedelta(days=1), datetime.min.time(), UTC)
        part = table.filter(
            pa.compute.and_(
                pa.compute.greater_equal(table["ts"], pa.scalar(lo, table["ts"].type)),
                pa.compute.less(table["ts"], pa.scalar(hi, table["ts"].type)),
            )
        )
        store.write_batch(
            lake,
            symbol,
            part,
            month_days,
            fetched_at=fetched_at,
            partial_days=[d for d in partial if d in month_days],
        )


def build_child(lake: Path, start, profiles: str) -> None:  # type: ignore[no-untyped-def]
    """Child body: ``backfill levels`` over the lake once ``start`` fires."""
    from backfill.levels.build import LevelsRequest, levels_lake
    from backfill.levels.profiles import parse_profiles

    start.wait()
    assert levels_lake(LevelsRequest(lake, parse_profiles(profiles))).ok


def pause_before_replace_build(lake: Path, paused) -> None:  # type: ignore[no-untyped-def]
    """Child body: build, but freeze between the complete temp file and os.replace."""
    import threading

    from backfill.levels.build import LevelsRequest, levels_lake

    def freeze(_tmp: Path) -> None:
        paused.set()
        threading.Event().wait()  # until the parent's SIGKILL

    store._before_replace = freeze
    levels_lake(LevelsRequest(lake))
