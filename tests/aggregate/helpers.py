"""M1 lakes of simulator bars for the aggregate tests (importable by spawned children)."""

from __future__ import annotations

from collections.abc import Collection
from datetime import date, datetime
from pathlib import Path

import pyarrow as pa

from backfill.domain import (
    DAY,
    MINUTE,
    UTC,
    Month,
    Symbol,
    day_start,
    days_between,
)
from backfill.lake import store
from backfill.sim import bars_between
from backfill.sim.lake_form import lake_table

SEED = 7
FETCHED = datetime(2026, 1, 10, 12, 0, tzinfo=UTC)
LATER = datetime(2026, 1, 11, 12, 0, tzinfo=UTC)


def sim_bars(
    symbol: Symbol, first: date, last: date, *, seed: int = SEED, no_trade_share: float = 0.05
) -> pa.Table:
    """The simulator's bars of lake days ``[first, last]``, in lake form (ts = bar end);
    ``no_trade_share`` near 1 makes a thin market (most minutes absent)."""
    bars = bars_between(
        seed,
        symbol.base,
        day_start(first) - MINUTE,
        day_start(last) + DAY - MINUTE,
        no_trade_share=no_trade_share,
    )
    return lake_table(symbol, bars)


def write_m1(
    lake: Path,
    symbol: Symbol,
    first: date,
    last: date,
    *,
    partial: Collection[date] = (),
    fetched_at: datetime = FETCHED,
    seed: int = SEED,
    no_trade_share: float = 0.05,
) -> None:
    """Record days ``[first, last]`` of ``symbol`` in the M1 lake, a month per batch."""
    days = days_between(first, last)
    for month in sorted({Month.of(d) for d in days}):
        month_days = [d for d in days if Month.of(d) == month]
        store.write_batch(
            lake,
            symbol,
            sim_bars(
                symbol, month_days[0], month_days[-1], seed=seed, no_trade_share=no_trade_share
            ),
            month_days,
            fetched_at=fetched_at,
            partial_days=[d for d in partial if d in month_days],
        )
