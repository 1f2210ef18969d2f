"""How ``backfill plan`` shows a Plan: a Rich table on a terminal, plain lines otherwise."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import date
from typing import TYPE_CHECKING

from backfill.durations import counted, format_duration
from backfill.plan import Plan, SymbolPlan

if TYPE_CHECKING:
    from rich.table import Table

MAX_RANGES_SHOWN = 3


def format_ranges(ranges: Sequence[tuple[date, date]], limit: int = MAX_RANGES_SHOWN) -> str:
    """Missing ranges, abbreviated: years of gaps must still fit on one line."""
    if not ranges:
        return "-"
    shown = [str(a) if a == b else f"{a}..{b}" for a, b in ranges[:limit]]
    if len(ranges) > limit:
        shown.append(f"+{len(ranges) - limit} more")
    return ", ".join(shown)


def _settings_line(plan: Plan) -> str:
    return (
        f"{counted(plan.requests, 'request')} at {plan.rate:g} req/s, "
        f"{counted(plan.workers, 'worker')} "
        f"({plan.in_flight} in flight each), {plan.window_days}-day windows, "
        f"{plan.latency_s * 1000:g} ms latency: "
        f"ETA {format_duration(plan.eta_seconds)} (retries not counted)"
    )


def plan_table(plan: Plan) -> Table:
    """The plan as a Rich table, one row a symbol and a totals footer."""
    from rich.table import Table  # only on a terminal: plain lines need no Rich (0.03 s)

    table = Table(
        title=f"backfill plan {plan.first} → {plan.last}",
        caption=_settings_line(plan),
        show_footer=True,
    )
    table.add_column("symbol", footer="total")
    table.add_column("days done", justify="right", footer=f"{plan.days_done}/{plan.days_total}")
    table.add_column(
        "months complete",
        justify="right",
        footer=f"{plan.months_complete}/{plan.months_total}",
    )
    table.add_column("missing", overflow="fold")
    listed = plan.days_before_listing > 0 or any(s.head for s in plan.symbols)
    if listed:  # days left out as before listing are said, with the head they come from
        table.add_column("before listing", justify="right", footer=str(plan.days_before_listing))
    table.add_column("requests", justify="right", footer=str(plan.requests))
    table.add_column("ETA", justify="right", footer=format_duration(plan.eta_seconds))
    for s in plan.symbols:
        table.add_row(
            str(s.symbol),
            _done(s),
            f"{s.months_complete}/{s.months_total}",
            format_ranges(s.missing_ranges),
            *([before_listing(s)] if listed else []),
            str(s.requests),
            format_duration(s.eta_seconds),
            style="green" if s.done else None,
        )
    return table


def _done(s: SymbolPlan) -> str:
    no_data = f" ({len(s.days_no_data)} IB had no data for)" if s.days_no_data else ""
    return f"{s.days_done}/{s.days_total}{no_data}"


def before_listing(s: SymbolPlan) -> str:
    """Days of the range left out as before the symbol's listing, and the head they come
    from (the same words in plan's table, plan's lines and run's output)."""
    if s.head is None:
        return "-"
    # Days the lake holds before the head contradict it: run asks the head again.
    held = (
        f", the lake holds {s.days_held_before_listing} of them"
        if s.days_held_before_listing
        else ""
    )
    return f"{s.days_before_listing} (head {s.head}{held})"


def _symbol_line(s: SymbolPlan) -> str:
    listed = f"before listing {before_listing(s)}  " if s.head is not None else ""
    return (
        f"{s.symbol}  days {_done(s)}  "
        f"months {s.months_complete}/{s.months_total}  "
        f"missing {format_ranges(s.missing_ranges)}  {listed}"
        f"requests {s.requests}  eta {format_duration(s.eta_seconds)}"
    )


def plan_lines(plan: Plan) -> list[str]:
    """The plan as plain lines (not a terminal): one a symbol, then the totals."""
    lines = [_symbol_line(s) for s in plan.symbols]
    lines.append(
        f"total  days {plan.days_done}/{plan.days_total}  "
        f"months {plan.months_complete}/{plan.months_total}  "
        f"missing days {plan.days_missing}  before listing {plan.days_before_listing}  "
        f"requests {plan.requests}  "
        f"eta {format_duration(plan.eta_seconds)}"
    )
    lines.append(_settings_line(plan))
    return lines
