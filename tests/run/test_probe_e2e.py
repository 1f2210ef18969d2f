"""Issue 13: ``backfill probe`` reports exactly what the simulator was set to, and a following
run uses it (the real CLI in a real process against the simulator's switches)."""

from __future__ import annotations

import json
import subprocess
from datetime import date

import pytest

from backfill.domain import Symbol
from backfill.sim import FAST_PACING, Behaviour
from tests.oracle import expected_bars, lake_rows
from tests.run.conftest import backfill, run_backfill
from tests.run.test_run_e2e import learning

FAST = ("--pause-s", "0.05", "--batch-gap-s", "0.25")


def sim_with(make_sim, **switches):
    config = {k: switches.pop(k) for k in ("timezone", "max_duration_days") if k in switches}
    return make_sim(behaviour=Behaviour(**switches), keep_requests=True, pacing=FAST_PACING,
                    **config)


def probe(gateway, lake, *extra: str) -> tuple[subprocess.CompletedProcess[str], dict]:
    done = subprocess.run(
        backfill("probe", "--gateway", f"{gateway.host}:{gateway.port}", "--lake", str(lake),
                 "--json", *FAST, *extra),
        capture_output=True, text=True, timeout=120, stdin=subprocess.DEVNULL,
    )
    return done, (json.loads(done.stdout) if done.stdout.strip() else {})


def test_the_probe_document_has_exactly_the_issues_keys(make_sim, lake):
    gateway = sim_with(make_sim)
    done, doc = probe(gateway, lake)
    assert done.returncode == 0, done.stderr
    assert set(doc) == {"window_edges", "day_duration", "max_window_days", "latency_s",
                        "future_end", "aggtrades", "gateway", "symbol", "checked_at",
                        "requests", "unanswered", "evidence"}
    assert doc["aggtrades"] == "permitted" and doc["symbol"] == "BTC-USD"
    assert set(doc["latency_s"]) == {"1", "2", "4"}
    assert doc["future_end"]["partial_last_bar"] is False
    asked = [r for r in gateway.requests() if r.kind == "historical"]
    assert len(asked) == doc["requests"] <= 30
    assert not [r for r in asked if r.error_code == 162 and "pacing" in (r.detail or "")]


@pytest.mark.parametrize("edges", ["[)", "(]", "[]", "()"])
def test_probe_finds_the_window_edges_and_the_next_run_uses_them(make_sim, lake, edges):
    gateway = sim_with(make_sim, window_edges=edges, timezone="America/New_York")
    done, doc = probe(gateway, lake)
    assert done.returncode == 0, done.stderr
    assert doc["window_edges"] == edges
    evidence = doc["evidence"]["window_edges"][0]
    assert evidence["first_served"] == (edges[0] == "[")
    run = run_backfill(gateway, lake, ["BTC-USD"], "2025-07-01", "2025-07-02", "--rate", "50")
    assert run.returncode == 0, run.stdout[-2000:] + run.stderr
    assert f"Window edges {edges}: remembered from" in run.stdout
    probed = {r.client_id for r in gateway.requests() if r.kind == "historical"
              and r.duration == "600 S"}
    assert len(probed) == 1  # the probe learnt the edges, the run did not
    assert not [r for r in gateway.requests() if r.kind == "historical" and learning(r)
                and r.client_id not in probed]


@pytest.mark.parametrize("day_duration", ["calendar", "sessions"])
def test_probe_tells_how_n_d_is_counted(make_sim, lake, day_duration):
    gateway = sim_with(make_sim, day_duration=day_duration)
    done, doc = probe(gateway, lake)
    assert done.returncode == 0, done.stderr
    assert doc["day_duration"] == day_duration


@pytest.mark.parametrize("too_long", ["error", "hang"])
def test_probe_finds_the_longest_window(make_sim, lake, too_long):
    gateway = sim_with(make_sim, too_long=too_long, max_duration_days=3)
    done, doc = probe(gateway, lake, "--request-timeout", "1")
    assert done.returncode == 0, done.stderr
    assert doc["max_window_days"] == 3
    assert doc["day_duration"] == "calendar"  # from "2 D" alone: "7 D" is too long here
    # The next run asks no longer windows than the probe found answered.
    run = run_backfill(gateway, lake, ["BTC-USD"], "2025-07-01", "2025-07-06", "--rate", "50",
                       "--window-days", "7")
    assert run.returncode == 0, run.stdout[-2000:] + run.stderr
    assert "Windows of 3 day(s): the longest this gateway answered" in run.stdout
    runs = [r for r in gateway.requests() if r.kind == "historical" and r.client_id != 99]
    assert sorted(r.duration for r in runs if not learning(r)) == ["3 D", "3 D"]
    assert lake_rows(lake, Symbol("BTC", "USD")) == expected_bars(
        gateway.market, Symbol("BTC", "USD"), date(2025, 7, 1), date(2025, 7, 6))


def test_a_symbol_without_permission_is_named_and_exits_1(make_sim, lake):
    gateway = sim_with(make_sim, no_permission={"BTC"})
    done, doc = probe(gateway, lake)
    assert done.returncode == 1
    assert "No market data permissions" in doc["aggtrades"]
    assert set(doc["unanswered"]) == {"window_edges", "day_duration", "max_window_days",
                                      "latency_s", "future_end"}


def test_a_partial_last_bar_is_seen(make_sim, lake):
    gateway = sim_with(make_sim, partial_last_bar=True)
    done, doc = probe(gateway, lake)
    assert done.returncode == 0, done.stderr
    assert doc["future_end"]["partial_last_bar"] is True


def test_bad_input_exits_2_and_writes_nothing(sim, lake):
    done, _ = probe(sim, lake, "--symbol", "nonsense!")
    assert done.returncode == 2 and not lake.exists()
    unknown, _ = probe(sim, lake, "--symbol", "ZZZ-USD")
    assert unknown.returncode == 2 and "ZZZ" in unknown.stderr and not lake.exists()
