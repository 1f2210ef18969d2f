"""The simulator's bars in lake form: what a correct fetch of them writes (tests, benchmarks)."""

from __future__ import annotations

from collections.abc import Sequence

import pyarrow as pa

from backfill.domain import EXCHANGE, MARKET, MINUTE, SOURCE, WHAT_TO_SHOW, Symbol
from backfill.lake.schema import BAR_SCHEMA
from backfill.sim.market import SimBar


def lake_table(symbol: Symbol, bars: Sequence[SimBar]) -> pa.Table:
    """``bars`` of ``symbol`` as lake rows: ts is the bar END (IB stamps the start)."""
    n = len(bars)
    return pa.table(
        {
            "ts": [b.start + MINUTE for b in bars],
            "open": [b.open for b in bars],
            "high": [b.high for b in bars],
            "low": [b.low for b in bars],
            "close": [b.close for b in bars],
            "volume": [b.volume for b in bars],
            "source": [SOURCE] * n,
            "market": [MARKET] * n,
            "symbol": [str(symbol)] * n,
            "exchange": [EXCHANGE] * n,
            "what_to_show": [WHAT_TO_SHOW] * n,
            "wap": [b.wap for b in bars],
            "bar_count": [b.bar_count for b in bars],
        },
        schema=BAR_SCHEMA,
    )
