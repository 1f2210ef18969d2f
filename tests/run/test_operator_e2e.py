"""What an operator meets at the edges of ``backfill run``: one-line answers, not tracebacks.

Real CLI processes against the simulator (or a bare listening socket, to prove that bad
input asks no gateway anything), real mounts where a condition needs one.
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import os
import queue
import shlex
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from datetime import date
from pathlib import Path

import filelock
import pytest

from backfill.domain import Symbol
from backfill.lake.paths import iter_parts, run_lock_path
from backfill.lake.store import read_part
from backfill.sim import FAST_PACING, FaultConfig
from tests.lake.helpers import read_coverage, tmpfs
from tests.oracle import lake_rows
from tests.run.conftest import FAST_RULES, backfill, run_args, run_backfill
from tests.run.test_run_e2e import assert_lake_equals_simulator, historical

pytestmark = pytest.mark.e2e

TWO_DAYS = ("2025-07-01", "2025-07-02")


def run_two_days(gateway: str, lake: str | bytes | Path, *args: str | bytes) -> list:
    """``backfill run`` of BTC-USD over ``TWO_DAYS`` against ``gateway`` into ``lake``
    (bytes where a test hands it a path that is not text)."""
    days = ("--symbols", "BTC-USD", "--from", TWO_DAYS[0], "--to", TWO_DAYS[1])
    return [*backfill("run", "--gateway", gateway, *days), "--lake", lake, *args]


@pytest.fixture
def listener() -> Iterator[socket.socket]:
    """A bare listening socket posing as a gateway: any connection attempt is queued."""
    with socket.socket() as server:
        server.bind(("127.0.0.1", 0))
        server.listen(16)
        server.setblocking(False)
        yield server


@pytest.fixture
def reap() -> Iterator[list[subprocess.Popen[str]]]:
    """Runs a test started: any still running when it ends (it failed) is killed."""
    started: list[subprocess.Popen[str]] = []
    yield started
    for process in started:
        if process.poll() is None:
            process.kill()
            process.wait()


def contacted(server: socket.socket) -> bool:
    """Whether anything connected (the kernel queues connections nobody accepted)."""
    try:
        conn, _ = server.accept()
    except BlockingIOError:
        return False
    conn.close()
    return True


def run_at(
    server: socket.socket, lake: Path | bytes, *args: str | bytes, env: dict[str, str] | None = None
) -> subprocess.CompletedProcess[str]:
    host, port = server.getsockname()
    return subprocess.run(
        run_two_days(f"{host}:{port}", lake, *args),
        capture_output=True,
        text=True,
        timeout=60,
        stdin=subprocess.DEVNULL,
        env=env,
    )


def assert_bad_input(done: subprocess.CompletedProcess[str], *words: str) -> None:
    assert done.returncode == 2, done.stdout[-2000:] + done.stderr
    assert len(done.stderr.strip().splitlines()) == 1, done.stderr
    assert done.stderr.startswith("backfill: error: "), done.stderr
    for word in words:
        assert word in done.stderr, done.stderr


# -- the rerun hint, the summary -----------------------------------------------------------


def test_the_rerun_hint_is_one_line_at_60_columns_and_runs_as_pasted(sim, lake, tmp_path):
    sim.set_faults(FaultConfig(hang_share=1.0))  # nothing is answered: the run is cut short
    env = {**os.environ, "COLUMNS": "60"}
    process = subprocess.Popen(
        # Every run learns the gateway's window edges first: its two learning requests hang
        # too, each for the --request-timeout (10 s by default) before the day requests go out.
        run_args(sim, lake, ["BTC-USD"], *TWO_DAYS, "--rate", "50", "--request-timeout", "1"),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=env,
        stdin=subprocess.DEVNULL,
    )
    deadline = time.monotonic() + 30
    while not [r for r in historical(sim) if r.outcome == "hung"]:
        assert time.monotonic() < deadline and process.poll() is None, "no request went out"
        time.sleep(0.02)
    process.send_signal(signal.SIGINT)
    out, err = process.communicate(timeout=60)
    assert process.returncode == 130, err
    lines = out.splitlines()
    at = next(i for i, line in enumerate(lines) if line.startswith("Rerun the same command"))
    pasted = lines[at + 1].strip()
    assert pasted.startswith("backfill run ") and len(pasted) > 60
    assert lines[at + 2].startswith("Run log: "), "the command goes on past its line"
    argv = shlex.split(pasted)
    assert argv[argv.index("--lake") + 1] == str(lake)
    # Pasted elsewhere, it still fills this lake: nothing lands in the current folder.
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    sim.set_faults(FaultConfig())
    again = subprocess.run(
        [sys.executable, "-m", *argv],
        cwd=elsewhere,
        capture_output=True,
        text=True,
        timeout=60,
        stdin=subprocess.DEVNULL,
    )
    assert again.returncode == 0, again.stderr
    assert list(elsewhere.iterdir()) == []
    assert_lake_equals_simulator(lake, sim, ["BTC-USD"], *TWO_DAYS)


# -- symbols files, gateway addresses ------------------------------------------------------


def test_a_symbols_file_with_a_utf8_bom_is_read(tmp_path):
    listed = tmp_path / "symbols.txt"
    listed.write_bytes("\ufeffBTC-USD\nETH-USD\n".encode())
    done = subprocess.run(
        backfill(
            "plan",
            "--symbols-file",
            str(listed),
            "--from",
            "2025-07-01",
            "--to",
            "2025-07-02",
            "--lake",
            str(tmp_path / "lake"),
            "--json",
        ),
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 0, done.stderr
    assert '"symbol": "BTC-USD"' in done.stdout and '"symbol": "ETH-USD"' in done.stdout


def test_an_ipv6_gateway_in_brackets(make_sim, lake):
    try:
        gateway = make_sim(host="::1")
    except OSError as exc:
        pytest.skip(f"no IPv6 loopback here: {exc}")
    done = subprocess.run(
        backfill(
            "run",
            "--gateway",
            f"[::1]:{gateway.port}",
            "--lake",
            str(lake),
            "--symbols",
            "BTC-USD",
            "--from",
            TWO_DAYS[0],
            "--to",
            TWO_DAYS[1],
            "--rate",
            "50",
            *FAST_RULES,
        ),
        capture_output=True,
        text=True,
        timeout=60,
        stdin=subprocess.DEVNULL,
    )
    assert done.returncode == 0, done.stderr
    assert_lake_equals_simulator(lake, gateway, ["BTC-USD"], *TWO_DAYS)


# -- run logs are pruned -------------------------------------------------------------------


def test_runs_keeps_the_last_n_run_logs_no_op_runs_included(tmp_path):
    lake = tmp_path / "lake"
    runs = lake / "_runs"
    runs.mkdir(parents=True)
    old = [runs / f"20240101T00{n // 60:02d}{n % 60:02d}Z-{n:04x}.jsonl" for n in range(104)]
    for path in old:
        path.write_text('{"event":"queued"}\n')
    # Days after today are never planned: a no-op run that asks no gateway anything.
    no_op = (
        "run",
        "--gateway",
        "127.0.0.1:1",
        "--symbols",
        "BTC-USD",
        "--from",
        "2099-01-01",
        "--to",
        "2099-01-02",
        "--lake",
        str(lake),
    )
    done = subprocess.run(backfill(*no_op), capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    kept = sorted(p.name for p in runs.iterdir())
    assert len(kept) == 100, "default: the last 100"
    assert kept[:-1] == [p.name for p in old[-99:]] and kept[-1] > old[-1].name
    done = subprocess.run(
        backfill(*no_op, "--keep-runs", "3"), capture_output=True, text=True, timeout=60
    )
    assert done.returncode == 0, done.stderr
    assert sorted(p.name for p in runs.iterdir())[:2] == kept[-2:]
    assert len(list(runs.iterdir())) == 3
    (runs / "notes.txt").write_text("an operator's file is not a run log")
    done = subprocess.run(
        backfill(*no_op, "--keep-runs", "1"), capture_output=True, text=True, timeout=60
    )
    assert done.returncode == 0, done.stderr
    assert (runs / "notes.txt").exists() and len(list(runs.glob("*.jsonl"))) == 1
    bad = subprocess.run(
        backfill(*no_op, "--keep-runs", "0"), capture_output=True, text=True, timeout=60
    )
    assert_bad_input(bad, "--keep-runs")


# -- Ctrl-C at once ------------------------------------------------------------------------


def _children(pid: int) -> list[str]:
    """The command lines of ``pid``'s children."""
    found = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            with contextlib.suppress(OSError):
                stat = (entry / "stat").read_text()
                if int(stat.rsplit(")", 1)[1].split()[1]) == pid:
                    found.append((entry / "cmdline").read_bytes().replace(b"\0", b" ").decode())
    return found


# The moments after backfill's own code runs (a Ctrl-C within CPython's own start-up, the
# first ~50 ms, gets CPython's message: no program can catch it): the resource tracker starts
# just before the parent's heavy imports, the forkserver imports the worker code, the
# simulator starts.
@pytest.mark.parametrize("when", ["resource_tracker", "forkserver", "gateway"])
def test_ctrl_c_in_the_first_half_second_prints_no_traceback(lake, when):
    with _ctrl_c_heard():
        process = subprocess.Popen(
            run_two_days("sim", lake),
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            stdin=subprocess.DEVNULL,
            start_new_session=True,  # Ctrl-C at a terminal reaches the whole process group
        )
    started = time.monotonic()
    while not any(when in c for c in _children(process.pid)) and process.poll() is None:
        assert time.monotonic() - started < 10, "the run never started its helpers"
        time.sleep(0.002)
    os.killpg(process.pid, signal.SIGINT)
    _, err = process.communicate(timeout=60)
    assert "Traceback" not in err and "KeyboardInterrupt" not in err, err
    # -SIGINT: killed before Python set up its handler, which a shell reports as 130.
    assert process.returncode in (130, 2, -signal.SIGINT), (process.returncode, err)
    deadline = time.monotonic() + 10
    while _group_alive(process.pid):
        assert time.monotonic() < deadline, "a helper process outlived the run"
        time.sleep(0.05)


@contextlib.contextmanager
def _ctrl_c_heard() -> Iterator[None]:
    """Processes started inside hear Ctrl-C, whatever this one inherited.

    A suite started in the background by a script (``pytest &``) runs with SIGINT ignored,
    and its children inherit that: the run would never hear the Ctrl-C, and exit 0. A
    handler is reset to the default across exec, so the child starts with the default.
    """
    previous = signal.signal(signal.SIGINT, signal.default_int_handler)
    try:
        yield
    finally:
        signal.signal(signal.SIGINT, previous)


def _group_alive(pgid: int) -> bool:
    try:
        os.killpg(pgid, 0)
    except ProcessLookupError:
        return False
    return True


# -- client ids ----------------------------------------------------------------------------


@pytest.mark.parametrize(
    "base,workers",
    [
        ("2147483647", "1"),  # ib_insync sends 2^31-1 as an empty field
        ("2147483646", "1"),  # the gateway check uses base + workers: 2^31-1 again
        ("2147483640", "8"),
        ("4294967396", "1"),  # over 32 bits
        ("0", "1"),
        ("-5", "1"),
    ],
)
def test_client_ids_outside_ibs_range_are_bad_input(listener, lake, base, workers):
    done = run_at(listener, str(lake), "--client-id-base", base, "--workers", workers)
    assert_bad_input(done, "--client-id-base")
    assert not lake.exists()
    assert not contacted(listener), "bad input must not reach the gateway"


def test_the_highest_usable_client_ids_work(sim, lake):
    done = run_backfill(
        sim,
        lake,
        ["BTC-USD"],
        *TWO_DAYS,
        "--rate",
        "50",
        "--client-id-base",
        "2147483645",
        "--workers",
        "1",
    )
    assert done.returncode == 0, done.stderr
    assert {r.client_id for r in historical(sim)} == {2147483645}


# -- the lake's own folders, its name, a full disk -----------------------------------------


@pytest.mark.parametrize("folder", ["_runs", "_locks"])
def test_a_runs_or_locks_path_that_is_a_file_is_bad_input(listener, lake, folder):
    lake.mkdir()
    (lake / folder).write_text("in the way")
    done = run_at(listener, str(lake))
    assert_bad_input(done, folder)
    assert sorted(p.name for p in lake.iterdir()) == [folder], "nothing written"
    assert not contacted(listener)


@pytest.mark.parametrize("folder", ["_runs", "_locks"])
def test_a_read_only_runs_or_locks_folder_is_bad_input(listener, lake, folder):
    # Root ignores permission bits; a read-only filesystem stops root too.
    lake.mkdir()
    with tmpfs(lake / folder, "ro", "size=64k"):
        done = run_at(listener, str(lake))
    assert_bad_input(done, folder, "not writable")
    assert sorted(p.name for p in lake.iterdir()) == [folder], "nothing written"
    assert not contacted(listener)


def test_a_lake_path_that_is_not_utf8_is_bad_input(listener, tmp_path):
    lake = os.fsencode(tmp_path) + b"/caf\xff/lake"
    done = run_at(listener, lake)
    assert_bad_input(done, "UTF-8")
    assert not os.path.exists(lake) and not os.path.exists(os.path.dirname(lake))
    assert not contacted(listener)


def test_a_full_disk_under_the_run_log_ends_the_run_cleanly(sim, lake):
    sim.set_faults(FaultConfig(latency_ms=(10, 30)))
    with tmpfs(lake / "_runs", "size=4k"):
        done = run_backfill(sim, lake, ["BTC-USD"], "2025-07-01", "2025-07-20", "--rate", "50")
        [log] = (lake / "_runs").iterdir()
        text = log.read_text()
    assert done.returncode == 1, done.stdout[-2000:] + done.stderr
    assert "Traceback" not in done.stderr
    assert len(done.stderr.strip().splitlines()) == 1, done.stderr
    assert "run log" in done.stderr and "No space left" in done.stderr
    assert text.endswith("\n"), "the run log ends with a whole line"
    events = [json.loads(line) for line in text.splitlines()]  # every line whole
    assert [e["event"] for e in events[:2]] == ["run_started", "queued"]


# == phase B: what a run counts, what it leaves behind, what it asks =======================


def _alive(pid: int) -> bool:
    """Running (a zombie nobody reaped is gone for our purposes)."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return False
    return stat.rsplit(")", 1)[1].split()[0] != "Z"


def _events(lines) -> list[dict]:
    return [json.loads(x) for x in lines if x.startswith("{")]


def test_sigkill_of_the_run_parent_ends_the_simulator_and_the_workers_quietly(lake):
    process = subprocess.Popen(
        backfill(
            "run",
            "--gateway",
            "sim",
            "--symbols",
            "BTC-USD,ETH-USD",
            "--from",
            "2025-07-01",
            "--to",
            "2025-07-31",
            "--lake",
            str(lake),
            "--rate",
            "4",
            "--json",
        ),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        stdin=subprocess.DEVNULL,
    )
    assert process.stdout is not None and process.stderr is not None
    workers: dict[str, int] = {}
    fetched: dict[str, set[str]] = {"BTC-USD": set(), "ETH-USD": set()}
    deadline = time.monotonic() + 60
    while sum(map(len, fetched.values())) < 8:
        assert time.monotonic() < deadline, "the run never got going"
        event = json.loads(process.stdout.readline())
        if event["event"] == "started":
            workers[event["symbol"]] = event["pid"]
        elif event["event"] == "day_fetched":
            fetched[event["symbol"]].add(event["day"])
    [gateway] = [
        int(e.name)
        for e in Path("/proc").iterdir()
        if e.name.isdigit() and _is_child(int(e.name), process.pid, "gateway")
    ]
    process.kill()  # SIGKILL: no handler runs in the parent
    process.wait()
    deadline = time.monotonic() + 20
    while any(_alive(pid) for pid in (gateway, *workers.values())):
        assert time.monotonic() < deadline, "the simulator or a worker outlived its parent"
        time.sleep(0.05)
    err = process.stderr.read()  # EOF: every holder of the pipe is gone
    assert "Traceback" not in err and "Error" not in err, err
    # Whole parts only, and what was reported fetched before the kill was flushed.
    assert not list(lake.rglob("*.tmp"))
    for _, _, path in iter_parts(lake, None):
        assert read_part(path).num_rows > 0, path
    for name, days in fetched.items():
        symbol = Symbol.parse(name)
        recorded = read_coverage(lake, [symbol], date(2025, 7, 1), date(2025, 7, 31))[symbol]
        assert {d.isoformat() for d in recorded} >= days, name


def _is_child(pid: int, parent: int, word: str) -> bool:
    with contextlib.suppress(OSError):
        stat = Path(f"/proc/{pid}/stat").read_text()
        if int(stat.rsplit(")", 1)[1].split()[1]) == parent:
            return word in Path(f"/proc/{pid}/cmdline").read_bytes().decode(errors="replace")
    return False


def test_a_skipped_symbol_left_incomplete_fails_the_run(sim, lake):
    assert run_backfill(sim, lake, ["BTC-USD"], *TWO_DAYS, "--rate", "50").returncode == 0
    # Another run is fetching BTC-USD: this one skips it, and must look at it at its end
    # (with nothing else to do, at once: --wait-for-other-run 0).
    held = filelock.FileLock(run_lock_path(lake, "BTC-USD"))
    with held:
        short = run_backfill(
            sim,
            lake,
            ["BTC-USD", "ETH-USD"],
            "2025-07-01",
            "2025-07-03",
            "--rate",
            "50",
            "--wait-for-other-run",
            "0",
        )
        whole = run_backfill(
            sim,
            lake,
            ["BTC-USD", "ETH-USD"],
            *TWO_DAYS,
            "--rate",
            "50",
            "--wait-for-other-run",
            "0",
        )
    assert short.returncode == 1, short.stdout[-2000:] + short.stderr
    line = next(x for x in short.stdout.splitlines() if "BTC-USD" in x and "│" in x)
    assert "skipped" in line and "1 day missing" in short.stdout, short.stdout
    assert "another backfill run" in short.stdout
    assert whole.returncode == 0, whole.stdout[-2000:] + whole.stderr
    assert_lake_equals_simulator(lake, sim, ["ETH-USD"], "2025-07-01", "2025-07-03")


def test_a_symbol_another_run_holds_is_waited_for_and_taken_over_when_it_lets_go(sim, lake):
    # Another run holds BTC-USD (and then stops early, having fetched nothing): this run
    # waits for it, then fetches BTC-USD itself, under the lock, and exits 0.
    held = filelock.FileLock(run_lock_path(lake, "BTC-USD"))
    held.acquire()
    try:
        process = subprocess.Popen(
            [*run_args(sim, lake, ["BTC-USD", "ETH-USD"], *TWO_DAYS, "--rate", "50"), "--json"],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            stdin=subprocess.DEVNULL,
        )
        assert process.stdout is not None
        seen_waiting = False
        deadline = time.monotonic() + 60
        for line in process.stdout:  # NDJSON events, one a line
            event = json.loads(line)
            if event.get("symbol") == "BTC-USD" and event.get("status") == "waiting":
                seen_waiting = True
            if event.get("symbol") == "ETH-USD" and event.get("event") == "finished":
                break
            assert time.monotonic() < deadline, "ETH-USD never finished"
        assert seen_waiting, "BTC-USD was not shown waiting for the other run"
        assert process.poll() is None, "the run ended instead of waiting for BTC-USD"
    finally:
        held.release()
    out, err = process.communicate(timeout=60)
    assert process.returncode == 0, out[-2000:] + err
    assert_lake_equals_simulator(lake, sim, ["BTC-USD", "ETH-USD"], *TWO_DAYS)


def test_days_before_a_listing_are_not_asked_and_the_head_is_asked_once(sim, lake):
    # SOL lists on 2020-09-01 in the simulator.
    done = run_backfill(sim, lake, ["SOL-USD"], "1990-01-01", "2020-09-02", "--rate", "50")
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr
    heads = [r for r in sim.requests() if r.kind == "head_timestamp"]
    assert len(heads) == 1
    asked = sorted(r.end for r in historical(sim))
    assert len(asked) == 2 and asked[0].startswith("20200901"), asked
    again = run_backfill(sim, lake, ["SOL-USD"], "1990-01-01", "2020-09-03", "--rate", "50")
    assert again.returncode == 0, again.stderr
    assert len([r for r in sim.requests() if r.kind == "head_timestamp"]) == 1, (
        "the head is recorded in the lake"
    )
    assert len(historical(sim)) == 3
    plan = subprocess.run(
        backfill(
            "plan",
            "--lake",
            str(lake),
            "--symbols",
            "SOL-USD",
            "--from",
            "1990-01-01",
            "--to",
            "2020-09-03",
            "--json",
        ),
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert json.loads(plan.stdout)["totals"]["days_missing"] == 0, plan.stdout[:500]


def _summary_rows(text: str, symbol: str) -> int:
    line = next(x for x in text.splitlines() if symbol in x and "│" in x)
    cells = [c.strip() for c in line.split("│")]
    return int(cells[4].replace(",", ""))


def test_rows_and_days_count_when_written_not_when_fetched(sim, lake):
    # August's folder is in the way: July is written, August is fetched and never written.
    august = lake / "data/source=ibkr/market=crypto/timeframe=M1/symbol=BTC-USD/year=2025"
    august.mkdir(parents=True)
    (august / "month=08").write_text("in the way")
    done = run_backfill(
        sim, lake, ["BTC-USD"], "2025-07-22", "2025-08-10", "--rate", "50", "--json"
    )
    assert done.returncode == 1, done.stderr
    events = _events(done.stdout.splitlines())
    [end] = [e for e in events if e["event"] in ("failed", "finished")]
    assert end["days_failed"] == 10, end
    in_lake = len(lake_rows(lake, Symbol("BTC", "USD")))
    assert in_lake > 0 and _summary_rows(done.stderr, "BTC-USD") == in_lake
    assert "10/20" in done.stderr or " 10/20" in done.stderr, done.stderr


def test_rows_count_once_across_a_worker_restart(make_sim, lake):
    gateway = make_sim(
        pacing=dataclasses.replace(FAST_PACING, identical_window_s=2.0),
        faults=FaultConfig(latency_ms=(40, 80)),
    )
    process = subprocess.Popen(
        run_args(
            gateway,
            lake,
            ["ETH-USD"],
            "2025-07-01",
            "2025-07-31",
            "--rate",
            "8",
            "--ib-identical-s",
            "2",
            "--json",
        ),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    assert process.stdout is not None
    pid = 0
    fetched = 0
    while fetched < 6:
        event = json.loads(process.stdout.readline())
        pid = event["pid"] if event["event"] == "started" else pid
        fetched += event["event"] == "day_fetched"
    os.kill(pid, signal.SIGKILL)  # what it fetched and had not written is fetched again
    out, err = process.communicate(timeout=120)
    assert process.returncode == 0, err
    assert "worker process died" in out
    assert _summary_rows(err, "ETH-USD") == len(lake_rows(lake, Symbol("ETH", "USD")))


def test_a_stopped_worker_is_shown_stalled_loses_its_share_and_is_restarted(sim, lake, reap):
    sim.set_faults(FaultConfig(latency_ms=(20, 40)))
    process = subprocess.Popen(
        run_args(
            sim,
            lake,
            ["BTC-USD", "ETH-USD"],
            "2025-07-01",
            "2025-07-20",
            "--rate",
            "4",
            "--stall-after",
            "1",
            "--stall-restart-after",
            "4",
            "--json",
        ),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    reap.append(process)
    assert process.stdout is not None
    pids: dict[str, int] = {}
    seen: list[dict] = []
    while len([e for e in seen if e["event"] == "day_fetched"]) < 4:
        seen.append(json.loads(process.stdout.readline()))
        if seen[-1]["event"] == "started":
            pids[seen[-1]["symbol"]] = seen[-1]["pid"]
    os.kill(pids["ETH-USD"], signal.SIGSTOP)
    stopped_at = time.time()
    try:
        while not any(
            e["event"] == "status" and e["status"] == "stalled" and e["symbol"] == "ETH-USD"
            for e in seen
        ):
            assert time.time() - stopped_at < 10, "the stall was never shown"
            seen.append(json.loads(process.stdout.readline()))
        stalled_at = seen[-1]["at"]
        out, err = process.communicate(timeout=120)
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.kill(pids["ETH-USD"], signal.SIGCONT)
    assert process.returncode == 0, err
    assert "stalled" in out and "restarting" in out
    # BTC's share grows to the whole budget while ETH is stalled.
    btc = sorted(r.received for r in historical(sim) if r.symbol == "BTC")
    before = [t for t in btc if stopped_at - 3 <= t < stopped_at]
    after = [t for t in btc if stalled_at + 0.5 <= t < stalled_at + 2.5]
    assert len(before) / 3 < 2.6 and len(after) / 2 > 3.0, (len(before), len(after))
    assert_lake_equals_simulator(lake, sim, ["BTC-USD", "ETH-USD"], "2025-07-01", "2025-07-20")


def test_a_stalled_worker_that_resumes_gets_its_share_back_and_is_not_restarted(sim, lake, reap):
    sim.set_faults(FaultConfig(latency_ms=(20, 40)))
    process = subprocess.Popen(
        run_args(
            sim,
            lake,
            ["BTC-USD", "ETH-USD"],
            "2025-07-01",
            "2025-07-20",
            "--rate",
            "4",
            "--stall-after",
            "1",
            "--stall-restart-after",
            "60",
            "--json",
        ),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        stdin=subprocess.DEVNULL,
    )
    reap.append(process)
    assert process.stdout is not None
    seen: list[dict] = []

    def until(what: Callable[[dict], bool]) -> dict:
        deadline = time.monotonic() + 30
        while not seen or not what(seen[-1]):
            assert time.monotonic() < deadline, seen[-5:]
            seen.append(json.loads(process.stdout.readline()))
        return seen[-1]

    eth = until(lambda e: e["event"] == "started" and e["symbol"] == "ETH-USD")["pid"]
    until(lambda e: e["event"] == "day_fetched" and e["symbol"] == "ETH-USD")
    os.kill(eth, signal.SIGSTOP)
    try:
        until(
            lambda e: (
                e["event"] == "status" and e["symbol"] == "ETH-USD" and e["status"] == "stalled"
            )
        )
    finally:
        os.kill(eth, signal.SIGCONT)
    resumed = until(
        lambda e: e["event"] == "status" and e["symbol"] == "ETH-USD" and e["status"] != "stalled"
    )
    assert "resumed" in resumed["detail"], resumed
    out, err = process.communicate(timeout=120)
    assert process.returncode == 0, err
    assert "restarting" not in out and "restarting" not in err
    assert [e for e in seen if e["event"] == "started" and e["symbol"] == "ETH-USD"] == [
        seen[[e.get("pid") for e in seen].index(eth)]
    ], "started once"

    # Its share came back, taken from BTC: the two share the budget (4/s) again.
    def sent_after(base: str) -> int:
        return len(
            [
                r
                for r in historical(sim)
                if r.symbol == base and resumed["at"] + 0.5 <= r.received < resumed["at"] + 2.5
            ]
        )

    assert sent_after("ETH") >= 2 and sent_after("BTC") <= 6, (sent_after("ETH"), sent_after("BTC"))
    assert_lake_equals_simulator(lake, sim, ["BTC-USD", "ETH-USD"], "2025-07-01", "2025-07-20")


def test_a_worker_waiting_on_a_hung_request_is_not_taken_for_stalled(sim, lake, reap):
    sim.set_faults(FaultConfig(hang_share=1.0))  # every request hangs, within its timeout
    process = subprocess.Popen(
        run_args(
            sim,
            lake,
            ["BTC-USD"],
            *TWO_DAYS,
            "--rate",
            "50",
            # Longer than the quiet 3 s below; the run's two learning requests hang first,
            # each for this long (every run learns the gateway's window edges).
            "--request-timeout",
            "4",
            "--stall-after",
            "0.5",
            "--stall-restart-after",
            "1",
            "--json",
        ),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        stdin=subprocess.DEVNULL,
    )
    reap.append(process)
    assert process.stdout is not None
    lines: queue.Queue[str] = queue.Queue()
    threading.Thread(target=lambda: [lines.put(x) for x in process.stdout], daemon=True).start()
    deadline = time.monotonic() + 30
    while not [r for r in historical(sim) if r.outcome == "hung"]:
        assert time.monotonic() < deadline and process.poll() is None, "no request went out"
        time.sleep(0.02)
    # Three times the restart limit, silent but for heartbeats: neither stalled nor killed.
    quiet_until = time.monotonic() + 3.0
    seen: list[dict] = []
    while time.monotonic() < quiet_until:
        with contextlib.suppress(queue.Empty):
            seen.append(json.loads(lines.get(timeout=0.1)))
    process.send_signal(signal.SIGINT)
    process.communicate(timeout=60)
    assert not [e for e in seen if e["event"] == "status" and e["status"] == "stalled"], seen
    assert not [e for e in seen if e["event"] == "retry"], seen
    assert process.returncode == 130


def test_a_part_the_run_cannot_read_fails_its_symbol_and_nothing_is_moved(sim, lake):
    assert run_backfill(sim, lake, ["BTC-USD"], *TWO_DAYS, "--rate", "50").returncode == 0
    # Root reads any file: a folder in the part's place is an OS error root meets too.
    [part] = list(lake.rglob("part-2025-07.parquet"))
    part.unlink()
    part.mkdir()
    done = run_backfill(
        sim, lake, ["BTC-USD", "ETH-USD"], "2025-07-01", "2025-07-03", "--rate", "50"
    )
    assert done.returncode == 1, done.stdout[-2000:] + done.stderr
    assert "Traceback" not in done.stderr
    hint = next(x for x in done.stdout.splitlines() if x.startswith("Incomplete:"))
    assert "BTC-USD" in hint and "cannot read" in hint and "Is a directory" in hint, hint
    assert part.is_dir() and not list(lake.rglob("_corrupt-*")), "nothing is moved aside"
    assert_lake_equals_simulator(lake, sim, ["ETH-USD"], "2025-07-01", "2025-07-03")
