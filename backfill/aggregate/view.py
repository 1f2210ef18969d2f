"""How ``backfill aggregate`` shows its work: a Rich progress bar on a terminal, one line per
part otherwise, one JSON document with ``--json``.

The ``--json`` document (version 1; ``path`` relative to the lake, null when nothing was
written because the part would hold no bucket)::

    {"version": 1, "lake": "/abs/lake", "from": "2025-07-01" | null, "to": ... | null,
     "timeframes": ["M5", ...], "include_partial": false, "ok": true, "elapsed_s": 1.2,
     "totals": {"built": 12, "rows": 9000, "skipped": 48, "failed": 0},
     "built": [{"symbol", "timeframe", "month", "reason", "rows", "path", "removed"}],
     "skipped": [{"symbol", "timeframe", "month", "reason"}],
     "failed": [{"symbol", "month", "timeframes": [...], "reason"}]}

``reason`` for a built part: missing, stale, mode, pending, unreadable; for a skipped one:
fresh (built from the M1 coverage there is now) or nothing (no bucket to write).
``removed``: the part was removed, built from no M1 day (its M1 parts are gone).
"""

from __future__ import annotations

import shlex
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any

from backfill.aggregate.build import (
    AggregateRequest,
    AggregateResult,
    Event,
    MonthFailed,
    PartBuilt,
    Planned,
)
from backfill.aggregate.planner import PartPlan, Reason
from backfill.lake.paths import relative

JSON_VERSION = 1


def to_json(request: AggregateRequest, result: AggregateResult) -> dict[str, Any]:
    """The ``--json`` document; its shape is in this module's docstring."""
    return {
        "version": JSON_VERSION,
        "lake": str(request.lake.resolve()),
        "from": None if request.first is None else request.first.isoformat(),
        "to": None if request.last is None else request.last.isoformat(),
        "timeframes": [tf.name for tf in request.timeframes],
        "include_partial": request.include_partial,
        "ok": result.ok,
        "elapsed_s": round(result.elapsed_s, 3),
        "totals": {
            "built": len(result.built),
            "rows": sum(b.rows for b in result.built),
            "skipped": len(result.skipped),
            "failed": len(result.failed),
        },
        "built": [
            {
                "symbol": str(b.plan.symbol),
                "timeframe": b.plan.timeframe.name,
                "month": str(b.plan.month),
                "reason": b.plan.reason.value,
                "rows": b.rows,
                "path": relative(request.lake, b.path),
                "removed": b.removed,
            }
            for b in result.built
        ],
        "skipped": [
            {
                "symbol": str(p.symbol),
                "timeframe": p.timeframe.name,
                "month": str(p.month),
                "reason": p.reason.value,
            }
            for p in result.skipped
        ],
        "failed": [
            {
                "symbol": str(f.symbol),
                "month": str(f.month),
                "timeframes": [tf.name for tf in f.timeframes],
                "reason": f.reason,
            }
            for f in result.failed
        ],
    }


def event_line(event: Event) -> str | None:
    """One plain line per event (None: nothing worth a line)."""
    if isinstance(event, Planned):
        return (
            f"aggregate: {event.builds} part(s) to build over {event.months} symbol-month(s), "
            f"{event.skipped} up to date or empty"
        )
    if isinstance(event, PartBuilt):
        plan = event.plan
        what = (
            f"{event.rows:,} bucket(s)"
            if event.path is not None
            else "removed: its M1 days are gone"
            if event.removed
            else "no bucket, nothing written"
        )
        return f"{plan.symbol} {plan.timeframe} {plan.month}: {what} ({plan.reason.value})"
    if isinstance(event, MonthFailed):
        tfs = ",".join(tf.name for tf in event.timeframes)
        return f"{event.symbol} {event.month} {tfs}: FAILED: {event.reason}"
    return None


def summary_lines(result: AggregateResult) -> Iterator[str]:
    rows = sum(b.rows for b in result.built)
    written = sum(b.path is not None for b in result.built)
    yield (
        f"aggregate: {written} part(s) written ({rows:,} buckets), "
        f"{len(result.skipped)} up to date or empty, {len(result.failed)} symbol-month(s) "
        f"failed, in {result.elapsed_s:.1f}s"
    )
    if result.failed:
        yield "rerun the same command to retry what failed"


class ProgressView:
    """A Rich progress bar over the parts to build, ticking as each is built or fails."""

    def __init__(self, console: Any) -> None:
        from rich.progress import (
            BarColumn,
            MofNCompleteColumn,
            Progress,
            TextColumn,
            TimeElapsedColumn,
            TimeRemainingColumn,
        )

        self.progress = Progress(
            TextColumn("[bold]aggregate[/] {task.description}"),
            BarColumn(),
            MofNCompleteColumn(),
            TimeElapsedColumn(),
            TimeRemainingColumn(),
            console=console,
            transient=True,
        )
        self.task = self.progress.add_task("planning", total=None)
        self.failures: list[str] = []

    def __enter__(self) -> ProgressView:
        self.progress.start()
        return self

    def __exit__(self, *_exc: object) -> None:
        self.progress.stop()

    def on_event(self, event: Event) -> None:
        if isinstance(event, Planned):
            self.progress.update(self.task, total=event.builds, description="")
        elif isinstance(event, PartBuilt):
            plan = event.plan
            self.progress.update(
                self.task, advance=1, description=f"{plan.symbol} {plan.month} {plan.timeframe}"
            )
        elif isinstance(event, MonthFailed):
            self.progress.update(self.task, advance=len(event.timeframes))
            line = event_line(event)
            if line:
                self.progress.console.print(line, style="red", markup=False)


def line_printer(echo: Callable[[str], None]) -> Callable[[Event], None]:
    def on_event(event: Event) -> None:
        line = event_line(event)
        if line is not None:
            echo(line)

    return on_event


def status_json(plans: Sequence[PartPlan]) -> list[dict[str, Any]]:
    """``plan --tf``'s ``aggregates`` list: per symbol and timeframe, the months to (re)build."""
    grouped: dict[tuple[str, str], dict[str, list[str]]] = {}
    for plan in sorted(plans, key=lambda p: (p.symbol, p.timeframe, p.month)):
        entry = grouped.setdefault(
            (str(plan.symbol), plan.timeframe.name), {"missing": [], "stale": []}
        )
        entry["missing" if plan.reason is Reason.MISSING else "stale"].append(str(plan.month))
    return [
        {"symbol": symbol, "timeframe": tf, **months} for (symbol, tf), months in grouped.items()
    ]


def status_lines(
    plans: Sequence[PartPlan], timeframes: Sequence[str], lake: Path | None = None
) -> list[str]:
    """``plan --tf``'s lines: one per symbol and timeframe with something to (re)build, then
    the command that builds them (``--lake`` spelled out, quoted for a shell)."""
    entries = status_json(plans)
    if not entries:
        return [f"aggregates {','.join(timeframes)}: up to date"]
    lines = []
    for e in entries:
        what = []
        if e["missing"]:
            what.append(f"{len(e['missing'])} missing ({_months(e['missing'])})")
        if e["stale"]:
            what.append(f"{len(e['stale'])} stale ({_months(e['stale'])})")
        lines.append(f"aggregates {e['symbol']} {e['timeframe']}: {', '.join(what)}")
    lake_args = () if lake is None else ("--lake", str(lake.absolute()))
    lines.append(
        "build them: "
        + shlex.join(("backfill", "aggregate", *lake_args, "--tf", ",".join(timeframes)))
    )
    return lines


def _months(months: list[str], limit: int = 3) -> str:
    shown = months[:limit]
    return ", ".join(shown) + (f", +{len(months) - limit} more" if len(months) > limit else "")
