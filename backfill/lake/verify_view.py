"""How a ``VerifyReport`` looks: a Rich table on a terminal, plain lines otherwise."""

from __future__ import annotations

from collections.abc import Iterator

from rich.console import Group, RenderableType
from rich.table import Table
from rich.text import Text

from backfill.lake.verify import Finding, MinuteRange, Severity, SymbolSummary, VerifyReport

SHOWN_RANGES = 6
SHOWN_WARNINGS = 10  # on a terminal; plain text and --json list every finding


def format_ranges(minutes: tuple[MinuteRange, ...], shown: int = SHOWN_RANGES) -> str:
    """``10:00-10:04, 12:30`` (bar ends, UTC; whole dates when a run leaves its day)."""
    parts = []
    for first, last in minutes[:shown]:
        if first.date() != last.date():
            parts.append(f"{first:%Y-%m-%d %H:%M}-{last:%Y-%m-%d %H:%M}")
        elif first == last:
            parts.append(f"{first:%H:%M}")
        else:
            parts.append(f"{first:%H:%M}-{last:%H:%M}")
    if len(minutes) > shown:
        parts.append(f"+{len(minutes) - shown} more")
    return ", ".join(parts)


def finding_line(report: VerifyReport, finding: Finding) -> str:
    """One finding as one line: severity, kind, symbol, day, file, detail, minutes."""
    where = " ".join(
        str(x)
        for x in (finding.symbol, finding.day, report.relative(finding.path))
        if x is not None
    )
    minutes = f" [{format_ranges(finding.minutes)}]" if finding.minutes else ""
    return (
        f"{finding.severity.value.upper()} {finding.kind.value} {where}: {finding.detail}{minutes}"
    )


def _summary_line(s: SymbolSummary) -> str:
    span = f"{s.first}..{s.last}" if s.first else "no range"
    return (
        f"{s.symbol} {span}: {s.days_complete}/{s.days} days complete, "
        f"{s.days_partial} partial, {s.days_missing} missing, "
        + (f"{s.days_no_data} IB had no data for, " if s.days_no_data else "")
        + f"{s.rows:,} rows, "
        f"{s.gaps} gaps ({s.gap_minutes} min), {s.errors} errors, {s.warnings} warnings"
    )


def _verdict(report: VerifyReport) -> str:
    state = "OK" if report.ok else "FAILED"
    return (
        f"verify {state}: {report.parts} parts, {len(report.symbols)} symbols, "
        f"{report.errors} errors, {report.warnings} warnings"
    )


def verify_lines(report: VerifyReport) -> Iterator[str]:
    """Plain text for logs and pipes: a line per symbol, per finding, then the verdict."""
    for summary in report.symbols:
        yield _summary_line(summary)
    for finding in report.findings:
        yield finding_line(report, finding)
    yield _verdict(report)


def verify_renderable(report: VerifyReport) -> RenderableType:
    """The terminal view: a table per symbol, then the findings (errors first), then the verdict."""
    symbols = Table(title="backfill verify", title_justify="left")
    for name, justify in (
        ("symbol", "left"),
        ("range", "left"),
        ("days complete", "right"),
        ("missing", "right"),
        ("rows", "right"),
        ("gaps (min)", "right"),
        ("errors", "right"),
        ("warnings", "right"),
    ):
        symbols.add_column(name, justify=justify)  # type: ignore[arg-type]
    for s in report.symbols:
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
    errors = [f for f in report.findings if f.severity is Severity.ERROR]
    warnings = [f for f in report.findings if f.severity is Severity.WARNING]
    lines = [Text(finding_line(report, f), style="red") for f in errors]
    lines += [Text(finding_line(report, f), style="yellow") for f in warnings[:SHOWN_WARNINGS]]
    if len(warnings) > SHOWN_WARNINGS:
        lines.append(
            Text(f"... {len(warnings) - SHOWN_WARNINGS} more warnings (--json lists all)", "dim")
        )
    verdict = Text(_verdict(report), style="bold green" if report.ok else "bold red")
    return Group(symbols, *lines, verdict)
