"""The edge of ``backfill levels``: read footers, plan, read M1 parts, compute, write parts.

Per symbol, months in order, every profile: the M1 months a month of sessions draws on are
read once (and kept while the next month needs them), so memory holds a few months of one
symbol at a time, whatever the number of symbols.
"""

from __future__ import annotations

import time as clock
from collections.abc import Callable, Mapping
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from datetime import date, datetime, timedelta, timezone
from enum import Enum
from pathlib import Path

import pyarrow as pa
import pyarrow.compute as pc

from backfill.aggregate.build import read_m1_coverage
from backfill.domain import BadInput, DayCoverage, Month, Symbol, check_range, months_between
from backfill.lake import store
from backfill.lake.paths import lake_symbols, part_path, symbol_dir
from backfill.lake.schema import BAR_SCHEMA
from backfill.lake.store import read_schema
from backfill.levels.compute import Bars, compute_levels, session_windows, window_complete
from backfill.levels.events import EventParams, compute_events
from backfill.levels.paths import events_part_path, levels_part_path
from backfill.levels.profiles import PROFILES, Profile
from backfill.levels.provenance import Provenance, source_days, source_of
from backfill.levels.tables import (
    EVENTS_SCHEMA,
    LEVELS_PROVENANCE_KEY,
    LEVELS_SCHEMA,
    WRITE_OPTIONS,
    empty,
)
from backfill.levels.tolerance import Tolerance

LEVELS, EVENTS = "levels", "events"
_THREADS = 4
_EPOCH = datetime(1970, 1, 1, tzinfo=timezone.utc)  # datetime.UTC is 3.11+; we run on 3.10
_COLUMNS = ("ts", "open", "high", "low", "close")  # all levels and events read of M1
_BARS = pa.schema([BAR_SCHEMA.field(name) for name in _COLUMNS])
DEFAULT_PARAMS = EventParams(Tolerance("bps", 5.0))


@dataclass(frozen=True)
class LevelsRequest:
    """What to build: ``symbols`` None means every symbol in the lake; dates are session dates."""

    lake: Path
    profiles: tuple[Profile, ...] = (PROFILES["us_equity_open"],)
    symbols: tuple[Symbol, ...] | None = None
    first: date | None = None
    last: date | None = None
    include_partial: bool = False
    events: bool = True
    params: EventParams = DEFAULT_PARAMS

    def footer_params(self, profile: Profile, kind: str) -> dict[str, object]:
        """The parameters a part's rows depend on: recorded, and compared on the next run."""
        params: dict[str, object] = {
            "profile": profile.name,
            "include_partial": self.include_partial,
        }
        if kind == EVENTS:
            p = self.params
            params |= {
                "tolerance": p.tolerance.spec,
                "max_retest_bars": p.max_retest_bars,
                "retest_unit": p.retest_unit,
                "signal_bar": p.signal_bar,
                "scan": str(p.scan or profile.scan),
            }
        return params

    def path(self, kind: str, profile: Profile, symbol: Symbol, month: Month) -> Path:
        if kind == LEVELS:
            return levels_part_path(self.lake, profile.name, symbol, month)
        return events_part_path(self.lake, profile.name, self.params.tolerance.spec, symbol, month)

    def source_days(self, kind: str, profile: Profile, month: Month) -> tuple[date, date]:
        scan = (self.params.scan or profile.scan) if kind == EVENTS else None
        return source_days(profile, month, scan)


class Reason(str, Enum):
    """Why a part is built or skipped; the value is the name used in ``--json``."""

    MISSING = "missing"
    STALE = "stale"  # the M1 coverage it was built from changed
    MODE = "mode"  # built with other parameters (--include-partial, B&R settings)
    UNREADABLE = "unreadable"
    FRESH = "fresh"
    NOTHING = "nothing"  # no part, and no M1 day recorded for its sessions

    @property
    def builds(self) -> bool:
        return self not in (Reason.FRESH, Reason.NOTHING)


@dataclass(frozen=True)
class PartPlan:
    symbol: Symbol
    profile: Profile
    kind: str
    month: Month
    reason: Reason

    @property
    def builds(self) -> bool:
        return self.reason.builds


@dataclass(frozen=True)
class Planned:
    builds: int
    skipped: int


@dataclass(frozen=True)
class PartBuilt:
    plan: PartPlan
    rows: int
    path: Path | None  # None: no row and no part there: nothing written


@dataclass(frozen=True)
class MonthFailed:
    symbol: Symbol
    month: Month
    reason: str


Event = Planned | PartBuilt | MonthFailed


@dataclass(frozen=True)
class LevelsResult:
    symbols: tuple[Symbol, ...]
    built: tuple[PartBuilt, ...] = ()
    skipped: tuple[PartPlan, ...] = ()
    failed: tuple[MonthFailed, ...] = ()
    elapsed_s: float = 0.0

    @property
    def ok(self) -> bool:
        return not self.failed


def check_request(request: LevelsRequest) -> tuple[Symbol, ...]:
    """The symbols to build; BadInput (nothing written) for a missing lake, a bad range, or
    an asked symbol with no M1 parts."""
    if request.first is not None and request.last is not None:
        check_range(request.first, request.last)
    if not request.lake.is_dir():
        raise BadInput(f"lake folder {request.lake} does not exist")
    if request.symbols is None:
        return tuple(lake_symbols(request.lake))
    absent = [str(s) for s in request.symbols if not symbol_dir(request.lake, s).is_dir()]
    if absent:
        raise BadInput(f"no M1 data in {request.lake} for {', '.join(absent)}")
    return request.symbols


def read_provenance(path: Path, schema: pa.Schema) -> Provenance | str:
    """A part's footer record, or why it cannot be trusted."""
    try:
        found = read_schema(path)
    except (OSError, ValueError, pa.ArrowException) as exc:
        return f"unreadable footer: {exc}"
    if not found.remove_metadata().equals(schema):
        return "schema differs from the levels.md schema"
    raw = (found.metadata or {}).get(LEVELS_PROVENANCE_KEY)
    if raw is None:
        return "no provenance record in the footer"
    try:
        return Provenance.decode(raw)
    except (ValueError, KeyError, TypeError, AttributeError) as exc:
        return f"malformed provenance record: {exc}"


def scope_months(
    coverage: Mapping[date, DayCoverage], first: date | None, last: date | None
) -> list[Month]:
    """Months of session dates to consider: those asked, else the recorded days' span and
    the day after it (its PD is the last recorded day)."""
    if not coverage and (first is None or last is None):
        return []
    lo = first if first is not None else min(coverage)
    hi = last if last is not None else max(coverage) + timedelta(days=1)
    return months_between(lo, hi) if lo <= hi else []


def plan_part(
    request: LevelsRequest,
    kind: str,
    profile: Profile,
    symbol: Symbol,
    month: Month,
    coverage: Mapping[date, DayCoverage],
) -> PartPlan:
    path = request.path(kind, profile, symbol, month)
    first, last = request.source_days(kind, profile, month)
    source = source_of(coverage, first, last)
    if not path.is_file():
        reason = (
            Reason.MISSING if may_have_rows(request, profile, month, source) else (Reason.NOTHING)
        )
    else:
        found = read_provenance(path, LEVELS_SCHEMA if kind == LEVELS else EVENTS_SCHEMA)
        if isinstance(found, str):
            reason = Reason.UNREADABLE
        elif dict(found.source) != source:
            reason = Reason.STALE
        elif found.kind != kind or found.params != request.footer_params(profile, kind):
            reason = Reason.MODE
        else:
            reason = Reason.FRESH
    return PartPlan(symbol, profile, kind, month, reason)


def may_have_rows(
    request: LevelsRequest, profile: Profile, month: Month, coverage: Mapping[date, DayCoverage]
) -> bool:
    """Whether building the month could write a levels row (from coverage alone): a window
    whose days are all recorded whole (or, with --include-partial, any day recorded)."""
    if request.include_partial:
        return bool(coverage)
    whole = {d for d, c in coverage.items() if c.complete}
    for day in month.days():
        w = session_windows(profile, day, None)
        if any(window_complete(x, whole) for x in (w.pd, w.pm, w.opening) if x is not None):
            return True
    return False


def plan_symbol(
    request: LevelsRequest,
    symbol: Symbol,
    coverage: Mapping[date, DayCoverage],
    unreadable: Mapping[Month, str] | None = None,
) -> list[PartPlan]:
    kinds = (LEVELS, EVENTS) if request.events else (LEVELS,)
    unreadable = unreadable or {}
    # An M1 part that cannot be read has unknown coverage: its months are in scope, and
    # every part drawing on it is built (and fails, saying why) rather than skipped.
    scope = dict(coverage)
    for month in unreadable:
        scope |= {d: DayCoverage(d, 0, _EPOCH, False) for d in (month.first_day, month.last_day)}
    plans = []
    for month in scope_months(scope, request.first, request.last):
        for profile in request.profiles:
            for kind in kinds:
                plan = plan_part(request, kind, profile, symbol, month, coverage)
                first, last = request.source_days(kind, profile, month)
                if not plan.builds and any(m in unreadable for m in months_between(first, last)):
                    plan = PartPlan(symbol, profile, kind, month, Reason.STALE)
                plans.append(plan)
    return plans


def levels_lake(
    request: LevelsRequest, *, on_event: Callable[[Event], None] = lambda _event: None
) -> LevelsResult:
    """Build the stale and missing parts of every asked symbol and profile; skip the rest."""
    started = clock.monotonic()
    symbols = check_request(request)
    work = []
    for symbol in symbols:
        coverage, unreadable = read_m1_coverage(request.lake, symbol)
        work.append((symbol, plan_symbol(request, symbol, coverage, unreadable), unreadable))
    plans = [p for _, ps, _ in work for p in ps]
    on_event(Planned(sum(p.builds for p in plans), sum(not p.builds for p in plans)))
    built: list[PartBuilt] = []
    failed: list[MonthFailed] = []

    def one_symbol(item: tuple[Symbol, list[PartPlan], Mapping[Month, str]]) -> list[Event]:
        symbol, symbol_plans, unreadable = item
        return list(
            _build_symbol(request, symbol, [p for p in symbol_plans if p.builds], unreadable)
        )

    # Four symbols at a time: while one waits on fsync or Parquet (which release the GIL),
    # another computes. Memory stays that of four symbols, whatever their number.
    pool = ThreadPoolExecutor(max_workers=_THREADS)
    try:
        for events in pool.map(one_symbol, work):
            for event in events:
                on_event(event)
                (built if isinstance(event, PartBuilt) else failed).append(event)  # type: ignore[arg-type]
    finally:
        # On Ctrl-C: symbols not started are dropped; those started finish their part
        # (each part is replaced whole, so stopping anywhere leaves old or new parts).
        pool.shutdown(wait=True, cancel_futures=True)
    skipped = tuple(p for p in plans if not p.builds)
    return LevelsResult(symbols, tuple(built), skipped, tuple(failed), clock.monotonic() - started)


def levels_status(
    lake: Path,
    symbols: list[Symbol],
    profiles: tuple[Profile, ...],
    first: date | None,
    last: date | None,
) -> list[PartPlan]:
    """The levels parts (default settings) missing, stale or unreadable (``plan --levels``)."""
    request = LevelsRequest(lake, profiles, tuple(symbols), first, last, events=False)
    out = []
    for symbol in symbols:
        coverage, _ = read_m1_coverage(lake, symbol)
        out += [
            p
            for p in plan_symbol(request, symbol, coverage)
            if p.builds and p.reason is not Reason.MODE
        ]
    return out


class _M1Cache:
    """The M1 parts of one symbol read so far: rows and, from the same read, coverage (so a
    footer records exactly the coverage of the rows used, even if a run replaces a part)."""

    def __init__(self, lake: Path, symbol: Symbol) -> None:
        self.lake, self.symbol = lake, symbol
        self.parts: dict[Month, tuple[pa.Table, dict[date, DayCoverage]]] = {}

    def load(self, first: date, last: date) -> tuple[pa.Table, dict[date, DayCoverage]]:
        months = months_between(first, last)
        for old in [m for m in self.parts if m < months[0]]:
            del self.parts[old]  # months are built in order: older ones are done with
        tables: list[pa.Table] = []
        coverage: dict[date, DayCoverage] = {}
        for month in months:
            if month not in self.parts:
                path = part_path(self.lake, self.symbol, month)
                if path.is_file():
                    self.parts[month] = store.read_part_columns(path, _COLUMNS)
                else:
                    self.parts[month] = (empty(_BARS), {})
            table, days = self.parts[month]
            tables.append(table)
            coverage |= days
        return pa.concat_tables(tables), coverage


def _build_symbol(
    request: LevelsRequest, symbol: Symbol, todo: list[PartPlan], unreadable: Mapping[Month, str]
):
    by_month: dict[Month, list[PartPlan]] = {}
    for plan in todo:
        by_month.setdefault(plan.month, []).append(plan)
    cache = _M1Cache(request.lake, symbol)
    for month in sorted(by_month):
        try:
            yield from _build_month(request, symbol, month, by_month[month], cache, unreadable)
        except (store.CorruptPart, store.StoreError, OSError) as exc:
            yield MonthFailed(symbol, month, str(exc))


def _build_month(
    request: LevelsRequest,
    symbol: Symbol,
    month: Month,
    plans: list[PartPlan],
    cache: _M1Cache,
    unreadable: Mapping[Month, str],
):
    for profile in request.profiles:
        mine = {p.kind: p for p in plans if p.profile == profile}
        if not mine:
            continue
        first, last = request.source_days(EVENTS if request.events else LEVELS, profile, month)
        bad = [m for m in months_between(first, last) if m in unreadable]
        if bad:
            yield MonthFailed(
                symbol, month, "; ".join(f"M1 part {m} unreadable: {unreadable[m]}" for m in bad)
            )
            continue
        table, coverage = cache.load(first, last)
        bars = Bars.of(table)
        whole = {d for d, c in coverage.items() if c.complete}
        days = month.days()
        levels = compute_levels(bars, str(symbol), profile, days, whole)
        levels = _sessions_recorded(levels, profile, days, coverage)
        written = levels if request.include_partial else levels.filter(levels["complete"])
        for kind, rows in ((LEVELS, written), (EVENTS, None)):
            plan = mine.get(kind)
            if plan is None:
                continue
            if rows is None:
                rows = compute_events(bars, written, profile, request.params, whole)
                if not request.include_partial:
                    rows = rows.filter(rows["complete"])
            # An events part with no event is still written beside levels rows: it records
            # that its sessions were scanned (a rerun then finds it fresh).
            if (
                not rows.num_rows
                and plan.reason is Reason.MISSING
                and (kind == LEVELS or not written.num_rows)
            ):
                yield PartBuilt(plan, 0, None)
                continue
            lo, hi = request.source_days(kind, profile, month)
            record = Provenance(
                kind, month, request.footer_params(profile, kind), source_of(coverage, lo, hi)
            )
            result = store.write_derived(
                request.path(kind, profile, symbol, month),
                rows,
                {LEVELS_PROVENANCE_KEY: record.encode()},
                WRITE_OPTIONS,
            )
            yield PartBuilt(plan, result.rows, result.path)


def _sessions_recorded(
    levels: pa.Table, profile: Profile, days: list[date], coverage: Mapping[date, DayCoverage]
) -> pa.Table:
    """Only the sessions some M1 day of which is recorded (a session of the future, or of
    a span never fetched, has no row even with --include-partial)."""
    kept = []
    for day in days:
        w = session_windows(profile, day, None)
        lo = w.pd.lake_days()[0]
        hi = max(x.lake_days()[1] for x in (w.opening, w.pm or w.opening))
        d = lo
        while d <= hi and d not in coverage:
            d += timedelta(days=1)
        if d <= hi:
            kept.append(day)
    if len(kept) == len(days):
        return levels
    return levels.filter(pc.is_in(levels["session_date"], pa.array(kept, pa.date32())))
