"""Start-up, in one room: what a run learns before its workers start, as one frozen value.

``start_up`` reads the lake (probe's findings, the recorded heads, the footers' plan), then,
when anything is to be asked, opens one connection (``ib.preflight.check_gateway``) that
qualifies the symbols and, overlapped, asks the missing heads and learns the window-edge
rule and the served-window header's clock (``run.gateway_edges``) from the same two
requests. It writes nothing: ``record`` does, once the launcher has made the lake. The
``Startup`` it returns is all the run knows about this gateway and these symbols; the
launcher passes it on (orchestrator, workers) and nothing after start-up asks again.

The parts stay where they are: ``ib/`` is the only code speaking to the gateway, the
``lake`` modules the only I/O on the lake, ``findings`` and ``plan`` pure. This module
composes them, in the order a run needs them.
"""

from __future__ import annotations

import contextlib
import dataclasses
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import date, datetime

from backfill import plan as planning
from backfill.domain import UTC, Symbol
from backfill.edges import DEFAULT_RULE
from backfill.findings import apply_findings
from backfill.ib.preflight import check_gateway
from backfill.lake.coverage_index import read_day_marks
from backfill.lake.gateway import read_findings
from backfill.lake.heads import (
    Head,
    heads_path,
    heads_to_ask,
    listing_days,
    read_heads,
    record_heads,
)
from backfill.run import events as ev
from backfill.run.gateway_edges import (
    GatewayEdges,
    edges_to_learn,
    gateway_edges,
    refill_at,
    remember_edges,
    untrusted_days,
)
from backfill.run.processes import start_worker_server
from backfill.run.request import RunRequest
from backfill.sim.embedded import EMBEDDED_SIM_ARGS, serving


@dataclass(frozen=True)
class Startup:
    """What the run knows about this gateway and these symbols when its workers start."""

    # As the run uses it: probe's findings applied, one-day windows under an untrusted header.
    request: RunRequest
    # Before the header's clip: the clock's line names the --window-days that was asked.
    asked: RunRequest
    host: str  # where the workers connect (the embedded simulator's port, when it is one)
    port: int
    now: datetime  # start-up's one clock reading: "today", the heads' asked_at
    plan: planning.Plan
    recorded: Mapping[Symbol, Head]  # heads the lake held
    answers: Mapping[Symbol, Head]  # heads the gateway gave now (``record`` writes them)
    listing: Mapping[Symbol, date]  # each symbol's first day worth asking for
    edges: GatewayEdges | None  # None: the gateway was not asked (nothing to fetch)
    contracts_ok: bool = False  # every symbol qualified at the gateway (when asked)
    findings_line: str = ""  # what probe's findings changed (said first)
    # When each step ended (wall clock), for the benchmark's start-up shares.
    marks: tuple[tuple[str, float], ...] = field(default=(), compare=False)

    @property
    def today(self) -> date:
        return self.now.date()

    @property
    def heads(self) -> dict[Symbol, Head]:
        return {**self.recorded, **self.answers}

    @property
    def edge_rule(self) -> str:
        return str(self.edges.rule) if self.edges else DEFAULT_RULE

    @property
    def header_clock(self) -> str:
        return self.edges.clock.reading if self.edges else "login"

    @property
    def learning_sent(self) -> tuple[float, ...]:
        """The learning requests' send times (wall clock): IB's session rule counts them."""
        if self.edges is None or self.edges.finding is None:
            return ()
        return self.edges.finding.sent_at

    @property
    def refill_at(self) -> float:
        """When (wall clock) the --rate budget those requests spent has refilled."""
        return refill_at(self.edges, self.request.settings.rate)

    def prior_sends(self, now_mono: float, now_wall: float) -> tuple[float, ...]:
        """``learning_sent`` on the monotonic clock (the orchestrator's session grants)."""
        return tuple(now_mono - (now_wall - at) for at in self.learning_sent)


def plan_run(
    request: RunRequest, today: date, listing: Mapping[Symbol, date] | None = None
) -> planning.Plan:
    """The run's plan, from the lake's footers (a lake not there yet is empty), clipped to
    each symbol's ``listing`` (its head timestamp's day) where known."""
    last = min(request.last, today)
    coverage = _recorded(request, request.symbols, last) if request.lake.is_dir() else {}
    return planning.plan(
        request.symbols,
        request.first,
        request.last,
        coverage,
        today=today,
        settings=request.settings,
        listing=None if listing is None else dict(listing),
    )


def replan_symbol(
    request: RunRequest,
    symbol: Symbol,
    today: date,
    listing: Mapping[Symbol, date] | None = None,
) -> planning.SymbolPlan:
    """One symbol's plan again, from the lake as it is now (under its run lock)."""
    last = min(request.last, today)
    coverage = _recorded(request, [symbol], last)[symbol]
    return planning.plan_symbol(
        symbol,
        request.first,
        last,
        coverage,
        window_days=request.settings.window_days,
        listing=(listing or {}).get(symbol),
    )


def _recorded(
    request: RunRequest, symbols: Sequence[Symbol], last: date
) -> Mapping[Symbol, Mapping[date, planning.RecordedDay]]:
    """What the footers record now; with --refetch only what this run recorded counts."""
    if request.refetch_since is None:
        return read_day_marks(request.lake, symbols, request.first, last, remember=False)
    # Only --refetch reads the parts' footers whole (pyarrow.parquet: not imported before
    # the first request otherwise).
    from backfill.lake.fetched import read_fetched_days

    now = datetime.now(UTC)
    return {
        symbol: planning.refetch_coverage(days, request.refetch_since, now)
        for symbol, days in read_fetched_days(request.lake, symbols, request.first, last).items()
    }


def with_findings(request: RunRequest, now: datetime) -> tuple[RunRequest, str]:
    """The request with ``backfill probe``'s fresh findings for its gateway applied (see
    ``backfill.findings``), and the first line saying what they change or that they are
    stale. The embedded simulator (a new port each run) has none."""
    if request.gateway.embedded or not request.lake.is_dir():
        return request, ""
    settings = request.settings
    findings = read_findings(
        request.lake, request.gateway.host, request.gateway.port, now, settings.finding_max_age
    )
    applied = apply_findings(settings, findings, command="run")
    return dataclasses.replace(request, settings=applied.settings), applied.line


def start_up(
    request: RunRequest,
    stack: contextlib.ExitStack,
    say: Callable[[str], None],
    *,
    now: datetime | None = None,
) -> Startup:
    """Learn what the run needs before its workers start; write nothing (see ``record``).

    ``stack`` holds the embedded simulator for the run's life; ``say`` prints a first line
    as soon as it is known (probe's findings, before the gateway is asked). BadInput (exit
    2) for what no worker could fix: an unknown symbol, an unreachable gateway.
    """
    now = datetime.now(UTC) if now is None else now
    marks = [("began", time.time())]
    today = now.date()
    request, line = with_findings(request, now)
    if line:
        say(line)
    # Footers (and the heads recorded in the lake) only: a lake that already holds
    # everything asks the gateway nothing at all.
    recorded = read_heads(request.lake)
    listing = listing_days(recorded)
    the_plan = plan_run(request, today, listing)
    marks.append(("lake read", time.time()))
    host, port = request.gateway.host, request.gateway.port
    # A recorded head later than days the lake already holds is contradicted: asked again.
    contradicted = [s.symbol for s in the_plan.symbols if s.head_contradicted]
    if not (the_plan.requests or contradicted):
        return Startup(
            request,
            request,
            host,
            port,
            now,
            the_plan,
            recorded,
            {},
            listing,
            None,
            findings_line=line,
            marks=tuple(marks),
        )
    start_worker_server(request.settings.worker_niceness)
    host, port = stack.enter_context(serving(request.gateway, EMBEDDED_SIM_ARGS))
    settings = request.settings
    # Where each symbol's history starts, asked once for the life of the lake: no request
    # goes out for a day before it (a coin listed in 2017 asked from 1990).
    ask = heads_to_ask(
        recorded,
        [s.symbol for s in the_plan.symbols if s.requests],
        request.first,
        now=now,
        max_age_days=settings.head_max_age_days,
        contradicted=contradicted,
    )
    # The window-edge rule is learned on the same connection while the heads are asked:
    # one connection, and the start waits for the slower of the two only. A refetch
    # repairs what a wrong rule lost: it trusts no remembered rule.
    learner = (
        request
        if request.refetch_since is None
        else dataclasses.replace(
            request, settings=dataclasses.replace(settings, finding_max_age_days=0.0)
        )
    )
    probe = edges_to_learn(learner, host, port, the_plan, today)
    # After the workers' client ids, so a worker never finds its id held by this check.
    found = check_gateway(
        host,
        port,
        settings.client_id_base + settings.workers,
        request.symbols,
        client_id_tries=settings.client_id_tries,
        timeout_s=settings.connect_timeout_s,
        heads_for=ask,
        edges_for=probe,
        edges_timeout_s=settings.learning_timeout_s,
    )
    marks += found.marks
    answers = {s: Head(h, now) for s, h in found.heads.items()}
    if answers:
        listing = {**listing, **listing_days(answers)}
        the_plan = plan_run(request, today, listing)
    edges = gateway_edges(
        learner, host, port, the_plan, today, None if probe is None else (probe, found)
    )
    # An untrusted header: one-day windows in seconds (said in the header's line).
    used = untrusted_days(request, edges)
    if used is not request:
        the_plan = plan_run(used, today, listing)
    marks.append(("planned", time.time()))
    return Startup(
        used,
        request,
        host,
        port,
        now,
        the_plan,
        recorded,
        answers,
        listing,
        edges,
        contracts_ok=True,
        findings_line=line,
        marks=tuple(marks),
    )


def record(startup: Startup, say: Callable[[str], None]) -> None:
    """What start-up learned, into the lake (made by now): the heads asked, the edge rule
    and header clock learned (with their lines), the learning requests' sends."""
    with contextlib.suppress(OSError):  # a saving, not data: unrecorded, it is asked again
        record_heads(startup.request.lake, startup.answers)
    if startup.edges is not None:
        remember_edges(startup.asked, startup.host, startup.port, startup.edges, say)


def before_listing(startup: Startup) -> list[ev.Event]:
    """Days left out as before listing, one event per symbol (said before the run starts:
    a wrong head must not pass for a finished symbol in silence)."""
    heads = startup.heads
    lake = startup.request.lake
    sources = {
        s: "asked at the gateway now"
        if s in startup.answers
        else f"recorded in {heads_path(lake)}, asked {heads[s].asked_at:%Y-%m-%d %H:%M} UTC"
        for s in heads
    }
    return [
        ev.BeforeListing(
            str(p.symbol),
            at=time.time(),
            days=p.days_before_listing,
            head=heads[p.symbol].head.isoformat(),
            source=sources[p.symbol],
        )
        for p in startup.plan.symbols
        if p.days_before_listing and p.symbol in heads
    ]


def startup_event(startup: Startup, *later: tuple[str, float]) -> ev.StartupTimed:
    """The run log's record of how long each start-up step took (wall clock marks), with
    the ``later`` steps the launcher took after ``start_up`` returned."""
    return ev.StartupTimed("", at=time.time(), marks=(*startup.marks, *later))
