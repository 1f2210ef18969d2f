"""``backfill run`` end to end: the real CLI in real processes against the simulator."""

from __future__ import annotations

import asyncio
import dataclasses
import json
import os
import signal
import subprocess
import time
from collections import Counter, defaultdict
from datetime import date, datetime, timezone
from itertools import pairwise
from pathlib import Path

import pytest

from backfill.domain import Symbol, days_between
from backfill.ib.client import new_ib
from backfill.ib.edges import SPAN, SURVEY
from backfill.sim import FAST_PACING, FaultConfig, PacingConfig
from tests.lake.helpers import read_coverage
from tests.oracle import expected_bars, lake_rows
from tests.run.conftest import backfill, run_args, run_backfill

pytestmark = pytest.mark.e2e

JULY = ("2025-07-01", "2025-07-31")
HALF_JULY = ("2025-07-01", "2025-07-16")


def assert_lake_equals_simulator(lake: Path, gateway, symbols, first: str, last: str) -> None:
    """Bar for bar what the simulator serves, and every day recorded with its true count."""
    f, l_ = date.fromisoformat(first), date.fromisoformat(last)
    for name in symbols:
        symbol = Symbol.parse(name)
        expected = expected_bars(gateway.market, symbol, f, l_)
        assert lake_rows(lake, symbol) == expected, f"{name} differs from the simulator"
        coverage = read_coverage(lake, [symbol], f, l_)[symbol]
        assert sorted(coverage) == days_between(f, l_), f"{name}: days not all recorded"
        per_day = Counter(row[0].date() for row in expected)  # ts is the bar END
        for day, record in coverage.items():
            assert record.complete
            # A day recorded with fewer rows than the simulator has would be a silent hole.
            assert record.rows == per_day.get(day, 0), (name, day)


def historical(gateway) -> list:
    """The run's requests for days (the start-up requests learning the window edges apart)."""
    return [r for r in gateway.requests() if r.kind == "historical" and not learning(r)]


def learning(record) -> bool:
    return record.duration in (LEARN_SURVEY, LEARN_PAIR)


LEARN_SURVEY = f"{int(SURVEY.total_seconds())} S"
LEARN_PAIR = f"{int(SPAN.total_seconds())} S"


def successes(gateway) -> list:
    return [r for r in historical(gateway) if r.outcome in ("bars", "no_data")]


def assert_contract_rule_kept(gateway, lake: Path) -> None:
    """No 162 for pacing, and no contract window held more than the rule allows on arrival.

    Checked only where the rule binds: the worker must have waited for it at least once.
    """
    records = historical(gateway)
    assert not [r for r in records if r.error_code == 162], "refused for pacing"
    by_symbol = defaultdict(list)
    for r in records:
        by_symbol[r.symbol].append(r.received)
    most = FAST_PACING.contract_max
    for times in by_symbol.values():
        times.sort()
        for first, later in zip(times, times[most:], strict=False):
            assert later - first > FAST_PACING.contract_window_s, (
                f"{most + 1} arrivals within {later - first:.3f}s"
            )
    [log] = (lake / "_runs").glob("*.jsonl")
    waits = [
        e
        for e in map(json.loads, log.read_text().splitlines())
        if e["event"] == "status" and e["status"] == "paced"
    ]
    assert any(e["detail"] == "contract" for e in waits), "the contract rule never bound"


def test_month_for_one_symbol_lands_complete_and_a_rerun_asks_nothing(sim, lake):
    # 50 req/s for one symbol: above the contract rule (5 in 0.2 s scaled), which binds.
    done = run_backfill(sim, lake, ["BTC-USD"], "2025-07-01", "2025-08-01", "--rate", "50")
    assert done.returncode == 0, done.stderr + done.stdout
    assert_lake_equals_simulator(lake, sim, ["BTC-USD"], "2025-07-01", "2025-08-01")
    assert_contract_rule_kept(sim, lake)
    july = lake / "data/source=ibkr/market=crypto/timeframe=M1/symbol=BTC-USD/year=2025/month=07"
    import pyarrow.parquet as pq

    ts = pq.read_table(july / "part-2025-07.parquet").column("ts").to_pylist()
    assert str(ts[-1]) <= "2025-07-31 23:59:00+00:00" and str(ts[0]) >= "2025-07-01 00:00"
    asked = len(sim.requests())
    again = run_backfill(sim, lake, ["BTC-USD"], "2025-07-01", "2025-08-01", "--rate", "50")
    assert again.returncode == 0, again.stderr
    assert len(sim.requests()) == asked, "a rerun over a complete lake must ask nothing"
    plan = subprocess.run(
        backfill(
            "plan",
            "--lake",
            str(lake),
            "--symbols",
            "BTC-USD",
            "--from",
            "2025-07-01",
            "--to",
            "2025-08-01",
            "--json",
        ),
        capture_output=True,
        text=True,
    )
    assert json.loads(plan.stdout)["totals"]["days_missing"] == 0


@pytest.mark.parametrize(
    "faults",
    [
        FaultConfig(hang_share=0.2, seed=3),
        FaultConfig(error_share=0.3, seed=4),
        FaultConfig(drop_after=4, seed=5),
        pytest.param(
            FaultConfig(latency_ms=(0, 80), hang_share=0.05, error_share=0.1, seed=6),
            marks=pytest.mark.ib,
        ),
    ],
    ids=["hung", "transient", "dropped", "mixed"],
)
def test_each_fault_class_ends_with_every_day_fetched(sim, lake, faults):
    sim.set_faults(faults)
    done = run_backfill(
        sim, lake, ["ETH-USD"], "2025-07-01", "2025-07-12", "--rate", "50", "--request-timeout", "1"
    )
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr
    assert_lake_equals_simulator(lake, sim, ["ETH-USD"], "2025-07-01", "2025-07-12")
    outcomes = Counter(r.outcome for r in historical(sim))
    assert sum(v for k, v in outcomes.items() if k not in ("bars", "no_data")) > 0, outcomes


def test_pacing_violations_are_retried_and_slow_everyone(make_sim, lake):
    # The gateway is stricter than the workers believe: they trip its contract rule.
    gateway = make_sim(
        pacing=PacingConfig(
            contract_window_s=0.5,
            contract_max=3,
            identical_window_s=1.5,
            soft_rate=None,
            max_rate=None,
        )
    )
    done = run_backfill(
        gateway, lake, ["BTC-USD", "ETH-USD"], "2025-07-01", "2025-07-10", "--rate", "50"
    )
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr
    refused = [r for r in historical(gateway) if r.error_code == 162 and r.outcome == "error"]
    assert refused, "the test must actually trip the gateway's pacing"
    assert "pacing violation" in done.stdout
    # The run log tells when and why the global budget moved.
    [log] = (lake / "_runs").glob("*.jsonl")
    budgets = [e for e in map(json.loads, log.read_text().splitlines()) if e["event"] == "budget"]
    assert budgets[0]["rate"] == 50.0
    assert any(b["rate"] == 25.0 and "pacing violation" in b["reason"] for b in budgets)
    assert "budget 25 req/s (pacing violation (162): stepped down)" in done.stdout
    assert_lake_equals_simulator(lake, gateway, ["BTC-USD", "ETH-USD"], "2025-07-01", "2025-07-10")


def test_strict_pacing_keeps_the_session_rule_across_all_workers(make_sim, lake):
    # IB's 60-in-10-minutes scaled to 5 in 2 s, counted across every client by the gateway.
    gateway = make_sim(
        pacing=dataclasses.replace(FAST_PACING, strict=True, session_max=5, session_window_s=2.0)
    )
    symbols = ["BTC-USD", "ETH-USD", "SOL-USD"]
    done = run_backfill(
        gateway,
        lake,
        symbols,
        "2025-07-01",
        "2025-07-05",
        "--rate",
        "50",
        "--strict-pacing",
        "--ib-session-max",
        "5",
        "--ib-session-window-s",
        "2",
    )
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr
    asked = historical(gateway)
    assert not [r for r in asked if r.error_code == 162], "the session rule was broken"
    assert len(asked) == 15
    # IB counts the start-up requests that learn the window edges too.
    arrivals = sorted(r.received for r in gateway.requests() if r.kind == "historical")
    assert len(arrivals) == 17
    assert all(later - first > 2.0 for first, later in zip(arrivals, arrivals[5:], strict=False))
    assert_lake_equals_simulator(lake, gateway, symbols, "2025-07-01", "2025-07-05")


def test_workers_starting_together_keep_the_global_rate(sim, lake):
    symbols = ["BTC-USD", "ETH-USD", "SOL-USD", "LTC-USD"]
    done = run_backfill(sim, lake, symbols, "2025-07-01", "2025-07-02", "--rate", "2")
    assert done.returncode == 0, done.stderr
    assert len(historical(sim)) == 8
    # The start-up requests learning the window edges spend the same budget.
    times = sorted(r.received for r in sim.requests() if r.kind == "historical")
    assert len(times) == 10
    # Any stretch of T seconds holds at most 2*T requests plus one second's worth (the
    # budget's burst), start included; 50 ms of slack for scheduling jitter.
    for i, first in enumerate(times):
        for j in range(i + 1, len(times)):
            assert j - i + 1 <= 2.0 * (times[j] - first + 0.05) + 2.0, (i, j, times)


def test_days_before_listing_are_not_asked_and_a_rerun_asks_nothing(sim, lake):
    # SOL lists on 2020-09-01 in the simulator: its head timestamp says so, once.
    done = run_backfill(sim, lake, ["SOL-USD"], "2020-08-29", "2020-09-02", "--rate", "50")
    assert done.returncode == 0, done.stderr
    coverage = read_coverage(lake, [Symbol("SOL", "USD")], date(2020, 8, 29), date(2020, 9, 2))[
        Symbol("SOL", "USD")
    ]
    assert sorted(coverage) == [date(2020, 9, 1), date(2020, 9, 2)]
    assert coverage[date(2020, 9, 1)].rows > 1000
    assert [r.outcome for r in historical(sim)] == ["bars", "bars"]
    asked = len(sim.requests())
    assert run_backfill(sim, lake, ["SOL-USD"], "2020-08-29", "2020-09-02").returncode == 0
    assert len(sim.requests()) == asked


def test_client_id_in_use_moves_to_the_next_id(sim, lake):
    asyncio.set_event_loop(asyncio.new_event_loop())  # an earlier test may have closed it
    squatter = new_ib()
    squatter.connect(sim.host, sim.port, clientId=100, readonly=True, timeout=5)
    try:
        done = run_backfill(sim, lake, ["BTC-USD"], "2025-07-01", "2025-07-03", "--rate", "50")
    finally:
        squatter.disconnect()
    assert done.returncode == 0, done.stderr
    assert "client id in use" in done.stdout
    used = {r.client_id for r in historical(sim)}
    assert 100 not in used and used


def test_bad_input_exits_2_and_writes_nothing(sim, tmp_path):
    lake = tmp_path / "lake"
    cases = [
        (["--symbols", "NOPE-USD", "--from", "2025-07-01", "--to", "2025-07-02"], "NOPE-USD"),
        (["--symbols", "BTC-USD", "--from", "2025-07-03", "--to", "2025-07-02"], "after"),
        (["--symbols", "BTC-USD", "--from", "2025-13-01", "--to", "2025-07-02"], "not a date"),
        (["--symbols", "BTC", "--from", "2025-07-01", "--to", "2025-07-02"], "malformed"),
    ]
    for args, words in cases:
        done = subprocess.run(
            backfill("run", "--gateway", f"{sim.host}:{sim.port}", "--lake", str(lake), *args),
            capture_output=True,
            text=True,
            timeout=60,
        )
        assert done.returncode == 2, (args, done.stderr)
        assert words in done.stderr and len(done.stderr.strip().splitlines()) == 1
        assert not lake.exists()
    unreachable = subprocess.run(
        backfill(
            "run",
            "--gateway",
            "127.0.0.1:1",
            "--lake",
            str(lake),
            "--symbols",
            "BTC-USD",
            "--from",
            "2025-07-01",
            "--to",
            "2025-07-02",
        ),
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert unreachable.returncode == 2 and "127.0.0.1:1" in unreachable.stderr
    assert not lake.exists()
    a_file = lake.parent / "a-file"
    a_file.write_text("not a folder")
    under_a_file = subprocess.run(
        backfill(
            "run",
            "--gateway",
            f"{sim.host}:{sim.port}",
            "--lake",
            str(a_file / "lake"),
            "--symbols",
            "BTC-USD",
            "--from",
            "2025-07-01",
            "--to",
            "2025-07-02",
        ),
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert under_a_file.returncode == 2
    assert (
        under_a_file.stderr.strip() == f"backfill: error: --lake {a_file / 'lake'}: "
        f"{a_file} is not a folder"
    )
    assert not historical(sim), "bad input asks the gateway nothing"


def _wait_for_lines(process: subprocess.Popen, predicate, timeout: float = 60) -> list[str]:
    """Read the child's stdout until a line matches; returns the lines read."""
    lines: list[str] = []
    deadline = time.monotonic() + timeout
    assert process.stdout is not None
    while time.monotonic() < deadline:
        line = process.stdout.readline()
        if not line:
            break
        lines.append(line)
        if predicate(line, lines):
            return lines
    raise AssertionError("expected output never came:\n" + "".join(lines[-30:]))


def start_json_run(gateway, lake: Path, symbols, *extra: str, **popen) -> subprocess.Popen:
    """A ``backfill run --json`` over July in the background, its NDJSON on a pipe."""
    popen.setdefault("stderr", subprocess.PIPE)
    return subprocess.Popen(
        run_args(gateway, lake, symbols, *JULY, "--json", *extra),
        stdout=subprocess.PIPE,
        text=True,
        **popen,
    )


def assert_a_rerun_completes_the_lake(gateway, lake: Path, symbols) -> None:
    done = run_backfill(gateway, lake, symbols, *JULY, "--rate", "50")
    assert done.returncode == 0, done.stderr
    assert_lake_equals_simulator(lake, gateway, symbols, *JULY)


def test_a_gateway_restart_mid_run_is_ridden_out(make_sim, lake):
    # IB Gateway restarts daily: every connection drops and for a while nothing listens.
    faults = FaultConfig(latency_ms=(40, 80))
    first = make_sim(faults=faults)
    symbols = ["BTC-USD", "ETH-USD"]
    process = start_json_run(first, lake, symbols, "--rate", "10")
    _wait_for_lines(process, lambda line, lines: sum('"day_fetched"' in x for x in lines) >= 6)
    first.stop()
    # Down until a worker has tried to reconnect and found nothing listening.
    seen = _wait_for_lines(process, lambda line, lines: '"reason":"connect: ' in line)
    second = make_sim(port=first.port, faults=faults)
    out, err = process.communicate(timeout=120)
    out = "".join(seen) + out
    assert process.returncode == 0, err[-3000:]
    assert '"reason":"disconnected"' in out
    assert successes(second), "the run went on against the restarted gateway"
    assert_lake_equals_simulator(lake, second, symbols, *JULY)


def test_sigkill_of_the_whole_run_then_rerun_gives_the_undisturbed_lake(sim, lake):
    sim.set_faults(FaultConfig(latency_ms=(40, 80)))
    symbols = ["BTC-USD", "ETH-USD"]
    process = start_json_run(
        sim, lake, symbols, "--rate", "20", stderr=subprocess.DEVNULL, start_new_session=True
    )
    try:
        _wait_for_lines(process, lambda line, lines: sum('"day_fetched"' in x for x in lines) > 12)
    finally:
        os.killpg(process.pid, signal.SIGKILL)
        process.wait()
    assert_a_rerun_completes_the_lake(sim, lake, symbols)


def test_sigint_flushes_exits_130_and_a_rerun_completes(sim, lake):
    sim.set_faults(FaultConfig(latency_ms=(40, 80)))
    symbols = ["BTC-USD", "LTC-USD"]
    process = start_json_run(sim, lake, symbols, "--rate", "20")
    fetched: dict[str, set[str]] = defaultdict(set)

    def enough(line: str, lines: list[str]) -> bool:
        if '"day_fetched"' in line:
            event = json.loads(line)
            fetched[event["symbol"]].add(event["day"])
        return sum(len(v) for v in fetched.values()) >= 10

    _wait_for_lines(process, enough)
    process.send_signal(signal.SIGINT)
    out, err = process.communicate(timeout=60)
    assert process.returncode == 130
    assert '"status":"stopped"' in out, "the dashboard must show the workers stopped"
    assert "Rerun the same command" in err
    for line in out.splitlines():
        if '"day_fetched"' in line:
            event = json.loads(line)
            fetched[event["symbol"]].add(event["day"])
    # Every day reported fetched before the stop is in the lake: the workers flushed.
    for name, days in fetched.items():
        symbol = Symbol.parse(name)
        coverage = read_coverage(lake, [symbol], date(2025, 7, 1), date(2025, 7, 31))[symbol]
        assert {d.isoformat() for d in coverage} >= days
    assert_a_rerun_completes_the_lake(sim, lake, symbols)


def test_a_worker_killed_mid_run_is_restarted_in_the_same_run(make_sim, lake):
    # IB forgets a request after 15 s (here 4 s); the killed worker's unflushed days are
    # asked again by its successor, which must wait that long first.
    gateway = make_sim(
        pacing=dataclasses.replace(FAST_PACING, identical_window_s=4.0),
        faults=FaultConfig(latency_ms=(40, 80)),
    )
    symbols = ["BTC-USD", "ETH-USD"]
    process = start_json_run(gateway, lake, symbols, "--rate", "16", "--ib-identical-s", "4")
    pids: dict[str, int] = {}

    def started(line: str, lines: list[str]) -> bool:
        event = json.loads(line) if line.startswith("{") else {}
        if event.get("event") == "started":
            pids[event["symbol"]] = event["pid"]
        return (
            "ETH-USD" in pids and sum('"day_fetched"' in x and "ETH-USD" in x for x in lines) >= 4
        )

    _wait_for_lines(process, started)
    os.kill(pids["ETH-USD"], signal.SIGKILL)
    out, err = process.communicate(timeout=120)
    assert process.returncode == 0, err
    assert "worker process died" in out
    assert_lake_equals_simulator(lake, gateway, symbols, *JULY)
    # The identical rule is what a restart risks; the per-contract rule (scaled to 0.2 s,
    # timed on arrival) is guarded where it binds, not here under a loaded machine's jitter.
    assert not [
        r for r in historical(gateway) if r.error_code == 162 and r.detail == "identical"
    ], "IB said: identical"


def test_a_rerun_right_after_ctrl_c_does_not_repeat_what_ib_remembers(make_sim, lake):
    # IB refuses an identical request within 15 s (here 10 s). Requests still unanswered at
    # Ctrl-C are dropped; the next run, started at once, must not repeat them yet.
    gateway = make_sim(
        pacing=dataclasses.replace(FAST_PACING, identical_window_s=10.0),
        faults=FaultConfig(latency_ms=(40, 80)),
    )
    flags = ("--ib-identical-s", "10", "--rate", "20", "--request-timeout", "5")
    symbols = ["BTC-USD"]
    process = start_json_run(gateway, lake, symbols, *flags)
    _wait_for_lines(process, lambda line, lines: sum('"day_fetched"' in x for x in lines) >= 5)
    gateway.set_faults(FaultConfig(hang_share=1.0))  # what goes out now stays unanswered
    deadline = time.monotonic() + 30
    while not [r for r in historical(gateway) if r.outcome == "hung"]:
        assert time.monotonic() < deadline, "no request went out after the switch"
        time.sleep(0.02)
    process.send_signal(signal.SIGINT)
    assert process.wait(timeout=60) == 130
    gateway.set_faults(FaultConfig(latency_ms=(40, 80)))
    again = run_backfill(gateway, lake, symbols, *JULY, *flags)
    assert again.returncode == 0, again.stderr
    # The identical rule is what a restart risks; the per-contract rule (scaled to 0.2 s,
    # timed on arrival) is guarded where it binds, not here under a loaded machine's jitter.
    assert not [
        r for r in historical(gateway) if r.error_code == 162 and r.detail == "identical"
    ], "IB said: identical"
    assert_lake_equals_simulator(lake, gateway, symbols, *JULY)


def test_two_concurrent_runs_over_overlapping_symbols_fetch_each_day_once(sim, lake):
    sim.set_faults(FaultConfig(latency_ms=(20, 60)))
    first = subprocess.Popen(
        run_args(sim, lake, ["BTC-USD", "ETH-USD"], *JULY, "--rate", "20"),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    second = subprocess.Popen(
        run_args(sim, lake, ["ETH-USD", "SOL-USD"], *JULY, "--rate", "20"),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    _, err1 = first.communicate(timeout=120)
    _, err2 = second.communicate(timeout=120)
    assert first.returncode == 0, err1
    assert second.returncode == 0, err2
    asked = Counter((r.symbol, r.end) for r in successes(sim))
    assert asked and max(asked.values()) == 1, "a day was fetched twice"
    assert_lake_equals_simulator(lake, sim, ["BTC-USD", "ETH-USD", "SOL-USD"], *JULY)


def test_eight_symbols_with_faults_complete_within_the_rules(make_sim, lake):
    gateway = make_sim(
        pacing=FAST_PACING,
        faults=FaultConfig(
            # Each worker's connection is dropped once, late (14 of its 17+ requests served):
            # every drop steps the global rate down, so earlier drops only make the run longer.
            latency_ms=(0, 120),
            hang_share=0.02,
            error_share=0.04,
            drop_after=14,
            seed=11,
        ),
    )
    symbols = [
        "BTC-USD",
        "ETH-USD",
        "LTC-USD",
        "BCH-USD",
        "SOL-USD",
        "AVAX-USD",
        "LINK-USD",
        "DOGE-USD",
    ]
    rate = 40.0
    # Half a month: some 130 requests at 40/s, enough for every fault class to occur.
    # The gateway times IB's identical rule on arrival; on a loaded 2-core machine a send
    # can reach it a few hundred ms late, more than the scaled rule's margin (a retry then
    # draws a 162 whose own retry lands inside the scaled 1.5 s). The workers keep 2 s.
    done = run_backfill(
        gateway,
        lake,
        symbols,
        *HALF_JULY,
        "--rate",
        str(rate),
        "--request-timeout",
        "3",
        "--ib-identical-s",
        "2.0",
        timeout=240,
    )
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr
    assert_lake_equals_simulator(lake, gateway, symbols, *HALF_JULY)
    verify = subprocess.run(
        backfill("verify", "--lake", str(lake), "--from", HALF_JULY[0], "--to", HALF_JULY[1]),
        capture_output=True,
        text=True,
    )
    assert verify.returncode == 0, verify.stdout + verify.stderr
    records = historical(gateway)
    outcomes = Counter(r.outcome for r in records)
    assert outcomes["dropped"] and outcomes["hung"] and outcomes["error"], outcomes
    # IB's rules: none refused for pacing, and none broken as seen on arrival.
    assert not [r for r in records if r.error_code == 162 and "pacing" in (r.detail or "")]
    by_symbol = defaultdict(list)
    for r in records:
        by_symbol[r.symbol].append(r.received)
    for times in by_symbol.values():
        times.sort()
        for i in range(len(times) - 5):
            assert times[i + 5] - times[i] >= FAST_PACING.contract_window_s * 0.9
    # The global rate: no 1 s window holds more than rate + one token per worker.
    times = sorted(r.received for r in records)
    for i, t in enumerate(times):
        in_window = sum(1 for u in times[i : i + int(rate) + 20] if u - t < 1.0)
        assert in_window <= rate + len(symbols)
    # IB's identical-request rule: the same window never twice within its interval.
    asked_at = defaultdict(list)
    for r in records:
        asked_at[(r.symbol, r.end, r.duration)].append(r.received)
    for times in asked_at.values():
        times.sort()
        assert all(b - a >= FAST_PACING.identical_window_s * 0.9 for a, b in pairwise(times))
    # No window asked again once the client had its answer (a request the client gave up
    # on and cancelled, as ib_insync does on its timeout, may be asked again).
    cancelled = {(r.client_id, r.req_id) for r in gateway.requests() if r.kind == "cancel"}
    answered: set = set()
    for r in sorted(records, key=lambda r: r.received):
        key = (r.symbol, r.end, r.duration)
        assert key not in answered, f"{key} asked again after success"
        if r.outcome in ("bars", "no_data") and (r.client_id, r.req_id) not in cancelled:
            answered.add(key)


def test_a_corrupt_part_is_moved_aside_and_its_days_fetched_again(sim, lake):
    first, last = "2025-07-30", "2025-08-02"
    assert run_backfill(sim, lake, ["BTC-USD"], first, last, "--rate", "50").returncode == 0
    july = next(lake.rglob("part-2025-07.parquet"))
    july.write_bytes(july.read_bytes()[: july.stat().st_size // 2])  # a torn copy, say
    torn = july.read_bytes()
    answered = len(successes(sim))
    done = run_backfill(sim, lake, ["BTC-USD"], first, last, "--rate", "50")
    assert done.returncode == 0, done.stderr
    assert len(successes(sim)) == answered + 2, "only July's two days are fetched again"
    moved = list(july.parent.glob("_corrupt-part-2025-07.parquet.*.bad"))
    assert [m.read_bytes() for m in moved] == [torn], "the corrupt part is kept, untouched"
    assert "moved aside" in done.stdout
    assert_lake_equals_simulator(lake, sim, ["BTC-USD"], first, last)
    verify = subprocess.run(
        backfill("verify", "--lake", str(lake), "--json"), capture_output=True, text=True
    )
    report = json.loads(verify.stdout)
    assert verify.returncode == 0 and report["ok"]
    assert any(f["kind"] == "quarantined" for f in report["findings"])


def test_today_is_fetched_as_a_partial_day_and_fetched_again_next_run(sim, lake):
    now = datetime.now(timezone.utc)
    if (now.hour == 23 and now.minute >= 55) or (now.hour == 0 and now.minute < 5):
        pytest.skip("too close to midnight UTC for 'today' to stay today")
    today = now.date().isoformat()
    done = run_backfill(sim, lake, ["BTC-USD"], today, today, "--rate", "50")
    assert done.returncode == 0, done.stderr
    symbol = Symbol("BTC", "USD")
    record = read_coverage(lake, [symbol], now.date(), now.date())[symbol][now.date()]
    assert not record.complete
    # Only the minutes that had ended when it was fetched: nothing from the future (the
    # day's first bar ends at 00:00, so by hh:mm at most hh*60+mm+1 bars have ended).
    asked = record.fetched_at
    assert 0 < record.rows <= asked.hour * 60 + asked.minute + 1
    assert max(row[0] for row in lake_rows(lake, symbol)) <= datetime.now(timezone.utc)
    answered = len(successes(sim))
    assert run_backfill(sim, lake, ["BTC-USD"], today, today, "--rate", "50").returncode == 0
    assert len(successes(sim)) == answered + 1, "a partial day is asked again"


def test_windows_too_long_for_the_gateway_are_halved_by_the_worker(make_sim, lake):
    gateway = make_sim(max_duration_days=2)
    done = run_backfill(
        gateway,
        lake,
        ["ETH-USD"],
        "2025-07-01",
        "2025-07-16",
        "--rate",
        "50",
        "--window-days",
        "8",
        "--verbose",
    )  # a request's retries: --verbose
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr
    assert "duration too long" in done.stdout
    durations = Counter(r.duration for r in successes(gateway))
    assert set(durations) <= {"2 D", "86400 S"} and durations
    assert_lake_equals_simulator(lake, gateway, ["ETH-USD"], "2025-07-01", "2025-07-16")


def test_a_worker_that_keeps_dying_fails_its_symbol_and_the_others_finish(sim, lake):
    sim.set_faults(FaultConfig(latency_ms=(40, 80)))
    process = start_json_run(
        sim, lake, ["BTC-USD", "ETH-USD"], "--rate", "10", "--max-restarts", "0"
    )
    pids: dict[str, int] = {}

    def started(line: str, lines: list[str]) -> bool:
        event = json.loads(line) if line.startswith("{") else {}
        if event.get("event") == "started":
            pids[event["symbol"]] = event["pid"]
        return "ETH-USD" in pids

    _wait_for_lines(process, started)
    os.kill(pids["ETH-USD"], signal.SIGKILL)
    out, err = process.communicate(timeout=120)
    assert process.returncode == 1, err
    failed = [json.loads(x) for x in out.splitlines() if '"event":"failed"' in x]
    assert [e["symbol"] for e in failed] == ["ETH-USD"]
    assert "Rerun the same command" in err + out
    assert_lake_equals_simulator(lake, sim, ["BTC-USD"], *JULY)


def most_open_at_once(records) -> int:
    """The most requests the gateway held open at one instant (received .. answered)."""
    edges = sorted(
        [(r.received, 1) for r in records] + [(r.answered or r.received, -1) for r in records],
        key=lambda edge: (edge[0], edge[1]),
    )
    most = open_now = 0
    for _, step in edges:
        open_now += step
        most = max(most, open_now)
    return most


def test_the_in_flight_cap_holds_across_all_workers(sim, lake):
    # 4 workers that would keep 4 requests open each at 50 req/s; answers take 150-250 ms.
    sim.set_faults(FaultConfig(latency_ms=(150, 250), seed=8))
    symbols = ["BTC-USD", "ETH-USD", "SOL-USD", "LTC-USD"]
    done = run_backfill(
        sim, lake, symbols, "2025-07-01", "2025-07-06", "--rate", "50", "--max-in-flight-total", "3"
    )
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr
    records = historical(sim)
    assert most_open_at_once(records) <= 3
    assert len({r.client_id for r in records}) == 4  # shares rotate: no worker starved
    assert_lake_equals_simulator(lake, sim, symbols, "2025-07-01", "2025-07-06")
