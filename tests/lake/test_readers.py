"""A written lake reads back: ``backfill.read_bars``, and pandas, pyarrow, DuckDB and Polars
as docs/lake.md shows them (one timeframe at a time), whatever non-part files and aggregate
timeframes lie around."""

from __future__ import annotations

import shutil
import subprocess
import sys
from datetime import date, datetime
from pathlib import Path

import pandas as pd
import pyarrow as pa
import pyarrow.dataset as ds
import pyarrow.parquet as pq
import pytest

from backfill.aggregate.build import AggregateRequest, aggregate_lake
from backfill.aggregate.timeframes import TIMEFRAMES
from backfill.domain import UTC, BadInput, Month
from backfill.lake import store
from backfill.lake.paths import market_dir, part_path, temp_path, timeframe_dir
from backfill.lake.schema import AGGREGATE_SCHEMA, BAR_SCHEMA, COLUMNS
from tests.docs import doc_text
from tests.lake.helpers import BTC, ETH, FETCHED, day_bars

DAYS = [date(2025, 7, 31), date(2025, 8, 1)]
JUNE, JULY, AUGUST = Month(2025, 6), Month(2025, 7), Month(2025, 8)


def write_lake(lake: Path) -> None:
    """BTC and ETH, a day in July and a day in August: two symbols, two months; and every
    aggregate timeframe built from them (readers of M1 must not see those)."""
    for symbol in (BTC, ETH):
        batch = pa.concat_tables([day_bars(symbol, d) for d in DAYS])
        store.write_batch(lake, symbol, batch, DAYS, fetched_at=FETCHED)
    built = aggregate_lake(AggregateRequest(lake, TIMEFRAMES), now=datetime(2026, 1, 1, tzinfo=UTC))
    assert built.ok and built.built
    # Leave behind every kind of non-part file the store can create.
    july = part_path(lake, BTC, JULY)
    temp_path(july).write_bytes(b"half written")
    july.with_name("_corrupt-part-2025-07.parquet.20250801T000000000000Z.bad").write_bytes(b"junk")


@pytest.fixture
def lake(tmp_path: Path) -> Path:
    write_lake(tmp_path)
    return tmp_path


def at(day: date, hour: int = 0, minute: int = 0) -> datetime:
    return datetime(day.year, day.month, day.day, hour, minute, tzinfo=UTC)


# -- backfill.read_bars ------------------------------------------------------------------------


def test_read_bars_returns_the_days_asked_by_the_lake_day_rule(lake: Path) -> None:
    from backfill import read_bars

    # A bar of 08-02 00:00 is the last minute of 08-01's trading but lives in day 08-02.
    store.write_batch(
        lake, BTC, day_bars(BTC, date(2025, 8, 2)), [date(2025, 8, 2)], fetched_at=FETCHED
    )
    table = read_bars(lake, ["BTC-USD"], date(2025, 7, 31), date(2025, 8, 1))
    assert table.schema.equals(BAR_SCHEMA) and table.schema.metadata is None
    assert table.num_rows == 2 * 1440
    assert table["ts"][0].as_py() == at(date(2025, 7, 31))
    assert table["ts"][-1].as_py() == at(date(2025, 8, 1), 23, 59)
    assert set(table["symbol"].to_pylist()) == {"BTC-USD"}
    one_day = read_bars(lake, "BTC-USD", "2025-08-01", "2025-08-01")
    assert (one_day.num_rows, one_day["ts"][0].as_py()) == (1440, at(date(2025, 8, 1)))
    assert read_bars(lake, "BTC-USD", "2025-08-03", "2025-09-30").num_rows == 0


def test_read_bars_of_every_symbol_by_symbol_then_ts(lake: Path) -> None:
    from backfill import read_bars

    table = read_bars(lake, None, DAYS[0], DAYS[1])
    assert table.num_rows == 4 * 1440
    frame = table.to_pandas()
    assert list(frame["symbol"].unique()) == ["BTC-USD", "ETH-USD"]
    assert all(group["ts"].is_monotonic_increasing for _, group in frame.groupby("symbol"))
    asked_order = read_bars(lake, [ETH, "btc-usd"], DAYS[0], DAYS[1])
    assert asked_order["symbol"][0].as_py() == "ETH-USD"
    assert asked_order["symbol"][-1].as_py() == "BTC-USD"


def test_read_bars_opens_only_the_parts_of_the_symbols_and_months_asked(lake: Path) -> None:
    from backfill import read_bars

    june = date(2025, 6, 30)
    store.write_batch(lake, BTC, day_bars(BTC, june), [june], fetched_at=FETCHED)
    # Spoil every part outside the ask: opening any one of them would raise.
    for symbol, month in ((BTC, JUNE), (ETH, JULY), (ETH, AUGUST)):
        part_path(lake, symbol, month).write_bytes(b"not parquet")
    assert read_bars(lake, "BTC-USD", "2025-07-01", "2025-08-31").num_rows == 2 * 1440
    with pytest.raises(store.CorruptPart):
        read_bars(lake, "BTC-USD", "2025-06-30", "2025-07-31")


def test_read_bars_is_one_call_from_pandas_and_polars(lake: Path) -> None:
    import polars as pl

    from backfill import read_bars

    table = read_bars(lake, "ETH-USD", "2025-07-31", "2025-08-01")
    frame = table.to_pandas()
    assert list(frame.columns) == list(COLUMNS)
    assert str(frame["ts"].dtype) == "datetime64[us, UTC]"
    polars_frame = pl.from_arrow(table)
    assert polars_frame.height == 2880
    assert str(polars_frame.schema["ts"]) == "Datetime(time_unit='us', time_zone='UTC')"


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (("BTC", "2025-07-31", "2025-08-01"), "malformed symbol"),
        (("SOL-USD", "2025-07-31", "2025-08-01"), "not in the lake .*SOL-USD.*BTC-USD, ETH-USD"),
        (([], "2025-07-31", "2025-08-01"), "none given"),
        (([42], "2025-07-31", "2025-08-01"), "expected 'BASE-QUOTE'"),
        (("BTC-USD", "2025-08-01", "2025-07-31"), "start 2025-08-01 is after end 2025-07-31"),
        (("BTC-USD", "31/07/2025", "2025-08-01"), "start: '31/07/2025' is not a date"),
        (("BTC-USD", datetime(2025, 7, 31, 12, tzinfo=UTC), "2025-08-01"), "not a datetime"),
        (("BTC-USD", "2025-07-31", 20250801), "end: give a day"),
    ],
)
def test_read_bars_refuses_bad_input_with_a_clear_message(
    lake: Path, args: tuple, message: str
) -> None:
    from backfill import read_bars

    with pytest.raises(BadInput, match=message):
        read_bars(lake, *args)


def test_read_bars_refuses_a_missing_lake_and_an_unknown_timeframe(tmp_path: Path) -> None:
    from backfill import read_bars

    with pytest.raises(BadInput, match="no lake at"):
        read_bars(tmp_path / "nowhere", None, "2025-07-01", "2025-07-31")
    with pytest.raises(BadInput, match="timeframe 'M7'"):
        read_bars(tmp_path, None, "2025-07-01", "2025-07-31", timeframe="M7")
    assert read_bars(tmp_path, None, "2025-07-01", "2025-07-31").schema.equals(BAR_SCHEMA)


def test_import_backfill_stays_light_and_read_bars_needs_no_dataset_module() -> None:
    code = (
        "import sys, backfill\n"
        "heavy = [m for m in ('pyarrow', 'ib_insync', 'ib_async') if m in sys.modules]\n"
        "assert not heavy, heavy\n"
        "from backfill import read_bars\n"
        "assert callable(read_bars)\n"
        "assert not {'pyarrow.dataset', 'ib_insync', 'ib_async'} & set(sys.modules)\n"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert result.returncode == 0, result.stderr


# -- other readers, one timeframe at a time, as docs/lake.md shows them -----------------------


def test_pandas_reads_m1_without_hive_keys(lake: Path) -> None:
    frame = pd.read_parquet(market_dir(lake), partitioning=None)
    assert list(frame.columns) == list(COLUMNS)
    assert len(frame) == 4 * 1440
    assert frame.groupby("symbol").size().to_dict() == {"BTC-USD": 2880, "ETH-USD": 2880}
    assert str(frame["ts"].dtype) == "datetime64[us, UTC]"
    btc = pd.read_parquet(
        market_dir(lake), partitioning=None, filters=[("symbol", "==", "BTC-USD")]
    )
    assert len(btc) == 2880 and btc["ts"].is_unique


def test_pandas_reads_a_part(lake: Path) -> None:
    frame = pd.read_parquet(part_path(lake, BTC, JULY))
    assert list(frame.columns) == list(COLUMNS)
    assert len(frame) == 1440
    assert frame["ts"].is_monotonic_increasing and frame["ts"].is_unique
    assert frame["ts"].iloc[-1] == pd.Timestamp("2025-07-31 23:59", tz="UTC")


def test_pyarrow_read_table_reads_m1_without_hive_keys(lake: Path) -> None:
    table = pq.read_table(market_dir(lake), partitioning=None)
    assert table.schema.names == list(COLUMNS)
    assert table.num_rows == 4 * 1440
    assert table.schema.field("symbol").type == pa.string()


def test_pyarrow_dataset_reads_m1_with_hive_partitioning(lake: Path) -> None:
    dataset = ds.dataset(market_dir(lake), format="parquet", partitioning="hive")
    assert len(dataset.files) == 4
    table = dataset.to_table()
    assert table.num_rows == 4 * 1440
    assert {"year", "month"} <= set(table.column_names)
    august_btc = dataset.to_table(
        filter=(ds.field("symbol") == "BTC-USD") & (ds.field("month") == 8)
    )
    assert august_btc.num_rows == 1440
    assert pq.read_table(dataset.files[0]).num_rows == 1440


def test_duckdb_reads_m1_with_a_glob(lake: Path) -> None:
    import duckdb

    glob = f"{market_dir(lake)}/**/*.parquet"
    rows = duckdb.sql(
        "select symbol, count(*), count(distinct ts), min(ts), max(ts) "
        f"from read_parquet('{glob}', hive_partitioning=true) group by symbol order by symbol"
    ).fetchall()
    assert [r[:3] for r in rows] == [("BTC-USD", 2880, 2880), ("ETH-USD", 2880, 2880)]
    first, last = rows[0][3], rows[0][4]
    assert (first.isoformat(), last.isoformat()) == (
        "2025-07-31T00:00:00+00:00",
        "2025-08-01T23:59:00+00:00",
    )


def test_polars_scans_m1(lake: Path) -> None:
    import polars as pl

    glob = f"{market_dir(lake)}/**/*.parquet"
    frame = pl.scan_parquet(glob, hive_partitioning=True).collect()
    assert frame.height == 4 * 1440
    assert frame.group_by("symbol").len().sort("symbol").rows() == [
        ("BTC-USD", 2880),
        ("ETH-USD", 2880),
    ]
    eth = pl.scan_parquet(glob, hive_partitioning=True).filter(pl.col("symbol") == "ETH-USD")
    eth_frame = eth.collect()
    assert str(eth_frame.schema["ts"]) == "Datetime(time_unit='us', time_zone='UTC')"
    assert eth_frame["ts"].is_sorted() and eth_frame.height == 2880


def test_the_pages_read_bars_block_reads_the_lake(
    lake: Path,
    monkeypatch: pytest.MonkeyPatch,
    tmp_path_factory: pytest.TempPathFactory,
) -> None:
    page = doc_text("lake.md")
    after = page[page.index("Read it back with `backfill.read_bars`") :]
    code = after.split("```python\n", 1)[1].split("```", 1)[0]
    cwd = tmp_path_factory.mktemp("cwd")
    (cwd / "lake").symlink_to(lake)  # the page reads "lake", relative
    monkeypatch.chdir(cwd)
    names: dict = {}
    exec(code, names)
    assert names["bars"].num_rows == 2 * 1440  # 2025-07-31 of BTC-USD and ETH-USD
    assert len(names["df"]) == 2 * 1440 and list(names["df"].columns) == BAR_SCHEMA.names


def _readme_readers() -> str:
    """docs/lake.md's block of readers (the python block after "Other readers")."""
    readme = doc_text("lake.md")
    after = readme[readme.index("Other readers, one timeframe at a time") :]
    return after.split("```python\n", 1)[1].split("```", 1)[0]


@pytest.mark.parametrize("timeframe", ["M1", "H1"])
def test_readmes_reader_lines_get_one_timeframe_on_a_lake_holding_aggregates(
    lake: Path,
    timeframe: str,
    monkeypatch: pytest.MonkeyPatch,
    tmp_path_factory: pytest.TempPathFactory,
) -> None:
    code = _readme_readers()
    assert "timeframe=M1" in code
    # the page's own lines, run from a folder holding "lake" (the H1 run: the folder swapped)
    cwd = tmp_path_factory.mktemp("cwd")
    (cwd / "lake").symlink_to(lake)
    monkeypatch.chdir(cwd)
    names: dict = {}
    exec(code.replace("timeframe=M1", f"timeframe={timeframe}"), names)
    schema = BAR_SCHEMA if timeframe == "M1" else AGGREGATE_SCHEMA
    expected = pa.concat_tables(
        pq.read_table(p) for p in sorted(timeframe_dir(lake, timeframe).rglob("part-*.parquet"))
    )
    per_symbol = {
        s: expected.filter(pa.compute.equal(expected["symbol"], s)).num_rows
        for s in ("BTC-USD", "ETH-USD")
    }
    assert per_symbol["BTC-USD"] > 0
    assert len(names["btc"]) == per_symbol["BTC-USD"]
    assert list(names["btc"].columns) == schema.names
    assert names["table"].schema.names == schema.names
    assert names["table"].num_rows == expected.num_rows
    august = expected.filter(pa.compute.equal(expected["symbol"], "BTC-USD"))
    august = august.filter(pa.compute.equal(pa.compute.month(august["ts"]), 8))
    assert names["btc_august"].num_rows == august.num_rows
    assert names["rows"].count("*").fetchall()[0][0] == expected.num_rows
    assert names["frame"].height == expected.num_rows
    assert set(schema.names) <= set(names["frame"].columns)


def test_read_bars_reads_an_aggregate_timeframe(lake: Path) -> None:
    from backfill import read_bars

    h1 = read_bars(lake, "BTC-USD", DAYS[0], DAYS[1], timeframe="H1")
    assert h1.schema.equals(AGGREGATE_SCHEMA) and h1.schema.metadata is None
    # H1 buckets ending 07-31 01:00 … 08-01 23:00; the one ending 08-02 00:00 is day 08-02's
    assert h1.num_rows == 47
    assert h1["ts"][0].as_py() == at(DAYS[0], 1) and h1["ts"][-1].as_py() == at(DAYS[1], 23)
    assert set(h1["symbol"].to_pylist()) == {"BTC-USD"}
    assert h1["minutes"].to_pylist() == [60] * 47
    d1 = read_bars(lake, None, DAYS[1], DAYS[1], timeframe="D1")  # 07-31's D1 bar
    assert d1["symbol"].to_pylist() == ["BTC-USD", "ETH-USD"]
    assert d1["ts"].to_pylist() == [at(DAYS[1])] * 2
    assert read_bars(lake, "ETH-USD", "2025-06-01", "2025-06-30", timeframe="M5").num_rows == 0


def test_read_bars_of_a_timeframe_not_built_says_how_to_build_it(lake: Path) -> None:
    from backfill import read_bars

    shutil.rmtree(timeframe_dir(lake, "H4") / "symbol=ETH-USD")
    with pytest.raises(BadInput, match=r"no H4 parts .* for ETH-USD .*backfill aggregate --tf H4"):
        read_bars(lake, "ETH-USD", DAYS[0], DAYS[1], timeframe="H4")
