"""Benchmark ``backfill aggregate`` against a DuckDB script doing the same aggregation.

Builds (once, cached in a temp folder) an M1 lake of 20 symbols x 12 months of simulator
bars (about 10 M rows), then times, each in its own process, in the same run:
the full build of M5, M15, H1 and D1; DuckDB aggregating the same M1 parts into the same
four timeframes and writing Parquet (ZSTD, one file per symbol-month); the rerun with
nothing new; the rebuild after one M1 day of one symbol is fetched again. Prints seconds
and peak RSS. Usage: python scripts/bench_aggregate.py [--symbols 20] [--months 12]
[--cache DIR] [--repeat 1]
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from datetime import date, datetime, timedelta
from pathlib import Path

import pyarrow as pa
import pyarrow.compute as pc

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
from backfill.lake.paths import dataset_root, market_dir
from backfill.lake.schema import BAR_SCHEMA
from backfill.sim.market import day_rows

TIMEFRAMES = ("M5", "M15", "H1", "D1")
FIRST_MONTH = Month(2024, 1)
FETCHED = datetime(2025, 6, 1, tzinfo=UTC)

DUCKDB_SCRIPT = r"""
import sys, duckdb
m1_glob, out = sys.argv[1], sys.argv[2]
con = duckdb.connect()
con.execute("SET TimeZone = 'UTC'")
for name, minutes in (("M5", 5), ("M15", 15), ("H1", 60), ("D1", 1440)):
    w = f"INTERVAL {minutes} MINUTE"
    con.execute(f'''
        COPY (
            WITH b AS (
                SELECT time_bucket({w}, ts::TIMESTAMP - INTERVAL 1 MICROSECOND) + {w} AS t, *
                FROM read_parquet('{m1_glob}')
            )
            SELECT t::TIMESTAMPTZ AS ts, arg_min(open, ts) AS open, max(high) AS high,
                   min(low) AS low, arg_max(close, ts) AS close, sum(volume) AS volume,
                   any_value(source) AS source, any_value(market) AS market, symbol,
                   any_value(exchange) AS exchange, any_value(what_to_show) AS what_to_show,
                   CASE WHEN sum(volume) > 0 THEN sum(wap * volume) / sum(volume)
                        ELSE avg(wap) END AS wap,
                   sum(bar_count)::BIGINT AS bar_count, count(*)::BIGINT AS minutes,
                   year(t) AS year, month(t) AS month
            FROM b GROUP BY t, symbol ORDER BY symbol, t
        ) TO '{out}/timeframe={name}'
        (FORMAT parquet, COMPRESSION zstd, PARTITION_BY (symbol, year, month))
    ''')
"""


def month_of_bars(symbol: Symbol, month: Month) -> pa.Table:
    """The simulator's bars ending in ``month`` (lake day D: ends in [D 00:00, D+1 00:00))."""
    rows = []
    for day in [month.first_day - timedelta(days=1), *month.days()]:
        rows += day_rows(7, symbol.base, day, no_trade_share=0.02)
    start = day_start(month.first_day).timestamp() - 60
    stop = day_start(month.next.first_day).timestamp() - 60
    rows = [r for r in rows if start <= r[0] < stop]
    n = len(rows)
    cols = list(zip(*rows, strict=True))
    return pa.table(
        {
            "ts": pa.array([(s + 60) * 1_000_000 for s in cols[0]], pa.int64()).cast(
                pa.timestamp("us", tz="UTC")
            ),
            "open": cols[1], "high": cols[2], "low": cols[3], "close": cols[4],
            "volume": cols[5],
            "source": [SOURCE] * n, "market": [MARKET] * n, "symbol": [str(symbol)] * n,
            "exchange": [EXCHANGE] * n, "what_to_show": [WHAT_TO_SHOW] * n,
            "wap": cols[6], "bar_count": cols[7],
        },
        schema=BAR_SCHEMA,
    )


def build_m1_lake(lake: Path, n_symbols: int, n_months: int) -> None:
    marker = lake / f"_bench-{n_symbols}x{n_months}"
    if marker.exists():
        print(f"M1 lake: cached in {lake}")
        return
    shutil.rmtree(lake, ignore_errors=True)
    started = time.monotonic()
    months = [FIRST_MONTH]
    while len(months) < n_months:
        months.append(months[-1].next)
    for i in range(n_symbols):
        symbol = Symbol(f"S{i:02d}", "USD")
        for month in months:
            store.write_batch(lake, symbol, month_of_bars(symbol, month), month.days(),
                              fetched_at=FETCHED)
        print(f"  {symbol}: {len(months)} months", flush=True)
    marker.touch()
    print(f"M1 lake: built in {time.monotonic() - started:.0f}s in {lake}")


def run_measured(command: list[str]) -> tuple[float, float, str]:
    """Like ``timed`` but with the child's own peak RSS, via wait4."""
    started = time.monotonic()
    child = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    out = child.stdout.read()  # type: ignore[union-attr]
    err = child.stderr.read()  # type: ignore[union-attr]
    _, status, usage = os.wait4(child.pid, 0)
    elapsed = time.monotonic() - started
    if status != 0:
        raise SystemExit(f"{' '.join(command[:4])} failed: {err}")
    return elapsed, usage.ru_maxrss / 1024, out


def drop_aggregates(lake: Path) -> None:
    root = dataset_root(lake) / f"source={SOURCE}" / f"market={MARKET}"
    for tf_dir in root.glob("timeframe=*"):
        if tf_dir.name != "timeframe=M1":
            shutil.rmtree(tf_dir)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--symbols", type=int, default=20)
    parser.add_argument("--months", type=int, default=12)
    parser.add_argument("--repeat", type=int, default=1)
    parser.add_argument(
        "--cache", type=Path, default=Path(tempfile.gettempdir()) / "backfill-bench-aggregate"
    )
    args = parser.parse_args()
    lake = args.cache / f"lake-{args.symbols}x{args.months}"
    build_m1_lake(lake, args.symbols, args.months)
    m1_rows = sum(
        store.read_part_coverage(p)[d].rows
        for p in market_dir(lake).rglob("part-*.parquet")
        for d in store.read_part_coverage(p)
    )
    print(f"M1 rows: {m1_rows:,}; load average {os.getloadavg()[0]:.1f}")
    ours = [sys.executable, "-m", "backfill", "aggregate", "--lake", str(lake),
            "--tf", ",".join(TIMEFRAMES), "--json"]
    m1_glob = str(market_dir(lake) / "*" / "*" / "*" / "*.parquet")
    for round_ in range(args.repeat):
        drop_aggregates(lake)
        full, full_rss, out = run_measured(ours)
        doc = json.loads(out)
        out_dir = Path(tempfile.mkdtemp(prefix="duckdb-agg-", dir=args.cache))
        duck, duck_rss, _ = run_measured([sys.executable, "-c", DUCKDB_SCRIPT, m1_glob,
                                          str(out_dir)])
        duck_files = len(list(out_dir.rglob("*.parquet")))
        shutil.rmtree(out_dir)
        rerun, rerun_rss, rerun_out = run_measured(ours)
        assert json.loads(rerun_out)["totals"]["built"] == 0
        # one day of one symbol fetched again: its month is rebuilt, nothing else
        s00 = Symbol("S00", "USD")
        march = month_of_bars(s00, Month(2024, 3))
        day = pc.equal(pc.cast(march["ts"], pa.date32()), pa.scalar(date(2024, 3, 10)))
        store.write_batch(lake, s00, march.filter(day), [date(2024, 3, 10)],
                          fetched_at=datetime.now(UTC))
        one_day, _, one_out = run_measured(ours)
        print(
            f"round {round_ + 1}: backfill aggregate full build {full:.2f}s "
            f"({doc['totals']['built']} parts, {doc['totals']['rows']:,} buckets, peak RSS "
            f"{full_rss:.0f} MB); DuckDB script {duck:.2f}s ({duck_files} files, peak RSS "
            f"{duck_rss:.0f} MB): ratio {full / duck:.2f}x"
        )
        print(
            f"round {round_ + 1}: rerun with nothing new {rerun:.2f}s (peak RSS "
            f"{rerun_rss:.0f} MB); after one M1 day changed {one_day:.2f}s "
            f"({json.loads(one_out)['totals']['built']} parts rebuilt)"
        )


if __name__ == "__main__":
    main()
