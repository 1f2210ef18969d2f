"""One symbol through the real worker: requests/s achieved, worker CPU per request, peak RSS.

Each scenario starts a fresh in-process simulator (``SimGateway``, fixed latency, no soft
throttle or session ceiling) and runs ``python -m backfill run --symbols BTC-USD --rate 50``
against it as a subprocess, into a temp lake. Scenarios:

- ``ib``      IB's real per-contract rules (5 per 2 s, identical 15 s), 1-day windows: the
              worker cannot beat 5 / (2 s + its 0.1 s margin) = 2.38 req/s, whatever --rate;
              spans ``--ib-days`` (default 60: the rate is steady state, a year is 150 s).
- ``ib-w5``   IB's rules, ``--window-days 5``: fewer, bigger requests.
- ``scaled``  sim and worker rules divided by ten (window 0.2 s, identical 1.5 s).
- ``nocap``   no per-contract limit at all (worker ``--ib-contract-max`` 100000): only
              --rate, in-flight and latency bind (IB's 50 messages/s per connection stays on).

Measured per scenario:

- requests/s from the simulator's request log: data answers over [first received, last
  answered] ("phase"), and over the run subprocess's whole life ("e2e");
- worker CPU: the worker is forked by the run's multiprocessing forkserver, which reaps it,
  so its exact user+system time is the forkserver's cutime+cstime (read from /proc while the
  forkserver is a zombie: this script makes itself a child subreaper to inherit it);
  per request = worker CPU / data requests the simulator saw;
- run CPU: RUSAGE_CHILDREN after reaping the whole tree = orchestrator (`backfill run`,
  interpreter start, preflight, dashboard) + forkserver (its preload imports) + worker +
  multiprocessing's resource tracker;
- worker peak RSS: the worker's VmHWM sampled every 10 ms; "largest" = the largest VmHWM of
  any process of the run's tree, sampled likewise. Not ru_maxrss: on Linux it survives exec,
  so a child forked from this process (which holds the simulator's caches) inherits our RSS;
- sim CPU: this process's own CPU (the in-process simulator, plus the 10 ms sampling).

Usage: python scripts/bench_worker.py [--days 365] [--ib-days 60] [--quick] [--only NAME,...]
"""

from __future__ import annotations

import argparse
import ctypes
import json
import os
import resource
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import dataclass, field
from datetime import date, timedelta
from pathlib import Path

from backfill.settings import RunSettings
from backfill.sim import FaultConfig, PacingConfig, RequestRecord, SimConfig, SimGateway

PR_SET_CHILD_SUBREAPER = 36
CLK_TCK = os.sysconf("SC_CLK_TCK")
FIRST_DAY = date(2024, 1, 1)
RATE = 50.0
CONTRACT_MARGIN_S = RunSettings().pacing_margin_s  # the worker's slack on IB's rules
DATA_OUTCOMES = {"bars", "no_data"}


@dataclass(frozen=True)
class Scenario:
    """One run of the worker: the rules both sides keep, latency, window and pipelining."""

    name: str
    rules: str  # ib, scaled or nocap
    latency_ms: float
    days: int
    window_days: int = 1
    max_in_flight: int = 4

    @property
    def label(self) -> str:
        return f"{self.name} {self.latency_ms:.0f}ms mif={self.max_in_flight}"

    def sim_pacing(self) -> PacingConfig:
        """Per-contract and identical rules as the scenario says; no session throttle."""
        if self.rules == "ib":
            return PacingConfig(soft_rate=None, max_rate=None)
        if self.rules == "scaled":
            return PacingConfig(
                contract_window_s=0.2, identical_window_s=1.5, soft_rate=None, max_rate=None
            )
        return PacingConfig(
            contract_max=100_000, identical_window_s=1.5, soft_rate=None, max_rate=None
        )

    def worker_flags(self) -> list[str]:
        if self.rules == "scaled":
            return ["--ib-contract-window-s", "0.2", "--ib-identical-s", "1.5"]
        if self.rules == "nocap":
            return ["--ib-contract-max", "100000", "--ib-identical-s", "1.5"]
        return []

    def cap(self) -> float:
        """The highest request rate the worker's own rules allow (steady state)."""
        caps = [RATE]
        if self.rules == "ib":
            caps.append(5 / (2.0 + CONTRACT_MARGIN_S))
        elif self.rules == "scaled":
            caps.append(5 / (0.2 + CONTRACT_MARGIN_S))
        if self.latency_ms > 0:
            caps.append(self.max_in_flight / (self.latency_ms / 1000))
        return min(caps)


@dataclass
class Result:
    scenario: Scenario
    exit_code: int
    wall_s: float
    requests: int  # historical requests the simulator saw (answered or refused)
    answered: int  # bars or no-data answers
    refused: dict[str, int]
    phase_s: float
    worker_cpu_s: float
    run_cpu_s: float
    worker_hwm_kb: int
    largest_rss_kb: int
    sim_cpu_s: float
    workers: int
    notes: list[str] = field(default_factory=list)


def make_subreaper() -> None:
    """Orphaned descendants (the run's forkserver, resource tracker) become our children."""
    libc = ctypes.CDLL(None, use_errno=True)
    if libc.prctl(PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0) != 0:
        raise OSError(ctypes.get_errno(), "prctl(PR_SET_CHILD_SUBREAPER)")


def proc_stat(pid: int) -> list[str] | None:
    """Fields of /proc/<pid>/stat after the command name (index 0 is the state)."""
    try:
        with open(f"/proc/{pid}/stat") as handle:
            return handle.read().rsplit(")", 1)[1].split()
    except (FileNotFoundError, ProcessLookupError):
        return None


def vm_hwm_kb(pid: int) -> int:
    try:
        with open(f"/proc/{pid}/status") as handle:
            for line in handle:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1])
    except (FileNotFoundError, ProcessLookupError):
        pass
    return 0


def descendants(pid: int) -> list[int]:
    """``pid`` and every process below it (Linux /proc/<pid>/task/<pid>/children)."""
    found, todo = [], [pid]
    while todo:
        current = todo.pop()
        found.append(current)
        try:
            with open(f"/proc/{current}/task/{current}/children") as handle:
                todo += [int(child) for child in handle.read().split()]
        except (FileNotFoundError, ProcessLookupError):
            pass
    return found


class WorkerWatcher(threading.Thread):
    """Follows the run log for WorkerStarted pids; samples their CPU and VmHWM, and the
    VmHWM of every process of the run's tree."""

    def __init__(self, lake: Path) -> None:
        super().__init__(daemon=True)
        self.lake = lake
        self.stop = threading.Event()
        self.workers: set[int] = set()
        self.forkservers: set[int] = set()
        self.cpu_ticks: dict[int, int] = {}
        self.hwm_kb: dict[int, int] = {}
        self.tree_hwm_kb: dict[int, int] = {}
        self.root = 0  # the run process, once started
        self._offsets: dict[Path, int] = {}

    def _scan_log(self) -> None:
        for path in (self.lake / "_runs").glob("*.jsonl"):
            with path.open() as handle:
                handle.seek(self._offsets.get(path, 0))
                while True:
                    line = handle.readline()
                    if not line.endswith("\n"):
                        break
                    self._offsets[path] = handle.tell()
                    event = json.loads(line)
                    if event.get("event") == "started" and event.get("pid"):
                        self.workers.add(int(event["pid"]))

    def run(self) -> None:
        while not self.stop.is_set():
            if (self.lake / "_runs").is_dir():
                self._scan_log()
            for pid in list(self.workers):
                fields = proc_stat(pid)
                if fields is None or fields[0] == "Z":
                    continue
                self.forkservers.add(int(fields[1]))
                self.cpu_ticks[pid] = int(fields[11]) + int(fields[12])
                self.hwm_kb[pid] = max(self.hwm_kb.get(pid, 0), vm_hwm_kb(pid))
            if self.root:
                for pid in descendants(self.root):
                    self.tree_hwm_kb[pid] = max(self.tree_hwm_kb.get(pid, 0), vm_hwm_kb(pid))
            time.sleep(0.01)


def reap_orphans(forkservers: set[int], timeout_s: float = 10.0) -> int:
    """Reap every child left; the CPU ticks the forkservers' reaped children (workers) used."""
    child_ticks = 0
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        try:
            info = os.waitid(os.P_ALL, 0, os.WEXITED | os.WNOHANG | os.WNOWAIT)
        except ChildProcessError:
            break
        if info is None:
            time.sleep(0.01)
            continue
        pid = info.si_pid
        fields = proc_stat(pid)  # still a zombie: its counters are readable
        if fields is not None and pid in forkservers:
            child_ticks += int(fields[13]) + int(fields[14])
        os.waitpid(pid, 0)
    return child_ticks


def historical(records: list[RequestRecord]) -> list[RequestRecord]:
    return [r for r in records if r.kind == "historical"]


def run_scenario(scenario: Scenario, keep: Path | None) -> Result:
    """Start a fresh simulator, run ``backfill run`` once, measure."""
    sim = SimGateway(
        SimConfig(
            port=0,
            keep_requests=True,
            pacing=scenario.sim_pacing(),
            faults=FaultConfig(latency_ms=(scenario.latency_ms, scenario.latency_ms)),
        )
    ).start()
    lake = Path(tempfile.mkdtemp(prefix="bench-worker-"))
    last_day = FIRST_DAY + timedelta(days=scenario.days - 1)
    args = [
        sys.executable,
        "-m",
        "backfill",
        "run",
        "--gateway",
        f"{sim.host}:{sim.port}",
        "--symbols",
        "BTC-USD",
        "--from",
        FIRST_DAY.isoformat(),
        "--to",
        last_day.isoformat(),
        "--rate",
        str(RATE),
        "--lake",
        str(lake),
        "--window-days",
        str(scenario.window_days),
        "--max-in-flight",
        str(scenario.max_in_flight),
        *scenario.worker_flags(),
    ]
    watcher = WorkerWatcher(lake)
    watcher.start()
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    before_self = resource.getrusage(resource.RUSAGE_SELF)
    output = (keep or lake.parent) / f"bench-worker-{os.getpid()}-{scenario.name}.out"
    with output.open("w") as out:
        started = time.perf_counter()
        proc = subprocess.Popen(
            args, stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL
        )
        watcher.root = proc.pid
        _, status = os.waitpid(proc.pid, 0)
        wall = time.perf_counter() - started
    proc.returncode = os.waitstatus_to_exitcode(status)
    watcher.stop.set()
    watcher.join()
    child_ticks = reap_orphans(watcher.forkservers)
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    after_self = resource.getrusage(resource.RUSAGE_SELF)
    records = historical(sim.requests())
    sim.stop()

    notes: list[str] = []
    sampled = sum(watcher.cpu_ticks.values())
    if child_ticks < sampled:  # forkserver not seen as a zombie: fall back to sampling
        notes.append("worker CPU sampled from /proc (last 10 ms may be missed)")
        child_ticks = sampled
    answered = [r for r in records if r.outcome in DATA_OUTCOMES and r.answered]
    refused: dict[str, int] = {}
    for r in records:
        if r.outcome not in DATA_OUTCOMES:
            key = f"{r.error_code}:{r.detail or r.outcome}"
            refused[key] = refused.get(key, 0) + 1
    phase = (
        max(r.answered or 0.0 for r in answered) - min(r.received for r in records)
        if answered
        else 0.0
    )
    if proc.returncode != 0:
        notes.append(f"run exited {proc.returncode}: see {output}")
    else:
        output.unlink()
    if keep is None:
        shutil.rmtree(lake)
    return Result(
        scenario=scenario,
        exit_code=proc.returncode,
        wall_s=wall,
        requests=len(records),
        answered=len(answered),
        refused=refused,
        phase_s=phase,
        worker_cpu_s=child_ticks / CLK_TCK,
        run_cpu_s=(after.ru_utime + after.ru_stime) - (before.ru_utime + before.ru_stime),
        worker_hwm_kb=max(watcher.hwm_kb.values(), default=0),
        largest_rss_kb=max(watcher.tree_hwm_kb.values(), default=0),
        sim_cpu_s=(after_self.ru_utime + after_self.ru_stime)
        - (before_self.ru_utime + before_self.ru_stime),
        workers=len(watcher.workers),
        notes=notes,
    )


def scenarios(days: int, ib_days: int) -> list[Scenario]:
    return [
        Scenario("ib", "ib", 0, ib_days),
        Scenario("ib", "ib", 200, ib_days),
        Scenario("ib-w5", "ib", 0, days, window_days=5),
        Scenario("ib-w5", "ib", 200, days, window_days=5),
        Scenario("scaled", "scaled", 0, days),
        Scenario("scaled", "scaled", 200, days),
        Scenario("scaled", "scaled", 200, days, max_in_flight=8),
        Scenario("nocap", "nocap", 0, days),
        Scenario("nocap", "nocap", 200, days),
        Scenario("nocap", "nocap", 200, days, max_in_flight=8),
    ]


def print_table(results: list[Result]) -> None:
    header = (
        f"{'scenario':<24} {'days':>4} {'reqs':>5} {'wall s':>7} {'phase':>7} "
        f"{'req/s':>6} {'e2e':>6} {'cap':>6} {'wkr CPU':>8} {'ms/req':>7} "
        f"{'run CPU':>8} {'sim CPU':>8} {'wkr RSS':>8} {'largest':>8}  refused"
    )
    print(header)
    print("-" * len(header))
    for r in results:
        s = r.scenario
        phase_rate = r.answered / r.phase_s if r.phase_s else 0.0
        refused = ",".join(f"{k}={v}" for k, v in sorted(r.refused.items())) or "0"
        print(
            f"{s.label + (f' w{s.window_days}' if s.window_days > 1 else ''):<24} "
            f"{s.days:>4} {r.requests:>5} {r.wall_s:>7.2f} {r.phase_s:>7.2f} "
            f"{phase_rate:>6.2f} {r.answered / r.wall_s:>6.2f} {s.cap():>6.2f} "
            f"{r.worker_cpu_s:>7.2f}s {1000 * r.worker_cpu_s / max(r.requests, 1):>7.2f} "
            f"{r.run_cpu_s:>7.2f}s {r.sim_cpu_s:>7.2f}s {r.worker_hwm_kb / 1024:>6.0f}MB "
            f"{r.largest_rss_kb / 1024:>6.0f}MB  {refused}"
        )
        for note in r.notes:
            print(f"    note: {note}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--days", type=int, default=365, help="days per scenario")
    parser.add_argument(
        "--ib-days",
        type=int,
        default=60,
        help="days for 1-day windows under IB's rules (2.44 req/s)",
    )
    parser.add_argument("--quick", action="store_true", help="smoke run: 20 days, 10 at IB")
    parser.add_argument("--only", default="", help="comma-separated scenario names")
    parser.add_argument("--keep", type=Path, help="keep lakes and outputs under this folder")
    args = parser.parse_args()
    days, ib_days = (20, 10) if args.quick else (args.days, min(args.ib_days, args.days))
    wanted = {n for n in args.only.split(",") if n}
    chosen = [s for s in scenarios(days, ib_days) if not wanted or s.name in wanted]
    if args.keep:
        args.keep.mkdir(parents=True, exist_ok=True)
        tempfile.tempdir = str(args.keep)
    make_subreaper()
    print(
        f"backfill run --symbols BTC-USD --rate {RATE:g} from {FIRST_DAY}; "
        f"{os.cpu_count()} CPUs; python {sys.version.split()[0]}"
    )
    results: list[Result] = []
    for scenario in chosen:
        result = run_scenario(scenario, args.keep)
        results.append(result)
        print(
            f"  {scenario.label}: {result.answered} answers in {result.wall_s:.1f} s "
            f"(exit {result.exit_code})",
            flush=True,
        )
    print()
    print_table(results)
    print()
    print(
        "req/s = data answers / (first request received .. last answered), sim log; "
        "e2e = answers / whole `backfill run` process life; cap = min(rate, per-contract "
        f"5/(window+{CONTRACT_MARGIN_S} s margin), in-flight/latency); "
        "wkr CPU = the worker process's user+sys; ms/req = that / requests; "
        "run CPU = whole process tree of the run; "
        "sim CPU = this process (the in-process simulator + 10 ms sampling); wkr RSS = worker "
        "VmHWM; largest = largest VmHWM in the run's process tree (sampled every 10 ms; "
        "not ru_maxrss, which on Linux keeps the forking parent's RSS across exec)."
    )


if __name__ == "__main__":
    main()
