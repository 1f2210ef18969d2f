"""The lake store against real files: merge, dedup, month split, coverage, quarantine."""

from __future__ import annotations

import errno
import os
import pickle
from collections.abc import Callable
from datetime import date, datetime, timedelta
from pathlib import Path

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from backfill.domain import UTC, DayCoverage, Month, Symbol, day_start
from backfill.lake import store
from backfill.lake.coverage_index import COMPLETE, read_day_marks
from backfill.lake.paths import iter_parts, lock_path, part_path
from backfill.lake.schema import (
    BAR_SCHEMA,
    COLUMNS,
    CONSTANT_COLUMNS,
    COVERAGE_KEY,
    decode_coverage,
    encode_coverage,
)
from tests.lake.helpers import (
    BTC,
    ETH,
    FETCHED,
    SCHEMA_DRIFTS,
    bars_at,
    day_bars,
    days_bars,
    file_permissions_enforced,
    sim_bars,
)

JULY = Month(2025, 7)
AUGUST = Month(2025, 8)
D1, D2, D3 = date(2025, 7, 1), date(2025, 7, 2), date(2025, 7, 3)


def at(day: date, minute: int) -> datetime:
    return day_start(day) + timedelta(minutes=minute)


def coverage_of(path: Path) -> dict:
    return decode_coverage(pq.read_schema(path).metadata[COVERAGE_KEY])


def test_same_batch_twice_gives_an_identical_part(tmp_path: Path) -> None:
    batch = days_bars(BTC, [D1, D2])
    [first] = store.write_batch(tmp_path, BTC, batch, [D1, D2], fetched_at=FETCHED)
    before = first.path.read_bytes()
    [second] = store.write_batch(tmp_path, BTC, batch, [D1, D2], fetched_at=FETCHED)
    assert second.path.read_bytes() == before
    assert second.rows == first.rows == 2 * 1440
    assert second.size_bytes == len(before)


def test_written_part_follows_the_data_contract(tmp_path: Path) -> None:
    [write] = store.write_batch(tmp_path, BTC, day_bars(BTC, D1), [D1], fetched_at=FETCHED)
    assert write.path == part_path(tmp_path, BTC, JULY)
    assert write.path.as_posix().endswith(
        "data/source=ibkr/market=crypto/timeframe=M1/symbol=BTC-USD/year=2025/month=07/"
        "part-2025-07.parquet"
    )
    meta = pq.read_metadata(write.path)
    column = meta.row_group(0).column(0)
    assert column.compression == "ZSTD"
    assert column.is_stats_set
    table = store.read_part(write.path)
    assert table.schema.names == list(COLUMNS)
    assert table.schema.equals(BAR_SCHEMA)
    assert table["ts"].type == pa.timestamp("us", tz="UTC")
    assert table["ts"][0].as_py() == at(D1, 0)
    assert table["ts"][-1].as_py() == at(D1, 1439)


def test_parts_dictionary_encode_only_the_constant_text_columns(tmp_path: Path) -> None:
    days = [D1 + timedelta(days=i) for i in range(7)]
    [write] = store.write_batch(tmp_path, BTC, sim_bars(BTC, D1, 7), days, fetched_at=FETCHED)
    group = pq.read_metadata(write.path).row_group(0)
    encodings = {group.column(i).path_in_schema: group.column(i).encodings for i in range(13)}
    for name in COLUMNS:
        dictionary = "RLE_DICTIONARY" in encodings[name]
        assert dictionary == (name in CONSTANT_COLUMNS), (name, encodings[name])
    assert "DELTA_BINARY_PACKED" in encodings["ts"]
    # The same rows written with pyarrow's defaults (the store's options before issue 10).
    old = tmp_path / "old.parquet"
    pq.write_table(store.read_part(write.path), old, compression="zstd")
    assert write.size_bytes <= 0.75 * old.stat().st_size, (write.size_bytes, old.stat().st_size)


def test_a_part_written_with_the_old_options_reads_and_merges(tmp_path: Path) -> None:
    path = part_path(tmp_path, BTC, JULY)
    path.parent.mkdir(parents=True)
    first = sim_bars(BTC, D1, 2)
    coverage = [DayCoverage(d, n, FETCHED, True) for d, n in store.rows_per_day(first).items()]
    old = first.replace_schema_metadata({COVERAGE_KEY: encode_coverage(coverage)})
    pq.write_table(old, path, compression="zstd", write_statistics=True)  # dictionary everywhere
    assert store.read_part(path).equals(first)
    [write] = store.write_batch(tmp_path, BTC, sim_bars(BTC, D3, 1), [D3], fetched_at=FETCHED)
    assert write.quarantined is None
    assert store.read_part(path).equals(sim_bars(BTC, D1, 3))
    assert sorted(coverage_of(path)) == [D1, D2, D3]


def test_overlapping_batches_merge(tmp_path: Path) -> None:
    store.write_batch(tmp_path, BTC, days_bars(BTC, [D1, D2]), [D1, D2], fetched_at=FETCHED)
    later = FETCHED + timedelta(hours=1)
    [write] = store.write_batch(tmp_path, BTC, days_bars(BTC, [D2, D3]), [D2, D3], fetched_at=later)
    table = store.read_part(write.path)
    assert write.rows == table.num_rows == 3 * 1440
    stamps = table["ts"].to_pylist()
    assert stamps == sorted(set(stamps))
    coverage = coverage_of(write.path)
    assert sorted(coverage) == [D1, D2, D3]
    assert coverage[D1].fetched_at == FETCHED
    assert coverage[D2].fetched_at == coverage[D3].fetched_at == later
    assert all(c.rows == 1440 and c.complete for c in coverage.values())


def test_newest_batch_wins_on_conflicting_minutes(tmp_path: Path) -> None:
    store.write_batch(tmp_path, BTC, day_bars(BTC, D1, price=100), [D1], fetched_at=FETCHED)
    fixes = bars_at(BTC, [at(D1, 10), at(D1, 11)], price=300)
    [write] = store.write_batch(tmp_path, BTC, fixes, [D1], fetched_at=FETCHED)
    table = store.read_part(write.path)
    assert table.num_rows == 1440
    opens = dict(zip(table["ts"].to_pylist(), table["open"].to_pylist(), strict=True))
    assert opens[at(D1, 10)] == opens[at(D1, 11)] == 300
    assert opens[at(D1, 9)] == opens[at(D1, 12)] == 100


def test_within_a_batch_the_last_duplicate_wins(tmp_path: Path) -> None:
    batch = pa.concat_tables(
        [bars_at(BTC, [at(D1, 5), at(D1, 1)], 100), bars_at(BTC, [at(D1, 5)], 200)]
    )
    [write] = store.write_batch(tmp_path, BTC, batch, [D1], fetched_at=FETCHED)
    table = store.read_part(write.path)
    assert table["ts"].to_pylist() == [at(D1, 1), at(D1, 5)]
    assert table["open"].to_pylist() == [100, 200]
    assert coverage_of(write.path)[D1].rows == 2


def test_a_batch_across_a_month_boundary_goes_to_two_parts(tmp_path: Path) -> None:
    last_july, first_august = date(2025, 7, 31), date(2025, 8, 1)
    ends = [datetime(2025, 7, 31, 23, 59, tzinfo=UTC), datetime(2025, 8, 1, 0, 0, tzinfo=UTC)]
    writes = store.write_batch(
        tmp_path, BTC, bars_at(BTC, ends), [last_july, first_august], fetched_at=FETCHED
    )
    assert [(w.month, w.rows, w.days) for w in writes] == [
        (JULY, 1, (last_july,)),
        (AUGUST, 1, (first_august,)),
    ]
    assert store.read_part(part_path(tmp_path, BTC, JULY))["ts"].to_pylist() == [ends[0]]
    assert store.read_part(part_path(tmp_path, BTC, AUGUST))["ts"].to_pylist() == [ends[1]]
    assert list(coverage_of(writes[0].path)) == [last_july]
    assert list(coverage_of(writes[1].path)) == [first_august]


def test_rows_outside_the_declared_days_are_refused_before_anything_is_touched(
    tmp_path: Path,
) -> None:
    [write] = store.write_batch(tmp_path, BTC, day_bars(BTC, D1), [D1], fetched_at=FETCHED)
    before = write.path.read_bytes()
    stray = at(D3, 7)
    batch = pa.concat_tables([day_bars(BTC, D2), bars_at(BTC, [stray])])
    with pytest.raises(store.OutOfWindowRows) as raised:
        store.write_batch(tmp_path, BTC, batch, [D1, D2], fetched_at=FETCHED)
    assert raised.value.offending == (stray,)
    assert raised.value.count == 1
    assert stray.isoformat() in str(raised.value)
    assert write.path.read_bytes() == before
    # A bar ending at midnight belongs to the next day, never to the day before.
    with pytest.raises(store.OutOfWindowRows):
        store.write_batch(tmp_path, ETH, bars_at(ETH, [at(D2, 0)]), [D1], fetched_at=FETCHED)
    assert not part_path(tmp_path, ETH, JULY).parent.exists()


@pytest.mark.parametrize(
    "spoil",
    [
        lambda t: t.set_column(
            t.schema.get_field_index("symbol"), "symbol", pa.array(["ETH-USD"] * t.num_rows)
        ),
        lambda t: t.drop_columns(["wap"]),
        lambda t: t.set_column(0, "ts", pc.add(t["ts"], pa.scalar(timedelta(seconds=1)))),
        lambda t: t.set_column(1, "open", pa.array([None] * t.num_rows, pa.float64())),
    ],
    ids=["wrong-symbol", "missing-column", "not-minute-aligned", "nulls"],
)
def test_batches_that_break_the_contract_are_refused(
    tmp_path: Path, spoil: Callable[[pa.Table], pa.Table]
) -> None:
    with pytest.raises(store.BadBars):
        store.write_batch(tmp_path, BTC, spoil(day_bars(BTC, D1)), [D1], fetched_at=FETCHED)
    assert list(iter_parts(tmp_path)) == []


def test_coverage_records_every_declared_day_with_counted_rows(tmp_path: Path) -> None:
    batch = pa.concat_tables([day_bars(BTC, D1, skip=range(100)), bars_at(BTC, [at(D3, 0)])])
    [write] = store.write_batch(
        tmp_path, BTC, batch, [D1, D2, D3], fetched_at=FETCHED, partial_days=[D3]
    )
    coverage = coverage_of(write.path)
    assert {d: (c.rows, c.complete) for d, c in coverage.items()} == {
        D1: (1340, True),
        D2: (0, True),  # fetched, no data: never asked again
        D3: (1, False),  # the day was not over yet: fetch again
    }
    # What plan and run read of it: the complete days only.
    assert read_day_marks(tmp_path, [BTC], D1, D3, remember=False)[BTC] == {
        D1: COMPLETE,
        D2: COMPLETE,
    }


def test_a_batch_of_only_no_data_days_still_writes_coverage(tmp_path: Path) -> None:
    empty = bars_at(BTC, [])
    [write] = store.write_batch(tmp_path, BTC, empty, [D1, D2], fetched_at=FETCHED)
    assert write.rows == 0
    assert {d: c.rows for d, c in coverage_of(write.path).items()} == {D1: 0, D2: 0}


def test_day_marks_read_only_the_months_asked_and_survive_bad_footers(
    tmp_path: Path,
) -> None:
    store.write_batch(tmp_path, BTC, day_bars(BTC, D1), [D1], fetched_at=FETCHED)
    august_day = date(2025, 8, 5)
    [august] = store.write_batch(
        tmp_path, BTC, day_bars(BTC, august_day), [august_day], fetched_at=FETCHED
    )

    def days(symbols: list[Symbol], first: date, last: date) -> dict[Symbol, list[date]]:
        marks = read_day_marks(tmp_path, symbols, first, last, remember=False)
        return {symbol: list(days) for symbol, days in marks.items()}

    assert days([BTC], D2, date(2025, 8, 31)) == {BTC: [august_day]}
    assert days([BTC, ETH], D1, D1) == {BTC: [D1], ETH: []}
    august.path.write_bytes(b"PAR1 not a parquet file")
    assert days([BTC], D1, date(2025, 8, 31)) == {BTC: [D1]}


def test_a_corrupt_part_is_moved_aside_never_overwritten(tmp_path: Path) -> None:
    path = part_path(tmp_path, BTC, JULY)
    path.parent.mkdir(parents=True)
    path.write_bytes(b"garbage one")
    [write] = store.write_batch(tmp_path, BTC, day_bars(BTC, D1), [D1], fetched_at=FETCHED)
    assert write.quarantined is not None
    assert write.quarantined.name.startswith("_corrupt-part-2025-07.")
    assert write.quarantined.read_bytes() == b"garbage one"
    assert store.read_part(path).num_rows == 1440
    assert list(coverage_of(path)) == [D1]

    path.write_bytes(b"garbage two")
    [again] = store.write_batch(tmp_path, BTC, day_bars(BTC, D2), [D2], fetched_at=FETCHED)
    assert again.quarantined not in (None, write.quarantined)
    assert write.quarantined.read_bytes() == b"garbage one"
    assert again.quarantined.read_bytes() == b"garbage two"
    with pytest.raises(store.CorruptPart):
        store.read_part(again.quarantined)


def test_a_part_the_run_may_not_read_is_an_error_and_nothing_is_moved(tmp_path: Path) -> None:
    [write] = store.write_batch(tmp_path, BTC, day_bars(BTC, D1), [D1], fetched_at=FETCHED)
    before = write.path.read_bytes()
    folder = sorted(p.name for p in write.path.parent.iterdir())
    write.path.chmod(0)
    try:
        with file_permissions_enforced():
            with pytest.raises(PermissionError):
                write.path.open("rb")  # the OS really refuses: the test proves something
            with pytest.raises(store.PartUnreadable) as raised:
                store.write_batch(tmp_path, BTC, day_bars(BTC, D2), [D2], fetched_at=FETCHED)
            with pytest.raises(store.PartUnreadable):
                store.read_part(write.path)
    finally:
        write.path.chmod(0o644)
    error = raised.value
    assert isinstance(error, store.StoreError) and isinstance(error, OSError)
    assert not isinstance(error, store.CorruptPart)
    assert (error.path, error.errno) == (write.path, errno.EACCES)
    assert error.strerror == os.strerror(errno.EACCES)
    assert str(write.path) in str(error) and "Permission denied" in str(error)
    copy = pickle.loads(pickle.dumps(error))  # it crosses process boundaries intact
    assert (type(copy), copy.path, copy.errno, str(copy)) == (
        store.PartUnreadable,
        error.path,
        error.errno,
        str(error),
    )
    assert write.path.read_bytes() == before
    assert sorted(p.name for p in write.path.parent.iterdir()) == folder  # no _corrupt-, no temp
    assert list(coverage_of(write.path)) == [D1]


def test_a_folder_in_the_place_of_a_part_is_an_error_and_is_left_alone(tmp_path: Path) -> None:
    path = part_path(tmp_path, BTC, JULY)
    path.mkdir(parents=True)
    with pytest.raises(store.PartUnreadable) as raised:
        store.write_batch(tmp_path, BTC, day_bars(BTC, D1), [D1], fetched_at=FETCHED)
    assert raised.value.errno == errno.EISDIR
    assert path.is_dir()
    assert [p.name for p in path.parent.iterdir() if p.name.startswith("_")] == []


def test_a_part_without_coverage_is_corrupt(tmp_path: Path) -> None:
    path = part_path(tmp_path, BTC, JULY)
    path.parent.mkdir(parents=True)
    pq.write_table(day_bars(BTC, D1), path)
    with pytest.raises(store.CorruptPart, match="no coverage"):
        store.read_part(path)
    [write] = store.write_batch(tmp_path, BTC, day_bars(BTC, D2), [D2], fetched_at=FETCHED)
    assert write.quarantined is not None
    assert write.rows == 1440


def test_naive_fetched_at_and_stray_partial_days_are_refused(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="timezone"):
        store.write_batch(tmp_path, BTC, day_bars(BTC, D1), [D1], fetched_at=datetime(2025, 9, 1))
    with pytest.raises(ValueError, match="partial"):
        store.write_batch(
            tmp_path, BTC, day_bars(BTC, D1), [D1], fetched_at=FETCHED, partial_days=[D2]
        )


def test_stale_temp_files_are_cleared_by_the_next_writer(tmp_path: Path) -> None:
    [write] = store.write_batch(tmp_path, BTC, day_bars(BTC, D1), [D1], fetched_at=FETCHED)
    stale = write.path.with_name(f".{write.path.name}.999999.tmp")
    stale.write_bytes(b"half a file")
    store.write_batch(tmp_path, BTC, day_bars(BTC, D2), [D2], fetched_at=FETCHED)
    assert not stale.exists()
    assert lock_path(write.path).exists()


def test_an_earlier_batch_lands_before_the_rows_already_there(tmp_path: Path) -> None:
    store.write_batch(tmp_path, BTC, day_bars(BTC, D3), [D3], fetched_at=FETCHED)
    [write] = store.write_batch(tmp_path, BTC, day_bars(BTC, D1), [D1], fetched_at=FETCHED)
    stamps = store.read_part(write.path)["ts"].to_pylist()
    assert stamps == sorted(stamps) and len(stamps) == 2 * 1440


@settings(max_examples=25, deadline=None)
@given(
    batches=st.lists(
        st.lists(st.tuples(st.integers(0, 3 * 1440 - 1), st.integers(1, 9)), max_size=40),
        min_size=1,
        max_size=5,
    )
)
def test_any_sequence_of_batches_equals_a_last_write_wins_model(
    tmp_path_factory: pytest.TempPathFactory, batches: list[list[tuple[int, int]]]
) -> None:
    lake = tmp_path_factory.mktemp("model")
    model: dict[datetime, float] = {}
    for batch in batches:
        rows = [bars_at(BTC, [at(D1, minute)], float(price)) for minute, price in batch]
        table = pa.concat_tables([bars_at(BTC, []), *rows])
        store.write_batch(lake, BTC, table, [D1, D2, D3], fetched_at=FETCHED)
        model.update({at(D1, minute): float(price) for minute, price in batch})
    table = store.read_part(part_path(lake, BTC, JULY))
    assert dict(zip(table["ts"].to_pylist(), table["open"].to_pylist(), strict=True)) == model
    assert table["ts"].to_pylist() == sorted(model)
    counts = {d: c.rows for d, c in coverage_of(part_path(lake, BTC, JULY)).items()}
    assert counts == {d: sum(1 for ts in model if ts.date() == d) for d in (D1, D2, D3)}


@pytest.mark.parametrize("spoil", list(SCHEMA_DRIFTS.values()), ids=list(SCHEMA_DRIFTS))
def test_footer_reading_refuses_a_part_whose_schema_drifted(
    tmp_path: Path, spoil: Callable[[pa.Table], pa.Table]
) -> None:
    """plan reads footers only, yet a part the writer would quarantine covers nothing."""
    [write] = store.write_batch(tmp_path, BTC, day_bars(BTC, D1), [D1], fetched_at=FETCHED)
    table = pq.read_table(write.path)
    pq.write_table(spoil(table).replace_schema_metadata(table.schema.metadata), write.path)
    assert COVERAGE_KEY in pq.read_schema(write.path).metadata  # the record is still there
    with pytest.raises(store.CorruptPart, match="schema differs"):
        store.read_part_coverage(write.path)
    assert read_day_marks(tmp_path, [BTC], D1, D1, remember=False)[BTC] == {}
