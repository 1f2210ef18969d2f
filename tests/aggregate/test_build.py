"""``aggregate_lake`` on real parts in a tmp lake, checked against DuckDB and Polars."""

from __future__ import annotations

import shutil
from datetime import date, datetime, timedelta
from pathlib import Path

import duckdb
import polars as pl
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.dataset as ds
import pytest

from backfill.aggregate import buckets
from backfill.aggregate.build import AggregateRequest, aggregate_lake
from backfill.aggregate.planner import Reason
from backfill.aggregate.timeframes import D1, H1, H4, M5, M15, M30, TIMEFRAMES, Timeframe
from backfill.domain import UTC, Month, Symbol
from backfill.lake.paths import aggregate_part_path, dataset_root, market_dir
from backfill.lake.schema import AGGREGATE_SCHEMA
from tests.aggregate.conftest import BTC, PARTIAL_DAY
from tests.aggregate.helpers import LATER, write_m1
from tests.lake.helpers import read_coverage

NOW = datetime(2026, 2, 1, tzinfo=UTC)
EXACT = ("ts", "open", "high", "low", "close", "bar_count", "minutes")


def build(lake: Path, timeframes=TIMEFRAMES, **kwargs):
    return aggregate_lake(AggregateRequest(lake, tuple(timeframes), **kwargs), now=NOW)


def read_tf(lake: Path, tf: Timeframe, symbol: Symbol = BTC) -> pa.Table:
    root = dataset_root(lake) / "source=ibkr/market=crypto" / f"timeframe={tf}" / f"symbol={symbol}"
    tables = [pa.parquet.read_table(p) for p in sorted(root.rglob("part-*.parquet"))]
    return pa.concat_tables(tables).sort_by("ts") if tables else AGGREGATE_SCHEMA.empty_table()


def m1_glob(lake: Path) -> str:
    return str(market_dir(lake) / "**" / "*.parquet")


def duckdb_buckets(lake: Path, tf: Timeframe) -> pa.Table:
    """DuckDB's answer: ``time_bucket`` over ``ts - 1 µs``, plus the width, as the bucket end."""
    con = duckdb.connect()
    con.execute("SET TimeZone = 'UTC'")
    width = f"INTERVAL {tf.minutes} MINUTE"
    return con.sql(
        f"""
        WITH m1 AS (SELECT ts::TIMESTAMP AS t, * FROM read_parquet('{m1_glob(lake)}'))
        SELECT time_bucket({width}, t - INTERVAL 1 MICROSECOND) + {width} AS ts,
               first(open ORDER BY t) AS open, max(high) AS high, min(low) AS low,
               last(close ORDER BY t) AS close, sum(volume) AS volume,
               CASE WHEN sum(volume) > 0 THEN sum(wap * volume) / sum(volume)
                    ELSE avg(wap) END AS wap,
               sum(bar_count)::BIGINT AS bar_count, count(*)::BIGINT AS minutes
        FROM m1 GROUP BY 1 ORDER BY 1
        """
    ).to_arrow_table()


def polars_buckets(lake: Path, tf: Timeframe) -> pl.DataFrame:
    """Polars' answer: ``group_by_dynamic(closed="right", label="right")``."""
    return (
        pl.read_parquet(m1_glob(lake), hive_partitioning=False)
        .sort("ts")
        .group_by_dynamic("ts", every=f"{tf.minutes}m", closed="right", label="right")
        .agg(
            pl.col("open").first(),
            pl.col("high").max(),
            pl.col("low").min(),
            pl.col("close").last(),
            pl.col("volume").sum(),
            pl.when(pl.col("volume").sum() > 0)
            .then((pl.col("wap") * pl.col("volume")).sum() / pl.col("volume").sum())
            .otherwise(pl.col("wap").mean())
            .alias("wap"),
            pl.col("bar_count").sum(),
            pl.len().alias("minutes"),
        )
    )


def _as_rows(table: pa.Table, columns) -> list[tuple]:
    ts = [t.replace(tzinfo=UTC) if t.tzinfo is None else t for t in table["ts"].to_pylist()]
    return list(zip(ts, *(table[c].to_pylist() for c in columns[1:]), strict=True))


def assert_same_buckets(ours: pa.Table, theirs: pa.Table) -> None:
    assert ours.num_rows == theirs.num_rows > 0
    assert _as_rows(ours, EXACT) == _as_rows(theirs, EXACT)
    for name in ("volume", "wap"):
        assert ours[name].to_pylist() == pytest.approx(theirs[name].to_pylist(), rel=1e-12)


@pytest.mark.parametrize("tf", TIMEFRAMES, ids=str)
def test_every_bucket_equals_duckdb_and_polars(edge_lake: Path, tf: Timeframe) -> None:
    build(edge_lake, [tf], include_partial=True)
    ours = read_tf(edge_lake, tf)
    assert_same_buckets(ours, duckdb_buckets(edge_lake, tf))
    assert_same_buckets(ours, polars_buckets(edge_lake, tf).to_arrow())


def test_parts_hold_buckets_by_bar_end_month_and_year(edge_lake: Path) -> None:
    build(edge_lake, [D1, M5])
    jan = pa.parquet.read_table(aggregate_part_path(edge_lake, BTC, "D1", Month(2025, 1)))
    # The D1 bar of 2024-12-31 is stamped 2025-01-01 00:00 and lives in January 2025.
    assert jan["ts"][0].as_py() == datetime(2025, 1, 1, tzinfo=UTC)
    dec = pa.parquet.read_table(aggregate_part_path(edge_lake, BTC, "D1", Month(2024, 12)))
    assert dec["ts"][-1].as_py() == datetime(2024, 12, 31, tzinfo=UTC)
    # The M5 bucket ending 2025-02-01 00:00 (the last of January 31) lives in February.
    feb = pa.parquet.read_table(aggregate_part_path(edge_lake, BTC, "M5", Month(2025, 2)))
    assert feb["ts"][0].as_py() == datetime(2025, 2, 1, tzinfo=UTC)
    for table in (jan, dec, feb):
        assert table.schema.remove_metadata().equals(AGGREGATE_SCHEMA)
        assert pc.all(table["complete"]).as_py()
    meta = pa.parquet.ParquetFile(
        aggregate_part_path(edge_lake, BTC, "M5", Month(2025, 2))
    ).metadata
    assert meta.row_group(0).column(0).compression == "ZSTD"


def test_m15_from_m5_equals_m15_from_m1(edge_lake: Path) -> None:
    build(edge_lake, [M5, M15], include_partial=True)
    coverage = read_coverage(edge_lake, [BTC], date(2024, 12, 1), date(2025, 3, 1))[BTC]
    whole = [d for d, c in coverage.items() if c.complete]
    from_m5 = buckets.aggregate(read_tf(edge_lake, M5), M15, whole, NOW, include_partial=True)
    from_m1 = read_tf(edge_lake, M15)
    assert_same_buckets(from_m5, from_m1)
    assert from_m5["complete"].to_pylist() == from_m1["complete"].to_pylist()


def all_parts(lake: Path) -> dict[str, list[dict]]:
    """Every aggregate part's rows, floats compared exactly."""
    return {
        p.relative_to(lake).as_posix(): pa.parquet.read_table(p).to_pylist()
        for p in sorted(dataset_root(lake).rglob("*.parquet"))
        if "timeframe=M1/" not in p.as_posix()
    }


@pytest.mark.parametrize(
    "first", [[M5], [M30], [H1], [D1], [M5, M30], [H4]], ids=lambda tfs: ",".join(map(str, tfs))
)
def test_a_part_is_the_same_bit_for_bit_whatever_else_the_build_builds(
    edge_lake: Path, tmp_path: Path, first: list[Timeframe]
) -> None:
    # Float sums depend on how they are grouped (M1 → H4 is not M1 → M5 → … → H4 to the
    # last bit): a build that skips the fresh parts another build (or an earlier --tf) just
    # wrote must still sum the same way, or two aggregates at once disagree with one.
    alone = tmp_path / "alone"
    shutil.copytree(edge_lake, alone)
    build(alone)
    build(edge_lake, first)
    again = build(edge_lake)
    assert {p.plan.timeframe for p in again.built}.isdisjoint(first)  # those were fresh
    assert all_parts(edge_lake) == all_parts(alone)


def test_a_days_d1_volume_is_the_sum_of_its_minutes(edge_lake: Path) -> None:
    build(edge_lake, [D1])
    d1 = read_tf(edge_lake, D1)
    m1 = ds.dataset(market_dir(edge_lake), partitioning="hive").to_table()
    day = date(2025, 1, 1)
    start = datetime(2025, 1, 1, tzinfo=UTC)
    # Day D's minutes are the bars ending in (D 00:00, D+1 00:00].
    minutes = m1.filter(
        pc.and_(
            pc.greater(m1["ts"], pa.scalar(start, m1["ts"].type)),
            pc.less_equal(m1["ts"], pa.scalar(start + timedelta(days=1), m1["ts"].type)),
        )
    )
    row = d1.filter(pc.equal(d1["ts"], pa.scalar(start + timedelta(days=1), d1["ts"].type)))
    assert row.num_rows == 1, day
    assert row["volume"][0].as_py() == pytest.approx(pc.sum(minutes["volume"]).as_py(), rel=1e-12)
    assert row["minutes"][0].as_py() == minutes.num_rows


def test_a_day_recorded_partial_yields_no_complete_d1(edge_lake: Path) -> None:
    build(edge_lake, [D1, H1])
    d1 = read_tf(edge_lake, D1)["ts"].to_pylist()
    stamp = datetime.combine(PARTIAL_DAY, datetime.min.time(), UTC)
    # Neither the partial day's D1 bar nor the day before's (it holds its 00:00 minute).
    assert stamp not in d1 and stamp + timedelta(days=1) not in d1
    assert stamp - timedelta(days=1) in d1  # 2025-01-31, from two whole days
    # and no D1 bar that would need an unfetched day (2025-01-03 needs 2025-01-04)
    assert datetime(2025, 1, 4, tzinfo=UTC) not in d1
    h1 = read_tf(edge_lake, H1)["ts"].to_pylist()
    assert max(h1) == datetime(2025, 2, 1, 23, tzinfo=UTC)
    # --include-partial writes them, marked
    build(edge_lake, [D1], include_partial=True)
    table = read_tf(edge_lake, D1)
    flags = dict(zip(table["ts"].to_pylist(), table["complete"].to_pylist(), strict=True))
    assert flags[stamp] is False and flags[stamp + timedelta(days=1)] is False
    assert flags[stamp - timedelta(days=1)] is True


def snapshot(lake: Path) -> dict[str, tuple[int, int]]:
    return {
        p.relative_to(lake).as_posix(): (p.stat().st_mtime_ns, p.stat().st_size)
        for p in lake.rglob("*")
        if p.is_file()
    }


def test_a_rerun_writes_nothing(edge_lake: Path) -> None:
    first = build(edge_lake)
    assert first.built and first.ok
    before = snapshot(edge_lake)
    again = build(edge_lake)
    assert [b for b in again.built] == []
    assert {p.reason for p in again.skipped} <= {Reason.FRESH, Reason.NOTHING}
    assert snapshot(edge_lake) == before


def changed_parts(before: dict, after: dict) -> set[tuple[str, str]]:
    """(timeframe, month) of the aggregate parts written between two snapshots."""
    out = set()
    for name, stamp in after.items():
        if "timeframe=M1/" in name or not name.endswith(".parquet"):
            continue
        if before.get(name) != stamp:
            parts = dict(p.split("=", 1) for p in name.split("/") if "=" in p)
            out.add((parts["timeframe"], f"{parts['year']}-{parts['month']}"))
    return out


def test_changing_one_m1_day_rebuilds_only_the_months_it_touches(tmp_path: Path) -> None:
    lake = tmp_path / "lake"
    write_m1(lake, BTC, date(2025, 6, 25), date(2025, 8, 5))
    build(lake)
    every_tf = {tf.name for tf in TIMEFRAMES}
    # a day inside July feeds July's buckets only
    before = snapshot(lake)
    write_m1(lake, BTC, date(2025, 7, 15), date(2025, 7, 15), fetched_at=LATER, seed=99)
    result = build(lake)
    assert changed_parts(before, snapshot(lake)) == {(tf, "2025-07") for tf in every_tf}
    assert {b.plan.reason for b in result.built} == {Reason.STALE}
    # the rebuilt month holds the refetched day's new bars
    h1 = read_tf(lake, H1).to_pandas().set_index("ts")
    m1 = ds.dataset(market_dir(lake), partitioning="hive").to_table().to_pandas()
    hour = m1[(m1.ts > "2025-07-15 11:00Z") & (m1.ts <= "2025-07-15 12:00Z")]
    assert h1.loc["2025-07-15 12:00Z", "volume"] == pytest.approx(hour.volume.sum(), rel=1e-12)
    # the last day of July also feeds August's first buckets (and its D1 bar lives there)
    before = snapshot(lake)
    write_m1(lake, BTC, date(2025, 7, 31), date(2025, 7, 31), fetched_at=LATER, seed=99)
    build(lake)
    assert changed_parts(before, snapshot(lake)) == {
        (tf, month) for tf in every_tf for month in ("2025-07", "2025-08")
    }


def test_a_bucket_holding_the_present_waits_and_is_built_once_it_ended(tmp_path: Path) -> None:
    lake = tmp_path / "lake"
    write_m1(lake, BTC, date(2025, 7, 1), date(2025, 7, 2))  # recorded whole (a fast clock)
    early = datetime(2025, 7, 2, 10, 30, tzinfo=UTC)
    aggregate_lake(AggregateRequest(lake, (H1,)), now=early)
    assert max(read_tf(lake, H1)["ts"].to_pylist()) == datetime(2025, 7, 2, 10, tzinfo=UTC)
    same = aggregate_lake(AggregateRequest(lake, (H1,)), now=early + timedelta(minutes=10))
    assert not same.built
    later = aggregate_lake(AggregateRequest(lake, (H1,)), now=NOW)
    assert [b.plan.reason for b in later.built] == [Reason.PENDING]
    assert max(read_tf(lake, H1)["ts"].to_pylist()) == datetime(2025, 7, 2, 23, tzinfo=UTC)


def test_scope_by_symbols_and_days(edge_lake: Path) -> None:
    eth = Symbol("ETH", "USD")
    write_m1(edge_lake, eth, date(2025, 1, 1), date(2025, 1, 2))
    result = build(edge_lake, [H4, M30], symbols=(eth,))
    assert {b.plan.symbol for b in result.built} == {eth}
    result = build(edge_lake, [H4], first=date(2025, 1, 31), last=date(2025, 1, 31))
    assert {str(b.plan.month) for b in result.built} == {"2025-01", "2025-02"}
    assert {b.plan.symbol for b in result.built} == {BTC}


def test_an_unreadable_aggregate_part_is_moved_aside_and_rebuilt(edge_lake: Path) -> None:
    build(edge_lake, [H1])
    path = aggregate_part_path(edge_lake, BTC, "H1", Month(2025, 1))
    good = pa.parquet.read_table(path)
    path.write_bytes(b"not parquet")
    result = build(edge_lake, [H1])
    assert [(b.plan.month, b.plan.reason) for b in result.built] == [
        (Month(2025, 1), Reason.UNREADABLE)
    ]
    assert pa.parquet.read_table(path).equals(good)
    [aside] = path.parent.glob("_corrupt-*.bad")
    assert aside.read_bytes() == b"not parquet"
