"""A part rewritten by pyarrow with nullable fields keeps every day through the next run."""

from __future__ import annotations

import pyarrow.parquet as pq
import pytest

from backfill.domain import Month, Symbol
from backfill.lake import store
from backfill.lake.paths import QUARANTINE_PREFIX, part_path
from backfill.lake.schema import BAR_SCHEMA
from tests.lake.helpers import SCHEMA_VARIANTS
from tests.run.conftest import run_backfill
from tests.run.test_run_e2e import assert_lake_equals_simulator

pytestmark = pytest.mark.e2e

BTC = Symbol.parse("BTC-USD")


def test_a_run_over_a_nullable_part_keeps_its_days_and_mends_it(sim, lake):
    first = run_backfill(sim, lake, ["BTC-USD"], "2025-07-01", "2025-07-04", "--rate", "50")
    assert first.returncode == 0, first.stderr + first.stdout
    path = part_path(lake, BTC, Month(2025, 7))
    pq.write_table(SCHEMA_VARIANTS["nullable"](pq.read_table(path)), path)  # pyarrow defaults
    before = store.read_part_coverage(path)

    again = run_backfill(sim, lake, ["BTC-USD"], "2025-07-01", "2025-07-08", "--rate", "50")
    assert again.returncode == 0, again.stderr + again.stdout
    assert_lake_equals_simulator(lake, sim, ["BTC-USD"], "2025-07-01", "2025-07-08")
    after = store.read_part_coverage(path)
    assert all(after[day] == kept for day, kept in before.items()), "kept days fetched again"
    assert pq.read_schema(path).remove_metadata().equals(BAR_SCHEMA)  # mended
    assert not [p for p in path.parent.iterdir() if p.name.startswith(QUARANTINE_PREFIX)]
