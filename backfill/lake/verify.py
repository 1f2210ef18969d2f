"""``backfill verify``: check every part of the lake against the data contract.

The checks are pure (``check_part``, ``unfetched_runs``: tables and values in, findings out).
``verify_stream`` reads the lake one part at a time and yields findings as it finds them, and
each symbol's summary after its findings, so memory does not grow with the lake;
``verify_lake`` collects that stream into a ``VerifyReport`` (for small lakes and tests).

A finding names at most ``MAX_RANGES`` runs of minutes unless asked for every one
(``gaps=True``, ``verify --gaps``); it always says how many there are in full. Minutes
without a bar make one warning per symbol (its first runs, per day the counts), or with
``gaps=True`` one per day naming every run.
The ``--json`` document (version 2; keys may come in any order, the CLI writes
``findings`` before the totals so it never holds them)::

    {"version": 2, "lake": "/abs/lake", "from": "2025-07-01" | null, "to": ... | null,
     "ok": bool, "errors": int, "warnings": int, "parts": int,
     "symbols": [{"symbol", "from", "to", "parts", "days", "days_complete", "days_partial",
                  "days_missing", "days_no_data", "days_before_listing", "head", "rows",
                  "gaps", "gap_minutes", "gap_days", "errors", "warnings"}],
     "findings": [{"severity": "error" | "warning", "kind", "symbol", "path", "day",
                   "detail", "minutes": [[first, last], ...], "ranges_total": int,
                   "minutes_total": int, "truncated": bool,
                   "days": [{"day", "gap_minutes", "gaps"}]  # a symbol's gap warning only
                  }]}

Dates are ISO days; ``from``/``to`` per symbol are the range checked (null: nothing to check);
``path`` is relative to the lake; ``minutes`` are inclusive runs of bar-end timestamps (ISO),
the first few of ``ranges_total`` runs (``minutes_total`` minutes in all) when ``truncated``.
Version 1 listed every run and had no ``ranges_total``/``minutes_total``/``truncated``.
"""

from __future__ import annotations

import bisect
import shlex
from collections import deque
from collections.abc import Iterable, Iterator, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import date, datetime, timedelta
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from backfill.aggregate.timeframes import BY_NAME
from backfill.domain import (
    MARKET,
    MINUTES_PER_DAY,
    SOURCE,
    UTC,
    BadInput,
    DayCoverage,
    Month,
    Symbol,
    check_range,
    day_ranges,
    iso_day,
    missing_minute_ranges,
)
from backfill.lake.edge_check import EdgeDay, EdgeThresholds, edge_days, edge_losses
from backfill.lake.heads import listing_days, read_heads
from backfill.lake.lakeio import refuse_special
from backfill.lake.minute_check import MinuteCheckThresholds, MinuteTally, missing_every_day
from backfill.lake.objpath import arrow_source, listed_once, walk_lake_files
from backfill.lake.paths import (
    dataset_root,
    is_quarantined,
    is_temp,
    lake_symbols,
    locate,
    readers_of,
    relative,
    symbol_dir,
)
from backfill.lake.schema import (
    BAR_SCHEMA,
    COVERAGE_KEY,
    TS_TYPE,
    NonConforming,
    castable_type,
    conform,
    conformance,
    decode_coverage,
)
from backfill.lake.storage import StorageError
from backfill.lake.store import rows_per_day
from backfill.lake.verify_aggregates import verify_aggregates
from backfill.lake.verify_findings import (
    EPOCH,
    MAX_RANGES,
    DayGaps,
    Finding,
    Kind,
    MinuteRange,
    MinuteRun,
    Severity,
    finding,
)
from backfill.lake.verify_levels import verify_levels

JSON_VERSION = 2
_US_PER_MINUTE = 60_000_000
_EPOCH_DAY = date(1970, 1, 1).toordinal()
_PRICE_COLUMNS = ("open", "high", "low", "close", "wap", "volume")


@dataclass(frozen=True)
class PartCheck:
    """What checking one part found, plus the figures the summary needs."""

    findings: tuple[Finding, ...]
    coverage: dict[date, DayCoverage] = field(default_factory=dict)
    rows_per_day: dict[date, int] = field(default_factory=dict)


@dataclass(frozen=True)
class SymbolSummary:
    """One symbol's line in the report; ``first``/``last`` is the range checked, if any."""

    symbol: Symbol
    first: date | None
    last: date | None
    parts: int
    days: int
    days_complete: int
    days_partial: int
    days_missing: int
    rows: int
    gaps: int
    gap_minutes: int
    errors: int
    warnings: int
    gap_days: int = 0
    days_no_data: int = 0  # complete days empty because IB said it had no data
    # Days of the range before the symbol's recorded head (its listing), judged as run does:
    # never asked, so not missing; ``head`` is that head's day.
    days_before_listing: int = 0
    head: date | None = None


@dataclass(frozen=True)
class AggregatesChecked:
    """How many aggregate parts (M5 … D1) were checked; their findings follow."""

    parts: int


Item = Finding | SymbolSummary | AggregatesChecked  # what verify_stream yields


@dataclass
class Tally:
    """Running totals over a verify stream: all a report needs besides the findings."""

    lake: Path
    first: date | None
    last: date | None
    parts: int = 0
    errors: int = 0
    warnings: int = 0
    symbols: list[SymbolSummary] = field(default_factory=list)

    def add(self, item: Item) -> Item:
        if isinstance(item, SymbolSummary):
            self.symbols.append(item)
            self.parts += item.parts
        elif isinstance(item, AggregatesChecked):
            self.parts += item.parts
        elif item.severity is Severity.ERROR:
            self.errors += 1
        else:
            self.warnings += 1
        return item

    @property
    def ok(self) -> bool:
        return self.errors == 0

    def head_json(self) -> dict[str, Any]:
        return {
            "version": JSON_VERSION,
            "lake": str(self.lake.resolve()),
            "from": iso_day(self.first),
            "to": iso_day(self.last),
        }

    def totals_json(self) -> dict[str, Any]:
        return {
            "ok": self.ok,
            "errors": self.errors,
            "warnings": self.warnings,
            "parts": self.parts,
            "symbols": [symbol_json(s) for s in self.symbols],
        }


@dataclass(frozen=True)
class VerifyReport:
    lake: Path
    first: date | None
    last: date | None
    parts: int
    symbols: tuple[SymbolSummary, ...]
    findings: tuple[Finding, ...]

    @property
    def errors(self) -> int:
        return sum(f.severity is Severity.ERROR for f in self.findings)

    @property
    def warnings(self) -> int:
        return sum(f.severity is Severity.WARNING for f in self.findings)

    @property
    def ok(self) -> bool:
        return self.errors == 0

    def relative(self, path: Path | None) -> str | None:
        return relative(self.lake, path)

    def to_json(self) -> dict[str, Any]:
        """The ``--json`` document; its shape is documented in this module's docstring."""
        tally = Tally(self.lake, self.first, self.last)
        items: tuple[Item, ...] = (*self.findings, *self.symbols)
        for item in items:
            tally.add(item)
        tally.parts = self.parts  # aggregate parts included
        return {
            **tally.head_json(),
            **tally.totals_json(),
            "findings": [finding_json(self.lake, f) for f in self.findings],
        }


def symbol_json(s: SymbolSummary) -> dict[str, Any]:
    return {
        "symbol": str(s.symbol),
        "from": iso_day(s.first),
        "to": iso_day(s.last),
        "parts": s.parts,
        "days": s.days,
        "days_complete": s.days_complete,
        "days_partial": s.days_partial,
        "days_missing": s.days_missing,
        "days_no_data": s.days_no_data,
        "days_before_listing": s.days_before_listing,
        "head": iso_day(s.head),
        "rows": s.rows,
        "gaps": s.gaps,
        "gap_minutes": s.gap_minutes,
        "gap_days": s.gap_days,
        "errors": s.errors,
        "warnings": s.warnings,
    }


def finding_json(lake: Path, f: Finding) -> dict[str, Any]:
    document: dict[str, Any] = {
        "severity": f.severity.value,
        "kind": f.kind.value,
        "symbol": None if f.symbol is None else str(f.symbol),
        "path": relative(lake, f.path),
        "day": iso_day(f.day),
        "detail": f.detail,
        "minutes": [[a.isoformat(), b.isoformat()] for a, b in f.minutes],
        "ranges_total": f.ranges_total,
        "minutes_total": f.minutes_total,
        "truncated": f.truncated,
    }
    if f.days:
        document["days"] = [
            {"day": d.day.isoformat(), "gap_minutes": d.gap_minutes, "gaps": d.gaps} for d in f.days
        ]
    return document


# ---------------------------------------------------------------- pure checks


def day_of_minute(minute: int) -> date:
    return date.fromordinal(_EPOCH_DAY + minute // MINUTES_PER_DAY)


def first_minute_of(day: date) -> int:
    return (day.toordinal() - _EPOCH_DAY) * MINUTES_PER_DAY


def minute_runs_by_day(minutes: Iterable[int]) -> dict[date, list[tuple[int, int]]]:
    """Collapse minute numbers into inclusive runs of consecutive minutes, split by UTC day."""
    runs: dict[date, list[tuple[int, int]]] = {}
    start = prev = None
    for minute in sorted(set(minutes)):
        if prev is not None and minute == prev + 1 and minute % MINUTES_PER_DAY:
            prev = minute
            continue
        if start is not None and prev is not None:
            runs.setdefault(day_of_minute(start), []).append((start, prev))
        start = prev = minute
    if start is not None and prev is not None:
        runs.setdefault(day_of_minute(start), []).append((start, prev))
    return runs


def unfetched_runs(coverage: Iterable[date], first: date, last: date) -> list[tuple[date, date]]:
    """Runs of days in ``[first, last]`` that no coverage record mentions."""
    fetched = set(coverage)
    span = (last - first).days + 1
    missing = (first + timedelta(days=i) for i in range(span))
    return day_ranges(d for d in missing if d not in fetched)


def _count(mask: pa.Array | pa.ChunkedArray) -> int:
    return int(pc.sum(mask).as_py() or 0)


@dataclass(frozen=True)
class _Part:
    """Where a part sits, for the findings about it, and how many runs a finding names."""

    symbol: Symbol
    month: Month
    path: Path
    max_ranges: int | None = MAX_RANGES

    def finding(
        self,
        severity: Severity,
        kind: Kind,
        detail: str,
        day: date | None = None,
        runs: Sequence[MinuteRun] = (),
    ) -> Finding:
        return finding(severity, kind, self.symbol, self.path, day, detail, runs, self.max_ranges)

    def error(
        self, kind: Kind, detail: str, day: date | None = None, runs: Sequence[MinuteRun] = ()
    ) -> Finding:
        return self.finding(Severity.ERROR, kind, detail, day, runs)

    def warning(
        self, kind: Kind, detail: str, day: date | None = None, runs: Sequence[MinuteRun] = ()
    ) -> Finding:
        return self.finding(Severity.WARNING, kind, detail, day, runs)

    def per_day(self, kind: Kind, what: str, ts_us: Iterable[int]) -> list[Finding]:
        """One error per day naming the minutes (bar ends) of the offending rows."""
        by_day = minute_runs_by_day(ts // _US_PER_MINUTE for ts in ts_us)
        out = []
        for day, runs in sorted(by_day.items()):
            count = sum(b - a + 1 for a, b in runs)
            out.append(self.error(kind, f"{what} on {count} minute(s)", day, runs))
        return out


def check_part(
    table: pa.Table,
    symbol: Symbol,
    month: Month,
    path: Path,
    first: date | None = None,
    last: date | None = None,
    max_ranges: int | None = MAX_RANGES,
) -> PartCheck:
    """Every contract check on one part's rows and footer; gaps only for days in [first, last]."""
    part = _Part(symbol, month, path, max_ranges)
    findings: list[Finding] = []
    table = _check_schema(part, table, findings).combine_chunks()
    usable = table.column_names
    findings += _check_nulls(part, table)
    if "ts" not in usable:
        return PartCheck(tuple(findings))
    table = table.filter(pc.is_valid(table["ts"])).combine_chunks()
    ts = table["ts"].combine_chunks()
    ts_us = ts.cast(pa.int64())
    findings += _check_order(part, ts_us)
    in_month, aligned = _check_ts_values(part, ts, ts_us, findings)
    findings += _check_prices(part, table, ts_us)
    findings += _check_partition(part, table, ts_us)
    present_us = pc.unique(ts_us.filter(pc.and_(in_month, aligned))).sort().to_pylist()
    per_day = rows_per_day(table.select(["ts"]).filter(in_month))
    coverage = _check_coverage(part, table.schema, per_day, ts_us.filter(in_month), findings)
    _check_gaps(part, coverage, present_us, first, last, findings)
    return PartCheck(tuple(findings), coverage, per_day)


def _check_schema(part: _Part, table: pa.Table, findings: list[Finding]) -> pa.Table:
    """Report schema drift (``conformance``, the rule every reader applies); return the
    contract columns present whose type casts to the contract's, cast to it."""
    verdict = conformance(table.schema)
    if verdict.exact:
        return table
    if verdict.castable:
        try:
            cast = conform(table)
        except NonConforming:
            pass  # nulls (reported as such below) or a lossy cast (reported per column)
        else:
            findings.append(
                part.error(
                    Kind.SCHEMA_VARIANT,
                    f"schema is a variant of the contract ({verdict.variant}): readers cast it; "
                    "the next write to this month stores it in the contract's schema",
                )
            )
            return cast
    else:
        findings.append(part.error(Kind.SCHEMA, verdict.problem or ""))
    names = table.schema.names
    columns, fields = [], []
    for expected in BAR_SCHEMA:
        if expected.name not in names:
            continue
        column = table[expected.name]
        if not castable_type(column.type, expected.type):
            continue  # named in the SCHEMA finding
        try:
            column = column.cast(expected.type, safe=True)
        except (pa.ArrowInvalid, pa.ArrowNotImplementedError) as exc:
            if verdict.castable:
                findings.append(part.error(Kind.SCHEMA, f"column {expected.name!r}: {exc}"))
            continue
        columns.append(column)
        fields.append(expected.with_nullable(True))
    return pa.Table.from_arrays(columns, schema=pa.schema(fields, table.schema.metadata))


def _check_nulls(part: _Part, table: pa.Table) -> list[Finding]:
    nulls = {name: table[name].null_count for name in table.column_names}
    if not any(nulls.values()):
        return []
    shown = ", ".join(f"{name}: {n}" for name, n in nulls.items() if n)
    return [part.error(Kind.NULLS, f"null values ({shown})")]


def _check_order(part: _Part, ts_us: pa.Array) -> list[Finding]:
    if len(ts_us) < 2:
        return []
    steps = pc.pairwise_diff(ts_us)[1:]
    findings = []
    backwards = pc.less(steps, 0)
    if _count(backwards):
        # Name the rows that come after a later timestamp.
        offending = ts_us[1:].filter(backwards).to_pylist()
        findings += part.per_day(Kind.TS_UNSORTED, "ts goes backwards", offending)
    ordered = ts_us.sort()
    repeats = pc.equal(pc.pairwise_diff(ordered)[1:], 0)
    if _count(repeats):
        repeated = ordered[1:].filter(repeats).to_pylist()
        findings += part.per_day(Kind.TS_DUPLICATE, "duplicate ts", repeated)
    return findings


def _check_ts_values(
    part: _Part, ts: pa.Array, ts_us: pa.Array, findings: list[Finding]
) -> tuple[pa.Array, pa.Array]:
    start = (first_minute_of(part.month.first_day)) * _US_PER_MINUTE
    stop = (first_minute_of(part.month.next.first_day)) * _US_PER_MINUTE
    in_month = pc.and_(pc.greater_equal(ts_us, start), pc.less(ts_us, stop))
    aligned = pc.equal(pc.floor_temporal(ts, unit="minute"), ts)
    outside = pc.invert(in_month)
    if _count(outside):
        findings += part.per_day(
            Kind.TS_OUTSIDE_MONTH, f"ts outside {part.month}", ts_us.filter(outside).to_pylist()
        )
    misaligned = pc.invert(aligned)
    if _count(misaligned):
        findings += part.per_day(
            Kind.TS_NOT_MINUTE, "ts not on a whole minute", ts_us.filter(misaligned).to_pylist()
        )
    return in_month, aligned


def _check_prices(part: _Part, table: pa.Table, ts_us: pa.Array) -> list[Finding]:
    findings = []
    names = set(table.column_names)
    finite = pa.array([True] * table.num_rows, pa.bool_())
    for name in _PRICE_COLUMNS:
        if name in names:
            finite = pc.and_(finite, pc.fill_null(pc.is_finite(table[name]), True))
    if _count(pc.invert(finite)):
        bad_columns = [
            n for n in _PRICE_COLUMNS
            if n in names and _count(pc.invert(pc.fill_null(pc.is_finite(table[n]), True)))
        ]  # fmt: skip
        findings += part.per_day(
            Kind.NOT_FINITE,
            f"NaN or infinite {', '.join(bad_columns)}",
            ts_us.filter(pc.invert(finite)).to_pylist(),
        )
    # Rows with a non-finite value are reported above, once, not again as broken OHLC.
    if {"open", "high", "low", "close"} <= names:
        o, h, low, c = (table[n] for n in ("open", "high", "low", "close"))
        sane = pc.and_kleene(
            pc.and_kleene(pc.less_equal(low, o), pc.less_equal(low, c)),
            pc.and_kleene(pc.less_equal(o, h), pc.less_equal(c, h)),
        )
        bad = pc.and_(pc.invert(pc.fill_null(sane, True)), finite)
        if _count(bad):
            findings += part.per_day(
                Kind.OHLC, "low <= open, close <= high broken", ts_us.filter(bad).to_pylist()
            )
    if "volume" in names:
        bad = pc.fill_null(pc.less(table["volume"], 0), False)
        if _count(bad):
            findings += part.per_day(
                Kind.NEGATIVE_VOLUME, "negative volume", ts_us.filter(bad).to_pylist()
            )
    return findings


def _check_partition(part: _Part, table: pa.Table, ts_us: pa.Array) -> list[Finding]:
    findings = []
    for name, expected in (("source", SOURCE), ("market", MARKET), ("symbol", str(part.symbol))):
        if name not in table.column_names:
            continue
        bad = pc.invert(pc.fill_null(pc.equal(table[name], expected), True))
        if _count(bad):
            values = sorted(set(table[name].filter(bad).to_pylist()))
            findings += part.per_day(
                Kind.PARTITION,
                f"{name} is {values}, the path says {expected!r}",
                ts_us.filter(bad).to_pylist(),
            )
    for name in ("exchange", "what_to_show"):
        if name in table.column_names and pc.count_distinct(table[name]).as_py() > 1:
            values = sorted(pc.unique(table[name]).drop_null().to_pylist())
            findings.append(part.error(Kind.NOT_CONSTANT, f"{name} takes several values {values}"))
    return findings


def _check_coverage(
    part: _Part,
    schema: pa.Schema,
    per_day: dict[date, int],
    ts_us: pa.Array,
    findings: list[Finding],
) -> dict[date, DayCoverage]:
    raw = (schema.metadata or {}).get(COVERAGE_KEY)
    if raw is None:
        findings.append(part.error(Kind.COVERAGE_MISSING, "no coverage record in the footer"))
        return {}
    try:
        coverage = decode_coverage(raw)
    except (ValueError, KeyError, TypeError, AttributeError) as exc:
        findings.append(part.error(Kind.COVERAGE_MALFORMED, f"coverage record unreadable: {exc}"))
        return {}
    for day, record in sorted(coverage.items()):
        if Month.of(day) != part.month:
            findings.append(
                part.error(
                    Kind.COVERAGE_OUTSIDE_MONTH, f"coverage lists a day outside {part.month}", day
                )
            )
        elif record.rows != per_day.get(day, 0):
            findings.append(
                part.error(
                    Kind.COVERAGE_ROWS,
                    f"coverage says {record.rows} rows, the part has {per_day.get(day, 0)}",
                    day,
                )
            )
    uncovered = {day for day in per_day if day not in coverage}
    if uncovered:
        day_index = pc.divide(ts_us, _US_PER_MINUTE * MINUTES_PER_DAY)
        wanted = pa.array([d.toordinal() - _EPOCH_DAY for d in uncovered], pa.int64())
        offending = ts_us.filter(pc.is_in(day_index, value_set=wanted)).to_pylist()
        findings += part.per_day(Kind.UNCOVERED_ROWS, "rows on a day the coverage omits", offending)
    return coverage


def _check_gaps(
    part: _Part,
    coverage: dict[date, DayCoverage],
    present_us: list[int],
    first: date | None,
    last: date | None,
    findings: list[Finding],
) -> None:
    """A gap warning for each fetched day in range with minutes without a bar.

    ``present_us`` are the part's sorted, unique, minute-aligned bar ends (microseconds).
    """
    for day, record in sorted(coverage.items()):
        if Month.of(day) != part.month or (first and day < first) or (last and day > last):
            continue
        start_us = first_minute_of(day) * _US_PER_MINUTE
        stop_us = start_us + MINUTES_PER_DAY * _US_PER_MINUTE
        if not record.complete:
            # Only minutes that had ended when the day was fetched are expected.
            fetched_minute = int((record.fetched_at - EPOCH).total_seconds() // 60)
            stop_us = min(stop_us, fetched_minute * _US_PER_MINUTE)
            findings.append(
                part.warning(
                    Kind.PARTIAL_DAY,
                    f"fetched while the day was running ({record.fetched_at.isoformat()}): "
                    "fetch it again",
                    day,
                )
            )
        if record.rows == 0 and record.complete:
            why = "IB said it has no data" if record.no_data else "fetched, no bars at all"
            findings.append(part.warning(Kind.EMPTY_DAY, why, day))
            continue
        lo = bisect.bisect_left(present_us, start_us)
        hi = bisect.bisect_left(present_us, stop_us, lo)
        gaps = [
            (a // _US_PER_MINUTE, b // _US_PER_MINUTE)
            for a, b in missing_minute_ranges(present_us[lo:hi], start_us, stop_us)
        ]
        missing = sum(b - a + 1 for a, b in gaps)
        if gaps:
            findings.append(
                part.warning(
                    Kind.GAP,
                    f"{missing} minute(s) without a bar in {len(gaps)} range(s)",
                    day,
                    gaps,
                )
            )


# ---------------------------------------------------------------- reading the lake


def verify_lake(
    lake: Path,
    symbols: Sequence[Symbol] | None = None,
    first: date | None = None,
    last: date | None = None,
    gaps: bool = False,
    minute_thresholds: MinuteCheckThresholds | None = None,
) -> VerifyReport:
    """Check every part in scope and collect the findings; see ``verify_stream``."""
    stream = verify_stream(lake, symbols, first, last, gaps, minute_thresholds)
    tally = Tally(lake, first, last)
    findings = [item for item in map(tally.add, stream) if isinstance(item, Finding)]
    return VerifyReport(lake, first, last, tally.parts, tuple(tally.symbols), tuple(findings))


def verify_stream(
    lake: Path,
    symbols: Sequence[Symbol] | None = None,
    first: date | None = None,
    last: date | None = None,
    gaps: bool = False,
    minute_thresholds: MinuteCheckThresholds | None = None,
    today: date | None = None,
) -> Iterator[Item]:
    """Findings as they are found, one part at a time; each symbol's summary after its findings.

    Default range per symbol: the span of its coverage. The range is judged as ``run`` asks
    it: days before a symbol's head recorded in ``_gateway/heads.json`` (before listing) and
    days after ``today`` (default: today, UTC) are not missing. Minutes without a bar make
    one ``gap`` warning per symbol (its first ranges, and per day the counts); ``gaps=True``
    makes one per day instead, and every finding then names every range. Raises
    ``BadInput`` (at once, not when iterated) for a missing lake folder or ``first`` after
    ``last``; never writes.
    """
    if not lake.is_dir():
        what = "is not a folder" if lake.exists() else "does not exist"
        raise BadInput(f"lake folder {lake} {what}")
    if first is not None and last is not None:
        check_range(first, last)
    return _stream(
        lake,
        symbols,
        first,
        last,
        gaps,
        minute_thresholds or MinuteCheckThresholds(),
        today or datetime.now(UTC).date(),
    )


def _stream(
    lake: Path,
    symbols: Sequence[Symbol] | None,
    first: date | None,
    last: date | None,
    gaps: bool,
    minute_thresholds: MinuteCheckThresholds,
    today: date,
) -> Iterator[Item]:
    with listed_once(lake):  # an object store lake: one listing, not one per folder
        listing = listing_days(read_heads(lake))
        yield from _strays_outside_symbols(lake)
        asked = symbols is not None
        chosen = list(symbols) if symbols is not None else lake_symbols(lake)
        parts = 0
        for symbol in chosen:
            judged = (listing.get(symbol), today)
            for item in _verify_symbol(
                lake, symbol, first, last, asked, gaps, minute_thresholds, judged
            ):
                if isinstance(item, SymbolSummary):
                    parts += item.parts
                yield item
        aggregate_parts, aggregate_findings = verify_aggregates(
            lake, chosen, first, last, orphans=not asked
        )
        yield AggregatesChecked(aggregate_parts)
        yield from aggregate_findings
        parts += aggregate_parts
        levels_parts, levels_findings = verify_levels(lake, chosen, first, last)
        yield AggregatesChecked(levels_parts)
        yield from levels_findings
        parts += levels_parts
    if parts == 0:
        yield Finding(
            Severity.WARNING, Kind.NO_PARTS, None, None, None,
            f"no parts found in {lake}{' for the symbols asked' if asked else ''}: "
            "nothing was checked (is --lake the right folder?)",
        )  # fmt: skip


def _in_scope(month: Month, first: date | None, last: date | None) -> bool:
    return (first is None or month.last_day >= first) and (last is None or month.first_day <= last)


@dataclass(frozen=True)
class _SymbolFiles:
    """What lies in one symbol's folder: its parts, and the files around them."""

    parts: list[tuple[Month, Path]]
    others: list[Finding]  # stray files (errors), quarantined parts and stale temps (warnings)


def _stray(lake: Path, symbol: Symbol | None, path: Path) -> Finding | None:
    readers = readers_of(lake, path)
    if readers is None:
        return None
    return Finding(
        Severity.ERROR, Kind.STRAY_FILE, symbol, path, None,
        f"not a part, yet {readers} read it with the parts: move it out of data/",
    )  # fmt: skip


def _symbol_files(
    lake: Path, symbol: Symbol, first: date | None, last: date | None
) -> _SymbolFiles:
    parts: list[tuple[Month, Path]] = []
    others: list[Finding] = []
    for path in walk_lake_files(symbol_dir(lake, symbol)):
        place = locate(lake, path)
        if place.month is not None and not _in_scope(place.month, first, last):
            continue
        if place.part and place.month is not None:
            parts.append((place.month, path))
        elif is_quarantined(path):
            others.append(
                Finding(
                    Severity.WARNING, Kind.QUARANTINED, symbol, path, None,
                    "an unreadable part was moved aside here: look at it, then delete it",
                )
            )  # fmt: skip
        elif is_temp(path):
            others.append(
                Finding(
                    Severity.WARNING, Kind.STALE_TEMP, symbol, path, None,
                    "temp file of an interrupted write (the next write removes it)",
                )
            )  # fmt: skip
        elif (stray := _stray(lake, symbol, path)) is not None:
            others.append(stray)
    return _SymbolFiles(sorted(parts), others)


def _strays_outside_symbols(lake: Path) -> Iterator[Finding]:
    """Files readers would read that lie outside every well-named M1 symbol folder and are
    not aggregate parts (``verify_aggregates`` checks those)."""
    symbol_dirs = {symbol_dir(lake, s) for s in lake_symbols(lake)}
    for path in walk_lake_files(dataset_root(lake), skip=symbol_dirs):
        names = path.relative_to(dataset_root(lake)).parts
        timeframe = names[2].removeprefix("timeframe=") if len(names) > 2 else ""
        place = locate(lake, path, timeframe) if timeframe in BY_NAME else None
        if place is not None and place.part:
            continue
        stray = _stray(lake, None if place is None else place.symbol, path)
        if stray is not None:
            yield stray


@dataclass
class _GapTally:
    """One symbol's minutes without a bar, summed up: its first runs and per day the counts."""

    symbol: Symbol
    first_runs: list[MinuteRange] = field(default_factory=list)
    days: list[DayGaps] = field(default_factory=list)
    ranges: int = 0
    minutes: int = 0

    def add(self, gap: Finding) -> None:
        assert gap.day is not None
        self.first_runs += gap.minutes[: MAX_RANGES - len(self.first_runs)]
        self.days.append(DayGaps(gap.day, gap.minutes_total, gap.ranges_total))
        self.ranges += gap.ranges_total
        self.minutes += gap.minutes_total

    def finding(self) -> Finding | None:
        if not self.days:
            return None
        return Finding(
            Severity.WARNING, Kind.GAP, self.symbol, None, None,
            f"{self.minutes} minute(s) without a bar in {self.ranges} range(s) on "
            f"{len(self.days)} day(s)",
            tuple(self.first_runs), self.ranges, self.minutes, tuple(self.days),
        )  # fmt: skip


_READ_AHEAD = 4  # parts read while one is checked: overlaps reading with checking, bounded


def _read(path: Path) -> pa.Table | Exception:
    try:
        refuse_special(path)  # a FIFO blocks; asked just before the read, not by the walk
        return pq.ParquetFile(arrow_source(path)).read()
    except (OSError, ValueError, pa.ArrowException, StorageError) as exc:
        return exc


def _read_ahead(
    parts: Sequence[tuple[Month, Path]],
) -> Iterator[tuple[Month, Path, pa.Table | Exception]]:
    """Each part's table in order, the next few read by threads meanwhile (Arrow lets go of
    the GIL while it reads and decodes)."""
    with ThreadPoolExecutor(max_workers=2) as pool:
        pending: deque[tuple[Month, Path, Future[pa.Table | Exception]]] = deque()
        for month, path in parts:
            pending.append((month, path, pool.submit(_read, path)))
            if len(pending) > _READ_AHEAD:
                month_, path_, future = pending.popleft()
                yield month_, path_, future.result()
        while pending:
            month_, path_, future = pending.popleft()
            yield month_, path_, future.result()


def _rows_in(rows: dict[date, int], first: date | None, last: date | None) -> int:
    if first is None or last is None:
        return 0
    return sum(n for day, n in rows.items() if first <= day <= last)


def _verify_symbol(
    lake: Path,
    symbol: Symbol,
    first: date | None,
    last: date | None,
    asked: bool,
    every_gap: bool,
    minute_thresholds: MinuteCheckThresholds,
    judged: tuple[date | None, date] = (None, date.max),
) -> Iterator[Item]:
    """``judged``: the symbol's listing day (its head, if recorded) and today."""
    files = _symbol_files(lake, symbol, first, last)
    max_ranges = None if every_gap else MAX_RANGES
    errors = warnings = 0

    def counted(found: Finding) -> Finding:
        nonlocal errors, warnings
        if found.severity is Severity.ERROR:
            errors += 1
        else:
            warnings += 1
        return found

    yield from map(counted, files.others)
    # Per day of this symbol only (never its rows or findings): bounded by its span. Days
    # outside the span that --from/--to leave open cannot be (it is the coverage's span).
    coverage: dict[date, DayCoverage] = {}
    rows: dict[date, int] = {}
    gap_tally = _GapTally(symbol)
    minute_tally = MinuteTally()  # a minute of the day missing every day (minute_check)
    edges: list[EdgeDay] = []  # a day's first/last bar missing on a pattern (edge_check)
    for month, path, table in _read_ahead(files.parts):
        if isinstance(table, Exception):
            yield counted(
                Finding(
                    Severity.ERROR, Kind.UNREADABLE, symbol, path, None, f"cannot read: {table}"
                )
            )
            continue
        result = check_part(table, symbol, month, path, first, last, max_ranges)
        whole = _tally_minutes(minute_tally, table, result.coverage, first, last, minute_thresholds)
        if whole:
            edges += edge_days(table["ts"].combine_chunks().cast(pa.int64()).drop_null(), whole)
        del table
        for found in result.findings:
            if found.kind is Kind.GAP and found.day is not None:
                gap_tally.add(found)  # the summary's tally, with or without --gaps
                if not every_gap:
                    continue
            yield counted(found)
        coverage.update(result.coverage)
        rows.update(result.rows_per_day)
    summed = None if every_gap else gap_tally.finding()
    if summed is not None:
        yield counted(summed)
    daily = missing_every_day(minute_tally, minute_thresholds)
    for lost in daily:
        yield counted(
            Finding(Severity.ERROR, Kind.MINUTE_MISSING_DAILY, symbol, None, None, lost.detail())
        )
    for loss in edge_losses(edges, EdgeThresholds()):
        if loss.minute not in {lost.minute for lost in daily}:  # said once, not twice
            yield counted(
                Finding(
                    Severity.ERROR,
                    Kind.EDGE_MINUTE_MISSING,
                    symbol,
                    None,
                    loss.first_day,
                    loss.detail(refetch_command(lake, symbol, loss.first_day, loss.last_day)),
                )
            )
    span_first = first or (min(coverage) if coverage else None)
    span_last = last or (max(coverage) if coverage else None)
    # Judged as run asks: nothing after today, nothing before the symbol's listing.
    head, today = judged
    before = 0
    if span_last and span_last > today:
        span_last = today
    if span_first and span_last and head and span_first < head:
        before = (min(span_last, head - timedelta(days=1)) - span_first).days + 1
        span_first = head
    if span_first and span_last and span_first > span_last:
        span_first = span_last = None
    if not files.parts and asked and span_first is None:
        yield counted(
            Finding(Severity.ERROR, Kind.NO_DATA, symbol, None, None, "no parts in the lake")
        )
    days = complete = partial = missing = no_data = 0
    if span_first and span_last:
        for run_first, run_last in unfetched_runs(coverage, span_first, span_last):
            count = (run_last - run_first).days + 1
            runs = [(first_minute_of(run_first), first_minute_of(run_last) + MINUTES_PER_DAY - 1)]
            span = str(run_first) if count == 1 else f"{run_first}..{run_last}"
            yield counted(
                finding(
                    Severity.ERROR, Kind.NOT_FETCHED, symbol, None, run_first,
                    f"never fetched: {span} ({count} day(s))", runs, max_ranges,
                )
            )  # fmt: skip
            missing += count
        in_range = [c for d, c in coverage.items() if span_first <= d <= span_last]
        days = (span_last - span_first).days + 1
        complete = sum(c.complete for c in in_range)
        partial = len(in_range) - complete
        no_data = sum(c.complete and c.no_data and not c.rows for c in in_range)
    yield SymbolSummary(
        symbol=symbol,
        first=span_first,
        last=span_last,
        parts=len(files.parts),
        days=days,
        days_complete=complete,
        days_partial=partial,
        days_missing=missing,
        rows=_rows_in(rows, span_first, span_last),
        gaps=gap_tally.ranges,
        gap_minutes=gap_tally.minutes,
        errors=errors,
        warnings=warnings,
        gap_days=len(gap_tally.days),
        days_no_data=no_data,
        days_before_listing=before,
        head=head,
    )


def _tally_minutes(
    tally: MinuteTally,
    table: pa.Table,
    coverage: dict[date, DayCoverage],
    first: date | None,
    last: date | None,
    thresholds: MinuteCheckThresholds,
) -> set[int]:
    """Count one part's bars of its whole days, in range, for the minute-of-day check;
    those days (since the epoch), for the edge check."""
    if "ts" not in table.column_names or not pa.types.is_timestamp(table.schema.field("ts").type):
        return set()
    whole = {
        d.toordinal() - _EPOCH_ORDINAL
        for d, c in coverage.items()
        if c.complete and c.rows and (first is None or first <= d) and (last is None or d <= last)
    }
    try:  # microseconds, whatever unit a variant part holds
        ts_us = table["ts"].combine_chunks().cast(TS_TYPE).cast(pa.int64())
    except (pa.ArrowInvalid, pa.ArrowNotImplementedError):
        return whole  # not castable: reported by check_part
    tally.add(ts_us.drop_null(), whole, thresholds)
    return whole


def refetch_command(lake: Path, symbol: Symbol, first: date, last: date) -> str:
    """The command that asks ``first..last`` again although recorded complete (shell-quoted:
    a lake's name is the user's)."""
    return shlex.join(
        [
            "backfill",
            "run",
            "--refetch",
            "--from",
            first.isoformat(),
            "--to",
            last.isoformat(),
            "--symbols",
            str(symbol),
            "--lake",
            str(lake),
        ]
    )


_EPOCH_ORDINAL = date(1970, 1, 1).toordinal()
