"""edge_check: a day's first or last bar lost on a pattern of days, told from a thin market."""

from __future__ import annotations

import math
from datetime import date, datetime, timedelta, timezone

import numpy as np
import pyarrow as pa
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from backfill.lake.edge_check import (
    FIRST,
    LAST,
    NEIGHBOURS,
    PERIODS,
    EdgeDay,
    EdgeThresholds,
    binomial_tail,
    edge_days,
    edge_losses,
    null_share,
)

START = 20_000  # days since the epoch (2024-10-04)
THRESHOLDS = EdgeThresholds()


def market(
    seed: int, share: float, n_days: int, *, period: int = 0, phase: int = 0, minute: int = FIRST
) -> list[EdgeDay]:
    """``n_days`` days of a market whose minutes lack a bar with chance ``share``, each at
    random; with ``period``, the request windows of ``period`` days starting on days
    ``phase`` mod ``period`` lost ``minute`` (FIRST: their first day's, LAST: their last's)."""
    rng = np.random.default_rng(seed)
    edges = rng.random((n_days, 2)) < share
    around = rng.binomial(NEIGHBOURS, share, (n_days, 2))
    days = []
    for i in range(n_days):
        first_missing, last_missing = bool(edges[i, 0]), bool(edges[i, 1])
        if period:
            start = (i - phase) % period == 0
            end = (i - phase) % period == period - 1
            first_missing |= minute == FIRST and start
            last_missing |= minute == LAST and end
        days.append(
            EdgeDay(START + i, first_missing, int(around[i, 0]), last_missing, int(around[i, 1]))
        )
    return days


@given(st.integers(0, 12), st.integers(0, 12), st.floats(0.001, 0.999))
def test_the_binomial_tail_is_the_sum_of_its_terms(x, n, p):
    exact = sum(math.comb(n, j) * p**j * (1 - p) ** (n - j) for j in range(x, n + 1))
    assert binomial_tail(x, n, p) == pytest.approx(exact, rel=1e-9, abs=1e-300)


def test_the_binomial_tail_of_thousands_of_days_does_not_overflow():
    assert 0 < binomial_tail(400, 3650, 0.02) < 1e-100
    assert binomial_tail(0, 3650, 0.5) == 1.0


def test_a_full_neighbourhood_does_not_make_one_missing_bar_impossible():
    assert null_share(0) == pytest.approx(1 / 121)
    assert null_share(NEIGHBOURS) == 1.0


def _ts(day: int, minutes: list[int]) -> list[int]:
    return [(day * 1440 + m) * 60_000_000 for m in minutes]


def test_edge_days_reads_each_whole_days_edges_and_their_neighbourhoods():
    # Day A lacks its 00:00 bar and 3 bars after it; day B lacks its 23:59 bar and 2 before
    # it; day C is not whole (not judged); day D is whole but has no bar at all.
    a, b, c, d = START, START + 1, START + 2, START + 3
    ts = (
        _ts(a, [m for m in range(1440) if m not in (0, 1, 5, 120)])
        + _ts(b, [m for m in range(1440) if m not in (1439, 1319, 1438, 700)])
        + _ts(c, [m for m in range(1, 1440)])
    )
    got = edge_days(pa.array(ts, pa.int64()), {a, b, d})
    assert got == [EdgeDay(a, True, 3, False, 0), EdgeDay(b, False, 0, True, 2)]
    assert edge_days(pa.array([], pa.int64()), {a}) == []


@settings(max_examples=40, deadline=None)
@given(
    st.sampled_from(PERIODS),
    st.integers(0, 9),
    st.sampled_from([FIRST, LAST]),
    st.integers(0, 2**32 - 1),
)
def test_a_lost_edge_on_one_day_in_n_is_found_on_a_dense_market(period, phase, minute, seed):
    # Two months fetched in windows of ``period`` days, 2% of minutes without trades (the
    # simulator's default).
    days = market(seed, 0.02, 61, period=period, phase=phase % period, minute=minute)
    [loss] = edge_losses(days, THRESHOLDS)
    assert loss.minute == minute
    lost = {
        date.fromordinal(date(1970, 1, 1).toordinal() + d.day)
        for d in days
        if (d.first_missing if minute == FIRST else d.last_missing)
    }
    assert set(loss.missing) == lost
    assert loss.p_value < THRESHOLDS.alpha


@pytest.mark.parametrize("share", [0.0, 0.02, 0.3, 0.5, 0.9, 0.97])
def test_a_market_that_lost_nothing_is_never_called_a_loss(share):
    # 200 symbols' worth of 90 days each: dense, medium and thin markets (a minute without
    # trades has no bar), one finding would be a false alarm.
    assert [s for s in range(200) if edge_losses(market(s, share, 90), THRESHOLDS)] == []


@pytest.mark.parametrize("share", [0.9, 0.97])
def test_a_thin_market_is_no_evidence_even_of_a_real_loss(share):
    # One day in 7 lost its first bar, but 90% of minutes have no bar anyway: nothing
    # tells the loss from the market, and nothing is claimed.
    assert [
        s
        for s in range(100)
        if edge_losses(market(s, share, 61, period=7, minute=FIRST), THRESHOLDS)
    ] == []


def test_too_few_days_are_not_judged():
    # Two windows of 7 days: two lost bars are not a pattern; six are.
    assert [s for s in range(50) if edge_losses(market(s, 0.0, 14, period=7), THRESHOLDS)] == []
    assert all(edge_losses(market(s, 0.02, 42, period=7), THRESHOLDS) for s in range(50))


def test_the_finding_names_the_minute_the_pattern_and_the_repair():
    [loss] = edge_losses(market(3, 0.0, 61, period=7, phase=2, minute=LAST), THRESHOLDS)
    assert (loss.period, loss.phase % 7) == (7, (START + 2 + 6) % 7)
    text = loss.detail("backfill run --refetch ...")
    assert text.startswith("the bar ending 23:59 UTC (a day's last bar) is missing on 9 of 61")
    assert "on every 7th day 9 of 9" in text and text.endswith("backfill run --refetch ...")
    # Day 1 ended the window before (days -5..1): the first day lost.
    first = datetime(1970, 1, 1, tzinfo=timezone.utc).date() + timedelta(days=START + 1)
    assert loss.first_day == first
