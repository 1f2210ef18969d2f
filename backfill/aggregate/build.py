"""The edge of ``backfill aggregate``: read footers, plan, read M1 parts, bucket, write parts.

Per symbol, months in order: a month of M1 (plus the day before it) is read once and every
timeframe to rebuild for that month is built from it, each from the one before (M1 → M5 →
M15 …): memory holds one month of one symbol at a time.
"""

from __future__ import annotations

import queue
import threading
from collections.abc import Callable, Collection, Generator, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from contextlib import closing
from dataclasses import dataclass, field
from datetime import date, datetime, timedelta
from pathlib import Path

import pyarrow as pa
import pyarrow.compute as pc

from backfill.aggregate import buckets
from backfill.aggregate.planner import (
    Existing,
    PartPlan,
    Reason,
    Unreadable,
    built_from,
    plan_symbol,
)
from backfill.aggregate.provenance import Provenance, source_of
from backfill.aggregate.timeframes import TIMEFRAMES, Timeframe
from backfill.domain import BadInput, DayCoverage, Month, Symbol, check_range, day_start
from backfill.lake import store
from backfill.lake.paths import (
    aggregate_symbols,
    iter_aggregate_parts,
    iter_parts,
    lake_symbols,
    part_path,
    symbol_dir,
)
from backfill.lake.schema import (
    AGGREGATE_SCHEMA,
    BAR_SCHEMA,
    PROVENANCE_KEY,
)

_CONSTANTS = ("source", "market", "symbol", "exchange", "what_to_show")


@dataclass(frozen=True)
class AggregateRequest:
    """What to build: ``symbols`` None means every symbol in the lake; dates are M1 days."""

    lake: Path
    timeframes: tuple[Timeframe, ...]
    symbols: tuple[Symbol, ...] | None = None
    first: date | None = None
    last: date | None = None
    include_partial: bool = False


@dataclass(frozen=True)
class Planned:
    """Event: the plan is made (``builds`` parts to build over ``months`` symbol-months)."""

    builds: int
    months: int
    skipped: int


@dataclass(frozen=True)
class PartBuilt:
    """Event: one part built (``path`` None when it had no bucket and none existed: not written)."""

    plan: PartPlan
    rows: int
    path: Path | None
    removed: bool = False  # the part was removed: built from no M1 day (its M1 parts are gone)


@dataclass(frozen=True)
class MonthFailed:
    """Event: a symbol-month's parts could not be built (an unreadable M1 part, a failed write)."""

    symbol: Symbol
    month: Month
    timeframes: tuple[Timeframe, ...]
    reason: str


Event = Planned | PartBuilt | MonthFailed
Built = PartBuilt | MonthFailed  # what building a part ends in


@dataclass(frozen=True)
class AggregateResult:
    symbols: tuple[Symbol, ...]
    built: tuple[PartBuilt, ...] = ()
    skipped: tuple[PartPlan, ...] = ()
    failed: tuple[MonthFailed, ...] = ()
    elapsed_s: float = 0.0
    notes: tuple[str, ...] = field(default=())

    @property
    def ok(self) -> bool:
        return not self.failed


def check_request(request: AggregateRequest) -> tuple[Symbol, ...]:
    """The symbols to build; BadInput (nothing written) for a missing lake, bad range, or an
    asked symbol with no M1 parts."""
    if request.first is not None and request.last is not None:
        check_range(request.first, request.last)
    if not request.lake.is_dir():
        raise BadInput(f"lake folder {request.lake} does not exist")
    # A symbol whose M1 folder is gone but whose aggregate parts are left: a build removes
    # them (verify calls them orphans and names that build).
    left = aggregate_symbols(request.lake, [tf.name for tf in TIMEFRAMES])
    if request.symbols is None:
        return tuple(sorted({*lake_symbols(request.lake), *left}))
    absent = [
        str(s)
        for s in request.symbols
        if not symbol_dir(request.lake, s).is_dir() and s not in left
    ]
    if absent:
        raise BadInput(f"no M1 data in {request.lake} for {', '.join(absent)}")
    return request.symbols


def aggregate_lake(
    request: AggregateRequest,
    *,
    now: datetime,
    on_event: Callable[[Event], None] = lambda _event: None,
) -> AggregateResult:
    """Build the stale and missing parts of every asked symbol and timeframe; skip the rest."""
    import time

    started = time.monotonic()
    symbols = check_request(request)
    work = [_plan(request, symbol, now) for symbol in symbols]
    builds = [p for plans, _, _ in work for p in plans if p.builds]
    on_event(
        Planned(
            len(builds),
            len({(p.symbol, p.month) for p in builds}),
            sum(not p.builds for plans, _, _ in work for p in plans),
        )
    )
    built: list[PartBuilt] = []
    failed: list[MonthFailed] = []
    skipped = [p for plans, _, _ in work for p in plans if not p.builds]
    jobs = [
        _Job(symbol, todo, coverage_failures)
        for (plans, coverage_failures, _), symbol in zip(work, symbols, strict=True)
        if (todo := [p for p in plans if p.builds])
    ]
    with closing(_build_jobs(request, jobs, now)) as events:  # closed: its threads stop
        for event in events:
            on_event(event)
            if isinstance(event, PartBuilt):
                built.append(event)
            else:
                failed.append(event)
    return AggregateResult(
        symbols, tuple(built), tuple(skipped), tuple(failed), time.monotonic() - started
    )


# ---------------------------------------------------------------- footers and planning


def read_m1_coverage(
    lake: Path, symbol: Symbol
) -> tuple[dict[date, DayCoverage], dict[Month, str]]:
    """Every M1 day's coverage entry of ``symbol`` (footers only), and the unreadable months."""
    coverage: dict[date, DayCoverage] = {}
    unreadable: dict[Month, str] = {}
    for _, month, path in iter_parts(lake, [symbol]):
        try:
            coverage.update(store.read_part_coverage(path))
        except store.CorruptPart as exc:
            unreadable[month] = exc.reason
        except OSError as exc:
            unreadable[month] = str(exc)
    return dict(sorted(coverage.items())), unreadable


def read_provenance(path: Path) -> Existing:
    """An aggregate part's footer record, or why it cannot be trusted."""
    try:
        # The footer alone (a third of read_schema's time: a rerun reads every part's).
        metadata = store.read_footer(path)
        schema = metadata.schema.to_arrow_schema()
    except (OSError, ValueError, pa.ArrowException) as exc:
        return Unreadable(f"unreadable footer: {exc}")
    if not schema.remove_metadata().equals(AGGREGATE_SCHEMA):
        return Unreadable("schema differs from the aggregate schema")
    raw = (metadata.metadata or {}).get(PROVENANCE_KEY)
    if raw is None:
        return Unreadable("no provenance record in the footer")
    try:
        return Provenance.decode(raw)
    except (ValueError, KeyError, TypeError, AttributeError) as exc:
        return Unreadable(f"malformed provenance record: {exc}")


def read_existing(
    lake: Path, symbol: Symbol, timeframes: Sequence[Timeframe]
) -> dict[tuple[Timeframe, Month], Existing]:
    return {
        (tf, month): read_provenance(path)
        for tf in timeframes
        for _, month, path in iter_aggregate_parts(lake, tf.name, [symbol])
    }


def _plan(
    request: AggregateRequest, symbol: Symbol, now: datetime
) -> tuple[list[PartPlan], dict[Month, str], dict[date, DayCoverage]]:
    coverage, unreadable = read_m1_coverage(request.lake, symbol)
    existing = read_existing(request.lake, symbol, request.timeframes)
    plans = plan_symbol(
        symbol,
        request.timeframes,
        coverage,
        existing,
        include_partial=request.include_partial,
        now=now,
        first=request.first,
        last=request.last,
    )
    # A month whose M1 part cannot be read is built by nobody: its coverage is unknown.
    if unreadable:
        plans = [
            PartPlan(p.symbol, p.timeframe, p.month, Reason.STALE)
            if not p.builds and (p.month in unreadable or _prev(p.month) in unreadable)
            else p
            for p in plans
        ]
    return plans, unreadable, coverage


# ---------------------------------------------------------------- building


@dataclass
class _Loaded:
    month: Month
    bars: pa.Table
    coverage: dict[date, DayCoverage]


def _prev(month: Month) -> Month:
    return Month(month.year - 1, 12) if month.month == 1 else Month(month.year, month.month - 1)


# The M1 columns a build reads: the text ones dictionary-encoded (each holds one value a
# part; decoding them to a string a row was most of the read's time).
_READ_COLUMNS = ("ts", "open", "high", "low", "close", "volume", "wap", "bar_count", *_CONSTANTS)
_READ_SCHEMA = pa.schema(
    [
        pa.field(name, pa.dictionary(pa.int32(), pa.string()), nullable=False)
        if name in _CONSTANTS
        else BAR_SCHEMA.field(name)
        for name in _READ_COLUMNS
    ]
)


def _read_m1(lake: Path, symbol: Symbol, month: Month) -> _Loaded:
    """One M1 part's rows and, from the same read, its coverage (so the provenance recorded
    is exactly that of the rows bucketed, even if a run replaces the part meanwhile)."""
    path = part_path(lake, symbol, month)
    if not path.is_file():
        return _Loaded(month, _READ_SCHEMA.empty_table(), {})
    table, coverage = store.read_part_columns(path, _READ_COLUMNS, dictionary=_CONSTANTS)
    if not table.schema.equals(_READ_SCHEMA):  # one schema, so months concatenate
        table = table.cast(_READ_SCHEMA)
    return _Loaded(month, table, coverage)


@dataclass(frozen=True)
class _Job:
    """One symbol's parts to build, and its M1 months that could not be read."""

    symbol: Symbol
    todo: list[PartPlan]
    unreadable: dict[Month, str]


# Symbols built at once, each in its own thread. Most of a build's time is waiting on the
# disk (every part is fsync'ed, then its folder) and in Parquet and numpy code that releases
# the GIL: threads overlap those waits and use both cores, and concurrent fsyncs share the
# file system's journal commits. On 2 cores (20 symbols x 12 months) two were slower, eight
# no faster and 90 MB larger.
BUILD_THREADS = 4


@dataclass(frozen=True)
class _Crashed:
    error: BaseException


_DONE = object()


def _build_jobs(
    request: AggregateRequest, jobs: list[_Job], now: datetime
) -> Generator[Built, None, None]:
    """Every job's events, in job order (as one thread would give them), built in threads.

    Each symbol's parts are built by one thread, in month order, so each part is built as
    it would be alone. Interrupted (or failing), the threads finish the month they are in
    (each part is replaced whole or not at all) and start nothing more.
    """
    if len(jobs) <= 1 or BUILD_THREADS <= 1:
        for job in jobs:
            yield from _build_symbol(request, job, now)
        return
    stop = threading.Event()
    queues: list[queue.SimpleQueue] = [queue.SimpleQueue() for _ in jobs]

    def work(job: _Job, out: queue.SimpleQueue) -> None:
        try:
            for event in _build_symbol(request, job, now, stop):
                out.put(event)
        except BaseException as exc:  # handed to the caller's thread, raised there
            out.put(_Crashed(exc))
        finally:
            out.put(_DONE)

    pool = ThreadPoolExecutor(min(BUILD_THREADS, len(jobs)), thread_name_prefix="aggregate")
    try:
        for job, out in zip(jobs, queues, strict=True):
            pool.submit(work, job, out)
        for out in queues:
            while (item := out.get()) is not _DONE:
                if isinstance(item, _Crashed):
                    raise item.error
                yield item
    finally:
        stop.set()
        pool.shutdown(wait=True, cancel_futures=True)


def _build_symbol(
    request: AggregateRequest,
    job: _Job,
    now: datetime,
    stop: threading.Event | None = None,
) -> Iterator[Built]:
    symbol, unreadable = job.symbol, job.unreadable
    by_month: dict[Month, list[PartPlan]] = {}
    for plan in job.todo:
        by_month.setdefault(plan.month, []).append(plan)
    loaded: _Loaded | None = None
    for month in sorted(by_month):
        if stop is not None and stop.is_set():
            return
        plans = sorted(by_month[month], key=lambda p: p.timeframe)
        timeframes = tuple(p.timeframe for p in plans)
        bad = [m for m in (_prev(month), month) if m in unreadable]
        if bad:
            reason = "; ".join(f"M1 part {m} unreadable: {unreadable[m]}" for m in bad)
            yield MonthFailed(symbol, month, timeframes, reason)
            continue
        try:
            before = (
                loaded
                if loaded is not None and loaded.month == _prev(month)
                else _read_m1(request.lake, symbol, _prev(month))
            )
            loaded = _read_m1(request.lake, symbol, month)
        except (store.CorruptPart, OSError) as exc:
            loaded = None
            yield MonthFailed(symbol, month, timeframes, f"cannot read M1: {exc}")
            continue
        foreign = _foreign_labels(symbol, before, loaded)
        if foreign:
            # Bucketed, they would be written as this symbol's bars (or with another's label).
            yield MonthFailed(symbol, month, timeframes, foreign)
            continue
        try:
            yield from _build_month(request, symbol, month, plans, before, loaded, now)
        except (store.StoreError, OSError) as exc:
            yield MonthFailed(symbol, month, timeframes, f"cannot write: {exc}")


def _foreign_labels(symbol: Symbol, *months: _Loaded) -> str | None:
    """Why M1 rows of ``symbol``'s folder cannot be bucketed as its bars, if they cannot."""
    for loaded in months:
        labels = set(pc.unique(loaded.bars["symbol"]).to_pylist()) - {str(symbol)}
        if labels:
            return (
                f"M1 part {loaded.month} holds rows labelled {', '.join(sorted(labels))}, "
                f"not {symbol} (verify reports it as partition): not aggregated"
            )
    return None


def _build_month(
    request: AggregateRequest,
    symbol: Symbol,
    month: Month,
    plans: list[PartPlan],
    before: _Loaded,
    current: _Loaded,
    now: datetime,
) -> Iterator[Built]:
    start = day_start(month.first_day)
    stop = day_start(month.next.first_day)
    tail_from = buckets._us(start - timedelta(days=1))
    tail = before.bars.filter(pc.greater_equal(pc.cast(before.bars["ts"], pa.int64()), tail_from))
    bars = pa.concat_tables([tail, current.bars]) if tail.num_rows else current.bars
    coverage = source_of({**before.coverage, **current.coverage}, month)
    whole = [d for d, c in coverage.items() if c.complete]
    constants = {name: bars[name][0].as_py() for name in _CONSTANTS} if bars.num_rows else {}
    sums = buckets.to_sums(bars)
    wanted = {plan.timeframe: plan for plan in plans}
    for tf in _chain(wanted):
        # Each timeframe from the previous one (widths divide): one pass over the minutes.
        # Always the whole chain, whichever of it this build writes: float sums grouped
        # otherwise (M1 → H4 instead of M1 → M5 → … → H4) differ in the last bits, and a
        # part must not depend on which other parts were fresh (another build at once,
        # an earlier --tf).
        sums = buckets.rebucket(sums, tf)
        plan = wanted.get(tf)
        if plan is None:
            continue
        month_sums = buckets.in_span(sums, start, stop)
        ends = month_sums["ts"]
        mask = buckets.complete_mask(ends, tf, whole, now)
        table = buckets.finish(month_sums, mask, constants, include_partial=request.include_partial)
        if not table.num_rows and plan.reason is Reason.MISSING:
            yield PartBuilt(plan, 0, None)  # nothing to write, and nothing there to replace
            continue
        if not table.num_rows and not coverage:
            # Built from no M1 day at all (its M1 parts are gone): the part goes too.
            removed = store.remove_aggregate(request.lake, symbol, tf.name, month)
            yield PartBuilt(plan, 0, None, removed)
            continue
        pending = buckets.held_back(ends, tf, whole, now)
        provenance = built_from(
            tf,
            month,
            coverage,
            include_partial=request.include_partial,
            held_back=() if pending is None else (pending,),
        )
        written = store.write_aggregate(
            request.lake, symbol, tf.name, month, table, provenance.encode()
        )
        yield PartBuilt(plan, written.rows, written.path)


def _chain(wanted: Collection[Timeframe]) -> tuple[Timeframe, ...]:
    """Every timeframe up to the widest wanted, in order: the one way each is summed."""
    widest = max(wanted)
    return tuple(tf for tf in TIMEFRAMES if tf <= widest)


def aggregate_status(
    lake: Path,
    symbols: Sequence[Symbol],
    timeframes: Sequence[Timeframe],
    first: date | None,
    last: date | None,
    now: datetime,
) -> tuple[PartPlan, ...]:
    """The aggregate parts that are missing, stale or unreadable (footers only; ``plan --tf``)."""
    out: list[PartPlan] = []
    for symbol in symbols:
        coverage, _ = read_m1_coverage(lake, symbol)
        existing = read_existing(lake, symbol, timeframes)
        plans = plan_symbol(
            symbol,
            timeframes,
            coverage,
            existing,
            include_partial=False,
            now=now,
            first=first,
            last=last,
        )
        # Whether partial buckets are wanted is the builder's choice, not staleness.
        out += [p for p in plans if p.builds and p.reason is not Reason.MODE]
    return tuple(out)
