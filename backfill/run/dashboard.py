"""How a run looks: the Rich live dashboard, plain lines, NDJSON, and the closing summary.

Renderables follow rich's own habit, one small ``__rich_console__`` per concept (a symbol
row, the symbol table, the footer) composed by ``Dashboard``; they read a frozen
``RunSnapshot`` so a refresh never sees a half-applied event.
"""

from __future__ import annotations

import shlex
import sys
import time
from collections.abc import Sequence
from datetime import datetime, timezone
from pathlib import Path
from types import TracebackType
from typing import IO, Protocol, TypeVar

from rich.console import Console, ConsoleOptions, Group, RenderableType, RenderResult
from rich.live import Live
from rich.table import Table
from rich.text import Text

from backfill.durations import format_duration
from backfill.run import events as ev
from backfill.run.events import Status
from backfill.run.state import TERMINAL, Clock, RunSnapshot, RunState, SymbolProgress

STATUS_STYLES: dict[Status, str] = {
    Status.QUEUED: "dim",
    Status.CONNECTING: "cyan",
    Status.FETCHING: "green",
    Status.PACED: "yellow",
    Status.RETRYING: "magenta",
    Status.DONE: "bold green",
    Status.FAILED: "bold red",
    Status.SKIPPED: "dim",
    Status.WAITING: "dim",
    Status.STOPPED: "bold yellow",
    Status.STALLED: "bold red",
}
# When rows must be cut to fit the screen, what the operator most needs to see comes first.
_ROW_PRIORITY: dict[Status, int] = {
    Status.FAILED: 0,
    Status.STALLED: 0,
    Status.RETRYING: 1,
    Status.PACED: 1,
    Status.FETCHING: 1,
    Status.CONNECTING: 1,
    Status.QUEUED: 2,
    Status.DONE: 3,
    Status.SKIPPED: 3,
    Status.WAITING: 2,
    Status.STOPPED: 1,
}
_FOOTER_LINES = 4  # three footer lines and the blank line between table and footer
_TABLE_CHROME = 3  # header, its rule and the "… more" line


def _seconds(value: float | None) -> str:
    return "-" if value is None else f"{value:.2f}s"


def _days(n: int) -> str:
    return f"{n} day" if n == 1 else f"{n} days"


def _latency(progress: SymbolProgress) -> str:
    """The symbol's answers' moving average (the footer has the run's p50 and p95)."""
    if progress.avg_latency_s is None:
        return "-"
    return f"{progress.avg_latency_s:.2f}s"


def _bar(fraction: float, width: int) -> Text:
    """A progress bar of exactly ``width`` cells (Rich's own stretches or cuts with its
    column, and a cut cell is what the dashboard must never show)."""
    done = round(min(max(fraction, 0.0), 1.0) * width)
    return Text.assemble(("━" * done, "green"), ("━" * (width - done), "grey23"))


def _rows(n: int) -> str:
    """Rows in at most 6 cells: ``99,999``, ``640.8k``, ``2.6M``, ``12.3M``."""
    if n < 100_000:
        return f"{n:,}"
    return f"{n / 1000:.1f}k" if n < 999_950 else f"{n / 1_000_000:.1f}M"


class SymbolRow:
    """One symbol's line of the dashboard, as table cells."""

    def __init__(
        self, progress: SymbolProgress, bar_width: int = 8, now: float | None = None
    ) -> None:
        self.progress = progress
        self.bar_width = bar_width
        self.now = time.time() if now is None else now

    def shown(self) -> tuple[Status, str]:
        """The status and note shown (a short wait on the in-flight cap is fetching)."""
        return self.progress.shown_status(self.now)

    def status_text(self) -> Text:
        """The status word, coloured by what it means."""
        status = self.shown()[0]
        return Text(status.value, style=STATUS_STYLES[status])

    def note(self) -> str:
        """Why the symbol is in its status ("" when there is nothing to say)."""
        p = self.progress
        return p.failed_reason if p.status is Status.FAILED else self.shown()[1]

    def cells(self) -> list[RenderableType]:
        """Cells in ``SymbolTable.COLUMNS`` order. Days and rows are those fetched (the
        live progress; the summary counts those written to the lake)."""
        p = self.progress
        percent = int(p.fraction * 100)  # floor: 1439 of 1440 days is not 100%
        return [
            Text(p.symbol, style="bold"),
            self.status_text(),
            str(p.client_id) if p.client_id is not None else "-",
            Text.assemble(_bar(p.fraction, self.bar_width), f" {percent:>3}%"),
            f"{max(p.days_done, p.days_fetched)}/{p.days_total}",
            _rows(max(p.rows, p.rows_fetched)),
            p.current_day.isoformat() if p.current_day else "-",
            _latency(p),
            str(p.retries),
            str(p.gaps),
            Text(str(p.days_failed), style="red" if p.days_failed else ""),
        ]


class SymbolTable:
    """The per-symbol table, cut to ``max_rows`` with the most urgent rows kept, then a line
    per shown symbol with something to say (why it retries, waits or failed).

    Every cell is whole (no "…"): the columns fit 100 terminal columns with a year of days
    and millions of rows; a note longer than the screen wraps at its spaces.
    """

    COLUMNS: tuple[tuple[str, str], ...] = (
        ("Symbol", "left"),
        ("Status", "left"),
        ("Client", "right"),
        ("Progress", "left"),
        ("Days", "right"),
        ("Rows", "right"),
        ("Day", "left"),
        ("Latency", "right"),
        ("Retries", "right"),
        ("Gap days", "right"),  # days with minutes without a bar (verify counts ranges)
        ("Failed", "right"),
    )

    def __init__(
        self,
        symbols: Sequence[SymbolProgress],
        max_rows: int | None = None,
        now: float | None = None,
    ) -> None:
        self.symbols = symbols
        self.max_rows = max_rows
        self.now = time.time() if now is None else now

    def visible(self) -> tuple[list[SymbolProgress], list[SymbolProgress]]:
        """(shown, hidden) rows: all of them when they fit."""
        if self.max_rows is None or len(self.symbols) <= self.max_rows:
            return list(self.symbols), []
        ranked = sorted(
            range(len(self.symbols)),
            key=lambda i: (_ROW_PRIORITY[self.symbols[i].status], i),
        )
        keep = set(ranked[: max(self.max_rows, 1)])
        shown = [s for i, s in enumerate(self.symbols) if i in keep]
        hidden = [s for i, s in enumerate(self.symbols) if i not in keep]
        return shown, hidden

    def __rich_console__(self, console: Console, options: ConsoleOptions) -> RenderResult:
        # One space between columns: the cells are whole at 100 columns (not at 2).
        table = Table(
            box=None, padding=(0, 1, 0, 0), header_style="bold", expand=False, pad_edge=False
        )
        for name, justify in self.COLUMNS:
            table.add_column(
                name,
                justify=justify,  # type: ignore[arg-type]
                no_wrap=True,
                min_width=_symbol_width(self.symbols) if name == "Symbol" else len(name),
            )
        shown, hidden = self.visible()
        rows = [SymbolRow(progress, now=self.now) for progress in shown]
        for row in rows:
            table.add_row(*row.cells())
        yield table
        if hidden:
            counts: dict[str, int] = {}
            for p in hidden:
                counts[p.status.value] = counts.get(p.status.value, 0) + 1
            summary = ", ".join(f"{n} {status}" for status, n in counts.items())
            yield Text(f"… and {len(hidden)} more: {summary}", style="dim")
        room = None if self.max_rows is None else max(self.max_rows - len(shown), 0)
        notes = [(row.progress, row.note()) for row in rows if row.note()]
        for p, note in notes[:room]:
            failed = p.status is Status.FAILED
            yield Text.assemble((p.symbol, "bold"), ": ", (note, "red" if failed else "dim"))


class Footer:
    """Global pacing and progress: rate against budget, requests, time, trouble."""

    def __init__(self, snapshot: RunSnapshot) -> None:
        self.snapshot = snapshot

    def __rich_console__(self, console: Console, options: ConsoleOptions) -> RenderResult:
        s = self.snapshot
        # A little slack: the window count is discrete, so a run exactly on budget wobbles.
        over = s.budget > 0 and s.rate > s.budget * 1.05
        yield Text.assemble(
            ("rate ", "bold"),
            (f"{s.rate:.2f}", "bold red" if over else "green"),
            f"/{s.budget:.2f} req/s   ",
            ("requests ", "bold"),
            f"{s.requests_done}/{s.requests_total}   ",
            ("elapsed ", "bold"),
            f"{format_duration(s.elapsed_s, clock=True)}   ",
            ("ETA ", "bold"),
            format_duration(s.eta_s, clock=True),
        )
        statuses = [
            Text(f"{s.count(st)} {st.value}", style=STATUS_STYLES[st])
            for st in Status
            if s.count(st)
        ]
        yield Text.assemble(
            ("violations ", "bold"),
            (str(s.violations), "bold red" if s.violations else ""),
            "   ",
            ("errors ", "bold"),
            (str(s.errors), "bold red" if s.errors else ""),
            "   ",
            ("workers ", "bold"),
            Text(" · ").join(statuses),
        )
        yield Text.assemble(
            ("latency ", "bold"),
            f"p50 {_seconds(s.latency_p50)} p95 {_seconds(s.latency_p95)} (last minute)   ",
            ("budget ", "bold"),
            s.budget_reason or "-",
        )


class Dashboard:
    """The live view: symbol table over footer, rendered from a fresh snapshot each time."""

    def __init__(self, state: RunState, max_rows: int | None = None) -> None:
        self.state = state
        self.max_rows = max_rows

    def __rich_console__(self, console: Console, options: ConsoleOptions) -> RenderResult:
        snapshot = self.state.snapshot()
        max_rows = self.max_rows
        if max_rows is None and options.height is None:
            # Live crops what does not fit; better to choose which rows go than lose the footer.
            max_rows = max(options.max_height - _FOOTER_LINES - _TABLE_CHROME, 1)
        yield SymbolTable(snapshot.symbols, max_rows=max_rows, now=snapshot.now)
        yield Text("")
        yield Footer(snapshot)


class Renderer(Protocol):
    """What the orchestrator feeds: one call per event, then ``close`` (or use ``with``)."""

    def on_event(self, event: ev.Event) -> None: ...

    def close(self) -> None: ...

    def __enter__(self) -> Renderer: ...

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None: ...


_R = TypeVar("_R", bound="_ClosingContext")


class _ClosingContext:
    """``with renderer:`` closes it, even on Ctrl-C."""

    def close(self) -> None:
        """Release whatever the renderer holds."""

    def __enter__(self: _R) -> _R:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()


class LiveDashboard(_ClosingContext):
    """Owns the Rich ``Live`` showing ``Dashboard(state)``; the caller applies events to state.

    The Live refreshes itself ``refresh_per_second`` times from the shared state, so
    ``on_event`` has nothing to draw; it starts the display if ``__enter__`` was skipped.
    """

    def __init__(
        self, state: RunState, console: Console | None = None, refresh_per_second: float = 4
    ) -> None:
        self.state = state
        self.dashboard = Dashboard(state)
        self.live = Live(self.dashboard, console=console, refresh_per_second=refresh_per_second)
        self._started = False

    def start(self) -> None:
        """Show the dashboard."""
        if not self._started:
            self.live.start()
            self._started = True

    def on_event(self, event: ev.Event) -> None:
        """Make sure the display runs; the next refresh shows the event."""
        self.start()

    def close(self) -> None:
        """Stop the display, leaving its last frame on screen."""
        if self._started:
            self.live.stop()
            self._started = False

    def __enter__(self) -> LiveDashboard:
        self.start()
        return self


def _minutes(first: str, last: str) -> str:
    """A gap's missing bars by their end times, ``HH:MM`` or ``HH:MM..HH:MM`` (UTC)."""
    a, b = (datetime.fromisoformat(t).strftime("%H:%M") for t in (first, last))
    return a if a == b else f"{a}..{b}"


def describe(event: ev.Event) -> str:
    """One human sentence for an event, starting with its symbol (if it has one)."""
    s = event.symbol
    if isinstance(event, ev.WorkerQueued):
        return f"{s} queued, {_days(event.days_total)}"
    if isinstance(event, ev.WorkerStarted):
        return f"{s} started with clientId {event.client_id}, {_days(event.days_total)}"
    if isinstance(event, ev.StatusChanged):
        return f"{s} {event.status.value}" + (f": {event.detail}" if event.detail else "")
    if isinstance(event, ev.DayFetched):
        what = "no data" if event.no_data else f"fetched {event.rows} rows"
        partial = "" if event.complete else " (partial day)"
        return f"{s} day {event.day.isoformat()} {what} in {event.latency_s:.2f}s{partial}"
    if isinstance(event, ev.RequestDone):
        return f"{s} request {event.window}: {event.outcome} in {event.latency_s:.2f}s"
    if isinstance(event, ev.Retry):
        day = f" day {event.day.isoformat()}" if event.day else ""
        return f"{s} retry #{event.attempt}{day} in {event.delay_s:.1f}s: {event.reason}"
    if isinstance(event, ev.GapFound):
        ranges = ", ".join(_minutes(a, b) for a, b in event.ranges[:3])
        more = ", ..." if len(event.ranges) > 3 else ""
        where = f" ({ranges}{more})" if ranges else ""
        return f"{s} day {event.day.isoformat()} gap: {event.missing_minutes} min missing{where}"
    if isinstance(event, ev.Paced):
        return f"{s} paced {event.wait_s:.1f}s ({event.rule})"
    if isinstance(event, ev.PacingViolation):
        return f"{s} pacing violation (162), backing off {event.backoff_s:.0f}s"
    if isinstance(event, ev.BudgetChanged):
        why = f" ({event.reason})" if event.reason else ""
        return f"budget {event.rate:g} req/s{why}"
    if isinstance(event, ev.PartWritten):
        return f"{s} wrote {event.month}: {event.rows} rows to {event.path}"
    if isinstance(event, ev.DayFailed):
        return f"{s} day {event.day.isoformat()} failed: {event.reason}"
    if isinstance(event, ev.WorkerFailed):
        return f"{s} failed: {event.reason} ({_days(event.days_failed)} failed)"
    if isinstance(event, ev.WorkerFinished):
        failed = f", {_days(event.days_failed)} failed" if event.days_failed else ""
        return f"{s} finished: {_days(event.days_written)} written, {event.rows} rows{failed}"
    if isinstance(event, ev.BeforeListing):
        return (
            f"{s} {_days(event.days)} of the range left out as before listing "
            f"(head {event.head}, {event.source})"
        )
    return f"{s} {ev.EVENT_NAMES.get(type(event), type(event).__name__)}"


# What plain lines tell without --verbose: a line per day fetched and per part written, and
# what the operator must act on or know of: failures, 162s, the budget moving, a worker's
# own trouble (a retry about no day: its connection, its client id, a corrupt part moved
# aside). A request's retries, pacing waits, gaps and status moves are --verbose (about
# four lines a request otherwise).
_PLAIN_EVENTS = (
    ev.WorkerStarted,
    ev.DayFetched,
    ev.PartWritten,
    ev.DayFailed,
    ev.WorkerFailed,
    ev.WorkerFinished,
    ev.PacingViolation,
    ev.BeforeListing,
    ev.BudgetChanged,
)
_PLAIN_STATUSES = frozenset(
    {Status.FAILED, Status.STALLED, Status.STOPPED, Status.WAITING, Status.SKIPPED}
)


class PlainRenderer(_ClosingContext):
    """One line per event worth telling, ``HH:MM:SS`` UTC first: for logs, pipes and dumb
    terminals. ``verbose``: every event (but answered requests, told by their day's line)."""

    def __init__(self, console: Console, clock: Clock = time.time, verbose: bool = False) -> None:
        self.console = console
        self.clock = clock
        self.verbose = verbose

    def tells(self, event: ev.Event) -> bool:
        """Whether ``event`` gets a line."""
        if isinstance(event, ev.RequestDone) and event.outcome in ("bars", "no_data"):
            return False
        if self.verbose:
            return True
        if isinstance(event, ev.StatusChanged):
            return event.status in _PLAIN_STATUSES
        if isinstance(event, ev.Retry):
            return event.day is None
        return isinstance(event, _PLAIN_EVENTS)

    def on_event(self, event: ev.Event) -> None:
        """Print the event's line, if it is one to tell."""
        if not self.tells(event):
            return
        at = datetime.fromtimestamp(event.at or self.clock(), timezone.utc)
        # markup off: reasons quote IB error text, which may hold square brackets.
        self.console.print(
            f"{at:%H:%M:%S} {describe(event)}", markup=False, highlight=False, soft_wrap=True
        )


class JsonRenderer(_ClosingContext):
    """NDJSON: each event's ``to_json`` on its own line, flushed, for machines."""

    def __init__(self, file: IO[str] | None = None) -> None:
        self.file = file or sys.stdout

    def on_event(self, event: ev.Event) -> None:
        """Write the event's JSON line."""
        self.file.write(event.to_json() + "\n")
        self.file.flush()


def make_renderer(
    console: Console, state: RunState, json: bool = False, verbose: bool = False
) -> Renderer:
    """NDJSON when asked, the live dashboard on a terminal, plain lines otherwise (every
    event's with ``verbose``)."""
    if json:
        return JsonRenderer(console.file)
    if console.is_terminal and not console.is_dumb_terminal:
        return LiveDashboard(state, console)
    return PlainRenderer(console, verbose=verbose)


def summary_table(state: RunState | RunSnapshot) -> RenderableType:
    """The closing table: per symbol days and rows written, gaps, retries, failures, status;
    then a line per symbol that needs a rerun, with the reason (whole at 80 columns)."""
    snapshot = state.snapshot() if isinstance(state, RunState) else state
    table = Table(title="Run summary", header_style="bold")
    # Days and rows as written to the lake, not as fetched. Gap days: days with minutes
    # without a bar; Gap min: those minutes (verify counts ranges). Headers on two lines,
    # so that at 80 columns no number wraps or is cut.
    for name in (
        "Symbol",
        "Status",
        "Days\nwritten",
        "Rows\nwritten",
        "Gap\ndays",
        "Gap\nmin",
        "Retries",
        "Failed",
    ):
        table.add_column(
            name,
            justify="left" if name in ("Symbol", "Status") else "right",
            no_wrap=name != "Status",
        )  # "connecting (unfinished)" may wrap
    table.columns[0].min_width = _symbol_width(snapshot.symbols)
    reasons = []
    for p in snapshot.symbols:
        status = p.status.value if p.status in TERMINAL else f"{p.status.value} (unfinished)"
        table.add_row(
            p.symbol,
            Text(status, style=STATUS_STYLES[p.status]),
            f"{p.days_done}/{p.days_total}",
            f"{p.rows:,}",
            str(p.gaps),
            f"{p.missing_minutes:,}",
            str(p.retries),
            Text(str(p.days_failed), style="red" if p.days_failed else ""),
        )
        if p.needs_rerun and p.failed_reason:
            # Text: IB reasons hold [brackets]
            reasons.append(Text.assemble((p.symbol, "bold"), ": ", (p.failed_reason, "red")))
    return Group(table, *reasons)


def _symbol_width(symbols: Sequence[SymbolProgress]) -> int:
    return max([len("Symbol"), *(len(p.symbol) for p in symbols)])


def rerun_command(argv: Sequence[str], lake: Path) -> tuple[str, ...]:
    """``backfill`` and the user's arguments, with ``--lake`` spelled out if it came from
    ``$LAKE_ROOT`` or the current folder: pasted into another shell, it fills the same lake.
    """
    given = any(arg == "--lake" or arg.startswith("--lake=") for arg in argv)
    return ("backfill", *argv) if given else ("backfill", *argv, "--lake", str(lake.absolute()))


def rerun_hint(state: RunState | RunSnapshot, command: Sequence[str]) -> str | None:
    """What failed and the command to run again (it resumes from the lake); None if nothing.

    ``command`` is the command line as the user would type it (``rerun_command``); print
    the hint unwrapped (``soft_wrap``): the command must paste whole, whatever the width.
    Unfinished workers (an interrupted run) count too.
    """
    snapshot = state.snapshot() if isinstance(state, RunState) else state
    todo = [p for p in snapshot.symbols if p.needs_rerun or p.status not in TERMINAL]
    if not todo:
        return None
    parts = []
    for p in todo:
        reason = p.failed_reason or "unknown reason"
        if p.days_failed:
            parts.append(f"{p.symbol} ({_days(p.days_failed)} failed: {reason})")
        elif p.status is Status.FAILED:
            parts.append(f"{p.symbol} (failed: {reason})")
        else:
            parts.append(f"{p.symbol} (unfinished)")
    # A refetch asks every day again, so does its rerun (the store loses nothing).
    does = (
        "asks every day of the range again, losing nothing"
        if "--refetch" in command
        else "fetches only what is still missing"
    )
    return (
        f"Incomplete: {', '.join(parts)}.\n"
        f"Rerun the same command; it {does}:\n"
        f"  {shlex.join(command)}"
    )
