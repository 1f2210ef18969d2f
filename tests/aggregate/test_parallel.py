"""``aggregate_lake`` builds symbols in threads: the parts, the events and their order are
those of a build in one thread; an interrupted build stops its threads; a variant M1 part
(read with its text columns as dictionaries) builds the same parts as a conforming one."""

from __future__ import annotations

import shutil
import threading
from datetime import date, datetime
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from backfill.aggregate import buckets
from backfill.aggregate import build as build_module
from backfill.aggregate.build import AggregateRequest, PartBuilt, aggregate_lake
from backfill.aggregate.timeframes import TIMEFRAMES
from backfill.domain import EXCHANGE, UTC, Month, Symbol
from backfill.lake.paths import dataset_root, part_path
from tests.aggregate.helpers import write_m1
from tests.lake.helpers import SCHEMA_VARIANTS

NOW = datetime(2026, 2, 1, tzinfo=UTC)
SYMBOLS = tuple(Symbol(base, "USD") for base in ("BTC", "ETH", "SOL", "ADA", "XRP", "DOT"))
MONTHS = (Month(2025, 1), Month(2025, 2), Month(2025, 3))


@pytest.fixture(scope="module")
def many_template(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Six symbols, two days at each month edge of 2025's first quarter (thin, so small)."""
    lake = tmp_path_factory.mktemp("many")
    for i, symbol in enumerate(SYMBOLS):
        for first, last in (
            (date(2025, 1, 30), date(2025, 2, 1)),
            (date(2025, 2, 27), date(2025, 3, 2)),
        ):
            write_m1(lake, symbol, first, last, seed=i, no_trade_share=0.5)
    return lake


@pytest.fixture
def many(many_template: Path, tmp_path: Path) -> Path:
    lake = tmp_path / "lake"
    shutil.copytree(many_template, lake)
    return lake


def all_parts(lake: Path) -> dict[str, tuple[list[dict], bytes]]:
    """Every aggregate part's rows (floats compared exactly) and footer record."""
    return {
        p.relative_to(lake).as_posix(): (
            pq.read_table(p).to_pylist(),
            pq.read_schema(p).metadata[b"backfill.aggregate"],
        )
        for p in sorted(dataset_root(lake).rglob("*.parquet"))
        if "timeframe=M1/" not in p.as_posix()
    }


def events_of(lake: Path, symbols: tuple[Symbol, ...] | None = None) -> list[tuple]:
    seen: list[tuple] = []
    aggregate_lake(
        AggregateRequest(lake, TIMEFRAMES, symbols),
        now=NOW,
        on_event=lambda e: seen.append(
            (str(e.plan.symbol), e.plan.timeframe.name, str(e.plan.month), e.rows)
            if isinstance(e, PartBuilt)
            else (type(e).__name__,)
        ),
    )
    return seen


def test_threads_build_what_one_thread_builds_in_the_same_order(
    many: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    alone = tmp_path / "alone"
    shutil.copytree(many, alone)
    assert build_module.BUILD_THREADS > 1
    threaded = events_of(many)
    monkeypatch.setattr(build_module, "BUILD_THREADS", 1)
    one = events_of(alone)
    assert threaded == one
    # symbol by symbol, as the plan lists them (one thread's order, whatever finished first)
    symbols = [e[0] for e in one if len(e) > 1]
    assert symbols == sorted(symbols) and len(set(symbols)) == len(SYMBOLS)
    assert all_parts(many) == all_parts(alone)


def test_an_interrupted_build_stops_its_threads(many: Path) -> None:
    def interrupt(event: object) -> None:
        if isinstance(event, PartBuilt):
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        aggregate_lake(AggregateRequest(many, TIMEFRAMES), now=NOW, on_event=interrupt)
    assert not [t for t in threading.enumerate() if t.name.startswith("aggregate")]
    written = len(all_parts(many))
    # Each thread finishes the month it is in, and starts no other: far from the whole lake.
    whole = len(SYMBOLS) * len(MONTHS) * len(TIMEFRAMES)
    assert 0 < written <= build_module.BUILD_THREADS * 2 * len(TIMEFRAMES) < whole


def test_a_failure_in_a_thread_is_raised_to_the_caller(
    many: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    real = buckets.finish

    def finish(sums, *args, **kwargs):
        if threading.current_thread().name.startswith("aggregate") and len(sums) > 100:
            raise RuntimeError("a bug")
        return real(sums, *args, **kwargs)

    monkeypatch.setattr(buckets, "finish", finish)
    with pytest.raises(RuntimeError, match="a bug"):
        aggregate_lake(AggregateRequest(many, TIMEFRAMES), now=NOW)
    assert not [t for t in threading.enumerate() if t.name.startswith("aggregate")]


@pytest.mark.parametrize("variant", list(SCHEMA_VARIANTS))
def test_a_variant_m1_part_builds_the_same_parts(many: Path, tmp_path: Path, variant: str) -> None:
    conforming = tmp_path / "conforming"
    shutil.copytree(many, conforming)
    for month in MONTHS[:2]:  # January's last day feeds February: both read as variants
        path = part_path(many, SYMBOLS[0], month)
        pq.write_table(SCHEMA_VARIANTS[variant](pq.read_table(path)), path)  # footer kept
    assert (
        not pq.read_schema(part_path(many, SYMBOLS[0], MONTHS[0]))
        .remove_metadata()
        .equals(pq.read_schema(part_path(conforming, SYMBOLS[0], MONTHS[0])).remove_metadata())
    )
    assert events_of(many, SYMBOLS[:1]) == events_of(conforming, SYMBOLS[:1])
    assert all_parts(many) == all_parts(conforming)


def test_the_text_columns_are_taken_from_the_m1_rows(many: Path) -> None:
    # Read as dictionaries, written as text: the first bucketed row's values, as recorded.
    path = part_path(many, SYMBOLS[1], MONTHS[1])
    table = pq.read_table(path)
    index = table.schema.get_field_index("exchange")
    pq.write_table(
        table.set_column(
            index, table.schema.field(index), pa.array(["OTHER"] * table.num_rows, pa.string())
        ),
        path,
    )
    aggregate_lake(AggregateRequest(many, TIMEFRAMES), now=NOW)
    root = dataset_root(many) / "source=ibkr" / "market=crypto"
    for tf in TIMEFRAMES:
        folder = root / f"timeframe={tf}" / f"symbol={SYMBOLS[1]}" / "year=2025"
        # February's first buckets draw on January 31st; March's on February 28th
        february = pq.read_table(folder / "month=02" / "part-2025-02.parquet")
        march = pq.read_table(folder / "month=03" / "part-2025-03.parquet")
        assert set(february["exchange"].to_pylist()) == {EXCHANGE}
        assert set(march["exchange"].to_pylist()) == {"OTHER"}
        assert set(march["symbol"].to_pylist()) == {str(SYMBOLS[1])}
