"""A written lake reads back with pandas and pyarrow.dataset, whatever non-part files lie around."""

from __future__ import annotations

from datetime import date
from pathlib import Path

import pandas as pd
import pyarrow as pa
import pyarrow.dataset as ds
import pyarrow.parquet as pq

from backfill.domain import Month
from backfill.lake import store
from backfill.lake.paths import dataset_root, part_path, temp_path
from backfill.lake.schema import COLUMNS
from tests.lake.helpers import BTC, ETH, FETCHED, day_bars

DAYS = [date(2025, 7, 31), date(2025, 8, 1)]


def write_lake(lake: Path) -> None:
    for symbol in (BTC, ETH):
        batch = pa.concat_tables([day_bars(symbol, d) for d in DAYS])
        store.write_batch(lake, symbol, batch, DAYS, fetched_at=FETCHED)
    # Leave behind every kind of non-part file the store can create.
    july = part_path(lake, BTC, Month(2025, 7))
    temp_path(july).write_bytes(b"half written")
    july.with_name("_corrupt-part-2025-07.parquet.20250801T000000000000Z.bad").write_bytes(b"junk")


def test_pandas_reads_a_part(tmp_path: Path) -> None:
    write_lake(tmp_path)
    frame = pd.read_parquet(part_path(tmp_path, BTC, Month(2025, 7)))
    assert list(frame.columns) == list(COLUMNS)
    assert len(frame) == 1440
    assert str(frame["ts"].dtype) == "datetime64[us, UTC]"
    assert frame["ts"].is_monotonic_increasing and frame["ts"].is_unique
    assert frame["ts"].iloc[-1] == pd.Timestamp("2025-07-31 23:59", tz="UTC")


def test_pyarrow_dataset_reads_the_lake_with_hive_partitioning(tmp_path: Path) -> None:
    write_lake(tmp_path)
    dataset = ds.dataset(dataset_root(tmp_path), format="parquet", partitioning="hive")
    assert len(dataset.files) == 4
    table = dataset.to_table()
    assert table.num_rows == 4 * 1440
    assert {"year", "month", "timeframe"} <= set(table.column_names)
    august_btc = dataset.to_table(
        filter=(ds.field("symbol") == "BTC-USD") & (ds.field("month") == 8)
    )
    assert august_btc.num_rows == 1440
    assert pq.read_table(dataset.files[0]).num_rows == 1440


def test_duckdb_reads_the_lake_with_a_glob(tmp_path: Path) -> None:
    import duckdb

    write_lake(tmp_path)
    glob = f"{dataset_root(tmp_path)}/**/*.parquet"
    rows = duckdb.sql(
        f"select symbol, count(*), min(ts), max(ts) from read_parquet('{glob}', "
        "hive_partitioning=true) group by symbol order by symbol"
    ).fetchall()
    assert [(r[0], r[1]) for r in rows] == [("BTC-USD", 2880), ("ETH-USD", 2880)]
    first, last = rows[0][2], rows[0][3]
    assert (first.isoformat(), last.isoformat()) == (
        "2025-07-31T00:00:00+00:00",
        "2025-08-01T23:59:00+00:00",
    )


def test_polars_scans_the_lake(tmp_path: Path) -> None:
    import polars as pl

    write_lake(tmp_path)
    frame = (
        pl.scan_parquet(f"{dataset_root(tmp_path)}/**/*.parquet", hive_partitioning=True)
        .filter(pl.col("symbol") == "ETH-USD")
        .collect()
    )
    assert frame.height == 2880
    assert str(frame.schema["ts"]) == "Datetime(time_unit='us', time_zone='UTC')"
    assert frame["ts"].is_sorted()
