"""One schema rule for every reader: a part another tool rewrote in a variant of the contract
(nullable fields, columns reordered, ms/ns timestamps, dictionary or large text) is read by
casting, counted by plan, reported by verify and mended by the next write; a part that does
not conform at all is reported and refused, never moved aside with its days."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from backfill import read_bars
from backfill.domain import Month
from backfill.lake import store
from backfill.lake.coverage_index import read_day_marks
from backfill.lake.paths import QUARANTINE_PREFIX, part_path
from backfill.lake.schema import BAR_SCHEMA, COVERAGE_KEY, conformance
from backfill.lake.verify import Kind, Severity, verify_lake
from tests.lake.conftest import BTC_DAYS
from tests.lake.helpers import BTC, FETCHED, SCHEMA_DRIFTS, SCHEMA_VARIANTS, day_bars

JULY = Month(2025, 7)
D1, D2, D3 = BTC_DAYS
D4 = D3.replace(day=4)

Spoil = Callable[[pa.Table], pa.Table]


def rewrite_with_pyarrow(path: Path, spoil: Spoil) -> None:
    """What a user's script does: read the part, change its schema, write it with pyarrow's
    defaults, footer (coverage record) kept."""
    table = pq.read_table(path)
    pq.write_table(spoil(table), path)
    assert COVERAGE_KEY in pq.read_schema(path).metadata


def kinds(lake: Path) -> set[str]:
    return {f.kind.value for f in verify_lake(lake).findings if f.severity is Severity.ERROR}


@pytest.mark.parametrize("spoil", list(SCHEMA_VARIANTS.values()), ids=list(SCHEMA_VARIANTS))
def test_a_variant_is_read_counted_reported_and_mended(clean_lake: Path, spoil: Spoil) -> None:
    path = part_path(clean_lake, BTC, JULY)
    before = read_bars(clean_lake, "BTC-USD", D1, D3)
    rewrite_with_pyarrow(path, spoil)
    assert not conformance(pq.read_schema(path)).exact

    assert kinds(clean_lake) == {Kind.SCHEMA_VARIANT.value}  # reported, and nothing else
    assert read_bars(clean_lake, "BTC-USD", D1, D3).equals(before)  # read by casting
    marks = read_day_marks(clean_lake, [BTC], D1, D3, remember=False)[BTC]
    assert sorted(marks) == [D1, D2, D3]  # plan counts its days present

    [write] = store.write_batch(clean_lake, BTC, day_bars(BTC, D4), [D4], fetched_at=FETCHED)
    assert write.quarantined is None  # not moved aside: mended
    assert pq.read_schema(path).remove_metadata().equals(BAR_SCHEMA)
    assert sorted(store.read_part_coverage(path)) == [D1, D2, D3, D4]
    assert read_bars(clean_lake, "BTC-USD", D1, D3).equals(before)
    assert kinds(clean_lake) == set()


def _with_a_null(table: pa.Table) -> pa.Table:
    table = SCHEMA_VARIANTS["nullable"](table)
    wap = table["wap"].to_pylist()
    wap[5] = None
    return table.set_column(
        table.schema.get_field_index("wap"), table.schema.field("wap"), pa.array(wap, pa.float64())
    )


@pytest.mark.parametrize(
    "spoil", [*SCHEMA_DRIFTS.values(), _with_a_null], ids=[*SCHEMA_DRIFTS, "null-value"]
)
def test_a_part_that_does_not_conform_is_reported_and_kept(clean_lake: Path, spoil: Spoil) -> None:
    path = part_path(clean_lake, BTC, JULY)
    rewrite_with_pyarrow(path, spoil)
    size = path.stat().st_size

    assert kinds(clean_lake) & {Kind.SCHEMA.value, Kind.NULLS.value}
    with pytest.raises(store.NonConformingPart, match="schema differs"):
        read_bars(clean_lake, "BTC-USD", D1, D3)
    with pytest.raises(store.NonConformingPart):
        store.write_batch(clean_lake, BTC, day_bars(BTC, D4), [D4], fetched_at=FETCHED)
    assert path.stat().st_size == size  # left where it is, for a human
    assert not [p for p in path.parent.iterdir() if p.name.startswith(QUARANTINE_PREFIX)]


def test_aggregate_builds_from_a_variant_part(clean_lake: Path) -> None:
    import subprocess
    import sys

    from backfill.lake.paths import aggregate_part_path

    rewrite_with_pyarrow(part_path(clean_lake, BTC, JULY), SCHEMA_VARIANTS["nullable"])
    done = subprocess.run(
        [
            sys.executable,
            "-m",
            "backfill",
            "aggregate",
            "--lake",
            str(clean_lake),
            "--symbols",
            "BTC-USD",
            "--tf",
            "H1",
        ],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 0, done.stderr + done.stdout
    h1 = pq.read_table(aggregate_part_path(clean_lake, BTC, "H1", JULY))
    assert h1.num_rows == 3 * 24 - 1  # the last hour of July 3rd ends on the 4th (no M1)


@pytest.mark.parametrize("variant", ["ts-ns", "ts-ms"])
def test_the_minute_check_reads_a_variant_in_microseconds(tmp_path: Path, variant: str) -> None:
    days = [D1.replace(day=d) for d in range(1, 11)]
    # Every day lacks its 00:01 bar: the minute check must name it, variant or not.
    bars = pa.concat_tables([day_bars(BTC, d, skip=[1]) for d in days])
    store.write_batch(tmp_path, BTC, bars, days, fetched_at=FETCHED)
    assert kinds(tmp_path) == {Kind.MINUTE_MISSING_DAILY.value}
    rewrite_with_pyarrow(part_path(tmp_path, BTC, JULY), SCHEMA_VARIANTS[variant])
    assert kinds(tmp_path) == {Kind.SCHEMA_VARIANT.value, Kind.MINUTE_MISSING_DAILY.value}
