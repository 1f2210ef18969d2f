"""Issue 11 end to end: the real CLI against the simulator under each switch of IB's
undocumented behaviour. The lake equals the simulator's generator, or the day is reported
and not recorded."""

from __future__ import annotations

import json
from datetime import date, datetime, timezone

import pytest

from backfill.domain import Symbol, days_between
from backfill.lake.gateway import gateway_facts_path
from backfill.sim import FAST_PACING, Behaviour
from tests.lake.helpers import read_coverage
from tests.oracle import expected_bars, lake_rows
from tests.run.conftest import run_backfill
from tests.run.test_run_e2e import historical, learning

UTC = timezone.utc
BTC, ETH = Symbol("BTC", "USD"), Symbol("ETH", "USD")


def sim_with(make_sim, **switches):
    config = {
        k: switches.pop(k) for k in ("timezone", "max_duration_days", "pacing") if k in switches
    }
    config.setdefault("pacing", FAST_PACING)
    return make_sim(behaviour=Behaviour(**switches), keep_requests=True, **config)


def answered(gateway) -> list:
    """The run's requests IB answered (a pacing refusal under load is retried: not counted)."""
    return [r for r in historical(gateway) if r.outcome in ("bars", "no_data")]


def assert_lake_is_the_generator(lake, gateway, symbol, first, last):
    expected = expected_bars(
        gateway.market, symbol, date.fromisoformat(first), date.fromisoformat(last)
    )
    assert lake_rows(lake, symbol) == expected


def run_log(lake) -> str:
    return "".join(p.read_text() for p in sorted((lake / "_runs").glob("*.jsonl")))


def whole_days(lake, symbol, first, last):
    coverage = read_coverage(lake, [symbol], date.fromisoformat(first), date.fromisoformat(last))[
        symbol
    ]
    return sorted(d for d, c in coverage.items() if c.complete)


@pytest.mark.parametrize("edges", ["[)", "(]", "[]", "()"])
def test_each_window_edge_rule_is_learned_and_every_day_lands_whole(make_sim, lake, edges):
    gateway = sim_with(make_sim, window_edges=edges, timezone="America/New_York")
    done = run_backfill(
        gateway, lake, ["BTC-USD"], "2025-07-01", "2025-07-03", "--rate", "50", "--window-days", "2"
    )
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr
    assert f"Window edges {edges}: learned from the gateway: 2 requests" in done.stdout
    assert_lake_is_the_generator(lake, gateway, BTC, "2025-07-01", "2025-07-03")
    facts = gateway_facts_path(lake, gateway.host, gateway.port)  # beside heads.json
    assert json.loads(facts.read_text())["findings"]["window_edges"]["value"] == edges
    asked = answered(gateway)
    assert len(asked) == 2  # no day asked twice
    if edges == "()":
        assert {r.duration for r in asked} == {f"{2 * 86400 + 60} S", f"{86400 + 60} S"}
    # Learned on the preflight's connection, alongside the heads: no connection of its own.
    records = gateway.requests()
    heads_on = {r.client_id for r in records if r.kind == "head_timestamp"}
    assert {r.client_id for r in records if r.kind == "historical" and learning(r)} == heads_on
    assert len([r for r in records if r.kind == "connect" and r.client_id in heads_on]) == 1
    # The next run learns it again (a remembered rule may no longer fit: issue 19), on the
    # preflight connection. The pair sent with the survey (11:31-11:41 before 12:00) lacks
    # a bar on 2025-07-04 (no trade at 11:31): the pair the survey picks follows it.
    again = run_backfill(gateway, lake, ["BTC-USD"], "2025-07-04", "2025-07-04", "--rate", "50")
    assert again.returncode == 0, again.stdout[-3000:] + again.stderr
    assert f"Window edges {edges}: learned from the gateway: 3 requests" in again.stdout
    assert "no longer used" not in again.stdout  # the remembered rule still fits
    assert len([r for r in gateway.requests() if r.kind == "historical" and learning(r)]) == 5
    assert_lake_is_the_generator(lake, gateway, BTC, "2025-07-01", "2025-07-04")


@pytest.mark.parametrize("day_duration", ["calendar", "sessions"])
@pytest.mark.parametrize("window_days", [1, 7])
def test_n_d_windows_land_whole_under_either_count_of_days(
    make_sim, lake, day_duration, window_days
):
    gateway = sim_with(make_sim, day_duration=day_duration)
    first, last = "2025-07-01", "2025-07-14"
    done = run_backfill(
        gateway, lake, ["BTC-USD"], first, last, "--rate", "50", "--window-days", str(window_days)
    )
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr
    assert_lake_is_the_generator(lake, gateway, BTC, first, last)
    assert whole_days(lake, BTC, first, last) == days_between(date(2025, 7, 1), date(2025, 7, 14))
    # Seven days always hold the weekly break, so "7 D" as sessions serves eight days.
    assert len(answered(gateway)) == 14 // window_days


def test_days_outside_the_window_ib_says_it_served_are_asked_again(make_sim, lake):
    # Tue..Thu as "3 D" of sessions: IB serves from Tuesday 00:00, so the bar that starts
    # Monday 23:59 (Tuesday's first) is not in it: Tuesday is asked again, alone.
    gateway = sim_with(make_sim, day_duration="sessions")
    done = run_backfill(
        gateway, lake, ["BTC-USD"], "2025-07-01", "2025-07-03", "--rate", "50", "--window-days", "3"
    )
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr
    assert "not served whole" in run_log(lake)
    assert [r.duration for r in answered(gateway)] == ["3 D", "86400 S"]
    assert_lake_is_the_generator(lake, gateway, BTC, "2025-07-01", "2025-07-03")


@pytest.mark.parametrize("too_long", ["error", pytest.param("hang", marks=pytest.mark.ib)])
def test_windows_too_long_are_split_whether_ib_refuses_or_hangs(make_sim, lake, too_long):
    gateway = sim_with(make_sim, too_long=too_long, max_duration_days=2)
    done = run_backfill(
        gateway,
        lake,
        ["BTC-USD"],
        "2025-07-01",
        "2025-07-08",
        "--rate",
        "50",
        "--window-days",
        "4",
        "--request-timeout",
        "1",
    )
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr
    assert_lake_is_the_generator(lake, gateway, BTC, "2025-07-01", "2025-07-08")
    # (A pacing refusal under load names its rule in ``detail``: not counted.)
    durations = [r.duration for r in historical(gateway) if not (r.error_code == 162 and r.detail)]
    # Each 4-day window sent fails, once refused or twice hung; then 2-day windows. (The
    # second may go out before the first refusal cuts the window length.)
    assert durations.count("4 D") in ((1, 2) if too_long == "error" else (4,))
    assert durations.count("2 D") == 4


@pytest.mark.ib
def test_a_symbol_without_permission_fails_at_once_and_the_others_go_on(make_sim, lake):
    gateway = sim_with(make_sim, no_permission={"ETH"})
    done = run_backfill(
        gateway, lake, ["BTC-USD", "ETH-USD"], "2025-07-01", "2025-07-10", "--rate", "50"
    )
    assert done.returncode == 1
    assert "No market data permissions" in done.stdout
    eth = [r for r in historical(gateway) if r.symbol == "ETH"]
    assert len(eth) <= 4  # what was in flight when the first answer came, not 6 per day
    assert_lake_is_the_generator(lake, gateway, BTC, "2025-07-01", "2025-07-10")
    assert lake_rows(lake, ETH) == []


def test_a_competing_session_pauses_the_run_until_it_goes(make_sim, lake):
    gateway = sim_with(
        make_sim, competing_session_after=3, competing_session_for=2.0, competing_session_code=10197
    )
    done = run_backfill(
        gateway,
        lake,
        ["BTC-USD"],
        "2025-07-01",
        "2025-07-08",
        "--rate",
        "50",
        "--reconnect-for",
        "20",
    )
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr
    assert "another session holds" in run_log(lake)
    assert_lake_is_the_generator(lake, gateway, BTC, "2025-07-01", "2025-07-08")


def test_a_competing_session_that_stays_ends_the_run_with_exit_1(make_sim, lake):
    gateway = sim_with(make_sim, competing_session_after=3)
    done = run_backfill(
        gateway,
        lake,
        ["BTC-USD"],
        "2025-07-01",
        "2025-07-08",
        "--rate",
        "50",
        "--reconnect-for",
        "3",
    )
    assert done.returncode == 1, done.stdout[-3000:] + done.stderr
    assert "another session holds" in run_log(lake)
    recorded = set(whole_days(lake, BTC, "2025-07-01", "2025-07-08"))
    assert len(recorded) < 8
    expected = expected_bars(gateway.market, BTC, date(2025, 7, 1), date(2025, 7, 8))
    assert lake_rows(lake, BTC) == [r for r in expected if r[0].date() in recorded]


def test_a_broken_data_farm_holds_requests_until_it_is_back(make_sim, lake):
    gateway = sim_with(make_sim, farm_down_after=3, farm_down_for=1.5)
    done = run_backfill(
        gateway,
        lake,
        ["BTC-USD"],
        "2025-07-01",
        "2025-07-08",
        "--rate",
        "50",
        "--request-timeout",
        "1",
    )
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr
    assert "2105" in run_log(lake)
    assert_lake_is_the_generator(lake, gateway, BTC, "2025-07-01", "2025-07-08")


def test_a_bar_still_forming_when_served_is_never_kept(make_sim, lake):
    gateway = sim_with(make_sim, partial_last_bar=True)
    today = datetime.now(UTC).date()
    done = run_backfill(gateway, lake, ["BTC-USD"], str(today), str(today), "--rate", "50")
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr
    rows = lake_rows(lake, BTC)
    assert rows, "today has ended minutes"
    # Every bar kept is the generator's final bar of its minute (a forming one differs).
    expected = {r[0]: r for r in expected_bars(gateway.market, BTC, today, today)}
    assert all(expected[r[0]] == r for r in rows)
    assert rows[-1][0] <= datetime.now(UTC)
