"""What an operator meets at the edges of ``backfill run``: one-line answers, not tracebacks.

Real CLI processes against the simulator (or a bare listening socket, to prove that bad
input asks no gateway anything), real mounts where a condition needs one.
"""

from __future__ import annotations

import contextlib
import os
import shlex
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from backfill.sim import FaultConfig
from tests.run.conftest import FAST_RULES, backfill, run_args, run_backfill
from tests.run.test_run_e2e import assert_lake_equals_simulator, historical

pytestmark = pytest.mark.e2e

TWO_DAYS = ("2025-07-01", "2025-07-02")


@pytest.fixture
def listener() -> Iterator[socket.socket]:
    """A bare listening socket posing as a gateway: any connection attempt is queued."""
    with socket.socket() as server:
        server.bind(("127.0.0.1", 0))
        server.listen(16)
        server.setblocking(False)
        yield server


def contacted(server: socket.socket) -> bool:
    """Whether anything connected (the kernel queues connections nobody accepted)."""
    try:
        conn, _ = server.accept()
    except BlockingIOError:
        return False
    conn.close()
    return True


def run_at(server: socket.socket, lake: Path | bytes, *args: str | bytes,
           env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    host, port = server.getsockname()
    return subprocess.run(
        [*backfill("run", "--gateway", f"{host}:{port}", "--symbols", "BTC-USD",
                   "--from", TWO_DAYS[0], "--to", TWO_DAYS[1]), "--lake", lake, *args],
        capture_output=True, text=True, timeout=60, stdin=subprocess.DEVNULL, env=env,
    )


def assert_bad_input(done: subprocess.CompletedProcess[str], *words: str) -> None:
    assert done.returncode == 2, done.stdout[-2000:] + done.stderr
    assert len(done.stderr.strip().splitlines()) == 1, done.stderr
    assert done.stderr.startswith("backfill: error: "), done.stderr
    for word in words:
        assert word in done.stderr, done.stderr


@contextlib.contextmanager
def tmpfs(path: Path, *options: str) -> Iterator[Path]:
    """A real tmpfs mounted at ``path`` (made if missing); skips if mounting is refused."""
    path.mkdir(parents=True, exist_ok=True)
    opts = ",".join(options) or "defaults"
    mounted = subprocess.run(["mount", "-t", "tmpfs", "-o", opts, "tmpfs", str(path)],
                             capture_output=True, text=True)
    if mounted.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here: {mounted.stderr.strip()}")
    try:
        yield path
    finally:
        subprocess.run(["umount", "-l", str(path)], check=False)


# -- the rerun hint, the summary -----------------------------------------------------------


def test_the_rerun_hint_is_one_line_at_60_columns_and_runs_as_pasted(sim, lake, tmp_path):
    sim.set_faults(FaultConfig(hang_share=1.0))  # nothing is answered: the run is cut short
    env = {**os.environ, "COLUMNS": "60"}
    process = subprocess.Popen(run_args(sim, lake, ["BTC-USD"], *TWO_DAYS, "--rate", "50"),
                               stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                               env=env, stdin=subprocess.DEVNULL)
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
    again = subprocess.run([sys.executable, "-m", *argv], cwd=elsewhere, capture_output=True,
                           text=True, timeout=60, stdin=subprocess.DEVNULL)
    assert again.returncode == 0, again.stderr
    assert list(elsewhere.iterdir()) == []
    assert_lake_equals_simulator(lake, sim, ["BTC-USD"], *TWO_DAYS)


# -- symbols files, gateway addresses ------------------------------------------------------


def test_a_symbols_file_with_a_utf8_bom_is_read(tmp_path):
    listed = tmp_path / "symbols.txt"
    listed.write_bytes("\ufeffBTC-USD\nETH-USD\n".encode())
    done = subprocess.run(
        backfill("plan", "--symbols-file", str(listed), "--from", "2025-07-01",
                 "--to", "2025-07-02", "--lake", str(tmp_path / "lake"), "--json"),
        capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    assert '"symbol": "BTC-USD"' in done.stdout and '"symbol": "ETH-USD"' in done.stdout


def test_an_ipv6_gateway_in_brackets(make_sim, lake):
    try:
        gateway = make_sim(host="::1")
    except OSError as exc:
        pytest.skip(f"no IPv6 loopback here: {exc}")
    done = subprocess.run(
        backfill("run", "--gateway", f"[::1]:{gateway.port}", "--lake", str(lake),
                 "--symbols", "BTC-USD", "--from", TWO_DAYS[0], "--to", TWO_DAYS[1],
                 "--rate", "50", *FAST_RULES),
        capture_output=True, text=True, timeout=60, stdin=subprocess.DEVNULL)
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
    no_op = ("run", "--gateway", "127.0.0.1:1", "--symbols", "BTC-USD", "--from", "2099-01-01",
             "--to", "2099-01-02", "--lake", str(lake))
    done = subprocess.run(backfill(*no_op), capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    kept = sorted(p.name for p in runs.iterdir())
    assert len(kept) == 100, "default: the last 100"
    assert kept[:-1] == [p.name for p in old[-99:]] and kept[-1] > old[-1].name
    done = subprocess.run(backfill(*no_op, "--keep-runs", "3"), capture_output=True, text=True,
                          timeout=60)
    assert done.returncode == 0, done.stderr
    assert sorted(p.name for p in runs.iterdir())[:2] == kept[-2:]
    assert len(list(runs.iterdir())) == 3
    (runs / "notes.txt").write_text("an operator's file is not a run log")
    done = subprocess.run(backfill(*no_op, "--keep-runs", "1"), capture_output=True, text=True,
                          timeout=60)
    assert done.returncode == 0, done.stderr
    assert (runs / "notes.txt").exists() and len(list(runs.glob("*.jsonl"))) == 1
    bad = subprocess.run(backfill(*no_op, "--keep-runs", "0"), capture_output=True, text=True,
                         timeout=60)
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
    process = subprocess.Popen(
        backfill("run", "--gateway", "sim", "--symbols", "BTC-USD", "--from", TWO_DAYS[0],
                 "--to", TWO_DAYS[1], "--lake", str(lake)),
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, stdin=subprocess.DEVNULL,
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


def _group_alive(pgid: int) -> bool:
    try:
        os.killpg(pgid, 0)
    except ProcessLookupError:
        return False
    return True


# -- client ids ----------------------------------------------------------------------------


@pytest.mark.parametrize("base,workers", [
    ("2147483647", "1"),   # ib_insync sends 2^31-1 as an empty field
    ("2147483646", "1"),   # the gateway check uses base + workers: 2^31-1 again
    ("2147483640", "8"),
    ("4294967396", "1"),   # over 32 bits
    ("0", "1"),
    ("-5", "1"),
])
def test_client_ids_outside_ibs_range_are_bad_input(listener, lake, base, workers):
    done = run_at(listener, str(lake), "--client-id-base", base, "--workers", workers)
    assert_bad_input(done, "--client-id-base")
    assert not lake.exists()
    assert not contacted(listener), "bad input must not reach the gateway"


def test_the_highest_usable_client_ids_work(sim, lake):
    done = run_backfill(sim, lake, ["BTC-USD"], *TWO_DAYS, "--rate", "50",
                        "--client-id-base", "2147483645", "--workers", "1")
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
    import json

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
    assert events and events[0]["event"] == "queued"
