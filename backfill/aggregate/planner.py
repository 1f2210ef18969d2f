"""Pure planning of an aggregate build: which (timeframe, month) parts to build or skip, and why.

Values in (M1 coverage from the M1 footers, the aggregate footers, the clock), values out.
Nothing here reads a file; a part is rebuilt only when what it was built from has changed.
"""

from __future__ import annotations

from collections.abc import Collection, Iterable, Mapping
from dataclasses import dataclass
from datetime import date, datetime, timedelta
from enum import Enum

from backfill.aggregate.provenance import Provenance, source_days, source_of
from backfill.aggregate.timeframes import D1, Timeframe
from backfill.domain import DayCoverage, Month, Symbol, day_start


class Reason(str, Enum):
    """Why a part is built or skipped; the value is the name used in ``--json``."""

    MISSING = "missing"  # no part yet
    STALE = "stale"  # the M1 coverage it was built from changed
    MODE = "mode"  # built with the other --include-partial
    PENDING = "pending"  # it left out a bucket that had not ended; that bucket has now
    UNREADABLE = "unreadable"  # its footer cannot be read
    FRESH = "fresh"  # built from exactly the M1 coverage there is now
    NOTHING = "nothing"  # no part, and no bucket to write (none complete, or no M1 rows)

    @property
    def builds(self) -> bool:
        return self not in (Reason.FRESH, Reason.NOTHING)


@dataclass(frozen=True)
class Unreadable:
    """An aggregate part whose footer could not be read (or is not an aggregate footer)."""

    reason: str


Existing = Provenance | Unreadable


@dataclass(frozen=True)
class PartPlan:
    """The decision about one aggregate part."""

    symbol: Symbol
    timeframe: Timeframe
    month: Month
    reason: Reason

    @property
    def builds(self) -> bool:
        return self.reason.builds


def candidate_months(
    coverage: Iterable[date], first: date | None = None, last: date | None = None
) -> list[Month]:
    """Months of buckets whose source days hold a covered M1 day in ``[first, last]``."""
    days = sorted(
        d for d in coverage if (first is None or d >= first) and (last is None or d <= last)
    )
    months: set[Month] = set()
    for day in days:
        months.add(Month.of(day))
        if day == Month.of(day).last_day:  # the day before a month feeds its first buckets
            months.add(Month.of(day).next)
    return sorted(months)


def may_have_buckets(
    timeframe: Timeframe,
    month: Month,
    coverage: Mapping[date, DayCoverage],
    *,
    include_partial: bool,
    now: datetime,
) -> bool:
    """Whether building the month could write a bucket (from coverage alone; may say yes
    for a month whose rows then fill no bucket, never no for one that has some)."""
    source = source_of(coverage, month)
    if include_partial:
        return any(c.rows for c in source.values())
    for day in month.days():
        if day_start(day) > now:
            break
        today = source.get(day)
        before = source.get(day - timedelta(days=1))
        if today is None or not today.complete:
            continue
        # The bucket ending at this day's 00:00 needs the day before whole too.
        if before is not None and before.complete and (before.rows or today.rows):
            return True
        if timeframe != D1 and today.rows and day_start(day) + timeframe.width <= now:
            return True
    return False


def is_stale(provenance: Provenance, coverage: Mapping[date, DayCoverage], now: datetime) -> bool:
    """Whether the M1 coverage (or the clock) has moved on since the part was built."""
    if dict(provenance.source) != source_of(coverage, provenance.month):
        return True
    return provenance.recheck_after is not None and now >= provenance.recheck_after


def plan_part(
    symbol: Symbol,
    timeframe: Timeframe,
    month: Month,
    coverage: Mapping[date, DayCoverage],
    existing: Existing | None,
    *,
    include_partial: bool,
    now: datetime,
) -> PartPlan:
    """Build or skip one part: ``existing`` is its footer record, None when there is no part."""
    if existing is None:
        buildable = may_have_buckets(
            timeframe, month, coverage, include_partial=include_partial, now=now
        )
        reason = Reason.MISSING if buildable else Reason.NOTHING
    elif isinstance(existing, Unreadable):
        reason = Reason.UNREADABLE
    elif dict(existing.source) != source_of(coverage, month):
        reason = Reason.STALE
    elif existing.include_partial != include_partial:
        reason = Reason.MODE
    elif existing.recheck_after is not None and now >= existing.recheck_after:
        reason = Reason.PENDING
    else:
        reason = Reason.FRESH
    return PartPlan(symbol, timeframe, month, reason)


def plan_symbol(
    symbol: Symbol,
    timeframes: Collection[Timeframe],
    coverage: Mapping[date, DayCoverage],
    existing: Mapping[tuple[Timeframe, Month], Existing],
    *,
    include_partial: bool,
    now: datetime,
    first: date | None = None,
    last: date | None = None,
) -> list[PartPlan]:
    """Every part of ``symbol`` in scope, by month then timeframe.

    In scope: the months whose source days hold a covered day in ``[first, last]``, plus
    the parts already there for those months.
    """
    months = set(candidate_months(coverage, first, last))
    for tf, month in existing:
        lo, hi = source_days(month)
        if tf in timeframes and (first is None or hi >= first) and (last is None or lo <= last):
            months.add(month)
    return [
        plan_part(
            symbol,
            tf,
            month,
            coverage,
            existing.get((tf, month)),
            include_partial=include_partial,
            now=now,
        )
        for month in sorted(months)
        for tf in sorted(timeframes)
    ]


def built_from(
    timeframe: Timeframe,
    month: Month,
    coverage: Mapping[date, DayCoverage],
    *,
    include_partial: bool,
    held_back: Iterable[datetime] = (),
) -> Provenance:
    """The footer record of a part built now from ``coverage``; ``held_back``: ends of the
    buckets left out only because they had not ended yet."""
    pending = max(held_back, default=None)
    return Provenance(timeframe, month, include_partial, source_of(coverage, month), pending)
