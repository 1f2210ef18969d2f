"""Benchmark plan and verify on a thin lake: 100 symbols x 60 months (6,000 parts), few bars a day.

The lake is written through the store (one ``write_batch`` per symbol-month, every day of the
month covered and complete), by parallel processes, and cached in the temp folder: a second
run reuses it. Then, each in a fresh process, timed from start to end:

- ``backfill plan`` over the whole lake: with no cache (every footer parsed), cached (every
  part stat'ed, no footer parsed), and after a day's run (each symbol's last part replaced:
  100 footers parsed),
- DuckDB's footer scan ``select * from parquet_kv_metadata('<lake>/data/**/*.parquet')``,
- ``backfill verify --json`` (wall time, peak RSS of the child, size of the document) and
  ``backfill verify`` with plain lines.

Usage: python scripts/bench_thin_lake.py [--repeat 5] [--lake DIR] [--symbols 100] [--months 60]
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from concurrent.futures import ProcessPoolExecutor
from datetime import datetime, timedelta
from pathlib import Path

import numpy as np
import pyarrow as pa

from backfill.domain import EXCHANGE, MARKET, SOURCE, UTC, WHAT_TO_SHOW, Month, Symbol, day_start
from backfill.lake import store
from backfill.lake.coverage_index import cache_path
from backfill.lake.paths import part_path
from backfill.lake.schema import BAR_SCHEMA

BARS_PER_DAY = 5  # a thin market: most minutes have no trade
FIRST_MONTH = Month(2020, 1)
DONE_MARKER = ".bench-complete"  # starts with '.': no reader of the lake looks at it


def months(count: int) -> list[Month]:
    found = [FIRST_MONTH]
    while len(found) < count:
        found.append(found[-1].next)
    return found


def symbols(count: int) -> list[Symbol]:
    return [Symbol(f"T{i:03d}", "USD") for i in range(count)]


def month_of_bars(symbol: Symbol, month: Month, rng: np.random.Generator) -> pa.Table:
    """``BARS_PER_DAY`` bars at random minutes of each day of ``month``."""
    days = month.days()
    starts = np.array([int(day_start(d).timestamp()) * 1_000_000 for d in days], np.int64)
    minutes = np.sort(
        np.stack([rng.choice(1440, BARS_PER_DAY, replace=False) for _ in days]), axis=1
    )
    ts = (starts[:, None] + minutes.astype(np.int64) * 60_000_000).ravel()
    n = len(ts)
    close = 100.0 + rng.random(n)
    return pa.table(
        {
            "ts": pa.array(ts, pa.timestamp("us", tz="UTC")),
            "open": close,
            "high": close + 0.5,
            "low": close - 0.5,
            "close": close,
            "volume": rng.random(n),
            "source": [SOURCE] * n,
            "market": [MARKET] * n,
            "symbol": [str(symbol)] * n,
            "exchange": [EXCHANGE] * n,
            "what_to_show": [WHAT_TO_SHOW] * n,
            "wap": close,
            "bar_count": rng.integers(1, 5, n),
        },
        schema=BAR_SCHEMA,
    )


def write_symbol(lake: Path, symbol: Symbol, month_count: int, seed: int) -> int:
    """Child body: every month of one symbol, one batch each; returns the parts written."""
    rng = np.random.default_rng(seed)
    written = 0
    for month in months(month_count):
        # Fetched a day after the month ended: every day is whole.
        fetched_at = day_start(month.next.first_day) + timedelta(days=1)
        table = month_of_bars(symbol, month, rng)
        written += len(store.write_batch(lake, symbol, table, month.days(), fetched_at=fetched_at))
    return written


def build_lake(lake: Path, symbol_count: int, month_count: int) -> None:
    if (lake / DONE_MARKER).exists():
        print(f"lake              {lake} (cached)")
        return
    started = time.perf_counter()
    with ProcessPoolExecutor(max_workers=min(2, os.cpu_count() or 1)) as pool:
        parts = sum(
            pool.map(
                write_symbol,
                [lake] * symbol_count,
                symbols(symbol_count),
                [month_count] * symbol_count,
                range(symbol_count),
            )
        )
    (lake / DONE_MARKER).write_text(datetime.now(UTC).isoformat())
    print(
        f"lake              {lake} ({parts} parts written in {time.perf_counter() - started:.0f} s)"
    )


def backfill_command() -> list[str]:
    script = Path(sys.executable).with_name("backfill")
    return [str(script)] if script.exists() else [sys.executable, "-m", "backfill"]


def timed(
    command: list[str], stdout: int | object = subprocess.DEVNULL
) -> tuple[float, int, int, float]:
    """Wall seconds, exit code, peak RSS (KiB) and CPU seconds (user + system, with the
    helpers it waited for) of one child process."""
    started = time.perf_counter()
    child = subprocess.Popen(command, stdout=stdout, stderr=subprocess.PIPE)  # type: ignore[arg-type]
    _, status, usage = os.wait4(child.pid, 0)
    seconds = time.perf_counter() - started
    child.returncode = os.waitstatus_to_exitcode(status)
    if child.returncode not in (0, 1) and child.stderr is not None:
        sys.stderr.write(child.stderr.read().decode())
    return seconds, child.returncode, usage.ru_maxrss, usage.ru_utime + usage.ru_stime


def run_plan(command: list[str], cpu: list[float] | None = None) -> float:
    seconds, code, _, cpu_s = timed(command)
    assert code == 0, f"plan exited {code}"
    if cpu is not None:
        cpu.append(cpu_s)
    return seconds


def load() -> str:
    return " ".join(f"{x:.1f}" for x in os.getloadavg())


def replace_in_place(part: Path) -> None:
    """What the store does to a part it rewrites (a new file put in its place), same bytes."""
    copy = part.with_name(f".{part.name}.bench.tmp")
    shutil.copyfile(part, copy)
    os.replace(copy, part)


def summary(values: list[float]) -> str:
    return (
        f"median {statistics.median(values):.2f} s  (min {min(values):.2f}, max {max(values):.2f})"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--symbols", type=int, default=100)
    parser.add_argument("--months", type=int, default=60)
    parser.add_argument("--repeat", type=int, default=5)
    parser.add_argument("--lake", type=Path, help="where the lake is (cached); default: temp")
    args = parser.parse_args()
    lake = args.lake or Path(tempfile.gettempdir()) / (
        f"backfill-bench-thin-{args.symbols}x{args.months}"
    )
    build_lake(lake, args.symbols, args.months)
    first, last = FIRST_MONTH.first_day, months(args.months)[-1].last_day
    listing = lake / "_symbols.txt"
    listing.write_text("".join(f"{s}\n" for s in symbols(args.symbols)))

    plan = [
        *backfill_command(), "plan", "--symbols-file", str(listing), "--from", str(first),
        "--to", str(last), "--lake", str(lake),
    ]  # fmt: skip
    scan = f"select * from parquet_kv_metadata('{lake}/data/**/*.parquet')"
    duck = [sys.executable, "-c", f"import duckdb; duckdb.sql({scan!r}).fetchall()"]
    cache = cache_path(lake)
    last_month = months(args.months)[-1]
    touched = [part_path(lake, s, last_month) for s in symbols(args.symbols)]
    cold_s, warm_s, touched_s, duck_s = [], [], [], []
    cold_cpu, warm_cpu, duck_cpu = [], [], []
    print(f"load average      {load()} (1, 5, 15 min) before")
    for _ in range(args.repeat):  # interleaved, so a busy moment hurts all alike
        cache.unlink(missing_ok=True)
        cold_s.append(run_plan(plan, cold_cpu))  # every footer parsed (and remembered)
        warm_s.append(run_plan(plan, warm_cpu))  # every part stat'ed, no footer parsed
        seconds, _, _, cpu_s = timed(duck)
        duck_s.append(seconds)
        duck_cpu.append(cpu_s)
    # Apart: a part replaced less than 3 s ago is not remembered (coverage_index.RACY_NS), so
    # these would make the next rounds' cached plans parse its footer again.
    for _ in range(args.repeat):
        for part in touched:  # as a day's run leaves it: each symbol's last part replaced
            replace_in_place(part)
        touched_s.append(run_plan(plan))
    duck_median = statistics.median(duck_s)
    for name, values in [
        ("plan, no cache", cold_s),
        ("plan, cached", warm_s),
        (f"plan, {len(touched)} new", touched_s),
    ]:
        print(f"{name:<18}{summary(values)}  {statistics.median(values) / duck_median:.2f}x duckdb")
    print(f"duckdb kv scan    {summary(duck_s)}")
    # On a shared machine wall time follows the load; CPU time (user + system, the plan's
    # helpers and DuckDB's threads included) says what each costs whatever the load.
    duck_cpu_median = statistics.median(duck_cpu)
    for name, values in [("no cache", cold_cpu), ("cached", warm_cpu), ("duckdb", duck_cpu)]:
        print(
            f"cpu, {name:<13}median {statistics.median(values):.2f} s  "
            f"{statistics.median(values) / duck_cpu_median:.2f}x duckdb"
        )
    print(f"load average      {load()} (1, 5, 15 min) after")

    with tempfile.TemporaryFile() as out:
        seconds, code, rss, _ = timed(
            [*backfill_command(), "verify", "--lake", str(lake), "--json"], out
        )
        size = out.tell()
    print(
        f"verify --json     {seconds:.2f} s, exit {code}, peak RSS {rss / 1024:.0f} MB, "
        f"{size / 1e6:.1f} MB of JSON"
    )
    with tempfile.TemporaryFile() as out:
        seconds, code, rss, _ = timed([*backfill_command(), "verify", "--lake", str(lake)], out)
        out.seek(0)
        lines = out.read().count(b"\n")
    print(
        f"verify (lines)    {seconds:.2f} s, exit {code}, peak RSS {rss / 1024:.0f} MB, "
        f"{lines} lines"
    )


if __name__ == "__main__":
    main()
