"""``backfill verify``: check every part of the lake against the data contract.

The checks are pure (``check_part``, ``unfetched_runs``: tables and values in, findings out);
``verify_lake`` reads the files. ``VerifyReport.to_json()`` is the ``--json`` document::

    {"version": 1, "lake": "/abs/lake", "from": "2025-07-01" | null, "to": ... | null,
     "ok": bool, "errors": int, "warnings": int, "parts": int,
     "symbols": [{"symbol", "from", "to", "parts", "days", "days_complete", "days_partial",
                  "days_missing", "days_no_data", "rows", "gaps", "gap_minutes", "errors",
                  "warnings"}],
     "findings": [{"severity": "error" | "warning", "kind", "symbol", "path", "day",
                   "detail", "minutes": [[first, last], ...]}]}

Dates are ISO days; ``from``/``to`` per symbol are the range checked (null: nothing to check);
``path`` is relative to the lake; ``minutes`` are inclusive runs of bar-end timestamps (ISO).
"""

from __future__ import annotations

import bisect
import contextlib
from collections import defaultdict
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from datetime import date, datetime, timedelta
from enum import Enum
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

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
)
from backfill.lake.minute_check import MinuteCheckThresholds, MinuteTally, missing_every_day
from backfill.lake.paths import QUARANTINE_PREFIX, TEMP_SUFFIX, iter_parts, lake_symbols
from backfill.lake.schema import BAR_SCHEMA, COLUMNS, COVERAGE_KEY, decode_coverage

JSON_VERSION = 1
_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_US_PER_MINUTE = 60_000_000
_EPOCH_DAY = date(1970, 1, 1).toordinal()


class Severity(str, Enum):
    ERROR = "error"
    WARNING = "warning"


class Kind(str, Enum):
    """What a finding is about; the value is the stable name used in JSON."""

    UNREADABLE = "unreadable"
    SCHEMA = "schema"
    NULLS = "nulls"
    TS_UNSORTED = "ts_unsorted"
    TS_DUPLICATE = "ts_duplicate"
    TS_OUTSIDE_MONTH = "ts_outside_month"
    TS_NOT_MINUTE = "ts_not_minute"
    OHLC = "ohlc"
    NEGATIVE_VOLUME = "negative_volume"
    PARTITION = "partition"
    NOT_CONSTANT = "not_constant"
    COVERAGE_MISSING = "coverage_missing"
    COVERAGE_MALFORMED = "coverage_malformed"
    COVERAGE_OUTSIDE_MONTH = "coverage_outside_month"
    COVERAGE_ROWS = "coverage_rows"
    UNCOVERED_ROWS = "uncovered_rows"
    NOT_FETCHED = "not_fetched"
    NO_DATA = "no_data"
    GAP = "gap"
    PARTIAL_DAY = "partial_day"
    EMPTY_DAY = "empty_day"
    QUARANTINED = "quarantined"
    STALE_TEMP = "stale_temp"
    MINUTE_MISSING_DAILY = "minute_missing_daily"
    # aggregate parts (backfill/lake/verify_aggregates.py)
    BUCKET_MISALIGNED = "bucket_misaligned"
    BUCKET_MINUTES = "bucket_minutes"
    PROVENANCE_MISSING = "provenance_missing"
    AGGREGATE_STALE = "aggregate_stale"


MinuteRange = tuple[datetime, datetime]
_Run = tuple[int, int]  # inclusive run of minute numbers (minutes since the epoch)


@dataclass(frozen=True)
class Finding:
    """One thing wrong (error) or worth knowing (warning) about one file, day or symbol."""

    severity: Severity
    kind: Kind
    symbol: Symbol | None
    path: Path | None
    day: date | None
    detail: str
    minutes: tuple[MinuteRange, ...] = ()


@dataclass(frozen=True)
class PartCheck:
    """What checking one part found, plus the figures the summary needs."""

    findings: tuple[Finding, ...]
    coverage: dict[date, DayCoverage] = field(default_factory=dict)
    rows_per_day: dict[date, int] = field(default_factory=dict)
    gap_minutes_per_day: dict[date, tuple[int, int]] = field(default_factory=dict)


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
    days_no_data: int = 0  # complete days empty because IB said it had no data


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
        if path is None:
            return None
        try:
            return path.relative_to(self.lake).as_posix()
        except ValueError:
            return path.as_posix()

    def to_json(self) -> dict[str, Any]:
        """The ``--json`` document; its shape is documented in this module's docstring."""
        return {
            "version": JSON_VERSION,
            "lake": str(self.lake.resolve()),
            "from": _iso(self.first),
            "to": _iso(self.last),
            "ok": self.ok,
            "errors": self.errors,
            "warnings": self.warnings,
            "parts": self.parts,
            "symbols": [
                {
                    "symbol": str(s.symbol),
                    "from": _iso(s.first),
                    "to": _iso(s.last),
                    "parts": s.parts,
                    "days": s.days,
                    "days_complete": s.days_complete,
                    "days_partial": s.days_partial,
                    "days_missing": s.days_missing,
                    "days_no_data": s.days_no_data,
                    "rows": s.rows,
                    "gaps": s.gaps,
                    "gap_minutes": s.gap_minutes,
                    "errors": s.errors,
                    "warnings": s.warnings,
                }
                for s in self.symbols
            ],
            "findings": [
                {
                    "severity": f.severity.value,
                    "kind": f.kind.value,
                    "symbol": None if f.symbol is None else str(f.symbol),
                    "path": self.relative(f.path),
                    "day": _iso(f.day),
                    "detail": f.detail,
                    "minutes": [[a.isoformat(), b.isoformat()] for a, b in f.minutes],
                }
                for f in self.findings
            ],
        }


def _iso(day: date | None) -> str | None:
    return None if day is None else day.isoformat()


# ---------------------------------------------------------------- pure checks


def minute_of(minute: int) -> datetime:
    """The bar-end timestamp of a minute number (minutes since the epoch)."""
    return _EPOCH + timedelta(minutes=minute)


def day_of_minute(minute: int) -> date:
    return date.fromordinal(_EPOCH_DAY + minute // MINUTES_PER_DAY)


def first_minute_of(day: date) -> int:
    return (day.toordinal() - _EPOCH_DAY) * MINUTES_PER_DAY


def minute_runs_by_day(minutes: Iterable[int]) -> dict[date, list[tuple[int, int]]]:
    """Collapse minute numbers into inclusive runs of consecutive minutes, split by UTC day."""
    runs: dict[date, list[tuple[int, int]]] = defaultdict(list)
    start = prev = None
    for minute in sorted(set(minutes)):
        if prev is not None and minute == prev + 1 and minute % MINUTES_PER_DAY:
            prev = minute
            continue
        if start is not None and prev is not None:
            runs[day_of_minute(start)].append((start, prev))
        start = prev = minute
    if start is not None and prev is not None:
        runs[day_of_minute(start)].append((start, prev))
    return dict(runs)


def missing_in(
    run_starts: Sequence[int], run_ends: Sequence[int], first: int, last: int
) -> list[tuple[int, int]]:
    """Minutes of ``[first, last]`` not covered by the sorted, disjoint runs of present minutes."""
    missing = []
    cursor = first
    i = bisect.bisect_left(run_ends, first)
    while i < len(run_starts) and run_starts[i] <= last:
        if run_starts[i] > cursor:
            missing.append((cursor, run_starts[i] - 1))
        cursor = max(cursor, run_ends[i] + 1)
        i += 1
    if cursor <= last:
        missing.append((cursor, last))
    return missing


def unfetched_runs(coverage: Iterable[date], first: date, last: date) -> list[tuple[date, date]]:
    """Runs of days in ``[first, last]`` that no coverage record mentions."""
    fetched = set(coverage)
    span = (last - first).days + 1
    missing = (first + timedelta(days=i) for i in range(span))
    return day_ranges(d for d in missing if d not in fetched)


def _ranges(runs: Iterable[tuple[int, int]]) -> tuple[MinuteRange, ...]:
    return tuple((minute_of(a), minute_of(b)) for a, b in runs)


def _count(mask: pa.Array | pa.ChunkedArray) -> int:
    return int(pc.sum(mask).as_py() or 0)


@dataclass(frozen=True)
class _Part:
    """Where a part sits, for the findings about it."""

    symbol: Symbol
    month: Month
    path: Path

    def finding(
        self,
        severity: Severity,
        kind: Kind,
        detail: str,
        day: date | None = None,
        runs: Iterable[tuple[int, int]] = (),
    ) -> Finding:
        return Finding(severity, kind, self.symbol, self.path, day, detail, _ranges(runs))

    def error(
        self, kind: Kind, detail: str, day: date | None = None, runs: Iterable[_Run] = ()
    ) -> Finding:
        return self.finding(Severity.ERROR, kind, detail, day, runs)

    def warning(
        self, kind: Kind, detail: str, day: date | None = None, runs: Iterable[_Run] = ()
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
) -> PartCheck:
    """Every contract check on one part's rows and footer; gaps only for days in [first, last]."""
    part = _Part(symbol, month, path)
    findings: list[Finding] = []
    usable = _check_schema(part, table, findings)
    table = table.select(usable).combine_chunks()
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
    good_minutes = pc.unique(
        pc.divide(ts_us.filter(pc.and_(in_month, aligned)), _US_PER_MINUTE)
    ).sort()
    rows_per_day = _rows_per_day(ts_us.filter(in_month))
    coverage = _check_coverage(part, table.schema, rows_per_day, ts_us.filter(in_month), findings)
    gap_minutes = _check_gaps(part, coverage, good_minutes, first, last, findings)
    return PartCheck(tuple(findings), coverage, rows_per_day, gap_minutes)


def _check_schema(part: _Part, table: pa.Table, findings: list[Finding]) -> list[str]:
    """Report schema drift; return the contract columns present with the right type."""
    names = table.schema.names
    if names != list(COLUMNS):
        missing = [n for n in COLUMNS if n not in names]
        extra = [n for n in names if n not in COLUMNS]
        if missing or extra:
            detail = f"missing columns {missing}, unexpected columns {extra}"
        else:
            detail = f"column order {names} differs from the contract {list(COLUMNS)}"
        findings.append(part.error(Kind.SCHEMA, detail))
    usable = []
    for expected in BAR_SCHEMA:
        if expected.name not in names:
            continue
        actual = table.schema.field(expected.name).type
        if actual != expected.type:
            findings.append(
                part.error(
                    Kind.SCHEMA, f"column {expected.name!r} is {actual}, not {expected.type}"
                )
            )
        else:
            usable.append(expected.name)
    return usable


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
    if {"open", "high", "low", "close"} <= names:
        o, h, low, c = (table[n] for n in ("open", "high", "low", "close"))
        sane = pc.and_kleene(
            pc.and_kleene(pc.less_equal(low, o), pc.less_equal(low, c)),
            pc.and_kleene(pc.less_equal(o, h), pc.less_equal(c, h)),
        )
        # NaN compares false, so a NaN price fails here too.
        bad = pc.invert(pc.fill_null(sane, True))
        if _count(bad):
            findings += part.per_day(
                Kind.OHLC, "low <= open, close <= high broken", ts_us.filter(bad).to_pylist()
            )
    if "volume" in names:
        bad = pc.invert(pc.fill_null(pc.greater_equal(table["volume"], 0), True))
        if _count(bad):
            findings += part.per_day(
                Kind.NEGATIVE_VOLUME, "negative or NaN volume", ts_us.filter(bad).to_pylist()
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


def _rows_per_day(ts_us: pa.Array) -> dict[date, int]:
    if not len(ts_us):
        return {}
    counts = pc.value_counts(pc.divide(ts_us, _US_PER_MINUTE * MINUTES_PER_DAY))
    return {
        date.fromordinal(_EPOCH_DAY + day): n
        for day, n in zip(
            counts.field("values").to_pylist(), counts.field("counts").to_pylist(), strict=True
        )
    }


def _check_coverage(
    part: _Part,
    schema: pa.Schema,
    rows_per_day: dict[date, int],
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
        elif record.rows != rows_per_day.get(day, 0):
            findings.append(
                part.error(
                    Kind.COVERAGE_ROWS,
                    f"coverage says {record.rows} rows, the part has {rows_per_day.get(day, 0)}",
                    day,
                )
            )
    uncovered = {day for day in rows_per_day if day not in coverage}
    if uncovered:
        day_index = pc.divide(ts_us, _US_PER_MINUTE * MINUTES_PER_DAY)
        wanted = pa.array([d.toordinal() - _EPOCH_DAY for d in uncovered], pa.int64())
        offending = ts_us.filter(pc.is_in(day_index, value_set=wanted)).to_pylist()
        findings += part.per_day(Kind.UNCOVERED_ROWS, "rows on a day the coverage omits", offending)
    return coverage


def _check_gaps(
    part: _Part,
    coverage: dict[date, DayCoverage],
    minutes: pa.Array,
    first: date | None,
    last: date | None,
    findings: list[Finding],
) -> dict[date, tuple[int, int]]:
    """Missing minutes of each fetched day in range: (gap runs, missing minutes) per day."""
    present = minutes.to_pylist()
    if present:
        breaks = [i + 1 for i, step in enumerate(_steps(minutes)) if step > 1]
        starts = [present[0]] + [present[i] for i in breaks]
        ends = [present[i - 1] for i in breaks] + [present[-1]]
    else:
        starts, ends = [], []
    per_day = {}
    for day, record in sorted(coverage.items()):
        if Month.of(day) != part.month or (first and day < first) or (last and day > last):
            continue
        first_minute = first_minute_of(day)
        last_minute = first_minute + MINUTES_PER_DAY - 1
        if not record.complete:
            fetched = int((record.fetched_at - _EPOCH).total_seconds() // 60)
            last_minute = min(last_minute, fetched - 1)
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
            per_day[day] = (0, 0)
            continue
        gaps = missing_in(starts, ends, first_minute, last_minute)
        missing = sum(b - a + 1 for a, b in gaps)
        per_day[day] = (len(gaps), missing)
        if gaps:
            findings.append(part.warning(Kind.GAP, f"{missing} minute(s) without a bar", day, gaps))
    return per_day


def _steps(minutes: pa.Array) -> list[int]:
    if len(minutes) < 2:
        return []
    return pc.pairwise_diff(minutes)[1:].to_pylist()


# ---------------------------------------------------------------- reading the lake


def verify_lake(
    lake: Path,
    symbols: Sequence[Symbol] | None = None,
    first: date | None = None,
    last: date | None = None,
    minute_thresholds: MinuteCheckThresholds | None = None,
) -> VerifyReport:
    """Check every part in scope; default range per symbol is the span of its coverage.

    Raises ``BadInput`` for a missing lake folder or ``first`` after ``last``; never writes.
    """
    if not lake.is_dir():
        raise BadInput(f"lake folder {lake} does not exist")
    if first is not None and last is not None:
        check_range(first, last)
    asked = symbols is not None
    chosen = list(symbols) if symbols is not None else lake_symbols(lake)
    findings: list[Finding] = []
    summaries = []
    parts = 0
    for symbol in chosen:
        summary, symbol_findings = _verify_symbol(
            lake, symbol, first, last, asked, minute_thresholds or MinuteCheckThresholds()
        )
        summaries.append(summary)
        findings += symbol_findings
        parts += summary.parts
    from backfill.lake.verify_aggregates import verify_aggregates  # it imports this module

    aggregate_parts, aggregate_findings = verify_aggregates(lake, chosen, first, last)
    return VerifyReport(
        lake, first, last, parts + aggregate_parts, tuple(summaries),
        (*findings, *aggregate_findings),
    )


def _in_scope(month: Month, first: date | None, last: date | None) -> bool:
    return (first is None or month.last_day >= first) and (last is None or month.first_day <= last)


def _verify_symbol(
    lake: Path, symbol: Symbol, first: date | None, last: date | None, asked: bool,
    minute_thresholds: MinuteCheckThresholds,
) -> tuple[SymbolSummary, list[Finding]]:
    checks: list[tuple[Path, Month, pa.Table | None]] = []
    findings: list[Finding] = []
    for _, month, path in iter_parts(lake, [symbol]):
        if not _in_scope(month, first, last):
            continue
        findings += _stray_files(symbol, path)
        try:
            checks.append((path, month, pq.ParquetFile(path).read()))
        except (OSError, ValueError, pa.ArrowException) as exc:
            findings.append(
                Finding(Severity.ERROR, Kind.UNREADABLE, symbol, path, None, f"cannot read: {exc}")
            )
            checks.append((path, month, None))
    coverage: dict[date, DayCoverage] = {}
    tables = [(path, month, table) for path, month, table in checks if table is not None]
    # The range is only known once footers are read, when --from/--to leave it open.
    for _, _, table in tables:
        raw = (table.schema.metadata or {}).get(COVERAGE_KEY)
        with contextlib.suppress(ValueError, KeyError, TypeError, AttributeError):
            coverage.update(decode_coverage(raw) if raw is not None else {})
    span_first = first or (min(coverage) if coverage else None)
    span_last = last or (max(coverage) if coverage else None)
    if span_first and span_last and span_first > span_last:
        span_first = span_last = None
    rows_per_day: dict[date, int] = {}
    gaps: dict[date, tuple[int, int]] = {}
    tally = MinuteTally()
    whole = {d.toordinal() - _EPOCH_DAY for d, c in coverage.items() if c.complete and c.rows
             and (span_first is None or span_first <= d) and (span_last is None or d <= span_last)}
    for path, month, table in tables:
        result = check_part(table, symbol, month, path, span_first, span_last)
        findings += result.findings
        rows_per_day.update(result.rows_per_day)
        gaps.update(result.gap_minutes_per_day)
        if "ts" in table.column_names and pa.types.is_timestamp(table.schema.field("ts").type):
            tally.add(table["ts"].combine_chunks().cast(pa.int64()).drop_null(), whole,
                      minute_thresholds)
    findings += [
        Finding(Severity.ERROR, Kind.MINUTE_MISSING_DAILY, symbol, None, None, m.detail())
        for m in missing_every_day(tally, minute_thresholds)
    ]
    if not checks and asked and span_first is None:
        findings.append(
            Finding(Severity.ERROR, Kind.NO_DATA, symbol, None, None, "no parts in the lake")
        )
    days = complete = partial = missing = rows = no_data = 0
    if span_first and span_last:
        for run_first, run_last in unfetched_runs(coverage, span_first, span_last):
            count = (run_last - run_first).days + 1
            minutes = (
                (
                    minute_of(first_minute_of(run_first)),
                    minute_of(first_minute_of(run_last) + MINUTES_PER_DAY - 1),
                ),
            )
            span = str(run_first) if count == 1 else f"{run_first}..{run_last}"
            findings.append(
                Finding(
                    Severity.ERROR,
                    Kind.NOT_FETCHED,
                    symbol,
                    None,
                    run_first,
                    f"never fetched: {span} ({count} day(s))",
                    minutes,
                )
            )
            missing += count
        in_range = [c for d, c in coverage.items() if span_first <= d <= span_last]
        days = (span_last - span_first).days + 1
        complete = sum(c.complete for c in in_range)
        partial = len(in_range) - complete
        no_data = sum(c.complete and c.no_data and not c.rows for c in in_range)
        rows = sum(n for d, n in rows_per_day.items() if span_first <= d <= span_last)
    summary = SymbolSummary(
        symbol=symbol,
        first=span_first,
        last=span_last,
        parts=len(checks),
        days=days,
        days_complete=complete,
        days_partial=partial,
        days_missing=missing,
        days_no_data=no_data,
        rows=rows,
        gaps=sum(g for g, _ in gaps.values()),
        gap_minutes=sum(m for _, m in gaps.values()),
        errors=sum(f.severity is Severity.ERROR for f in findings),
        warnings=sum(f.severity is Severity.WARNING for f in findings),
    )
    return summary, findings


def _stray_files(symbol: Symbol, part: Path) -> list[Finding]:
    """Quarantined parts and temp files left by a killed writer, beside this part."""
    findings = []
    for path in sorted(part.parent.iterdir()):
        if path.name.startswith(QUARANTINE_PREFIX):
            findings.append(
                Finding(
                    Severity.WARNING,
                    Kind.QUARANTINED,
                    symbol,
                    path,
                    None,
                    "an unreadable part was moved aside here: look at it, then delete it",
                )
            )
        elif path.name.startswith(f".{part.name}.") and path.name.endswith(TEMP_SUFFIX):
            findings.append(
                Finding(
                    Severity.WARNING,
                    Kind.STALE_TEMP,
                    symbol,
                    path,
                    None,
                    "temp file of an interrupted write (the next write removes it)",
                )
            )
    return findings
