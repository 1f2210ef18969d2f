"""Benchmark Parquet write options for a part: size on disk, write time, read time.

Writes the simulator's bars (BTC and ETH, a week and a month) once per candidate option set
and prints, per candidate, the bytes and the median write / read milliseconds (pyarrow
``read_table``, DuckDB ``select *`` to Arrow, and a DuckDB scan aggregating every float).
The candidate named ``chosen`` is the store's own ``PART_WRITE_OPTIONS``.

Usage: python scripts/bench_encoding.py [--repeat 9] [--seed 1]
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from collections.abc import Callable
from datetime import date, datetime, timedelta
from pathlib import Path
from typing import Any

import duckdb
import pyarrow as pa
import pyarrow.parquet as pq

from backfill.domain import (
    MINUTE,
    UTC,
    Symbol,
    day_start,
    months_between,
)
from backfill.lake import store
from backfill.lake.schema import CONSTANT_COLUMNS, PART_WRITE_OPTIONS
from backfill.sim.lake_form import lake_table
from backfill.sim.market import bars_between

FLOATS = ["open", "high", "low", "close", "volume", "wap"]
TEXT = list(CONSTANT_COLUMNS)
START = datetime(2025, 7, 1, tzinfo=UTC)


def sim_table(seed: int, symbol: Symbol, days: int, first: datetime = START) -> pa.Table:
    """The simulator's bars ending in ``days`` days from ``first``, as the worker writes them."""
    start = first - MINUTE  # bar starts, so that the bar ends fall in the days
    bars = bars_between(seed, symbol.base, start, start + timedelta(days=days))
    return lake_table(symbol, bars)


def candidates() -> dict[str, dict[str, Any]]:
    text_dict = {"use_dictionary": TEXT}
    delta_ts = {**text_dict, "column_encoding": {"ts": "DELTA_BINARY_PACKED"}}
    delta_ints = {
        **text_dict,
        "column_encoding": {"ts": "DELTA_BINARY_PACKED", "bar_count": "DELTA_BINARY_PACKED"},
    }
    split = {
        **text_dict,
        "column_encoding": {
            "ts": "DELTA_BINARY_PACKED",
            **dict.fromkeys(FLOATS, "BYTE_STREAM_SPLIT"),
        },
    }
    return {
        "old: dictionary everywhere": {},
        "dictionary on text only": text_dict,
        "+ ts delta": delta_ts,
        "+ ts, bar_count delta": delta_ints,
        "+ ts delta, floats byte-split": split,
        "+ ts delta, zstd 3": {**delta_ts, "compression_level": 3},
        "+ ts delta, zstd 9": {**delta_ts, "compression_level": 9},
        "+ ts delta, zstd 19": {**delta_ts, "compression_level": 19},
        "+ ts delta, split, zstd 9": {**split, "compression_level": 9},
        "+ ts delta, row group a day": {**delta_ts, "row_group_size": 1440},
        "+ ts delta, row group 10k": {**delta_ts, "row_group_size": 10_000},
        "chosen": {},  # the store's options, filled in below
    }


def median_ms(action: Callable[[], object], repeat: int) -> float:
    times = []
    action()  # warm the page cache and the readers' first-call costs
    for _ in range(repeat):
        started = time.perf_counter()
        action()
        times.append(time.perf_counter() - started)
    return statistics.median(times) * 1e3


def to_arrow(relation: duckdb.DuckDBPyRelation) -> pa.Table:
    # DuckDB 1.x names it fetch_arrow_table, 2.x to_arrow_table.
    fetch = getattr(relation, "to_arrow_table", None) or relation.fetch_arrow_table
    return fetch()


def write(table: pa.Table, path: Path, options: dict[str, Any]) -> None:
    # Every candidate keeps the contract's ZSTD and statistics; only the options vary.
    pq.write_table(table, path, **{"compression": "zstd", "write_statistics": True, **options})


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--repeat", type=int, default=9)
    parser.add_argument("--seed", type=int, default=1)
    args = parser.parse_args()
    datasets = {
        (symbol, days): sim_table(args.seed, symbol, days)
        for symbol in (Symbol("BTC", "USD"), Symbol("ETH", "USD"))
        for days in (7, 31)
    }
    options_by_name = candidates()
    options_by_name["chosen"] = {
        k: v for k, v in PART_WRITE_OPTIONS.items() if k not in ("compression", "write_statistics")
    }
    con = duckdb.connect()
    con.execute("set threads=1")  # a shared 2-core machine: compare like with like
    header = (
        f"{'options':32} {'BTC wk KB':>9} {'BTC mo KB':>9} {'ETH wk KB':>9} {'ETH mo KB':>9} "
        f"{'B/row':>6} {'write ms':>8} {'pa read':>7} {'duck *':>7} {'duck agg':>8}"
    )
    print(f"rows: {', '.join(f'{s} {d}d {t.num_rows:,}' for (s, d), t in datasets.items())}")
    print("times: median ms for the BTC month part; reads single-threaded")
    print(header)
    print("-" * len(header))
    with tempfile.TemporaryDirectory(prefix="bench-encoding-") as folder:
        for name, options in options_by_name.items():
            sizes = []
            for (symbol, days), table in datasets.items():
                path = Path(folder) / f"{symbol}-{days}.parquet"
                write(table, path, options)
                sizes.append(path.stat().st_size)
            month = datasets[(Symbol("BTC", "USD"), 31)]
            path = Path(folder) / "BTC-USD-31.parquet"
            write_ms = median_ms(lambda: write(month, path, options), args.repeat)  # noqa: B023
            read_ms = median_ms(
                lambda: pq.read_table(path, use_threads=False),  # noqa: B023
                args.repeat,
            )
            star_ms = median_ms(
                lambda: to_arrow(con.sql(f"select * from read_parquet('{path}')")),  # noqa: B023
                args.repeat,
            )
            agg_ms = median_ms(
                lambda: con.execute(
                    "select count(*), min(ts), max(ts), sum(open), max(high), min(low), "
                    f"avg(close), sum(volume), avg(wap) from read_parquet('{path}')"  # noqa: B023
                ).fetchall(),
                args.repeat,
            )
            assert pq.read_table(path).equals(month), name  # every option reads back the same
            per_row = sizes[1] / month.num_rows
            kb = " ".join(f"{size / 1024:9.0f}" for size in sizes)
            print(
                f"{name:32} {kb} {per_row:6.1f} {write_ms:8.1f} {read_ms:7.1f} {star_ms:7.1f} "
                f"{agg_ms:8.1f}"
            )
        print(symbol_years(args.seed, Path(folder) / "lake"))


def symbol_years(seed: int, lake: Path) -> str:
    """A year (2025) of each symbol written through the store, a month at a time."""
    lines = ["symbol-year through the store (12 monthly parts, chosen options):"]
    fetched_at = datetime.now(UTC)
    for symbol in (Symbol("BTC", "USD"), Symbol("ETH", "USD")):
        rows = size = 0
        for month in months_between(date(2025, 1, 1), date(2025, 12, 31)):
            days = month.days()
            bars = sim_table(seed, symbol, len(days), day_start(month.first_day))
            [part] = store.write_batch(lake, symbol, bars, days, fetched_at=fetched_at)
            rows += part.rows
            size += part.size_bytes
        lines.append(f"  {symbol}: {rows:,} rows, {size / 2**20:.1f} MiB ({size / rows:.1f} B/row)")
    return "\n".join(lines)


if __name__ == "__main__":
    main()
