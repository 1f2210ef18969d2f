"""How ``backfill levels`` shows its work: a line per part, or one JSON document.

The ``--json`` document (version 1; ``path`` relative to the lake, null when nothing was
written)::

    {"version": 1, "lake": "/abs/lake", "from": "2025-07-01" | null, "to": ... | null,
     "profiles": ["us_equity_open"], "include_partial": false, "events": true,
     "tolerance": "bps:5", "max_retest_bars": 15, "retest_unit": "bars", "signal_bar": "next",
     "scan": "09:30-11:30" | null, "ok": true, "elapsed_s": 0.4,
     "totals": {"built": 2, "rows": 217, "skipped": 4, "failed": 0},
     "built": [{"symbol", "profile", "dataset", "month", "reason", "rows", "path"}],
     "skipped": [{"symbol", "profile", "dataset", "month", "reason"}],
     "failed": [{"symbol", "month", "reason"}]}

``dataset`` is ``levels`` or ``br_events``; ``reason`` for a built part: missing, stale,
mode (other parameters), unreadable; for a skipped one: fresh or nothing.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any

from backfill.lake.paths import relative
from backfill.levels.build import (
    LEVELS,
    Event,
    LevelsRequest,
    LevelsResult,
    MonthFailed,
    PartBuilt,
    PartPlan,
    Planned,
)

JSON_VERSION = 1


def _dataset(plan: PartPlan) -> str:
    return "levels" if plan.kind == LEVELS else "br_events"


def to_json(request: LevelsRequest, result: LevelsResult) -> dict[str, Any]:
    p = request.params
    return {
        "version": JSON_VERSION,
        "lake": str(request.lake.resolve()),
        "from": None if request.first is None else request.first.isoformat(),
        "to": None if request.last is None else request.last.isoformat(),
        "profiles": [x.name for x in request.profiles],
        "include_partial": request.include_partial,
        "events": request.events,
        "tolerance": p.tolerance.spec,
        "max_retest_bars": p.max_retest_bars,
        "retest_unit": p.retest_unit,
        "signal_bar": p.signal_bar,
        "scan": None if p.scan is None else str(p.scan),
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
                "profile": b.plan.profile.name,
                "dataset": _dataset(b.plan),
                "month": str(b.plan.month),
                "reason": b.plan.reason.value,
                "rows": b.rows,
                "path": relative(request.lake, b.path),
            }
            for b in result.built
        ],
        "skipped": [
            {
                "symbol": str(s.symbol),
                "profile": s.profile.name,
                "dataset": _dataset(s),
                "month": str(s.month),
                "reason": s.reason.value,
            }
            for s in result.skipped
        ],
        "failed": [
            {"symbol": str(f.symbol), "month": str(f.month), "reason": f.reason}
            for f in result.failed
        ],
    }


def event_line(event: Event) -> str | None:
    if isinstance(event, Planned):
        return f"levels: {event.builds} part(s) to build, {event.skipped} up to date or empty"
    if isinstance(event, PartBuilt):
        plan = event.plan
        what = f"{event.rows:,} row(s)" if event.path is not None else "no row, nothing written"
        return (
            f"{plan.symbol} {plan.profile.name} {_dataset(plan)} {plan.month}: {what} "
            f"({plan.reason.value})"
        )
    if isinstance(event, MonthFailed):
        return f"{event.symbol} {event.month}: FAILED: {event.reason}"
    return None


def line_printer(echo: Callable[[str], None]) -> Callable[[Event], None]:
    def on_event(event: Event) -> None:
        line = event_line(event)
        if line is not None:
            echo(line)

    return on_event


def summary_lines(result: LevelsResult) -> Iterator[str]:
    rows = sum(b.rows for b in result.built)
    written = sum(b.path is not None for b in result.built)
    yield (
        f"levels: {written} part(s) written ({rows:,} rows), {len(result.skipped)} up to "
        f"date or empty, {len(result.failed)} failed, in {result.elapsed_s:.1f}s"
    )
    if result.failed:
        yield "rerun the same command to retry what failed"


def status_json(stale: list[PartPlan]) -> list[dict[str, Any]]:
    """``plan --levels``: [{symbol, profile, missing: [YYYY-MM, ...], stale: [...]}]."""
    out: dict[tuple[str, str], dict[str, Any]] = {}
    for p in stale:
        entry = out.setdefault(
            (str(p.symbol), p.profile.name),
            {"symbol": str(p.symbol), "profile": p.profile.name, "missing": [], "stale": []},
        )
        entry["missing" if p.reason.value == "missing" else "stale"].append(str(p.month))
    return list(out.values())


def status_lines(stale: list[PartPlan], profiles: list[str]) -> Iterator[str]:
    if not stale:
        yield f"levels ({', '.join(profiles)}): every part built and up to date"
        return
    for entry in status_json(stale):
        parts = []
        if entry["missing"]:
            parts.append(f"not built: {', '.join(entry['missing'])}")
        if entry["stale"]:
            parts.append(f"stale: {', '.join(entry['stale'])}")
        yield f"levels {entry['symbol']} {entry['profile']}: {'; '.join(parts)}"
