"""Benchmark the lake: write a month of M1 bars for many symbols a day at a time, then verify.

Prints seconds for the writes and for verify, and the write amplification
(bytes written / final bytes). Usage: python scripts/bench_lake.py [--symbols 20] [--keep DIR]
"""

from __future__ import annotations

import argparse
import shutil
import subprocess
import sys
import tempfile
import time
from datetime import date, datetime
from pathlib import Path

import numpy as np
import pyarrow as pa

from backfill.domain import (
    EXCHANGE,
    MARKET,
    SOURCE,
    UTC,
    WHAT_TO_SHOW,
    Month,
    Symbol,
    day_start,
)
from backfill.lake import store
from backfill.lake.paths import iter_parts
from backfill.lake.schema import BAR_SCHEMA
from backfill.lake.verify import verify_lake

NO_TRADE_SHARE = 0.03  # minutes without a bar, as a thin market would have


def day_of_bars(symbol: Symbol, day: date, rng: np.random.Generator) -> pa.Table:
    """A random-walk day of bars with a share of minutes missing."""
    minutes = np.flatnonzero(rng.random(1440) >= NO_TRADE_SHARE)
    n = len(minutes)
    start_us = int(day_start(day).timestamp()) * 1_000_000
    ts = start_us + minutes.astype(np.int64) * 60_000_000
    close = 100.0 * np.exp(np.cumsum(rng.normal(0, 1e-3, n)))
    open_ = np.concatenate([[close[0]], close[:-1]])
    high = np.maximum(open_, close) * (1 + rng.random(n) * 1e-3)
    low = np.minimum(open_, close) * (1 - rng.random(n) * 1e-3)
    columns = {
        "ts": pa.array(ts, pa.timestamp("us", tz="UTC")),
        "open": open_,
        "high": high,
        "low": low,
        "close": close,
        "volume": rng.random(n) * 3,
        "source": pa.array([SOURCE] * n),
        "market": pa.array([MARKET] * n),
        "symbol": pa.array([str(symbol)] * n),
        "exchange": pa.array([EXCHANGE] * n),
        "what_to_show": pa.array([WHAT_TO_SHOW] * n),
        "wap": (open_ + close) / 2,
        "bar_count": rng.integers(1, 50, n),
    }
    return pa.table(columns, schema=BAR_SCHEMA)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--symbols", type=int, default=20)
    parser.add_argument("--month", default="2025-07")
    parser.add_argument("--keep", type=Path, help="write the lake here and keep it")
    args = parser.parse_args()
    year, month_number = (int(x) for x in args.month.split("-"))
    month = Month(year, month_number)
    symbols = [Symbol(f"S{i:02d}", "USD") for i in range(args.symbols)]
    rng = np.random.default_rng(7)
    lake = args.keep or Path(tempfile.mkdtemp(prefix="bench-lake-"))

    # Generate first, so the timings measure the store only.
    batches = [
        (symbol, day, day_of_bars(symbol, day, rng)) for day in month.days() for symbol in symbols
    ]
    rows = sum(table.num_rows for _, _, table in batches)
    fetched_at = datetime.now(UTC)
    written = 0
    started = time.perf_counter()
    for symbol, day, table in batches:
        for part in store.write_batch(lake, symbol, table, [day], fetched_at=fetched_at):
            written += part.size_bytes
    write_seconds = time.perf_counter() - started
    final = sum(path.stat().st_size for _, _, path in iter_parts(lake))

    started = time.perf_counter()
    report = verify_lake(lake)
    verify_seconds = time.perf_counter() - started
    started = time.perf_counter()
    cli = subprocess.run(
        [sys.executable, "-m", "backfill", "verify", "--lake", str(lake), "--json"],
        capture_output=True,
        check=False,
    )
    cli_seconds = time.perf_counter() - started

    per_batch_ms = write_seconds / len(batches) * 1e3
    print(f"lake              {lake}")
    print(f"symbols x days    {len(symbols)} x {len(month.days())} = {len(batches)} day-batches")
    print(f"rows              {rows:,}")
    print(f"write             {write_seconds:.2f} s  ({per_batch_ms:.1f} ms per day-batch)")
    print(f"write rate        {rows / write_seconds:,.0f} rows/s")
    print(f"bytes written     {written:,}")
    print(f"final bytes       {final:,}  ({final / rows:.1f} bytes/row)")
    print(f"write amplif.     {written / final:.1f}x")
    print(
        f"verify (library)  {verify_seconds:.2f} s  ({report.errors} errors, "
        f"{report.warnings} warnings)"
    )
    print(
        f"verify (CLI)      {cli_seconds:.2f} s  (exit {cli.returncode}, "
        "interpreter start included)"
    )
    if not args.keep:
        shutil.rmtree(lake)


if __name__ == "__main__":
    main()
