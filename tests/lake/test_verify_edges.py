"""verify on the simulator's bars: a window edge's lost bar on 1 day in N is an error naming
the repair; a dense or thin market that lost nothing is not."""

from __future__ import annotations

import functools
import shlex
from datetime import date, datetime, timedelta, timezone
from pathlib import Path

import pyarrow as pa
import pyarrow.compute as pc
import pytest

from backfill.domain import MINUTE, Symbol, day_start, days_between
from backfill.lake.store import write_batch
from backfill.lake.verify import Kind, verify_lake
from backfill.sim.lake_form import lake_table
from backfill.sim.market import bars_between
from tests.lake.helpers import BTC

FIRST, DAYS = date(2025, 7, 1), 61
ALL = days_between(FIRST, FIRST + timedelta(days=DAYS - 1))
FETCHED = datetime(2025, 9, 2, tzinfo=timezone.utc)


@functools.lru_cache(maxsize=8)  # generating two months costs about a second
def market(symbol: Symbol, *, seed: int = 1, no_trade_share: float = 0.02) -> pa.Table:
    start = day_start(FIRST)
    return lake_table(
        symbol,
        bars_between(
            seed,
            symbol.base,
            start - MINUTE,
            start + timedelta(days=DAYS) - MINUTE,
            no_trade_share=no_trade_share,
        ),
    )


def without(table: pa.Table, lost: list[datetime]) -> pa.Table:
    return table.filter(pc.invert(pc.is_in(table["ts"], pa.array(lost, table["ts"].type))))


def window_edges(window_days: int, which: str) -> list[datetime]:
    """The bar ends a run in windows of ``window_days`` from FIRST loses: each window's first
    day's 00:00 bar, or its last day's 23:59 bar."""
    windows = [ALL[i : i + window_days] for i in range(0, DAYS, window_days)]
    if which == "first":
        return [day_start(w[0]) for w in windows]
    return [day_start(w[-1]) + timedelta(days=1) - MINUTE for w in windows]


def edge_findings(lake: Path):
    report = verify_lake(lake)
    return [
        f
        for f in report.findings
        if f.kind in (Kind.EDGE_MINUTE_MISSING, Kind.MINUTE_MISSING_DAILY)
    ]


@pytest.mark.parametrize(
    "window_days, which", [(7, "first"), (10, "first"), (3, "last"), (2, "first"), (5, "last")]
)
def test_a_window_edges_lost_bar_is_an_error_naming_the_refetch(tmp_path, window_days, which):
    lake = tmp_path / "my lake"
    lost = window_edges(window_days, which)
    write_batch(lake, BTC, without(market(BTC), lost), ALL, fetched_at=FETCHED)
    [found] = edge_findings(lake)
    assert found.kind is Kind.EDGE_MINUTE_MISSING and found.severity.value == "error"
    label = "00:00" if which == "first" else "23:59"
    assert found.detail.startswith(f"the bar ending {label} UTC")
    assert f"on every {window_days}" in found.detail
    command = shlex.split(found.detail.split("Repair: ")[1])
    assert command == [
        "backfill",
        "run",
        "--refetch",
        "--from",
        str(lost[0].date()),
        "--to",
        str(lost[-1].date()),
        "--symbols",
        "BTC-USD",
        "--lake",
        str(lake),
    ]
    assert found.day == lost[0].date()


# Many more seeds and shares in test_edge_check (the judgement alone); here the real bars.
@pytest.mark.parametrize("seed, no_trade_share", [(1, 0.02), (2, 0.02), (1, 0.9), (2, 0.97)])
def test_a_market_that_lost_nothing_is_clean(tmp_path, seed, no_trade_share):
    lake = tmp_path / "lake"
    write_batch(
        lake, BTC, market(BTC, seed=seed, no_trade_share=no_trade_share), ALL, fetched_at=FETCHED
    )
    assert edge_findings(lake) == []


def test_a_minute_lost_every_day_is_said_once(tmp_path):
    lake = tmp_path / "lake"
    write_batch(lake, BTC, without(market(BTC), window_edges(1, "first")), ALL, fetched_at=FETCHED)
    assert [f.kind for f in edge_findings(lake)] == [Kind.MINUTE_MISSING_DAILY]
