"""How a verify stream looks: a Rich view on a terminal, plain lines otherwise, or JSON.

Every form consumes the stream as it comes (findings are printed, or counted and dropped), so
a lake of any size is shown in bounded memory.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterable
from typing import IO

from rich.console import Console
from rich.table import Table
from rich.text import Text

from backfill.durations import counted
from backfill.lake.verify import (
    MAX_RANGES,
    Finding,
    Item,
    MinuteRange,
    Severity,
    SymbolSummary,
    Tally,
    finding_json,
    relative,
)

SHOWN_RANGES = MAX_RANGES  # a finding names no more unless --gaps
SHOWN_WARNINGS = 10  # on a terminal; plain text and --json list every finding
SHOWN_ERRORS = 50  # on a terminal


def format_ranges(
    minutes: Iterable[MinuteRange],
    total: int | None = None,
    shown: int | None = SHOWN_RANGES,
    dated: bool = False,
) -> str:
    """``10:00-10:04, 12:30`` (bar ends, UTC; whole dates when a run leaves its day).

    ``total`` is the number of runs in full (more than given when the list was cut);
    ``dated`` names the day before the first run of each day.
    """
    runs = list(minutes)
    total = len(runs) if total is None else total
    parts = []
    day = None
    for first, last in runs if shown is None else runs[:shown]:
        prefix = f"{first:%Y-%m-%d} " if dated and first.date() != day else ""
        day = first.date()
        if first.date() != last.date():
            parts.append(f"{first:%Y-%m-%d %H:%M}-{last:%Y-%m-%d %H:%M}")
        elif first == last:
            parts.append(f"{prefix}{first:%H:%M}")
        else:
            parts.append(f"{prefix}{first:%H:%M}-{last:%H:%M}")
    listed = len(parts)
    if total > listed:
        parts.append(f"+{total - listed} more")
    return ", ".join(parts)


def finding_line(tally: Tally, finding: Finding, every_range: bool = False) -> str:
    """One finding as one line: severity, kind, symbol, day, file, detail, minutes."""
    where = " ".join(
        str(x)
        for x in (finding.symbol, finding.day, relative(tally.lake, finding.path))
        if x is not None
    )
    shown = None if every_range else SHOWN_RANGES
    minutes = ""
    if finding.minutes:
        # A finding about no one day (a symbol's gaps) names the day of its runs.
        listed = format_ranges(finding.minutes, finding.ranges_total, shown, finding.day is None)
        minutes = f" [{listed}]"
    hint = " (--gaps lists every day)" if finding.days else ""
    head = " ".join(x for x in (finding.severity.value.upper(), finding.kind.value, where) if x)
    return f"{head}: {finding.detail}{minutes}{hint}"


def summary_line(s: SymbolSummary) -> str:
    span = f"{s.first}..{s.last}" if s.first else "no range"
    return (
        f"{s.symbol} {span}: {s.days_complete}/{s.days} days complete, "
        f"{s.days_partial} partial, {s.days_missing} missing, "
        + (f"{s.days_no_data} IB had no data for, " if s.days_no_data else "")
        + (
            f"{s.days_before_listing} before listing (head {s.head}), "
            if s.days_before_listing
            else ""
        )
        + f"{s.rows:,} rows, "
        f"{counted(s.gaps, 'gap range')} ({s.gap_minutes} min), "
        f"{counted(s.errors, 'error')}, "
        f"{counted(s.warnings, 'warning')}"
    )


def verdict(tally: Tally) -> str:
    state = "OK" if tally.ok else "FAILED"
    return (
        f"verify {state}: {counted(tally.parts, 'part')}, "
        f"{counted(len(tally.symbols), 'symbol')}, {counted(tally.errors, 'error')}, "
        f"{counted(tally.warnings, 'warning')}"
    )


Emit = Callable[[str, Severity | None], object]  # what it returns is not used


def show(
    stream: Iterable[Item],
    tally: Tally,
    emit: Emit,
    gaps: bool = False,
    terminal: bool = False,
) -> None:
    """Emit each finding as a line while the stream runs; the caller shows ``tally``'s totals.

    On a terminal at most ``SHOWN_ERRORS`` errors and ``SHOWN_WARNINGS`` other warnings are
    shown, then how many more there were.
    """
    hidden = {Severity.ERROR: 0, Severity.WARNING: 0}
    shown = {Severity.ERROR: 0, Severity.WARNING: 0}
    limit = {Severity.ERROR: SHOWN_ERRORS, Severity.WARNING: SHOWN_WARNINGS}
    for item in map(tally.add, stream):
        if not isinstance(item, Finding):
            continue
        severity = item.severity
        if terminal and not gaps and shown[severity] >= limit[severity]:
            hidden[severity] += 1
            continue
        shown[severity] += 1
        emit(finding_line(tally, item, every_range=gaps), severity)
    for severity, count in hidden.items():
        if count:
            emit(f"... {count} more {severity.value}s (plain output or --json lists all)", None)


def write_lines(stream: Iterable[Item], tally: Tally, out: IO[str], gaps: bool = False) -> None:
    """Plain text for logs and pipes: the findings, a line per symbol, then the verdict."""
    show(stream, tally, lambda line, _: out.write(line + "\n"), gaps)
    for summary in tally.symbols:
        out.write(summary_line(summary) + "\n")
    out.write(verdict(tally) + "\n")


def write_terminal(
    stream: Iterable[Item], tally: Tally, console: Console, gaps: bool = False
) -> None:
    """The terminal view: findings as found (errors red), then a table per symbol, the verdict."""
    styles = {Severity.ERROR: "red", Severity.WARNING: "yellow", None: "dim"}
    show(
        stream,
        tally,
        lambda line, severity: console.print(Text(line, styles[severity])),
        gaps,
        terminal=True,
    )
    symbols = Table(title="backfill verify", title_justify="left")
    for name, justify in (
        ("symbol", "left"),
        ("range", "left"),
        ("days complete", "right"),
        ("missing", "right"),
        ("rows", "right"),
        ("gap ranges (min)", "right"),  # runs of minutes without a bar
        ("errors", "right"),
        ("warnings", "right"),
    ):
        symbols.add_column(name, justify=justify)  # type: ignore[arg-type]
    for s in tally.symbols:
        symbols.add_row(
            str(s.symbol),
            f"{s.first}..{s.last}" if s.first else "-",
            f"{s.days_complete}/{s.days}",
            str(s.days_missing),
            f"{s.rows:,}",
            f"{s.gaps} ({s.gap_minutes})",
            Text(str(s.errors), style="bold red" if s.errors else "green"),
            str(s.warnings),
        )
    console.print(symbols)
    console.print(Text(verdict(tally), style="bold green" if tally.ok else "bold red"))


def write_json(stream: Iterable[Item], tally: Tally, out: IO[str]) -> None:
    """The ``--json`` document, written as the findings come: findings first, totals last."""
    head = json.dumps(tally.head_json())[:-1]  # the object stays open for the findings
    out.write(f'{head},\n "findings": [')
    separator = "\n  "
    for item in map(tally.add, stream):
        if isinstance(item, Finding):
            out.write(separator + json.dumps(finding_json(tally.lake, item)))
            separator = ",\n  "
    out.write("\n ],\n")
    totals = tally.totals_json()
    symbols = ",\n  ".join(json.dumps(s) for s in totals.pop("symbols"))
    out.write(f" {json.dumps(totals)[1:-1]},\n")
    out.write(f' "symbols": [\n  {symbols}\n ]\n}}\n' if symbols else ' "symbols": []\n}\n')
