"""Imported once by the workers' forkserver: pay pyarrow's first-use costs before forking.

A fresh process spends ~170 ms on its first timezone-aware cast, strftime and Parquet write.
Paid by each worker at its first answer, that stall delays its next request until it
bunches with the one after, and the pair can break IB's per-contract rule on arrival.
"""

from __future__ import annotations

import filelock  # noqa: F401  (a part's first write takes its lock: ~0.3 s of imports in a worker)
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from backfill.lake.schema import BAR_SCHEMA


def warm_up() -> None:
    ts = pa.array([0, 60_000_000], pa.int64()).cast(BAR_SCHEMA.field("ts").type)
    months = pc.strftime(ts, format="%Y-%m")
    table = pa.table({"ts": ts}).filter(pc.equal(months, "1970-01"))
    pq.write_table(table.sort_by("ts"), pa.BufferOutputStream(), compression="zstd")


warm_up()
