"""Benchmark ``backfill aggregate`` against DuckDB scripts doing the same aggregation.

Builds (once, cached in a temp folder) an M1 lake of 20 symbols x 12 months of simulator
bars (about 10 M rows), then times, each in its own process, interleaved, ``--repeat``
rounds of:
the full build of all six timeframes (M5 … D1) against a DuckDB script that reads the M1
lake once into a table and writes the six timeframes with the lake's columns (wap weighted
by volume, bar_count, the text columns, ``minutes``, ``complete``), partitioned by symbol,
year, month; the full build of M5, M15, H1 and D1 against a DuckDB script that reads the M1
parts once per timeframe for the same four; the rerun with nothing new; the rebuild after
one M1 day of one symbol is fetched again. Prints seconds, peak RSS, each ratio, the machine
load (``uptime``) before each round, and the spread over rounds.
Usage: python scripts/bench_aggregate.py [--symbols 20] [--months 12] [--cache DIR]
[--repeat 2]
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

TIMEFRAMES = ("M5", "M15", "H1", "D1")  # the per-timeframe script's four
ALL_TIMEFRAMES = ("M5", "M15", "M30", "H1", "H4", "D1")
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

# The M1 lake read once into a table, then every timeframe written from it (DuckDB keeps
# the table in memory: its peak RSS grows with the lake). ``complete`` is true: every
# bench day is recorded whole.
DUCKDB_ONCE_SCRIPT = r"""
import sys, duckdb
m1_glob, out = sys.argv[1], sys.argv[2]
con = duckdb.connect()
con.execute("SET TimeZone = 'UTC'")
con.execute(f"CREATE TABLE m1 AS SELECT * FROM read_parquet('{m1_glob}')")
for name, minutes in (("M5", 5), ("M15", 15), ("M30", 30), ("H1", 60), ("H4", 240),
                      ("D1", 1440)):
    w = f"INTERVAL {minutes} MINUTE"
    con.execute(f'''
        COPY (
            WITH b AS (
                SELECT time_bucket({w}, ts::TIMESTAMP - INTERVAL 1 MICROSECOND) + {w} AS t, *
                FROM m1
            )
            SELECT t::TIMESTAMPTZ AS ts, arg_min(open, ts) AS open, max(high) AS high,
                   min(low) AS low, arg_max(close, ts) AS close, sum(volume) AS volume,
                   any_value(source) AS source, any_value(market) AS market, symbol,
                   any_value(exchange) AS exchange, any_value(what_to_show) AS what_to_show,
                   CASE WHEN sum(volume) > 0 THEN sum(wap * volume) / sum(volume)
                        ELSE avg(wap) END AS wap,
                   sum(bar_count)::BIGINT AS bar_count, count(*)::BIGINT AS minutes,
                   true AS complete, year(t) AS year, month(t) AS month
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
            "open": cols[1],
            "high": cols[2],
            "low": cols[3],
            "close": cols[4],
            "volume": cols[5],
            "source": [SOURCE] * n,
            "market": [MARKET] * n,
            "symbol": [str(symbol)] * n,
            "exchange": [EXCHANGE] * n,
            "what_to_show": [WHAT_TO_SHOW] * n,
            "wap": cols[6],
            "bar_count": cols[7],
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
            store.write_batch(
                lake, symbol, month_of_bars(symbol, month), month.days(), fetched_at=FETCHED
            )
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


def uptime() -> str:
    """The machine's load, as ``uptime`` prints it (the machine is shared)."""
    try:
        return subprocess.run(["uptime"], capture_output=True, text=True).stdout.strip()
    except OSError:
        return f"load average {os.getloadavg()}"


def run_duckdb(script: str, m1_glob: str, cache: Path) -> tuple[float, float, int]:
    """Seconds, peak RSS (MB) and files written by a DuckDB script, in its own process."""
    out_dir = Path(tempfile.mkdtemp(prefix="duckdb-agg-", dir=cache))
    try:
        elapsed, rss, _ = run_measured([sys.executable, "-c", script, m1_glob, str(out_dir)])
        return elapsed, rss, len(list(out_dir.rglob("*.parquet")))
    finally:
        shutil.rmtree(out_dir)


def spread(values: list[float], unit: str = "", digits: int = 2) -> str:
    low, high = f"{min(values):.{digits}f}", f"{max(values):.{digits}f}"
    return f"{low}{unit}" if low == high else f"{low}–{high}{unit}"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--symbols", type=int, default=20)
    parser.add_argument("--months", type=int, default=12)
    parser.add_argument("--repeat", type=int, default=2)
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
    print(f"M1 rows: {m1_rows:,}")
    ours = [sys.executable, "-m", "backfill", "aggregate", "--lake", str(lake), "--json"]
    m1_glob = str(market_dir(lake) / "*" / "*" / "*" / "*.parquet")
    ratios: dict[str, list[float]] = {"once": [], "per-tf": []}
    times: dict[str, list[float]] = {k: [] for k in ("six", "duck-once", "four", "duck-per-tf")}
    rss: dict[str, list[float]] = {k: [] for k in times}
    for round_ in range(args.repeat):
        print(f"round {round_ + 1}: {uptime()}", flush=True)
        drop_aggregates(lake)
        six, six_rss, out = run_measured([*ours, "--tf", ",".join(ALL_TIMEFRAMES)])
        doc = json.loads(out)
        once, once_rss, once_files = run_duckdb(DUCKDB_ONCE_SCRIPT, m1_glob, args.cache)
        print(
            f"  six timeframes: backfill aggregate {six:.2f}s ({doc['totals']['built']} parts, "
            f"{doc['totals']['rows']:,} buckets, peak RSS {six_rss:.0f} MB); DuckDB reading "
            f"the lake once {once:.2f}s ({once_files} files, peak RSS {once_rss:.0f} MB): "
            f"ratio {six / once:.2f}x",
            flush=True,
        )
        drop_aggregates(lake)
        four, four_rss, out = run_measured([*ours, "--tf", ",".join(TIMEFRAMES)])
        per_tf, per_tf_rss, per_tf_files = run_duckdb(DUCKDB_SCRIPT, m1_glob, args.cache)
        print(
            f"  four timeframes: backfill aggregate {four:.2f}s (peak RSS {four_rss:.0f} MB); "
            f"DuckDB reading the lake per timeframe {per_tf:.2f}s ({per_tf_files} files, peak "
            f"RSS {per_tf_rss:.0f} MB): ratio {four / per_tf:.2f}x",
            flush=True,
        )
        for key, value, mb in (
            ("six", six, six_rss),
            ("duck-once", once, once_rss),
            ("four", four, four_rss),
            ("duck-per-tf", per_tf, per_tf_rss),
        ):
            times[key].append(value)
            rss[key].append(mb)
        ratios["once"].append(six / once)
        ratios["per-tf"].append(four / per_tf)
        all_six = [*ours, "--tf", ",".join(ALL_TIMEFRAMES)]
        run_measured(all_six)  # the four built: build the other two
        rerun, rerun_rss, rerun_out = run_measured(all_six)
        assert json.loads(rerun_out)["totals"]["built"] == 0
        # one day of one symbol fetched again: its month is rebuilt, nothing else
        s00 = Symbol("S00", "USD")
        march = month_of_bars(s00, Month(2024, 3))
        day = pc.equal(pc.cast(march["ts"], pa.date32()), pa.scalar(date(2024, 3, 10)))
        store.write_batch(
            lake, s00, march.filter(day), [date(2024, 3, 10)], fetched_at=datetime.now(UTC)
        )
        one_day, _, one_out = run_measured(all_six)
        print(
            f"  rerun with nothing new {rerun:.2f}s (peak RSS {rerun_rss:.0f} MB); after one "
            f"M1 day changed {one_day:.2f}s ({json.loads(one_out)['totals']['built']} parts "
            f"rebuilt)",
            flush=True,
        )
    print(f"after: {uptime()}")
    print(
        f"six timeframes: {spread(times['six'], 's')} against DuckDB reading once "
        f"{spread(times['duck-once'], 's')}: {spread(ratios['once'], 'x')}; peak RSS "
        f"{spread(rss['six'], ' MB', 0)} against {spread(rss['duck-once'], ' MB', 0)}"
    )
    print(
        f"four timeframes: {spread(times['four'], 's')} against DuckDB per timeframe "
        f"{spread(times['duck-per-tf'], 's')}: {spread(ratios['per-tf'], 'x')}; peak RSS "
        f"{spread(rss['four'], ' MB', 0)} against {spread(rss['duck-per-tf'], ' MB', 0)}"
    )


if __name__ == "__main__":
    main()
