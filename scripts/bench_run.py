"""``backfill run`` on 8 symbols x 62 days at --rate 20: efficiency, violations, speedup.

A fresh in-process simulator (IB's per-contract and identical rules on; the soft throttle
off and the 10 s ceiling raised to ``--sim-max-rate`` 30 req/s so that the asked rate is
allowed; uniform latency ``--latency-ms`` 50-400) serves ``python -m backfill run`` as a
subprocess into a temp lake. Figures:

- efficiency = ideal wall time (windows / rate) over actual wall time, both end to end
  (process start to exit) and over the request phase (the workers' first request received
  .. the last answered, from the simulator's log: start-up's own learning requests, sent
  before the workers start, are start-up's); pacing violations (162 pacing answers) must
  be 0;
- start-up, interpreter to the workers' first request, step by step with each step's share
  (the run log's ``startup`` event: imports, lake read, gateway check, heads, edges, ...);
- the baseline: the same windows fetched by a plain sequential ib_insync loop (one IB()
  connection, one request at a time) against a fresh simulator with the same settings, run
  as its own process. Symbol by symbol, day by day, as the issue says; since IB's per-contract
  rule (at most 5 requests per contract in 2 s) refuses such a loop with 162s, the loop does
  what a user then adds: on a pacing 162 it sleeps ``--baseline-backoff`` s (2) and retries
  the window. A second baseline walks day by day, symbol by symbol (round robin), which keeps
  the rule without sleeping. speedup = baseline wall / backfill wall.
- ``backfill verify --lake`` afterwards, with its exit code.

Usage: python scripts/bench_run.py [--rate 20] [--latency-ms 50-400] [--runs 3] [--quick]
[--baseline none] [--keep DIR]
"""

from __future__ import annotations

import argparse
import itertools
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from datetime import date, datetime, timedelta, timezone
from datetime import time as dtime
from pathlib import Path

from backfill.settings import RunSettings
from backfill.sim import FaultConfig, PacingConfig, RequestRecord, SimConfig, SimGateway

MARGIN_S = RunSettings().pacing_margin_s  # the worker's slack on IB's rules
BASES = ("BTC", "ETH", "LTC", "BCH", "SOL", "AVAX", "LINK", "DOGE")
PACING_RULES = {"identical", "contract", "session", "max_rate"}
DATA_OUTCOMES = {"bars", "no_data"}


def parse_latency(text: str) -> tuple[float, float]:
    low, _, high = text.partition("-")
    return float(low), float(high or low)


def make_sim(latency: tuple[float, float], max_rate: float, seed: int) -> SimGateway:
    """IB's per-contract and identical rules; no soft throttle; ceiling above the asked rate."""
    return SimGateway(
        SimConfig(
            port=0,
            seed=seed,
            pacing=PacingConfig(soft_rate=None, max_rate=max_rate),
            faults=FaultConfig(latency_ms=latency, seed=seed),
            keep_requests=True,
        )
    ).start()


def days_of(first: date, last: date) -> list[date]:
    return [first + timedelta(days=i) for i in range((last - first).days + 1)]


@dataclass(frozen=True)
class LogFigures:
    """What the simulator's request log says about one client session."""

    requests: int
    answered: int
    violations: int
    other_errors: int
    first_received: float  # the request phase's first request (see ``log_figures``)
    last_answered: float
    first_any: float = 0.0  # the first request of all (start-up's learning, if any)

    @property
    def phase_s(self) -> float:
        return self.last_answered - self.first_received


def log_figures(records: list[RequestRecord], phase_from: float = 0.0) -> LogFigures:
    """The figures of ``records``; the request phase starts with the first request received
    at or after ``phase_from`` (wall clock: a run's workers, after start-up's learning)."""
    hist = [r for r in records if r.kind == "historical"]
    answered = [r for r in hist if r.outcome in DATA_OUTCOMES]
    violations = [r for r in hist if r.error_code == 162 and r.detail in PACING_RULES]
    first_any = min((r.received for r in hist), default=0.0)
    return LogFigures(
        requests=len(hist),
        answered=len(answered),
        violations=len(violations),
        other_errors=len(hist) - len(answered) - len(violations),
        first_received=min((r.received for r in hist if r.received >= phase_from), default=0.0),
        last_answered=max((r.answered or 0.0 for r in hist), default=0.0),
        first_any=first_any,
    )


# --- the baseline: a hand-written ib_insync loop, in its own process --------------------


def baseline_client(port: int, first: date, last: date, order: str, backoff_s: float) -> None:
    """Fetch every (symbol, day) one request at a time; print one JSON line of figures."""
    import logging

    from backfill.ib.client import NAME, Contract, new_ib

    logging.getLogger(NAME).setLevel(logging.CRITICAL)
    started = time.perf_counter()
    ib = new_ib()
    ib.connect("127.0.0.1", port, clientId=7, timeout=10)
    contracts = [
        Contract(secType="CRYPTO", symbol=b, currency="USD", exchange="PAXOS") for b in BASES
    ]
    ib.qualifyContracts(*contracts)
    errors: dict[int, int] = {}

    def on_error(req_id: int, code: int, text: str, contract: object) -> None:
        errors[req_id] = code if "pacing" in text.lower() else -code

    ib.errorEvent += on_error
    days = days_of(first, last)
    if order == "symbol":
        windows = [(c, d) for c in contracts for d in days]
    else:
        windows = [(c, d) for d in days for c in contracts]
    loop_started = time.perf_counter()
    bars = retries = empty = 0
    for contract, day in windows:
        # The product's exact window: bars of the UTC day, end 23:59 (bar starts), 86400 S.
        end = datetime.combine(day, dtime(23, 59), timezone.utc).strftime("%Y%m%d %H:%M:%S UTC")
        while True:
            errors.clear()
            got = ib.reqHistoricalData(
                contract,
                endDateTime=end,
                durationStr="86400 S",
                barSizeSetting="1 min",
                whatToShow="AGGTRADES",
                useRTH=False,
                formatDate=2,
                timeout=60,
            )
            if got or 162 not in errors.values():
                break
            retries += 1
            ib.sleep(backoff_s)
        bars += len(got)
        empty += not got
    loop_wall = time.perf_counter() - loop_started
    ib.disconnect()
    print(
        json.dumps(
            {
                "windows": len(windows),
                "bars": bars,
                "retries": retries,
                "empty": empty,
                "loop_s": loop_wall,
                "total_s": time.perf_counter() - started,
            }
        )
    )


@dataclass(frozen=True)
class Baseline:
    order: str
    wall_s: float  # the loop: first request to last answer
    total_s: float  # process start to exit
    windows: int
    retries: int
    empty: int
    log: LogFigures


def run_baseline(args: argparse.Namespace, order: str) -> Baseline:
    sim = make_sim(args.latency, args.sim_max_rate, args.seed)
    started = time.perf_counter()
    done = subprocess.run(
        [
            sys.executable,
            __file__,
            "--baseline-client",
            str(sim.port),
            "--baseline-order",
            order,
            "--from",
            args.first.isoformat(),
            "--to",
            args.last.isoformat(),
            "--baseline-backoff",
            str(args.baseline_backoff),
        ],
        capture_output=True,
        text=True,
        check=False,
    )
    total = time.perf_counter() - started
    records = sim.requests()
    sim.stop()
    if done.returncode != 0:
        sys.exit(f"baseline failed ({done.returncode}): {done.stderr.strip()[-2000:]}")
    out = json.loads(done.stdout.strip().splitlines()[-1])
    return Baseline(
        order,
        out["loop_s"],
        total,
        out["windows"],
        out["retries"],
        out["empty"],
        log_figures(records),
    )


# --- backfill run -----------------------------------------------------------------------


@dataclass(frozen=True)
class RunFigures:
    exit_code: int
    started: float  # wall clock (epoch) just before the process started
    wall_s: float
    log: LogFigures
    records: list[RequestRecord]
    verify_exit: int
    verify_summary: str
    events: dict[str, float]  # first queued, first/last worker started, last finished
    marks: tuple[tuple[str, float], ...] = ()  # the run log's start-up steps (wall clock)

    def at(self, name: str) -> float:
        """Seconds from process start to the run log's event ``name`` (nan if absent)."""
        return self.events.get(name, float("nan")) - self.started


def run_log_events(lake: Path) -> list[dict]:
    return [
        json.loads(line)
        for path in (lake / "_runs").glob("*.jsonl")
        for line in path.read_text().splitlines()
        if line.strip()
    ]


def startup_marks(lake: Path) -> tuple[tuple[str, float], ...]:
    """The run log's ``startup`` event: (step, wall clock when it ended)."""
    found = [e for e in run_log_events(lake) if e["event"] == "startup"]
    return tuple((name, at) for name, at in found[0]["marks"]) if found else ()


def run_events(lake: Path) -> dict[str, float]:
    """When the orchestrator queued, the workers started and finished (the run log)."""
    times: dict[str, list[float]] = {}
    for event in run_log_events(lake):
        times.setdefault(event["event"], []).append(event["at"])
    out: dict[str, float] = {}
    if "queued" in times:
        out["queued"] = min(times["queued"])
    if "started" in times:
        out["first_started"], out["last_started"] = min(times["started"]), max(times["started"])
    if "finished" in times:
        out["last_finished"] = max(times["finished"])
    return out


def run_backfill(args: argparse.Namespace, lake: Path, seed: int) -> RunFigures:
    sim = make_sim(args.latency, args.sim_max_rate, seed)
    symbols = ",".join(f"{b}-USD" for b in BASES)
    cmd = [
        sys.executable,
        "-m",
        "backfill",
        "run",
        "--gateway",
        f"{sim.host}:{sim.port}",
        "--symbols",
        symbols,
        "--from",
        args.first.isoformat(),
        "--to",
        args.last.isoformat(),
        "--rate",
        str(args.rate),
        "--lake",
        str(lake),
    ]
    output = lake.parent / f"{lake.name}.run.out"
    output.parent.mkdir(parents=True, exist_ok=True)
    with output.open("w") as out:
        started_epoch = time.time()
        started = time.perf_counter()
        code = subprocess.run(
            cmd,
            stdout=out,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            check=False,
            # The simulator stamps a request when its loop (a thread here) reads it: a run
            # busy on every core delays those stamps, and its spacing looks shorter than
            # sent (a 162 that a gateway on another machine would never give).
            preexec_fn=(lambda: os.nice(args.nice)) if args.nice else None,
        ).returncode
        wall = time.perf_counter() - started
    records = [r for r in sim.requests() if r.kind == "historical"]
    sim.stop()
    verify = subprocess.run(
        [sys.executable, "-m", "backfill", "verify", "--lake", str(lake), "--json"],
        capture_output=True,
        text=True,
        check=False,
    )
    try:
        doc = json.loads(verify.stdout)
        summary = (
            f"ok={doc['ok']} errors={doc['errors']} warnings={doc['warnings']} "
            f"parts={doc['parts']} days_complete="
            f"{sum(s['days_complete'] for s in doc['symbols'])}"
        )
    except (json.JSONDecodeError, KeyError):
        summary = verify.stderr.strip()[-300:]
    if code == 0:
        output.unlink()
    else:
        print(f"backfill run exited {code}; output kept in {output}")
    marks = startup_marks(lake)
    return RunFigures(
        code,
        started_epoch,
        wall,
        # The request phase is the workers': from the first request after start-up's end.
        log_figures(records, phase_from=dict(marks).get("ready", 0.0)),
        records,
        verify.returncode,
        summary,
        run_events(lake),
        marks,
    )


def interpreter_s() -> float:
    """A bare interpreter's start and exit (``python -c pass``): the floor under imports."""
    best = float("inf")
    for _ in range(3):
        started = time.perf_counter()
        subprocess.run([sys.executable, "-c", "pass"], check=True)
        best = min(best, time.perf_counter() - started)
    return best


# Start-up's steps as the run log marks their ends; heads and edges share one connection
# and overlap (the header clock is read from the edge requests' answers: no request of its
# own), so each is timed from the contracts' qualification.
STEPS = (
    ("began", "imports", None),
    ("lake read", "lake read", None),
    ("connected", "connect", None),
    ("qualified", "gateway check", None),
    ("heads", "heads", "qualified"),
    ("edges", "edges+clock", "qualified"),
    ("planned", "replan", "LAST"),
    ("recorded", "record", None),
    ("ready", "orchestrator", None),
)


def startup_lines(run: RunFigures, interpreter: float) -> list[str]:
    """Start-up, interpreter to first request, step by step with each step's share."""
    marks = dict(run.marks)
    if not marks:
        return ["  (no startup event in the run log)"]
    worker_first = min(
        (r.received for r in run.records if r.received >= marks["ready"]), default=float("nan")
    )
    total = worker_first - run.started
    steps: list[tuple[str, float]] = [("interpreter", interpreter)]
    previous = run.started + interpreter
    for mark, name, since in STEPS:
        if mark not in marks:
            continue
        if since == "qualified":
            steps.append((f"{name} (overlapped)", marks[mark] - marks["qualified"]))
            continue
        if since == "LAST":
            previous = max(marks.get("heads", previous), marks.get("edges", previous))
        steps.append((name, marks[mark] - previous))
        previous = marks[mark]
    steps.append(("workers to 1st request", worker_first - previous))
    first = min((r.received for r in run.records), default=float("nan")) - run.started
    out = [
        f"  interpreter to the first worker request {total:.2f} s (to the first request, "
        f"the edge learning's: {first:.2f} s):"
    ]
    out += [f"    {name:<24} {seconds:>6.3f} s {seconds / total:>6.1%}" for name, seconds in steps]
    return out


# Start-up's critical path in the steps: (share name, the mark ending it). Heads and
# edges overlap on one connection: their step ends with the later of the two.
CRITICAL = (
    ("imports", "began"),  # the interpreter, the imports, the command line, the forkserver
    ("gateway check", "qualified"),  # lake read, connect, qualify
    ("heads+edges", "LAST"),
    ("orchestrator", "ready"),  # replan, record, run log, orchestrator set-up
)


def startup_shares(run: RunFigures) -> tuple[float, list[tuple[str, float]]]:
    """Interpreter to the workers' first request (s), and its steps end to end (s)."""
    marks = dict(run.marks)
    if "ready" not in marks:
        return float("nan"), []
    first = run.log.first_received
    steps, previous = [], run.started
    for name, mark in CRITICAL:
        end = max(marks.get("heads", 0.0), marks.get("edges", 0.0)) if mark == "LAST" else 0.0
        end = end or marks.get(mark, previous)
        steps.append((name, max(0.0, end - previous)))
        previous = max(previous, end)
    steps.append(("workers", first - previous))  # forks, connect, qualify, first send
    return first - run.started, steps


def summary_lines(runs: list[RunFigures], ideal: float) -> list[str]:
    """The figures the issue asks for: efficiency end to end and over the request phase,
    start-up and each step's share (medians over the runs, their range after)."""

    def spread(values: list[float], fmt: str) -> str:
        return (
            f"{statistics.median(values):{fmt}} ({min(values):{fmt}}-{max(values):{fmt}})"
            if len(values) > 1
            else f"{values[0]:{fmt}}"
        )

    e2e = [ideal / r.wall_s for r in runs]
    phase = [ideal / r.log.phase_s for r in runs if r.log.phase_s > 0]
    shares = [startup_shares(r) for r in runs]
    totals = [t for t, steps in shares if steps]
    out = [
        f"efficiency end to end {spread(e2e, '.3f')}, request phase "
        f"{spread(phase, '.3f') if phase else 'n/a'}; tail (last answer to exit) "
        f"{spread([r.started + r.wall_s - r.log.last_answered for r in runs], '.2f')} s"
    ]
    if totals:
        names = [name for name, _ in next(steps for _, steps in shares if steps)]
        parts = [
            f"{name} {statistics.median(dict(steps)[name] / t for t, steps in shares if steps):.0%}"
            for name in names
        ]
        out.append(f"start-up {spread(totals, '.2f')} s: " + ", ".join(parts))
    return out


def violations(records: list[RequestRecord], origin: float) -> list[str]:
    """Each pacing 162 with the same contract's arrivals in the 2 s before it."""
    lines = []
    for bad in (r for r in records if r.error_code == 162 and r.detail in PACING_RULES):
        before = sorted(
            r.received - origin
            for r in records
            if r.symbol == bad.symbol and bad.received - 2.0 <= r.received < bad.received
        )
        retry = min(
            (
                r.received
                for r in records
                if r.symbol == bad.symbol and r.end == bad.end and r.received > bad.received
            ),
            default=None,
        )
        lines.append(
            f"  {bad.symbol} {bad.end} refused ({bad.detail}) at {bad.received - origin:.3f} s;"
            f" arrivals in the 2 s before: {', '.join(f'{t:.3f}' for t in before)};"
            + (f" retried {retry - bad.received:.2f} s later" if retry else " never retried")
        )
    return lines


def per_symbol(records: list[RequestRecord], origin: float) -> list[str]:
    """Per symbol: when its worker's first request arrived, its send rate, its gaps."""
    lines = [
        f"  {'symbol':<6} {'reqs':>4} {'first':>6} {'last':>6} {'sent/s':>6} "
        f"{'gap med':>7} {'gap p90':>7} {'gap max':>7} {'6 in':>6}  (s from process start; "
        f"'6 in': the tightest six arrivals, IB's rule needs > 2 s, the workers send "
        f"{2 + MARGIN_S:g} s apart)"
    ]
    for base in BASES:
        mine = sorted((r for r in records if r.symbol == base), key=lambda r: r.received)
        if not mine:
            continue
        sent = [r.received for r in mine]
        gaps = [b - a for a, b in itertools.pairwise(sent)] or [0.0]
        span = sent[-1] - sent[0]
        rate = (len(sent) - 1) / span if span > 0 else 0.0
        last = max(r.answered or r.received for r in mine)
        deciles = (
            statistics.quantiles(gaps, n=10, method="inclusive") if len(gaps) > 1 else gaps * 9
        )
        six = min((b - a for a, b in zip(sent, sent[5:], strict=False)), default=float("nan"))
        lines.append(
            f"  {base:<6} {len(mine):>4} {sent[0] - origin:>6.2f} {last - origin:>6.2f} "
            f"{rate:>6.2f} {statistics.median(gaps):>7.3f} {deciles[-1]:>7.3f} "
            f"{max(gaps):>7.3f} {six:>6.3f}"
        )
    return lines


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rate", type=float, default=20.0)
    parser.add_argument("--latency-ms", default="50-400")
    parser.add_argument("--from", dest="first", default="2025-07-01")
    parser.add_argument("--to", dest="last", default="2025-08-31")
    parser.add_argument("--sim-max-rate", type=float, default=30.0)
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument(
        "--nice",
        type=int,
        default=0,
        help="run backfill at this niceness, so that the in-process simulator's clock is not "
        "held up by the run's own CPU use (as a gateway on another machine's is not)",
    )
    parser.add_argument("--baseline", default="both", choices=["symbol", "day", "both", "none"])
    parser.add_argument("--baseline-backoff", type=float, default=2.0)
    parser.add_argument("--runs", type=int, default=3, help="backfill runs (seed, seed+1..)")
    parser.add_argument("--quick", action="store_true", help="smoke run: 7 days, 1 run")
    parser.add_argument("--keep", type=Path, help="write the lakes under here and keep them")
    parser.add_argument("--baseline-client", type=int, help=argparse.SUPPRESS)
    parser.add_argument("--baseline-order", default="symbol", help=argparse.SUPPRESS)
    args = parser.parse_args()
    args.first, args.last = date.fromisoformat(args.first), date.fromisoformat(args.last)
    if args.quick:
        args.last = min(args.last, args.first + timedelta(days=6))
        args.runs = 1
    if args.baseline_client is not None:
        baseline_client(
            args.baseline_client, args.first, args.last, args.baseline_order, args.baseline_backoff
        )
        return
    args.latency = parse_latency(args.latency_ms)
    n_days = len(days_of(args.first, args.last))
    windows = len(BASES) * n_days
    ideal = windows / args.rate

    root = Path(tempfile.mkdtemp(prefix="bench-run-"))
    lake_root = args.keep or root
    print(
        f"backfill run: {len(BASES)} symbols x {n_days} days ({args.first}..{args.last}) "
        f"= {windows} windows, --rate {args.rate:g}, latency {args.latency_ms} ms, "
        f"sim: IB per-contract+identical rules, max_rate {args.sim_max_rate:g}, "
        f"no soft throttle; load {os.getloadavg()[0]:.2f}"
        + (f"; backfill at nice {args.nice}" if args.nice else ""),
        flush=True,
    )
    runs: list[RunFigures] = []
    for i in range(args.runs):
        runs.append(run_backfill(args, lake_root / f"lake-{i + 1}", args.seed + i))
        print(
            f"  run {i + 1}: {runs[-1].wall_s:.2f} s (exit {runs[-1].exit_code}), load "
            f"{os.getloadavg()[0]:.2f}",
            flush=True,
        )

    baselines = []
    orders = {"both": ["symbol", "day"], "none": []}.get(args.baseline, [args.baseline])
    for order in orders:
        print(f"baseline ({order} by {order}): sequential ib_insync loop...", flush=True)
        baselines.append(run_baseline(args, order))
        print(f"  done in {baselines[-1].wall_s:.2f} s", flush=True)

    print()
    print(
        f"ideal wall = {windows} windows / {args.rate:g} req/s = {ideal:.2f} s; per-worker "
        f"budget {args.rate / len(BASES):.2f} req/s, per-contract cap 5/(2 s + {MARGIN_S} s) "
        f"= {5 / (2 + MARGIN_S):.2f} req/s"
    )
    header = (
        f"{'run':>3} {'wall s':>7} {'phase s':>7} {'eff e2e':>7} {'eff phs':>7} "
        f"{'ans/s':>6} {'reqs':>5} {'162 pace':>8} {'other':>5} {'verify':>6}   "
        f"{'start>q':>7} {'q>wkrs':>7} {'>1st req':>8} {'tail':>6}"
    )
    print(header)
    print("-" * len(header))
    for i, run in enumerate(runs, 1):
        log = run.log
        phase = log.phase_s or float("nan")
        print(
            f"{i:>3} {run.wall_s:>7.2f} {phase:>7.2f} {ideal / run.wall_s:>7.3f} "
            f"{ideal / phase:>7.3f} {log.answered / phase:>6.2f} {log.requests:>5} "
            f"{log.violations:>8} {log.other_errors:>5} {run.verify_exit:>6}   "
            f"{run.at('queued'):>7.2f} {run.at('last_started') - run.at('queued'):>7.2f} "
            f"{log.first_received - run.started:>8.2f} "
            f"{run.started + run.wall_s - log.last_answered:>6.2f}"
        )
    print(
        "start>q: process start to orchestrator ready (interpreter, imports, preflight); "
        "q>wkrs: to the last worker started (forkserver, preload, forks); >1st req: process "
        "start to the workers' first request received; tail: last answer to process exit "
        "(final flush). eff = ideal / wall, over the whole process (e2e) or the request "
        "phase (the workers' first request received to the last answered)."
    )
    walls = sorted(run.wall_s for run in runs)
    phases = sorted(run.log.phase_s for run in runs)
    median_wall, median_phase = statistics.median(walls), statistics.median(phases)
    for b in baselines:
        print(
            f"baseline {b.order}-major: loop {b.wall_s:.2f} s (process {b.total_s:.2f} s), "
            f"{b.log.requests} requests, {b.log.violations} pacing 162s, {b.retries} retries "
            f"after {args.baseline_backoff:g} s, {b.empty} windows empty; speedup vs median "
            f"backfill: {b.wall_s / median_wall:.2f}x end to end, "
            f"{b.log.phase_s / median_phase:.2f}x request phase"
        )
    for i, run in enumerate(runs, 1):
        print(f"run {i} verify exit {run.verify_exit}: {run.verify_summary}")
    interpreter = interpreter_s()
    for i, run in enumerate(runs, 1):
        print(f"run {i} start-up:")
        print("\n".join(startup_lines(run, interpreter)))
    worst = max(runs, key=lambda r: r.wall_s)
    print()
    print(f"per symbol, run {runs.index(worst) + 1} (the slowest), from the simulator's log:")
    print("\n".join(per_symbol(worst.records, worst.started)))
    for i, run in enumerate(runs, 1):
        for line in violations(run.records, run.started):
            print(f"run {i} violation:{line[1:]}")
    print()
    print(f"summary, {len(runs)} run{'s' * (len(runs) != 1)} (load {os.getloadavg()[0]:.2f}):")
    print("\n".join(f"  {line}" for line in summary_lines(runs, ideal)))
    if not args.keep:
        shutil.rmtree(root)


if __name__ == "__main__":
    main()
