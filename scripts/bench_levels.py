"""Benchmark ``backfill levels`` against a DuckDB script computing the same levels.

On the benchmark lake of scripts/bench_aggregate.py (20 symbols x 12 months, about 10 M M1
rows, built once and cached), each in its own process: levels for all three profiles
(``--no-events``); then the events with default settings (levels fresh, events built);
DuckDB computing the same levels (PD, PM, OR per profile, DST-aware through its time
zones) and writing Parquet; the rerun with nothing new; and peak RSS for 5 symbols against
20 (memory must be flat in the number of symbols). Prints seconds and peak RSS.
Usage: python scripts/bench_levels.py [--symbols 20] [--months 12] [--cache DIR]
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from bench_aggregate import build_m1_lake, run_measured

from backfill.lake.paths import market_dir

PROFILES = "us_equity_open,asia_open,daily_open_utc"

# Bars are stamped by their END: the wall-clock minute a bar covers is ts - 1 minute.
DUCKDB_SCRIPT = r"""
import sys, duckdb
m1_glob, out = sys.argv[1], sys.argv[2]
con = duckdb.connect()
con.execute("SET TimeZone = 'UTC'")
con.execute(f'''CREATE TEMP VIEW m1 AS SELECT symbol, ts, open, high, low, close
                FROM read_parquet('{m1_glob}')''')
profiles = [
    ("us_equity_open", "America/New_York", "04:00", "09:30", "09:30"),
    ("asia_open", "Asia/Tokyo", "00:00", "09:00", "09:00"),
    ("daily_open_utc", "UTC", None, None, "00:00"),
]
for name, tz, pm_from, pm_to, opening in profiles:
    pm = (f"max(high) FILTER (WHERE t >= TIME '{pm_from}' AND t < TIME '{pm_to}') AS pmh, "
          f"min(low) FILTER (WHERE t >= TIME '{pm_from}' AND t < TIME '{pm_to}') AS pml,"
          if pm_from else "NULL::DOUBLE AS pmh, NULL::DOUBLE AS pml,")
    con.execute(f'''
        COPY (
            WITH l AS (
                SELECT symbol, ts, high, low, close,
                       timezone('{tz}', ts - INTERVAL 1 MINUTE) AS label
                FROM m1
            ), d AS (
                SELECT symbol, label::DATE AS day, label::TIME AS t, ts, high, low, close FROM l
            ), s AS (
                SELECT symbol, day, max(high) AS dh, min(low) AS dl, arg_max(close, ts) AS dc,
                       {pm}
                       max(high) FILTER (WHERE t >= TIME '{opening}'
                                         AND t < TIME '{opening}' + INTERVAL 5 MINUTE) AS orh,
                       min(low) FILTER (WHERE t >= TIME '{opening}'
                                        AND t < TIME '{opening}' + INTERVAL 5 MINUTE) AS orl
                FROM d GROUP BY symbol, day
            )
            SELECT cur.symbol, cur.day AS session_date, prev.dh AS pdh, prev.dl AS pdl,
                   prev.dc AS pdc, cur.pmh, cur.pml, cur.orh, cur.orl,
                   year(cur.day) AS year, month(cur.day) AS month
            FROM s cur LEFT JOIN s prev
              ON prev.symbol = cur.symbol AND prev.day = cur.day - INTERVAL 1 DAY
            ORDER BY cur.symbol, cur.day
        ) TO '{out}/profile={name}'
        (FORMAT parquet, COMPRESSION zstd, PARTITION_BY (symbol, year, month))
    ''')
"""


def drop_levels(lake: Path) -> None:
    for name in ("levels", "br_events"):
        shutil.rmtree(lake / name, ignore_errors=True)


def same_levels(lake: Path, out_dir: Path) -> int:
    """Check DuckDB's levels of S00-USD equal ours, for every profile; the values compared."""
    import duckdb

    import backfill

    checked = 0
    for profile in PROFILES.split(","):
        ours = backfill.read_levels(
            lake, "S00-USD", "2000-01-01", "2100-01-01", profile=profile
        ).to_pylist()
        glob = out_dir / f"profile={profile}" / "symbol=S00-USD" / "**" / "*.parquet"
        theirs = {
            row[0]: dict(
                zip(("PDH", "PDL", "PDC", "PMH", "PML", "ORH", "ORL"), row[1:], strict=True)
            )
            for row in duckdb.sql(
                "select session_date, pdh, pdl, pdc, pmh, pml, orh, orl "
                f"from read_parquet('{glob}')"
            ).fetchall()
        }
        for row in ours:
            if row["value"] is not None:
                assert theirs[row["session_date"]][row["level"]] == row["value"], row
                checked += 1
    return checked


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--symbols", type=int, default=20)
    parser.add_argument("--months", type=int, default=12)
    parser.add_argument(
        "--cache", type=Path, default=Path(tempfile.gettempdir()) / "backfill-bench-aggregate"
    )
    args = parser.parse_args()
    lake = args.cache / f"lake-{args.symbols}x{args.months}"
    build_m1_lake(lake, args.symbols, args.months)
    print(f"load average {os.getloadavg()[0]:.1f}")
    ours = [
        sys.executable,
        "-m",
        "backfill",
        "levels",
        "--lake",
        str(lake),
        "--profiles",
        PROFILES,
        "--json",
    ]
    drop_levels(lake)
    levels_s, levels_rss, out = run_measured([*ours, "--no-events"])
    levels_doc = json.loads(out)
    events_s, events_rss, out = run_measured(ours)
    events_doc = json.loads(out)
    out_dir = Path(tempfile.mkdtemp(prefix="duckdb-levels-", dir=args.cache))
    m1_glob = str(market_dir(lake) / "*" / "*" / "*" / "*.parquet")
    duck_s, duck_rss, _ = run_measured([sys.executable, "-c", DUCKDB_SCRIPT, m1_glob, str(out_dir)])
    agree = same_levels(lake, out_dir)
    shutil.rmtree(out_dir)
    rerun_s, _, out = run_measured(ours)
    assert json.loads(out)["totals"]["built"] == 0
    few = ",".join(f"S{i:02d}-USD" for i in range(min(5, args.symbols)))
    drop_levels(lake)
    few_s, few_rss, _ = run_measured([*ours, "--symbols", few])
    drop_levels(lake)
    all_s, all_rss, _ = run_measured(ours)
    print(
        f"levels, 3 profiles, no events: {levels_s:.2f}s ({levels_doc['totals']['built']} "
        f"parts, {levels_doc['totals']['rows']:,} rows), peak RSS {levels_rss:.0f} MB"
    )
    print(
        f"DuckDB script, same levels ({agree:,} values of S00-USD checked equal): "
        f"{duck_s:.2f}s, peak RSS {duck_rss:.0f} MB: levels "
        f"at {levels_s / duck_s:.2f}x DuckDB's time"
    )
    print(
        f"events (levels fresh, recomputed in memory): {events_s:.2f}s "
        f"({events_doc['totals']['rows']:,} events), peak RSS {events_rss:.0f} MB: "
        f"{events_s / levels_s:.2f}x the levels' time"
    )
    print(f"levels and events in one build: {all_s:.2f}s; rerun with nothing new {rerun_s:.2f}s")
    print(
        f"peak RSS, levels and events: 5 symbols {few_rss:.0f} MB ({few_s:.2f}s), "
        f"{args.symbols} symbols {all_rss:.0f} MB"
    )


if __name__ == "__main__":
    main()
