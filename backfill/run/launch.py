"""``backfill run``, composed: plan from the lake, check the gateway, orchestrate, summarise.

The plan comes from ``plan.plan`` (the same path as ``backfill plan``), so a lake that
already holds everything asks the gateway nothing. Until the gateway check has passed
nothing is written: bad input (an unknown symbol, an unreachable gateway) ends the run with
exit code 2 and an untouched lake. Then the orchestrator runs the workers; the run's one
per-symbol ledger (``RunState``, folded from their events) gives the summary, the rerun
hint and the exit code.
"""

from __future__ import annotations

import contextlib
import dataclasses
import importlib
import threading
import time
from collections.abc import Callable
from typing import TYPE_CHECKING

from backfill import __version__
from backfill import plan as planning
from backfill.domain import BadInput, Symbol
from backfill.ib import client as ib_client
from backfill.lake.lakeio import conditional_writes_honoured
from backfill.lake.storage import StorageError
from backfill.run import events as ev
from backfill.run.request import RunRequest
from backfill.run.runlog import RUNS_DIR, RunLog
from backfill.run.startup import (
    Startup,
    before_listing,
    plan_run,
    record,
    replan_symbol,
    start_up,
    startup_event,
)
from backfill.run.state import RunState
from backfill.settings import check_lake_writable

if TYPE_CHECKING:
    from pathlib import Path

    from rich.console import Console

    from backfill.run.orchestrator import Orchestrator

# What only the run after start-up needs (the orchestrator with the workers' code and
# pyarrow, the dashboard): imported on a thread while start-up waits on the gateway.
RUN_PHASE_MODULES = ("backfill.run.orchestrator", "backfill.run.dashboard")

__all__ = ["RunRequest", "execute_run", "plan_run", "replan_symbol"]

EXIT_OK, EXIT_FAILED, EXIT_INTERRUPTED = 0, 1, 130


def check_conditional_writes(lake: Path, unsafe_single_writer: bool) -> str:
    """Whether the lake honours conditional writes (on an object store, a probe object is
    written twice with create-only): a store that lets the second put through ignores them,
    and two writers would lose each other's bars. BadInput then, unless
    ``unsafe_single_writer`` (the returned note says so; '' if fine)."""
    try:
        honoured = conditional_writes_honoured(lake)
    except StorageError as exc:
        raise BadInput(f"--lake {lake}: {exc}") from None
    if honoured:
        return ""
    if not unsafe_single_writer:
        raise BadInput(
            f"--lake {lake}: the store ignores conditional writes (a create-only "
            "put of an existing object succeeded), so concurrent writers could "
            "lose data; give --unsafe-single-writer if this run is the only writer"
        )
    return (
        f"warning: --unsafe-single-writer: {lake} ignores conditional writes; this run "
        "assumes it is the lake's only writer"
    )


def execute_run(request: RunRequest, console: Console, err_console: Console) -> int:
    """Run the backfill end to end; the exit code (0, 1, 2 or 130) as README.md's exit codes say."""
    check_lake_writable(request.lake)
    out = err_console if request.json else console
    store_note = check_conditional_writes(request.lake, request.unsafe_single_writer)
    if store_note:  # the run's first line, whatever follows
        out.print(store_note, markup=False, highlight=False, soft_wrap=True)
        request = dataclasses.replace(request, store_note=store_note)

    def say(line: str) -> None:
        out.print(line, markup=False, highlight=False, soft_wrap=True)

    warm = threading.Thread(target=_import_run_phase, name="backfill-imports", daemon=True)
    warm.start()
    with contextlib.ExitStack() as stack:
        # Everything the run learns before its workers start, in one value; nothing is
        # written until it returns (bad input ends the run with an untouched lake).
        startup = start_up(request, stack, say)
        request = startup.request
        # Nothing has been written so far: from here on the lake is touched.
        try:
            request.lake.mkdir(parents=True, exist_ok=True)
            (request.lake / RUNS_DIR).mkdir(exist_ok=True)
        except OSError as exc:
            raise BadInput(f"--lake {request.lake}: cannot create it: {exc.strerror}") from None
        record(startup, say)
        warm.join()
        return _orchestrate(
            startup, console, err_console, stack, before_listing(startup), recorded_at=time.time()
        )
    raise AssertionError("unreachable")


def _import_run_phase() -> None:
    """Import ``RUN_PHASE_MODULES`` (errors surface at their import in ``_orchestrate``)."""
    with contextlib.suppress(Exception):
        for name in RUN_PHASE_MODULES:
            importlib.import_module(name)


def _check_skipped(
    state: RunState,
    resume: Callable[[Symbol], planning.SymbolPlan],
    emit: Callable[[ev.Event], None],
) -> None:
    """A symbol skipped (another run held it) is checked in the lake at the end: days still
    missing there are failed days of this run too (exit 1), with the reason."""
    for progress in state.snapshot().symbols:
        if progress.status is not ev.Status.SKIPPED:
            continue
        missing = resume(Symbol.parse(progress.symbol)).days_missing
        reason = (
            f"another backfill run was fetching it (skipped); {len(missing)} "
            f"day{'s' if len(missing) != 1 else ''} missing at the end of this run"
        )
        for day in missing:
            emit(ev.DayFailed(progress.symbol, at=time.time(), day=day, reason=reason))


def _orchestrate(
    startup: Startup,
    console: Console,
    err_console: Console,
    stack: contextlib.ExitStack,
    told: tuple[ev.Event, ...] | list[ev.Event] = (),
    recorded_at: float = 0.0,
) -> int:
    from backfill.run.dashboard import (
        describe,
        make_renderer,
        rerun_command,
        rerun_hint,
        summary_table,
    )
    from backfill.run.orchestrator import (
        Orchestrator,
        RunConfig,
        install_parent_stop,
        restore_signals,
    )

    request, the_plan = startup.request, startup.plan
    settings = request.settings
    state = RunState([str(s.symbol) for s in the_plan.symbols], the_plan.requests, settings.rate)
    try:
        run_log = stack.enter_context(RunLog(request.lake, keep=settings.keep_runs))
    except OSError as exc:
        raise BadInput(
            f"--lake {request.lake}: cannot create the run log: {exc.strerror}"
        ) from None
    # The log only: what ran the run, for whoever reads it later (the workers share this
    # process's environment, so its client is theirs).
    run_log.on_event(
        ev.RunStarted(
            "",
            at=time.time(),
            version=__version__,
            client=ib_client.NAME,
            client_version=ib_client.VERSION,
        )
    )
    if request.store_note:  # what the operator must know about this run's store
        run_log.note(request.store_note)
    renderer = make_renderer(console, state, json=request.json, verbose=request.verbose)

    def emit(event: ev.Event) -> None:
        state.apply(event)
        run_log.on_event(event)
        if run_log.failure and orchestrator is not None:
            # Disk full, say: the run stops as for Ctrl-C (workers flush what they hold)
            # rather than go on with no record of what it did.
            orchestrator.abort(run_log.failure)
        renderer.on_event(event)

    orchestrator: Orchestrator | None = None

    def resume(symbol: Symbol) -> planning.SymbolPlan:
        return replan_symbol(request, symbol, startup.today, startup.listing)

    orchestrator = Orchestrator(
        RunConfig(
            lake=request.lake,
            host=startup.host,
            port=startup.port,
            settings=settings,
            prior_sends=startup.prior_sends(time.monotonic(), time.time()),
            edges=startup.edge_rule,
            header_clock=startup.header_clock,
        ),
        the_plan.symbols,
        emit,
        resume=resume,
    )
    # Days left out as before listing, said before the run starts (a wrong head must not
    # pass for a finished symbol in silence); in the run log and --json as events too.
    for event in told:
        run_log.on_event(event)
        if request.json:
            renderer.on_event(event)
        else:
            console.print(describe(event), markup=False, highlight=False, soft_wrap=True)
    # The learning requests spent part of the --rate budget: the workers' first burst waits
    # for it to refill. Waited here, after the lake's writes, the run log and the
    # orchestrator's set-up, which took that time already (most runs wait nothing).
    refill = startup.refill_at - time.time()
    if refill > 0:
        time.sleep(refill)
    ready_at = time.time()
    previous = install_parent_stop(orchestrator)
    try:
        with renderer:
            orchestrator.run()
    finally:
        restore_signals(previous)
    # How long start-up took, after the run's events (the log starts with the run's own).
    run_log.on_event(startup_event(startup, ("recorded", recorded_at), ("ready", ready_at)))
    if not orchestrator.stopping:
        _check_skipped(state, resume, emit)
    out = err_console if request.json else console
    out.print(summary_table(state))
    hint = rerun_hint(state, rerun_command(request.command[1:] or ("run",), request.lake))
    if hint:
        # Never wrapped (not at 80 columns off a terminal, nor a narrow one): pasted, a
        # wrapped command loses its flags (--lake!).
        out.print(hint, markup=False, highlight=False, soft_wrap=True)
    out.print(f"Run log: {run_log.path}", markup=False, highlight=False, soft_wrap=True)
    if orchestrator.aborted:
        err_console.print(
            f"backfill: error: {orchestrator.aborted}; the run stopped (rerun resumes)",
            markup=False,
            highlight=False,
            soft_wrap=True,
        )
        return EXIT_FAILED
    if orchestrator.interrupted:
        return EXIT_INTERRUPTED
    return EXIT_FAILED if state.snapshot().incomplete else EXIT_OK
