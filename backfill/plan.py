"""Pure planning: asked symbols and days + lake coverage → missing windows, counts, ETA.

Nothing here reads the lake or talks to IB: coverage (from part footers) and the optional
listing dates (from IB's head timestamp) come in as values.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, replace
from datetime import date, datetime, timedelta
from typing import Any, Protocol

from backfill.domain import (
    DayCoverage,
    Month,
    Symbol,
    Window,
    check_range,
    day_ranges,
    days_between,
    group_windows,
    iso_day,
    months_between,
)
from backfill.settings import RunSettings


class RecordedDay(Protocol):
    """What planning needs of a recorded day: ``DayCoverage`` (a footer decoded) or a
    ``coverage_index.DayMark`` (the same, remembered)."""

    @property
    def complete(self) -> bool: ...

    @property
    def no_data(self) -> bool: ...


@dataclass(frozen=True)
class SymbolPlan:
    """What one symbol lacks in ``[first, last]`` (the asked range clipped to listing/today)."""

    symbol: Symbol
    first: date | None  # None when nothing of the asked range can be requested
    last: date | None
    days_total: int
    days_done: int
    days_missing: tuple[date, ...]
    missing_ranges: tuple[tuple[date, date], ...]
    months_complete: int
    months_total: int
    windows: tuple[Window, ...]
    eta_seconds: float  # its worker's time running alongside the others (see ``plan``)
    # Done days that are empty because IB said it had no data (shown apart from days with bars)
    days_no_data: tuple[date, ...] = ()
    # The day of the symbol's head (its first bar at the gateway) where known, and how many
    # days of the asked range lie before it: left out, never asked. Said aloud, so a head
    # that is wrong (IB's, or an edited heads.json) never passes as "done 0/0" in silence.
    head: date | None = None
    days_before_listing: int = 0
    # Of those, days the lake holds anyway: a head later than bars already fetched is a
    # contradiction (``run`` asks the head again).
    days_held_before_listing: int = 0

    @property
    def head_contradicted(self) -> bool:
        """The lake holds days before the head while others before it are left out."""
        return 0 < self.days_held_before_listing < self.days_before_listing

    @property
    def requests(self) -> int:
        return len(self.windows)

    @property
    def done(self) -> bool:
        return not self.days_missing

    def to_dict(self) -> dict[str, Any]:
        return {
            "symbol": str(self.symbol),
            "first": iso_day(self.first),
            "last": iso_day(self.last),
            "days_total": self.days_total,
            "days_done": self.days_done,
            "days_missing": len(self.days_missing),
            "days_no_data": len(self.days_no_data),
            "days_before_listing": self.days_before_listing,
            "head": iso_day(self.head),
            "missing_ranges": [[a.isoformat(), b.isoformat()] for a, b in self.missing_ranges],
            "months_complete": self.months_complete,
            "months_total": self.months_total,
            "requests": self.requests,
            "eta_seconds": round(self.eta_seconds, 3),
        }


@dataclass(frozen=True)
class Plan:
    """The plan for every asked symbol, the settings it assumed, and the overall ETA."""

    symbols: tuple[SymbolPlan, ...]
    first: date
    last: date
    today: date
    settings: RunSettings
    eta_seconds: float

    @property
    def window_days(self) -> int:
        return self.settings.window_days

    @property
    def rate(self) -> float:
        """The rate the ETA assumes (strict mode: capped by IB's session rule)."""
        return self.settings.paced_rate

    @property
    def workers(self) -> int:
        return self.settings.workers

    @property
    def in_flight(self) -> int:
        return self.settings.max_in_flight

    @property
    def latency_s(self) -> float:
        return self.settings.latency_s

    @property
    def days_total(self) -> int:
        return sum(s.days_total for s in self.symbols)

    @property
    def days_done(self) -> int:
        return sum(s.days_done for s in self.symbols)

    @property
    def days_missing(self) -> int:
        return sum(len(s.days_missing) for s in self.symbols)

    @property
    def days_before_listing(self) -> int:
        return sum(s.days_before_listing for s in self.symbols)

    @property
    def months_total(self) -> int:
        return sum(s.months_total for s in self.symbols)

    @property
    def months_complete(self) -> int:
        return sum(s.months_complete for s in self.symbols)

    @property
    def requests(self) -> int:
        return sum(s.requests for s in self.symbols)

    @property
    def windows(self) -> list[tuple[Symbol, Window]]:
        """Every request to send, symbol by symbol."""
        return [(s.symbol, w) for s in self.symbols for w in s.windows]

    def to_dict(self) -> dict[str, Any]:
        """The ``--json`` document (shape documented on the CLI's ``plan`` command)."""
        return {
            "first": self.first.isoformat(),
            "last": self.last.isoformat(),
            "today": self.today.isoformat(),
            "window_days": self.window_days,
            "rate": self.rate,
            "workers": self.workers,
            "max_in_flight": self.in_flight,
            "latency_ms": round(self.latency_s * 1000, 3),
            "totals": {
                "symbols": len(self.symbols),
                "days_total": self.days_total,
                "days_done": self.days_done,
                "days_missing": self.days_missing,
                "days_before_listing": self.days_before_listing,
                "months_complete": self.months_complete,
                "months_total": self.months_total,
                "requests": self.requests,
                "eta_seconds": round(self.eta_seconds, 3),
            },
            "symbols": [s.to_dict() for s in self.symbols],
        }


def refetch_coverage(
    coverage: Mapping[date, DayCoverage], since: datetime, now: datetime
) -> dict[date, DayCoverage]:
    """``--refetch``: only days recorded by this refetch (fetched in ``[since, now]``, since
    the run began) count as recorded; every other day of the range is asked again, whole
    or not. A worker restarted mid-run then resumes where the refetch got to instead of
    starting over, and ``plan --refetch`` (``since`` = now) shows every day as work."""
    return {day: c for day, c in coverage.items() if since <= c.fetched_at <= now}


def missing_days(days: Iterable[date], coverage: Mapping[date, RecordedDay]) -> list[date]:
    """Days with no coverage record, or only a partial one (fetched before the day ended)."""
    recorded = coverage.get  # one lookup a day: plan walks 180,000 days over 6,000 parts
    return [d for d in days if (r := recorded(d)) is None or not r.complete]


def plan_symbol(
    symbol: Symbol,
    first: date,
    last: date,
    coverage: Mapping[date, RecordedDay],
    *,
    window_days: int,
    listing: date | None = None,
) -> SymbolPlan:
    """One symbol's plan over ``[max(first, listing), last]``; ``eta_seconds`` is left 0."""
    before: list[date] = []
    if listing is not None:
        before = (
            days_between(first, min(last, listing - timedelta(days=1)))
            if first < listing and first <= last
            else []
        )
        first = max(first, listing)
    days = days_between(first, last) if first <= last else []
    missing = missing_days(days, coverage)
    months = months_between(days[0], days[-1]) if days else []
    # A month counts as complete when none of its days within the range is missing.
    months_complete = len(months) - len({Month.of(d) for d in missing})
    return SymbolPlan(
        symbol=symbol,
        first=days[0] if days else None,
        last=days[-1] if days else None,
        days_total=len(days),
        days_done=len(days) - len(missing),
        days_missing=tuple(missing),
        missing_ranges=tuple(day_ranges(missing)),
        months_complete=months_complete,
        months_total=len(months),
        windows=tuple(group_windows(missing, window_days)),
        eta_seconds=0.0,
        days_no_data=tuple(
            d for d in days if (r := coverage.get(d)) is not None and r.complete and r.no_data
        ),
        head=listing,
        days_before_listing=len(before),
        days_held_before_listing=sum(1 for d in before if d in coverage),
    )


def plan(
    symbols: Iterable[Symbol],
    first: date,
    last: date,
    coverage: Mapping[Symbol, Mapping[date, RecordedDay]],
    *,
    today: date,
    settings: RunSettings,
    listing: Mapping[Symbol, date] | None = None,
) -> Plan:
    """What to fetch for ``symbols`` over ``[first, last]``, and how long it should take.

    ``run`` fetches exactly these windows, and the ETA follows the workers' pacing model.
    Days after ``today`` are not planned (today is, as a partial day); with ``listing``
    (earliest bar day per symbol, from ``--head``) nothing before it is requested.
    ETA for R requests (r_s per symbol) at rate ``settings.paced_rate``, b = min(workers,
    symbols with requests), open requests o = min(b * in_flight, IB's open limit):
    ``max(R / rate, R * latency / o, max(r_s) * max(latency / in_flight, 1 / rate,
    contract_gap_s))``, the global rate, the requests open at once, and the longest
    symbol's worker (``RunSettings.contract_gap_s``: IB's per-contract rule with the
    workers' margin). A lower bound: retries are not counted.
    """
    settings.check()
    check_range(first, last)
    listing = listing or {}
    last_planned = min(last, today)
    plans = [
        plan_symbol(
            symbol,
            first,
            last_planned,
            coverage.get(symbol, {}),
            window_days=settings.window_days,
            listing=listing.get(symbol),
        )
        for symbol in dict.fromkeys(symbols)
    ]
    rate, latency_s, in_flight = settings.paced_rate, settings.latency_s, settings.max_in_flight
    max_open = settings.ib.max_open
    requests = [p.requests for p in plans]
    busy = min(settings.workers, sum(1 for r in requests if r)) or 1
    open_at_once = min(busy * in_flight, max_open)
    per_request = latency_s / min(in_flight, max_open)
    alone = max(per_request, 1 / rate, settings.contract_gap_s)
    # A symbol's own ETA: its worker at its share of the rate while ``busy`` workers run.
    alongside = max(per_request, busy / rate, settings.contract_gap_s)
    eta = max(
        sum(requests) / rate,
        sum(requests) * latency_s / open_at_once,
        max(requests, default=0) * alone,
    )
    return Plan(
        # Once others finish, a symbol's share grows: it never takes longer than the run.
        symbols=tuple(replace(p, eta_seconds=min(eta, p.requests * alongside)) for p in plans),
        first=first,
        last=last,
        today=today,
        settings=settings,
        eta_seconds=eta,
    )
