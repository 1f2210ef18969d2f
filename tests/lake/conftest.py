"""A small clean lake, built once per worker and copied for each test that spoils it."""

from __future__ import annotations

import shutil
from datetime import date
from pathlib import Path

import pyarrow as pa
import pytest

from backfill.lake import store
from tests.lake.helpers import BTC, ETH, FETCHED, day_bars

BTC_DAYS = [date(2025, 7, 1), date(2025, 7, 2), date(2025, 7, 3)]
ETH_DAYS = [date(2025, 7, 31), date(2025, 8, 1)]
# BTC 2025-07-02 lacks the bars ending 10:00-10:04 and 23:59: the clean lake's only gaps.
BTC_GAP_MINUTES = [*range(600, 605), 1439]


@pytest.fixture(scope="session")
def clean_lake_template(tmp_path_factory: pytest.TempPathFactory) -> Path:
    lake = tmp_path_factory.mktemp("clean-lake")
    btc = pa.concat_tables(
        [
            day_bars(BTC, BTC_DAYS[0]),
            day_bars(BTC, BTC_DAYS[1], skip=BTC_GAP_MINUTES),
            day_bars(BTC, BTC_DAYS[2]),
        ]
    )
    store.write_batch(lake, BTC, btc, BTC_DAYS, fetched_at=FETCHED)
    eth = pa.concat_tables([day_bars(ETH, d, price=2000.0) for d in ETH_DAYS])
    store.write_batch(lake, ETH, eth, ETH_DAYS, fetched_at=FETCHED)
    return lake


@pytest.fixture
def clean_lake(clean_lake_template: Path, tmp_path: Path) -> Path:
    """A private copy of the clean lake: spoil it at will."""
    lake = tmp_path / "lake"
    shutil.copytree(clean_lake_template, lake)
    return lake
