"""Issue 13: ``backfill probe`` reports exactly what the simulator was set to, and a following
run uses it (the real CLI in a real process against the simulator's switches)."""

from __future__ import annotations

import json
import subprocess
from datetime import date, datetime, timedelta

import pytest

from backfill.domain import Symbol
from backfill.ib import client
from backfill.lake.gateway import gateway_facts_path
from backfill.sim import FAST_PACING, Behaviour, FaultConfig
from tests.oracle import expected_bars, lake_rows
from tests.run.conftest import backfill, run_backfill
from tests.run.test_run_e2e import learning

FAST = ("--pause-s", "0.05", "--batch-gap-s", "0.25")


def sim_with(make_sim, **switches):
    config = {k: switches.pop(k) for k in ("timezone", "max_duration_days") if k in switches}
    return make_sim(
        behaviour=Behaviour(**switches), keep_requests=True, pacing=FAST_PACING, **config
    )


def probe(gateway, lake, *extra: str) -> tuple[subprocess.CompletedProcess[str], dict]:
    done = subprocess.run(
        backfill(
            "probe",
            "--gateway",
            f"{gateway.host}:{gateway.port}",
            "--lake",
            str(lake),
            "--json",
            *FAST,
            *extra,
        ),
        capture_output=True,
        text=True,
        timeout=120,
        stdin=subprocess.DEVNULL,
    )
    return done, (json.loads(done.stdout) if done.stdout.strip() else {})


def first_line(output: str) -> str:
    return output.splitlines()[0] if output.strip() else ""


def plan(gateway, lake, *extra: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        backfill(
            "plan",
            "--gateway",
            f"{gateway.host}:{gateway.port}",
            "--lake",
            str(lake),
            "--from",
            "2025-07-01",
            "--to",
            "2025-07-10",
            "--rate",
            "50",
            "--max-in-flight",
            "1",
            *(extra if "--symbols" in extra else ("--symbols", "BTC-USD", *extra)),
        ),
        capture_output=True,
        text=True,
        timeout=60,
        stdin=subprocess.DEVNULL,
    )


@pytest.mark.ib
def test_the_probe_document_has_exactly_the_issues_keys(make_sim, lake):
    gateway = sim_with(make_sim)
    done, doc = probe(gateway, lake)
    assert done.returncode == 0, done.stderr
    assert set(doc) == {
        "window_edges",
        "day_duration",
        "max_window_days",
        "latency_s",
        "future_end",
        "aggtrades",
        "header_format",
        "header_clock",
        "gateway",
        "symbol",
        "checked_at",
        "requests",
        "unanswered",
        "evidence",
        "client",
        "client_version",
    }
    assert (doc["client"], doc["client_version"]) == (client.NAME, client.VERSION)
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
    # The run learns the rule again (a remembered one may no longer fit): the same.
    assert f"Window edges {edges}: learned from the gateway: 2 requests" in run.stdout
    assert "no longer used" not in run.stdout


@pytest.mark.parametrize(
    ("form", "clock"), [("named", "written"), ("utc-bare", "utc"), ("login", "login")]
)
def test_probe_reports_the_header_format_and_reads_the_header_by_it(make_sim, lake, form, clock):
    # New York login zone: a zone-less header read in the wrong zone is off by 4 hours,
    # and "2 D" would look like sessions.
    gateway = sim_with(make_sim, header_format=form, timezone="America/New_York")
    done, doc = probe(gateway, lake)
    assert done.returncode == 0, done.stderr
    assert (doc["header_format"], doc["header_clock"]) == (form, clock)
    assert doc["day_duration"] == "calendar"
    facts = json.loads(gateway_facts_path(lake, gateway.host, gateway.port).read_text())
    assert facts["findings"]["header_format"]["value"] == form


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
    run = run_backfill(
        gateway, lake, ["BTC-USD"], "2025-07-01", "2025-07-06", "--rate", "50", "--window-days", "7"
    )
    assert run.returncode == 0, run.stdout[-2000:] + run.stderr
    assert "windows of 3 day(s), the longest this gateway answered" in first_line(run.stdout)
    runs = [r for r in gateway.requests() if r.kind == "historical" and r.client_id != 99]
    assert sorted(r.duration for r in runs if not learning(r)) == ["3 D", "3 D"]
    assert lake_rows(lake, Symbol("BTC", "USD")) == expected_bars(
        gateway.market, Symbol("BTC", "USD"), date(2025, 7, 1), date(2025, 7, 6)
    )


def test_a_symbol_without_permission_is_named_and_exits_1(make_sim, lake):
    gateway = sim_with(make_sim, no_permission={"BTC"})
    done, doc = probe(gateway, lake)
    assert done.returncode == 1
    assert "No market data permissions" in doc["aggtrades"]
    assert set(doc["unanswered"]) == {
        "window_edges",
        "day_duration",
        "max_window_days",
        "latency_s",
        "future_end",
        "header_format",
        "header_clock",
    }


def test_a_partial_last_bar_is_seen(make_sim, lake):
    gateway = sim_with(make_sim, partial_last_bar=True)
    done, doc = probe(gateway, lake)
    assert done.returncode == 0, done.stderr
    assert doc["future_end"]["partial_last_bar"] is True


@pytest.mark.ib
def test_bad_input_exits_2_and_writes_nothing(sim, lake):
    done, _ = probe(sim, lake, "--symbol", "nonsense!")
    assert done.returncode == 2 and not lake.exists()
    unknown, _ = probe(sim, lake, "--symbol", "ZZZ-USD")
    assert unknown.returncode == 2 and "ZZZ" in unknown.stderr and not lake.exists()


def test_plan_takes_the_probes_base_latency_for_its_eta(make_sim, lake):
    gateway = make_sim(faults=FaultConfig(latency_ms=(140.0, 160.0)), pacing=FAST_PACING)
    done, doc = probe(gateway, lake)
    assert done.returncode == 0, done.stderr
    base = doc["latency_s"]["1"]
    # One worker, one request open, 4 symbols × 10 days: 40 requests one after another, so
    # the ETA is 40 × latency (IB's per-contract gap, 10 × 0.42 s, is less above 0.105 s).
    four = ("--symbols", "BTC-USD,ETH-USD,LTC-USD,BCH-USD", "--workers", "1")
    assert base > 0.11
    text = plan(gateway, lake, *four)
    assert text.returncode == 0, text.stderr
    path = gateway_facts_path(lake, gateway.host, gateway.port)
    assert first_line(text.stdout).startswith(f"Gateway findings (backfill probe) from {path}")
    assert f"base latency {base:.3f}s for the ETA" in first_line(text.stdout)
    planned = json.loads(plan(gateway, lake, *four, "--json").stdout)
    assert planned["latency_ms"] == pytest.approx(base * 1000)
    assert planned["totals"]["eta_seconds"] == pytest.approx(40 * base, abs=0.01)
    assert planned["gateway_findings"]["used"] == ["latency_s"]
    assert planned["gateway_findings"]["checked_at"] == doc["checked_at"]
    # --latency-ms on the command line wins, and the ETA follows it.
    given = json.loads(plan(gateway, lake, *four, "--json", "--latency-ms", "300").stdout)
    assert given["latency_ms"] == 300 and given["gateway_findings"]["used"] == []
    assert given["totals"]["eta_seconds"] == pytest.approx(40 * 0.3, abs=0.01)


def age_findings(lake, gateway, days: float) -> None:
    path = gateway_facts_path(lake, gateway.host, gateway.port)
    facts = json.loads(path.read_text())
    for finding in facts["findings"].values():
        finding["checked_at"] = (
            datetime.fromisoformat(finding["checked_at"]) - timedelta(days=days)
        ).isoformat()
    path.write_text(json.dumps(facts))


def test_stale_findings_are_ignored_by_plan_and_run(make_sim, lake):
    gateway = sim_with(make_sim, too_long="error", max_duration_days=2)
    done, doc = probe(gateway, lake)
    assert done.returncode == 0, done.stderr
    assert doc["max_window_days"] == 2
    age_findings(lake, gateway, 8)
    text = plan(gateway, lake, "--window-days", "7")
    assert "stale, run backfill probe again" in first_line(text.stdout)
    planned = json.loads(plan(gateway, lake, "--window-days", "7", "--json").stdout)
    assert planned["latency_ms"] == 300 and planned["window_days"] == 7
    assert planned["gateway_findings"]["used"] == []
    assert "max_window_days" in planned["gateway_findings"]["stale"]
    run = run_backfill(gateway, lake, ["BTC-USD"], "2025-07-01", "2025-07-02", "--rate", "50")
    assert run.returncode == 0, run.stdout[-2000:] + run.stderr
    assert "stale, run backfill probe again" in first_line(run.stdout)
    assert "Window edges [): learned from the gateway" in run.stdout  # not remembered


def test_run_rate_auto_starts_from_the_probe(make_sim, lake):
    gateway = sim_with(make_sim)
    done, doc = probe(gateway, lake)
    assert done.returncode == 0, done.stderr
    run = run_backfill(
        gateway,
        lake,
        ["BTC-USD"],
        "2025-07-01",
        "2025-07-02",
        "--rate",
        "auto",
        "--auto-start-rate",
        "5",
    )
    assert run.returncode == 0, run.stdout[-2000:] + run.stderr
    line = first_line(run.stdout)
    assert line.startswith("Gateway findings (backfill probe)")
    assert (
        f"--rate auto starts at 5 req/s (the probe measures no sustained rate) with base "
        f"latency {doc['latency_s']['1']:.3f}s as its first estimate"
    ) in line


def test_probe_prints_readable_lines_and_where_it_recorded_them(make_sim, lake, tmp_path):
    gateway = sim_with(make_sim)
    args = ("probe", "--gateway", f"{gateway.host}:{gateway.port}", *FAST)
    done = subprocess.run(
        backfill(*args, "--lake", str(lake)),
        capture_output=True,
        text=True,
        timeout=120,
        stdin=subprocess.DEVNULL,
    )
    assert done.returncode == 0, done.stderr
    lines = done.stdout.splitlines()
    assert not [line for line in lines if "{" in line], "no raw Python dicts"
    latency = next(line for line in lines if line.startswith("latency_s"))
    assert "s with 1 in flight" in latency and "with 4 in flight" in latency
    assert any(line.startswith("max_window_days") and line.endswith(" days") for line in lines)
    path = gateway_facts_path(lake, gateway.host, gateway.port)
    assert f"Recorded in {path}" in lines[-1]
    # Measured but not recorded (the lake is a file): no run will use it, so exit 1, said.
    blocked = tmp_path / "a-file"
    blocked.write_text("")
    failed = subprocess.run(
        backfill(*args, "--lake", str(blocked)),
        capture_output=True,
        text=True,
        timeout=120,
        stdin=subprocess.DEVNULL,
    )
    assert failed.returncode == 1, failed.stdout
    assert "cannot record the findings" in failed.stderr
    assert "Recorded in" not in failed.stdout


def test_plan_labels_findings_by_who_learned_them(make_sim, lake):
    gateway = sim_with(make_sim)
    run = run_backfill(gateway, lake, ["BTC-USD"], "2025-07-01", "2025-07-02", "--rate", "50")
    assert run.returncode == 0, run.stdout[-2000:] + run.stderr
    text = plan(gateway, lake)
    assert first_line(text.stdout).startswith("Gateway findings (backfill run) from"), text.stdout
    done, _ = probe(gateway, lake)
    assert done.returncode == 0, done.stderr
    assert first_line(plan(gateway, lake).stdout).startswith(
        "Gateway findings (backfill probe) from"
    )
