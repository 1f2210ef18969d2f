"""A small M1 lake across a year edge and a month edge, built once per worker."""

from __future__ import annotations

import shutil
from datetime import date
from pathlib import Path

import pytest

from backfill.domain import Symbol
from tests.aggregate.helpers import write_m1

BTC = Symbol("BTC", "USD")
ETH = Symbol("ETH", "USD")
# Whole days across the year edge and the January/February edge; 2025-02-02 recorded
# partial; nothing between 2025-01-03 and 2025-01-30.
SPANS = [(date(2024, 12, 29), date(2025, 1, 3)), (date(2025, 1, 30), date(2025, 2, 2))]
PARTIAL_DAY = date(2025, 2, 2)


@pytest.fixture(scope="session")
def edge_lake_template(tmp_path_factory: pytest.TempPathFactory) -> Path:
    lake = tmp_path_factory.mktemp("edge-lake")
    for first, last in SPANS:
        write_m1(lake, BTC, first, last, partial=[d for d in [PARTIAL_DAY] if first <= d <= last])
    return lake


@pytest.fixture
def edge_lake(edge_lake_template: Path, tmp_path: Path) -> Path:
    """A private copy of the edge lake (M1 only)."""
    lake = tmp_path / "lake"
    shutil.copytree(edge_lake_template, lake)
    return lake
