"""plan.py is pure: coverage and listing dates in, a frozen Plan out."""

from __future__ import annotations

import dataclasses
import math
import random
from datetime import date, datetime, timedelta

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from backfill import plan as planning
from backfill.domain import UTC, BadInput, DayCoverage, Symbol, Window, read_symbols_file
from backfill.pacing import Pacer, worker_rules
from backfill.plan import missing_days
from backfill.settings import RunSettings

CONTRACT_GAP_S = RunSettings().contract_gap_s  # IB's 5 in 2 s, with the workers' margin

BTC = Symbol("BTC", "USD")
ETH = Symbol("ETH", "USD")
SOL = Symbol("SOL", "USD")
TODAY = date(2025, 9, 15)
FETCHED = datetime(2025, 9, 15, 12, tzinfo=UTC)


def plan(symbols, first, last, coverage, *, today, listing=None, in_flight=None, **settings):
    """``plan.plan`` with the run's settings given as keywords (``in_flight``: per worker)."""
    if in_flight is not None:
        settings["max_in_flight"] = in_flight
    return planning.plan(
        symbols,
        first,
        last,
        coverage,
        today=today,
        listing=listing,
        settings=RunSettings(**settings),
    )


def d(text: str) -> date:
    return date.fromisoformat(text)


def covered(*days: str, complete: bool = True) -> dict[date, DayCoverage]:
    return {d(x): DayCoverage(d(x), 1440, FETCHED, complete) for x in days}


def test_empty_lake_everything_missing() -> None:
    p = plan([BTC], d("2025-07-01"), d("2025-07-07"), {}, today=TODAY)
    (s,) = p.symbols
    assert (s.days_total, s.days_done, len(s.days_missing)) == (7, 0, 7)
    assert s.missing_ranges == ((d("2025-07-01"), d("2025-07-07")),)
    assert s.requests == 7 and s.windows[0] == Window.single(d("2025-07-01"))
    assert (s.months_complete, s.months_total) == (0, 1)
    assert p.requests == 7 and p.days_missing == 7


def test_done_days_are_skipped_and_partial_days_are_missing_again() -> None:
    coverage = {
        BTC: covered("2025-07-01", "2025-07-02", "2025-07-05")
        | covered("2025-07-03", complete=False)
    }
    p = plan([BTC], d("2025-07-01"), d("2025-07-06"), coverage, today=TODAY)
    (s,) = p.symbols
    assert s.days_done == 3
    assert s.days_missing == (d("2025-07-03"), d("2025-07-04"), d("2025-07-06"))
    assert s.missing_ranges == (
        (d("2025-07-03"), d("2025-07-04")),
        (d("2025-07-06"), d("2025-07-06")),
    )


def test_windows_group_consecutive_missing_days() -> None:
    coverage = {BTC: covered("2025-07-04")}
    p = plan([BTC], d("2025-07-01"), d("2025-07-10"), coverage, today=TODAY, window_days=2)
    assert [str(w) for w in p.symbols[0].windows] == [
        "2025-07-01..2025-07-02",
        "2025-07-03",
        "2025-07-05..2025-07-06",
        "2025-07-07..2025-07-08",
        "2025-07-09..2025-07-10",
    ]


def test_coverage_outside_the_range_is_ignored() -> None:
    coverage = {BTC: covered("2025-06-30", "2025-07-02")}
    (s,) = plan([BTC], d("2025-07-01"), d("2025-07-01"), coverage, today=TODAY).symbols
    assert (s.days_total, s.days_done) == (1, 0)


def test_months_complete_counts_months_with_nothing_missing() -> None:
    july = [f"2025-07-{i:02d}" for i in range(1, 32)]
    coverage = {BTC: covered(*july, "2025-08-01")}
    (s,) = plan([BTC], d("2025-06-30"), d("2025-08-02"), coverage, today=TODAY).symbols
    assert (s.months_complete, s.months_total) == (1, 3)


def test_a_partial_month_at_the_range_edge_is_complete_when_its_days_are() -> None:
    coverage = {BTC: covered("2025-07-30", "2025-07-31")}
    (s,) = plan([BTC], d("2025-07-30"), d("2025-07-31"), coverage, today=TODAY).symbols
    assert (s.months_complete, s.months_total) == (1, 1) and s.done and s.requests == 0


def test_days_after_today_are_not_planned_but_today_is() -> None:
    (s,) = plan([BTC], d("2025-09-10"), d("2025-12-31"), {}, today=TODAY).symbols
    assert s.last == TODAY and s.days_total == 6
    assert s.days_missing[-1] == TODAY


def test_a_range_entirely_in_the_future_plans_nothing() -> None:
    p = plan([BTC], d("2026-01-01"), d("2026-01-31"), {}, today=TODAY)
    (s,) = p.symbols
    assert (s.first, s.last, s.days_total, s.requests, s.months_total) == (None, None, 0, 0, 0)
    assert p.eta_seconds == 0


def test_listing_date_clips_the_start() -> None:
    listing = {BTC: d("2025-07-05"), ETH: d("2026-01-01")}
    p = plan([BTC, ETH, SOL], d("2025-07-01"), d("2025-07-10"), {}, today=TODAY, listing=listing)
    btc, eth, sol = p.symbols
    assert btc.first == d("2025-07-05") and btc.days_total == 6
    assert eth.days_total == 0 and eth.requests == 0
    assert sol.days_total == 10  # no listing date known: the whole range


def test_days_before_listing_are_counted_with_their_head() -> None:
    listing = {BTC: d("2025-07-05"), ETH: d("2026-01-01")}
    p = plan([BTC, ETH, SOL], d("2025-07-01"), d("2025-07-10"), {}, today=TODAY, listing=listing)
    btc, eth, sol = p.symbols
    assert (btc.days_before_listing, btc.head) == (4, d("2025-07-05"))
    assert (eth.days_before_listing, eth.head) == (10, d("2026-01-01"))
    assert (sol.days_before_listing, sol.head) == (0, None)
    assert p.days_before_listing == 14
    doc = p.to_dict()
    assert doc["totals"]["days_before_listing"] == 14
    assert (doc["symbols"][1]["days_before_listing"], doc["symbols"][1]["head"]) == (
        10,
        "2026-01-01",
    )
    assert doc["symbols"][2]["head"] is None


def test_a_head_later_than_days_the_lake_holds_is_contradicted() -> None:
    listing = {BTC: d("2025-07-05")}
    held = {BTC: covered("2025-07-01")}
    [btc] = plan(
        [BTC], d("2025-07-01"), d("2025-07-10"), held, today=TODAY, listing=listing
    ).symbols
    assert (btc.days_before_listing, btc.days_held_before_listing) == (4, 1)
    assert btc.head_contradicted
    # Every day before the head held: nothing to gain by asking again.
    held = {BTC: covered("2025-07-01", "2025-07-02", "2025-07-03", "2025-07-04")}
    [btc] = plan(
        [BTC], d("2025-07-01"), d("2025-07-10"), held, today=TODAY, listing=listing
    ).symbols
    assert not btc.head_contradicted
    [btc] = plan([BTC], d("2025-07-01"), d("2025-07-10"), {}, today=TODAY, listing=listing).symbols
    assert not btc.head_contradicted


def test_symbols_keep_order_and_drop_repeats() -> None:
    p = plan([ETH, BTC, ETH], d("2025-07-01"), d("2025-07-01"), {}, today=TODAY)
    assert [s.symbol for s in p.symbols] == [ETH, BTC]
    assert [sym for sym, _ in p.windows] == [ETH, BTC]


def test_eta_is_bound_by_the_global_rate() -> None:
    symbols = [Symbol(f"C{i}", "USD") for i in range(10)]
    p = plan(symbols, d("2025-07-01"), d("2025-07-07"), {}, today=TODAY, rate=0.7, workers=4)
    assert p.requests == 70
    assert p.eta_seconds == pytest.approx(70 / 0.7)


def test_eta_is_bound_by_latency_and_the_requests_open_at_once() -> None:
    symbols = [Symbol(f"C{i}", "USD") for i in range(8)]

    def eta(**kwargs: int) -> float:
        return plan(
            symbols,
            d("2025-07-01"),
            d("2025-07-10"),
            {},
            today=TODAY,
            rate=100.0,
            latency_s=3.0,
            **kwargs,
        ).eta_seconds

    assert eta(workers=2, in_flight=1) == pytest.approx(80 * 3.0 / 2)
    assert eta(workers=2, in_flight=4) == pytest.approx(80 * 3.0 / 8)
    # IB keeps at most 50 requests open, whatever workers * in_flight says.
    assert eta(workers=8, in_flight=50) == pytest.approx(80 * 3.0 / 50)


def test_eta_is_bound_by_the_longest_symbol() -> None:
    coverage = {ETH: covered(*[f"2025-07-{i:02d}" for i in range(1, 31)])}
    p = plan(
        [BTC, ETH],
        d("2025-07-01"),
        d("2025-07-31"),
        coverage,
        today=TODAY,
        rate=100.0,
        workers=4,
        latency_s=0.01,
    )
    # BTC's 31 requests go one after another, at least CONTRACT_GAP_S apart (IB's 5 in 2 s).
    assert p.eta_seconds == pytest.approx(31 * CONTRACT_GAP_S)
    btc, eth = p.symbols
    assert btc.eta_seconds == pytest.approx(31 * CONTRACT_GAP_S)
    assert eth.eta_seconds == pytest.approx(1 * CONTRACT_GAP_S)


def test_per_symbol_eta_uses_its_share_of_the_rate() -> None:
    p = plan([BTC, ETH], d("2025-07-01"), d("2025-07-10"), {}, today=TODAY, rate=1.0)
    assert [s.eta_seconds for s in p.symbols] == [pytest.approx(20.0), pytest.approx(20.0)]


@pytest.mark.parametrize(
    "kwargs",
    [
        {"rate": 0.0},
        {"rate": -1.0},
        {"rate": math.nan},
        {"rate": math.inf},
        {"workers": 0},
        {"in_flight": 0},
        {"window_days": 0},
        {"latency_s": -0.1},
    ],
)
def test_bad_settings_are_bad_input(kwargs: dict) -> None:
    with pytest.raises(BadInput):
        plan([BTC], d("2025-07-01"), d("2025-07-02"), {}, today=TODAY, **kwargs)


def test_from_after_to_is_bad_input() -> None:
    with pytest.raises(BadInput, match="after"):
        plan([BTC], d("2025-07-02"), d("2025-07-01"), {}, today=TODAY)


def test_plan_is_frozen() -> None:
    p = plan([BTC], d("2025-07-01"), d("2025-07-02"), {}, today=TODAY)
    with pytest.raises(dataclasses.FrozenInstanceError):
        p.rate = 2.0  # type: ignore[misc]


def test_to_dict_shape() -> None:
    coverage = {BTC: covered("2025-07-01")}
    out = plan([BTC], d("2025-07-01"), d("2025-07-03"), coverage, today=TODAY).to_dict()
    assert out["totals"] == {
        "symbols": 1,
        "days_total": 3,
        "days_done": 1,
        "days_missing": 2,
        "days_before_listing": 0,
        "months_complete": 0,
        "months_total": 1,
        "requests": 2,
        "eta_seconds": pytest.approx(2 / 0.7, abs=1e-3),
    }
    assert out["symbols"][0]["missing_ranges"] == [["2025-07-02", "2025-07-03"]]
    assert out["symbols"][0]["symbol"] == "BTC-USD"
    assert (out["first"], out["last"], out["today"]) == ("2025-07-01", "2025-07-03", "2025-09-15")


@settings(max_examples=80, deadline=None)
@given(
    span=st.integers(1, 120),
    done=st.sets(st.integers(0, 130)),
    partial=st.sets(st.integers(0, 130)),
    window_days=st.integers(1, 7),
    today_offset=st.integers(-10, 140),
)
def test_windows_cover_exactly_the_missing_days(
    span: int, done: set, partial: set, window_days: int, today_offset: int
) -> None:
    first = d("2025-01-20")
    last = first + timedelta(days=span - 1)
    today = first + timedelta(days=today_offset)
    coverage = covered(*[(first + timedelta(days=i)).isoformat() for i in done]) | covered(
        *[(first + timedelta(days=i)).isoformat() for i in partial - done], complete=False
    )
    (s,) = plan([BTC], first, last, {BTC: coverage}, today=today, window_days=window_days).symbols
    window_days_listed = [day for w in s.windows for day in w.days]
    assert window_days_listed == list(s.days_missing)
    assert all(w.n_days <= window_days for w in s.windows)
    assert all(day <= today for day in s.days_missing)
    assert s.days_done + len(s.days_missing) == s.days_total
    assert s.days_missing == tuple(
        day
        for day in missing_days([first + timedelta(days=i) for i in range(span)], coverage)
        if day <= today
    )
    ranged = [a + timedelta(days=i) for a, b in s.missing_ranges for i in range((b - a).days + 1)]
    assert ranged == list(s.days_missing)


def test_read_symbols_file() -> None:
    text = "# majors\nBTC-USD\n  eth-usd  # lower case is fine\n\nBTC-USD\nSOL-USD\n"
    assert read_symbols_file(text) == [BTC, ETH, SOL]


def test_read_symbols_file_names_the_bad_line() -> None:
    with pytest.raises(BadInput, match="line 2: malformed symbol"):
        read_symbols_file("BTC-USD\nnot a symbol\n")


def test_read_symbols_file_refuses_an_empty_file() -> None:
    with pytest.raises(BadInput, match="no symbols"):
        read_symbols_file("# nothing here\n\n")


@pytest.mark.parametrize("margin_s", [0.1, 0.05, 0.3])
def test_plans_contract_gap_is_the_pace_of_a_workers_own_pacer(margin_s: float) -> None:
    # One symbol alone, rate and latency no limit: plan's ETA must be the time the worker's
    # pacer (built from the same settings as in a run) takes to let the requests out.
    settings = RunSettings(rate=1000.0, latency_s=0.0, pacing_margin_s=margin_s, workers=1)
    now = [0.0]
    pacer = Pacer(
        settings.rate,
        clock=lambda: now[0],
        rng=random.Random(0),
        rules=worker_rules(settings, clock=lambda: now[0], strict=False),
    )
    n = 1 + 5 * 40  # IB's 5-per-2 s bound: the first goes at 0, each later 5 one gap apart
    for day in range(n):
        wait, _ = pacer.delay(day)
        now[0] += wait
        pacer.record(day)
    p = planning.plan(
        [BTC],
        d("2025-01-01"),
        d("2025-01-01") + timedelta(days=n - 1),
        {},
        today=TODAY,
        settings=settings,
    )
    assert p.requests == n
    # The plan counts a gap per request; the pacer's first request needs none.
    assert p.eta_seconds / n == pytest.approx(now[0] / (n - 1))
