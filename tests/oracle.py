"""The lake as it must be: bars straight from the simulator's generator, in lake form."""

from __future__ import annotations

from datetime import date

import pyarrow as pa

from backfill.domain import MINUTE, Symbol, Window
from backfill.lake.paths import iter_parts
from backfill.lake.store import read_part
from backfill.sim import Market


def expected_bars(market: Market, symbol: Symbol, first: date, last: date) -> list[tuple]:
    """(ts, open, high, low, close, volume, wap, bar_count) rows for days [first, last]."""
    window = Window(first, last)
    bars = market.bars(str(symbol), window.ts_start - MINUTE, window.ts_stop - MINUTE)
    return [
        (b.start + MINUTE, b.open, b.high, b.low, b.close, b.volume, b.wap, b.bar_count)
        for b in bars
    ]


def lake_rows(lake, symbol: Symbol) -> list[tuple]:
    """Every row of a symbol in the lake, in the same tuple shape as ``expected_bars``."""
    tables = [read_part(path) for s, _, path in iter_parts(lake, [symbol]) if s == symbol]
    if not tables:
        return []
    table = pa.concat_tables(tables)
    cols = ["ts", "open", "high", "low", "close", "volume", "wap", "bar_count"]
    return list(zip(*(table.column(c).to_pylist() for c in cols), strict=True))
