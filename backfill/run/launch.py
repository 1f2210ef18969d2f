"""Glue for ``backfill run``: the embedded gateway, the pre-flight check, the plan.

Everything here happens before the first byte is written, so that bad input (an unknown
symbol, an unreachable gateway) ends the run with exit code 2 and an untouched lake.
"""

from __future__ import annotations

import asyncio
import contextlib
import re
import select
import subprocess
import sys
import threading
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import date, datetime
from pathlib import Path

from rich.console import Console

from backfill import plan as planning
from backfill.domain import UTC, BadInput, DayCoverage, Symbol, days_between, group_windows
from backfill.edges import DEFAULT_RULE
from backfill.ib.session import ClientIdInUse, IBSession, IBSessionError, UnknownSymbol
from backfill.lake.store import read_coverage
from backfill.run import events as ev
from backfill.run.dashboard import make_renderer, rerun_hint, summary_table
from backfill.run.gateway_edges import (
    GatewayEdges,
    edges_sends,
    gateway_edges,
    remember_edges,
)
from backfill.run.orchestrator import (
    Orchestrator,
    RunConfig,
    SessionRule,
    SymbolJob,
    install_parent_stop,
    restore_signals,
)
from backfill.run.processes import start_worker_server
from backfill.run.runlog import RUNS_DIR, RunLog
from backfill.run.state import RunState
from backfill.run.worker import WorkerConfig
from backfill.settings import GatewayAddress, check_lake_writable

_READY = re.compile(r"listening on (\S+):(\d+)")
# The embedded simulator keeps IB's per-contract rules but not the soft throttle IB applies
# to a whole session, so a demo can show a high --rate; latency makes it look like IB.
EMBEDDED_SIM_ARGS = ("--soft-rate", "0", "--max-rate", "0", "--latency-ms", "30-150")


@dataclass(frozen=True)
class GatewayProcess:
    host: str
    port: int
    process: subprocess.Popen[str]


EMBEDDED_START_TIMEOUT_S = 30.0


class EmbeddedGateway:
    """``backfill gateway`` in a child process on a free port, for ``--gateway sim``."""

    def __init__(self, extra_args: Sequence[str] = (), log_path: Path | None = None) -> None:
        self.args = [sys.executable, "-m", "backfill", "gateway", "--port", "0", *extra_args]
        if log_path is not None:
            self.args += ["--log", str(log_path)]
        self.running: GatewayProcess | None = None

    def __enter__(self) -> GatewayProcess:
        process = subprocess.Popen(
            self.args, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
            stdin=subprocess.DEVNULL,
        )
        assert process.stdout is not None
        # It prints its address when it listens; a gateway that never does must not hang us.
        ready, _, _ = select.select([process.stdout], [], [], EMBEDDED_START_TIMEOUT_S)
        line = process.stdout.readline() if ready else "(nothing within "\
            f"{EMBEDDED_START_TIMEOUT_S:g}s)"
        match = _READY.search(line)
        if not match:
            process.kill()
            error = process.stderr.read() if process.stderr else ""
            raise RuntimeError(f"embedded gateway did not start: {line.strip()} {error.strip()}")
        # Keep draining its output so a chatty gateway can never block on a full pipe.
        for stream in (process.stdout, process.stderr):
            threading.Thread(target=stream.read, daemon=True).start()
        self.running = GatewayProcess(match.group(1), int(match.group(2)), process)
        return self.running

    def __exit__(self, *exc: object) -> None:
        if self.running is not None:
            self.running.process.terminate()
            try:
                self.running.process.wait(timeout=5)
            except subprocess.TimeoutExpired:
                self.running.process.kill()


# Contract-details requests during the gateway check: a first burst, then a steady rate.
# With the connect handshake's messages, any second stays under the gateway's 50 messages.
PREFLIGHT_BURST = 16
PREFLIGHT_RATE = 20.0


def preflight(
    host: str, port: int, client_id: int, symbols: Sequence[Symbol], timeout_s: float = 10.0
) -> None:
    """Connect once and qualify every symbol; raise BadInput on what no worker could fix."""

    async def check() -> None:
        session = await _connect_any_id(host, port, client_id, timeout_s)

        async def known(symbol: Symbol, start_s: float) -> bool:
            await asyncio.sleep(start_s)
            try:
                await session.qualify(symbol)
            except UnknownSymbol:
                return False
            return True

        try:
            # Overlapping, so a long list costs its send time, not a round trip per symbol;
            # spaced well under the gateway's 50 messages/s, which it counts on arrival.
            found = await asyncio.gather(
                *(known(s, max(0, n - PREFLIGHT_BURST + 1) / PREFLIGHT_RATE)
                  for n, s in enumerate(symbols))
            )
            unknown = [str(s) for s, ok in zip(symbols, found, strict=True) if not ok]
            if unknown:
                raise BadInput(
                    f"unknown symbol{'s' if len(unknown) > 1 else ''} {', '.join(unknown)}: "
                    f"the gateway has no CRYPTO contract on PAXOS for "
                    f"{'them' if len(unknown) > 1 else 'it'}"
                )
        finally:
            session.disconnect()

    try:
        asyncio.run(check())
    except IBSessionError as exc:
        raise BadInput(f"gateway {host}:{port}: {exc}") from None


def earliest_days(
    gateway: GatewayAddress, client_id: int, symbols: Sequence[Symbol], timeout_s: float = 10.0
) -> dict[Symbol, date]:
    """Each symbol's first day with data at the gateway (reqHeadTimeStamp), for plan --head."""

    async def ask(host: str, port: int) -> dict[Symbol, date]:
        session = await _connect_any_id(host, port, client_id, timeout_s)
        try:
            return {s: (await session.earliest_bar(s)).date() for s in symbols}
        finally:
            session.disconnect()

    with contextlib.ExitStack() as stack:
        host, port = gateway.host, gateway.port
        if gateway.embedded:
            running = stack.enter_context(EmbeddedGateway())
            host, port = running.host, running.port
        try:
            return asyncio.run(ask(host, port))
        except UnknownSymbol as exc:
            raise BadInput(str(exc)) from None
        except IBSessionError as exc:
            raise BadInput(f"gateway {host}:{port}: {exc}") from None
    raise AssertionError("unreachable")


async def _connect_any_id(host: str, port: int, client_id: int, timeout_s: float) -> IBSession:
    """A session on ``client_id`` or, if taken, the next free id."""
    for session_id in range(client_id, client_id + 32):
        session = IBSession(host, port, session_id, timeout_s=timeout_s)
        try:
            await session.connect()
            return session
        except ClientIdInUse:
            continue
    raise BadInput(f"no free client id from {client_id} at {host}:{port}")


@dataclass(frozen=True)
class RunRequest:
    """``backfill run`` as the user asked for it, validated."""

    lake: Path
    symbols: tuple[Symbol, ...]
    first: date
    last: date
    gateway: GatewayAddress
    workers: int
    client_id_base: int
    rate: float
    window_days: int = 1
    strict_pacing: bool = False
    max_in_flight: int = 4
    request_timeout_s: float = 30.0
    max_restarts: int = 3
    reconnect_for_s: float = 600.0
    json: bool = False
    command: tuple[str, ...] = ()
    # IB's per-contract rules (identical_s, max per window, window_s): scaled only for
    # simulators that scale their own.
    ib_rules: tuple[float, int, float] = (15.0, 5, 2.0)
    # IB's session rule (max requests, window_s), kept in strict mode; scaled likewise.
    session_rule: SessionRule = field(default_factory=SessionRule)


def missing_days(
    coverage: Mapping[date, DayCoverage], first: date, last: date, today: date
) -> tuple[date, ...]:
    """Days of ``[first, last]`` up to today that are not recorded complete in the lake."""
    return tuple(planning.missing_days(days_between(first, min(last, today)), coverage))


def plan_jobs(request: RunRequest, today: date) -> list[SymbolJob]:
    coverage = read_coverage(request.lake, request.symbols, request.first, request.last)
    return [
        SymbolJob(s, missing_days(coverage[s], request.first, request.last, today))
        for s in request.symbols
    ]


def execute_run(request: RunRequest, console: Console, err_console: Console) -> int:
    """Run the backfill end to end; the exit code (0, 1, 2 or 130) as the design says."""
    check_lake_writable(request.lake)
    today = datetime.now(UTC).date()
    # Footers only: a lake that already holds everything asks the gateway nothing at all.
    edges: GatewayEdges | None = None
    jobs = plan_jobs(request, today) if request.lake.is_dir() else [
        SymbolJob(s, missing_days({}, request.first, request.last, today))
        for s in request.symbols
    ]
    with contextlib.ExitStack() as stack:
        host, port = request.gateway.host, request.gateway.port
        if any(job.days for job in jobs):
            start_worker_server()
            if request.gateway.embedded:
                gateway = stack.enter_context(EmbeddedGateway(EMBEDDED_SIM_ARGS))
                host, port = gateway.host, gateway.port
            preflight(host, port, request.client_id_base + request.workers, request.symbols)
            edges = gateway_edges(request, host, port, jobs, today)
        # Nothing has been written so far: from here on the lake is touched.
        try:
            request.lake.mkdir(parents=True, exist_ok=True)
            (request.lake / RUNS_DIR).mkdir(exist_ok=True)
        except OSError as exc:
            raise BadInput(f"--lake {request.lake}: cannot create it: {exc.strerror}") from None
        if edges is not None:
            remember_edges(request, host, port, edges, err_console if request.json else console)
        return _orchestrate(request, jobs, host, port, console, err_console, stack, today,
                            edges)
    raise AssertionError("unreachable")


def _orchestrate(
    request: RunRequest,
    jobs: list[SymbolJob],
    host: str,
    port: int,
    console: Console,
    err_console: Console,
    stack: contextlib.ExitStack,
    today: date,
    edges_found: GatewayEdges | None,
) -> int:
    requests_total = sum(len(group_windows(j.days, request.window_days)) for j in jobs)
    state = RunState([str(j.symbol) for j in jobs], requests_total, request.rate)
    run_log = stack.enter_context(RunLog(request.lake))
    renderer = make_renderer(console, state, json=request.json)

    def emit(event: ev.Event) -> None:
        state.apply(event)
        run_log.on_event(event)
        renderer.on_event(event)

    prior_sends = edges_sends(edges_found, time.monotonic(), time.time())
    template = WorkerConfig(
        lake=request.lake, symbol=jobs[0].symbol, days=(), host=host, port=port,
        client_id=request.client_id_base, window_days=request.window_days,
        max_in_flight=request.max_in_flight, request_timeout_s=request.request_timeout_s,
        reconnect_for_s=request.reconnect_for_s,
        edges=str(edges_found.rule) if edges_found else DEFAULT_RULE,
        # In strict mode the orchestrator grants every send within the session window.
        strict_pacing=False, identical_s=request.ib_rules[0],
        contract_max=request.ib_rules[1], contract_window_s=request.ib_rules[2],
    )
    config = RunConfig(
        lake=request.lake, host=host, port=port, workers=request.workers,
        client_id_base=request.client_id_base, rate=request.rate,
        worker_template=template, max_restarts=request.max_restarts,
        session_rule=request.session_rule if request.strict_pacing else None,
        prior_sends=prior_sends,
    )

    def resume(symbol: Symbol) -> tuple[date, ...]:
        coverage = read_coverage(request.lake, [symbol], request.first, request.last)
        return missing_days(coverage[symbol], request.first, request.last, today)

    orchestrator = Orchestrator(config, jobs, emit, resume=resume)
    previous = install_parent_stop(orchestrator)
    try:
        with renderer:
            result = orchestrator.run()
    finally:
        restore_signals(previous)
    out = err_console if request.json else console
    out.print(summary_table(state))
    hint = rerun_hint(state, request.command or ("backfill", "run"))
    if hint:
        out.print(hint, markup=False, highlight=False)
    out.print(f"Run log: {run_log.path}", markup=False, highlight=False)
    if result.interrupted:
        return 130
    return 1 if result.failed or hint else 0
