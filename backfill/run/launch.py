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
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from datetime import date, datetime
from pathlib import Path

from rich.console import Console

from backfill import __version__
from backfill import plan as planning
from backfill.domain import UTC, BadInput, Symbol
from backfill.edges import DEFAULT_RULE
from backfill.ib import client as ib_client
from backfill.ib.preflight import check_gateway
from backfill.lake.coverage_index import read_day_marks
from backfill.lake.fetched import read_fetched_days
from backfill.lake.heads import (
    Head,
    heads_path,
    heads_to_ask,
    listing_days,
    read_heads,
    record_heads,
)
from backfill.lake.objpath import is_object
from backfill.lake.storage import StorageError, honours_conditions
from backfill.run import events as ev
from backfill.run.dashboard import (
    describe,
    make_renderer,
    rerun_command,
    rerun_hint,
    summary_table,
)
from backfill.run.gateway_edges import (
    GatewayEdges,
    apply_gateway_findings,
    edges_sends,
    edges_to_learn,
    gateway_edges,
    remember_edges,
    untrusted_days,
)
from backfill.run.orchestrator import (
    Orchestrator,
    RunConfig,
    install_parent_stop,
    restore_signals,
)
from backfill.run.processes import start_worker_server
from backfill.run.runlog import RUNS_DIR, RunLog
from backfill.run.state import RunState
from backfill.settings import GatewayAddress, RunSettings, check_lake_writable
from backfill.sim.embedded import EMBEDDED_SIM_ARGS, serving

EXIT_OK, EXIT_FAILED, EXIT_INTERRUPTED = 0, 1, 130


@dataclass(frozen=True)
class RunRequest:
    """``backfill run`` as the user asked for it, validated."""

    lake: Path
    symbols: tuple[Symbol, ...]
    first: date
    last: date
    gateway: GatewayAddress
    settings: RunSettings
    json: bool = False
    command: tuple[str, ...] = ()
    # --refetch: when the run began; days recorded before it are asked again.
    refetch_since: datetime | None = None
    verbose: bool = False  # plain lines: every event, not only days and parts
    # --unsafe-single-writer: an object store that ignores conditional writes is used anyway.
    unsafe_single_writer: bool = False
    store_note: str = ""  # what the run says first and logs about its store (set at start)


def plan_run(
    request: RunRequest, today: date, listing: dict[Symbol, date] | None = None
) -> planning.Plan:
    """The run's plan, from the lake's footers (a lake not there yet is empty), clipped to
    each symbol's ``listing`` (its head timestamp's day) where known."""
    last = min(request.last, today)
    coverage = (
        _recorded(request, request.symbols, last) if request.lake.is_dir() else {}
    )
    return planning.plan(request.symbols, request.first, request.last, coverage, today=today,
                         settings=request.settings, listing=listing)


def replan_symbol(
    request: RunRequest, symbol: Symbol, today: date, listing: dict[Symbol, date] | None = None
) -> planning.SymbolPlan:
    """One symbol's plan again, from the lake as it is now (under its run lock)."""
    last = min(request.last, today)
    coverage = _recorded(request, [symbol], last)[symbol]
    return planning.plan_symbol(symbol, request.first, last, coverage,
                                window_days=request.settings.window_days,
                                listing=(listing or {}).get(symbol))


def _recorded(
    request: RunRequest, symbols: Sequence[Symbol], last: date
) -> Mapping[Symbol, Mapping[date, planning.RecordedDay]]:
    """What the footers record now; with --refetch only what this run recorded counts."""
    if request.refetch_since is None:
        return read_day_marks(request.lake, symbols, request.first, last, remember=False)
    now = datetime.now(UTC)
    return {
        symbol: planning.refetch_coverage(days, request.refetch_since, now)
        for symbol, days in read_fetched_days(request.lake, symbols, request.first, last).items()
    }


def check_conditional_writes(lake: Path, unsafe_single_writer: bool) -> str:
    """On an object store, write a probe object twice with create-only: a store that lets the
    second put through ignores preconditions, and two writers would lose each other's bars.
    BadInput then, unless ``unsafe_single_writer`` (the returned note says so; '' if fine)."""
    if not is_object(lake):
        return ""
    try:
        honoured = honours_conditions(lake.storage)  # type: ignore[attr-defined]
    except StorageError as exc:
        raise BadInput(f"--lake {lake}: {exc}") from None
    if honoured:
        return ""
    if not unsafe_single_writer:
        raise BadInput(f"--lake {lake}: the store ignores conditional writes (a create-only "
                       "put of an existing object succeeded), so concurrent writers could "
                       "lose data; give --unsafe-single-writer if this run is the only writer")
    return (f"warning: --unsafe-single-writer: {lake} ignores conditional writes; this run "
            "assumes it is the lake's only writer")


def execute_run(request: RunRequest, console: Console, err_console: Console) -> int:
    """Run the backfill end to end; the exit code (0, 1, 2 or 130) as README says."""
    check_lake_writable(request.lake)
    store_note = check_conditional_writes(request.lake, request.unsafe_single_writer)
    if store_note:  # the run's first line, whatever follows
        (err_console if request.json else console).print(store_note, markup=False,
                                                         highlight=False, soft_wrap=True)
        request = dataclasses.replace(request, store_note=store_note)
    now = datetime.now(UTC)
    today = now.date()
    # What `backfill probe` recorded about this gateway: its first line says what it changes.
    request = apply_gateway_findings(request, now, err_console if request.json else console)
    # Footers (and the heads recorded in the lake) only: a lake that already holds
    # everything asks the gateway nothing at all.
    recorded = read_heads(request.lake)
    listing = listing_days(recorded)
    the_plan = plan_run(request, today, listing)
    settings = request.settings
    answers: dict[Symbol, Head] = {}
    edges: GatewayEdges | None = None
    asked = request  # as asked: an untrusted header clips its --window-days to 1
    # A recorded head later than days the lake already holds is contradicted: asked again.
    contradicted = [s.symbol for s in the_plan.symbols if s.head_contradicted]
    with contextlib.ExitStack() as stack:
        host, port = request.gateway.host, request.gateway.port
        if the_plan.requests or contradicted:
            start_worker_server()
            host, port = stack.enter_context(serving(request.gateway, EMBEDDED_SIM_ARGS))
            # Where each symbol's history starts, asked once for the life of the lake: no
            # request goes out for a day before it (a coin listed in 2017 asked from 1990).
            ask = heads_to_ask(recorded, [s.symbol for s in the_plan.symbols if s.requests],
                               request.first, now=now, max_age_days=settings.head_max_age_days,
                               contradicted=contradicted)
            # The window-edge rule is learned on the same connection while the heads are
            # asked: one connection, and the start waits for the slower of the two only.
            # A refetch repairs what a wrong rule lost: it trusts no remembered rule.
            learner = request if request.refetch_since is None else dataclasses.replace(
                request, settings=dataclasses.replace(settings, finding_max_age_days=0.0))
            probe = edges_to_learn(learner, host, port, the_plan, today)
            # After the workers' client ids, so a worker never finds its id held by this check.
            found = check_gateway(host, port, settings.client_id_base + settings.workers,
                                  request.symbols, client_id_tries=settings.client_id_tries,
                                  timeout_s=settings.connect_timeout_s, heads_for=ask,
                                  edges_for=probe, edges_timeout_s=settings.learning_timeout_s)
            answers = {s: Head(h, now) for s, h in found.heads.items()}
            if answers:
                listing = {**listing, **listing_days(answers)}
                the_plan = plan_run(request, today, listing)
            edges = gateway_edges(learner, host, port, the_plan, today,
                                  None if probe is None else (probe, found))
            # An untrusted header: one-day windows in seconds (said in the header's line).
            asked, request = request, untrusted_days(request, edges)
            if request is not asked:
                the_plan = plan_run(request, today, listing)
        # Nothing has been written so far: from here on the lake is touched.
        try:
            request.lake.mkdir(parents=True, exist_ok=True)
            (request.lake / RUNS_DIR).mkdir(exist_ok=True)
        except OSError as exc:
            raise BadInput(f"--lake {request.lake}: cannot create it: {exc.strerror}") from None
        with contextlib.suppress(OSError):  # a saving, not data: unrecorded, it is asked again
            record_heads(request.lake, answers)
        if edges is not None:
            remember_edges(asked, host, port, edges, err_console if request.json else console)
        heads = {**recorded, **answers}
        sources = {s: "asked at the gateway now" if s in answers else
                   f"recorded in {heads_path(request.lake)}, asked "
                   f"{heads[s].asked_at:%Y-%m-%d %H:%M} UTC" for s in heads}
        told = [ev.BeforeListing(str(p.symbol), at=time.time(), days=p.days_before_listing,
                                 head=heads[p.symbol].head.isoformat(), source=sources[p.symbol])
                for p in the_plan.symbols if p.days_before_listing and p.symbol in heads]
        return _orchestrate(request, the_plan, host, port, console, err_console, stack, today,
                            listing, edges, told)
    raise AssertionError("unreachable")


def _check_skipped(
    state: RunState, resume: Callable[[Symbol], planning.SymbolPlan],
    emit: Callable[[ev.Event], None],
) -> None:
    """A symbol skipped (another run held it) is checked in the lake at the end: days still
    missing there are failed days of this run too (exit 1), with the reason."""
    for progress in state.snapshot().symbols:
        if progress.status is not ev.Status.SKIPPED:
            continue
        missing = resume(Symbol.parse(progress.symbol)).days_missing
        reason = (f"another backfill run was fetching it (skipped); {len(missing)} "
                  f"day{'s' if len(missing) != 1 else ''} missing at the end of this run")
        for day in missing:
            emit(ev.DayFailed(progress.symbol, at=time.time(), day=day, reason=reason))


def _orchestrate(
    request: RunRequest,
    the_plan: planning.Plan,
    host: str,
    port: int,
    console: Console,
    err_console: Console,
    stack: contextlib.ExitStack,
    today: date,
    listing: dict[Symbol, date],
    edges: GatewayEdges | None = None,
    told: tuple[ev.Event, ...] | list[ev.Event] = (),
) -> int:
    settings = request.settings
    state = RunState([str(s.symbol) for s in the_plan.symbols], the_plan.requests, settings.rate)
    try:
        run_log = stack.enter_context(RunLog(request.lake, keep=settings.keep_runs))
    except OSError as exc:
        raise BadInput(f"--lake {request.lake}: cannot create the run log: {exc.strerror}") \
            from None
    # The log only: what ran the run, for whoever reads it later (the workers share this
    # process's environment, so its client is theirs).
    run_log.on_event(ev.RunStarted("", at=time.time(), version=__version__,
                                   client=ib_client.NAME, client_version=ib_client.VERSION))
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
        return replan_symbol(request, symbol, today, listing)

    orchestrator = Orchestrator(
        RunConfig(lake=request.lake, host=host, port=port, settings=settings,
                  prior_sends=edges_sends(edges, time.monotonic(), time.time()),
                  edges=str(edges.rule) if edges else DEFAULT_RULE,
                  header_clock=edges.clock.reading if edges else "login"),
        the_plan.symbols, emit, resume=resume,
    )
    # Days left out as before listing, said before the run starts (a wrong head must not
    # pass for a finished symbol in silence); in the run log and --json as events too.
    for event in told:
        run_log.on_event(event)
        if request.json:
            renderer.on_event(event)
        else:
            console.print(describe(event), markup=False, highlight=False, soft_wrap=True)
    previous = install_parent_stop(orchestrator)
    try:
        with renderer:
            orchestrator.run()
    finally:
        restore_signals(previous)
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
        err_console.print(f"backfill: error: {orchestrator.aborted}; the run stopped (rerun "
                          "resumes)", markup=False, highlight=False, soft_wrap=True)
        return EXIT_FAILED
    if orchestrator.interrupted:
        return EXIT_INTERRUPTED
    return EXIT_FAILED if state.snapshot().incomplete else EXIT_OK
