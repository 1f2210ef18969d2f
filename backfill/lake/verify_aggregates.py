"""``verify``'s checks of aggregate parts (M5 … D1): schema, order, bucket alignment,
contents (as M1's: finite prices, OHLC, volume; ``complete``), labels, and provenance
against the M1 footers (stale, orphaned). ``check_aggregate_part`` is pure; ``verify_aggregates``
reads the files. Findings are ``verify``'s own, in its report."""

from __future__ import annotations

import shlex
from collections.abc import Mapping, Sequence
from datetime import date, datetime
from pathlib import Path

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from backfill.aggregate.build import read_m1_coverage
from backfill.aggregate.planner import is_stale
from backfill.aggregate.provenance import Provenance, source_days
from backfill.aggregate.timeframes import TIMEFRAMES, Timeframe
from backfill.domain import UTC, DayCoverage, Month, Symbol, day_start
from backfill.lake.objpath import arrow_source
from backfill.lake.paths import aggregate_symbols, iter_aggregate_parts, symbol_dir
from backfill.lake.schema import AGGREGATE_SCHEMA, PROVENANCE_KEY
from backfill.lake.verify_findings import Finding, Kind, Severity

_SHOWN = 3


def refresh_command(
    lake: Path, symbol: Symbol, timeframe: Timeframe, month: Month, include_partial: bool
) -> str:
    """The command that rebuilds one aggregate part from the M1 lake as it is now."""
    first, last = source_days(month)
    partial = ("--include-partial",) if include_partial else ()
    # Quoted for a shell: pasted, a lake named `x $(touch PWNED)` must stay a name.
    return shlex.join(
        (
            "backfill",
            "aggregate",
            "--lake",
            str(lake),
            "--symbols",
            str(symbol),
            "--tf",
            str(timeframe),
            "--from",
            str(first),
            "--to",
            str(last),
            *partial,
        )
    )


def check_aggregate_part(
    table: pa.Table,
    lake: Path,
    symbol: Symbol,
    timeframe: Timeframe,
    month: Month,
    path: Path,
    m1_coverage: Mapping[date, DayCoverage],
    now: datetime,
) -> list[Finding]:
    """Every check of one aggregate part's rows and footer against the M1 coverage."""

    def error(kind: Kind, detail: str) -> Finding:
        return Finding(Severity.ERROR, kind, symbol, path, None, detail)

    findings: list[Finding] = []
    if not table.schema.remove_metadata().equals(AGGREGATE_SCHEMA):
        expected = ", ".join(f"{f.name} {f.type}" for f in AGGREGATE_SCHEMA)
        return [error(Kind.SCHEMA, f"{timeframe} part: columns are not [{expected}]")]
    ts = pc.cast(table["ts"], pa.int64()).combine_chunks()
    if len(ts) > 1:
        steps = pc.pairwise_diff(ts)[1:]
        if pc.any(pc.less(steps, 0)).as_py():
            findings.append(error(Kind.TS_UNSORTED, f"{timeframe} bucket ends out of order"))
        if pc.any(pc.equal(steps, 0)).as_py():
            findings.append(error(Kind.TS_DUPLICATE, f"{timeframe} bucket end repeated"))
    start, stop = _us(day_start(month.first_day)), _us(day_start(month.next.first_day))
    off_grid = pc.not_equal(
        pc.subtract(ts, pc.multiply(pc.divide(ts, timeframe.width_us), timeframe.width_us)), 0
    )
    outside = pc.or_(pc.less(ts, start), pc.greater_equal(ts, stop))
    bad = ts.filter(pc.or_(off_grid, outside))
    if len(bad):
        shown = ", ".join(_iso(v) for v in bad[:_SHOWN].to_pylist())
        findings.append(
            error(
                Kind.BUCKET_MISALIGNED,
                f"{len(bad)} {timeframe} bucket end(s) not on the {timeframe} grid of {month} "
                f"(a bucket is (end - {timeframe.minutes} min, end], ends at 00:00 UTC + k·"
                f"{timeframe.minutes} min): {shown}",
            )
        )
    minutes = table["minutes"]
    if (
        len(minutes)
        and not pc.all(
            pc.and_(pc.greater_equal(minutes, 1), pc.less_equal(minutes, timeframe.minutes))
        ).as_py()
    ):
        findings.append(
            error(Kind.BUCKET_MINUTES, f"minutes outside 1..{timeframe.minutes} in a bucket")
        )
    findings += [error(kind, f"{timeframe} {detail}") for kind, detail in _contents(table, ts)]
    labels = pc.unique(table["symbol"]).to_pylist()
    if any(label != str(symbol) for label in labels):
        findings.append(
            error(Kind.PARTITION, f"symbol is {sorted(labels)}, the path says {str(symbol)!r}")
        )
    raw = (table.schema.metadata or {}).get(PROVENANCE_KEY)
    try:
        provenance = None if raw is None else Provenance.decode(raw)
    except (ValueError, KeyError, TypeError, AttributeError) as exc:
        findings.append(error(Kind.PROVENANCE_MISSING, f"malformed provenance record: {exc}"))
        return findings
    if provenance is None:
        findings.append(error(Kind.PROVENANCE_MISSING, "no provenance record in the footer"))
        return findings
    if provenance.timeframe != timeframe or provenance.month != month:
        findings.append(
            error(
                Kind.PROVENANCE_MISSING,
                f"footer is for {provenance.timeframe} "
                f"{provenance.month}, the path for {timeframe} {month}",
            )
        )
    else:
        if not provenance.include_partial and len(table) and not pc.all(table["complete"]).as_py():
            findings.append(
                error(
                    Kind.BUCKET_INCOMPLETE,
                    f"{timeframe} part built without "
                    "--include-partial holds buckets with complete = false",
                )
            )
        command = refresh_command(lake, symbol, timeframe, month, provenance.include_partial)
        if not symbol_dir(lake, symbol).is_dir() and provenance.source:
            findings.append(
                error(
                    Kind.AGGREGATE_ORPHAN,
                    f"{timeframe} {month} holds buckets of M1 days no "
                    f"longer in the lake (no M1 folder for {symbol}): refresh with "
                    f"`{command}` (it removes the part)",
                )
            )
        elif is_stale(provenance, m1_coverage, now):
            # An error: the part holds (or lacks) bars the M1 lake does not; readers of it
            # get other data than readers of M1 until it is refreshed.
            findings.append(
                error(
                    Kind.AGGREGATE_STALE,
                    f"{timeframe} {month} was built from M1 coverage "
                    f"that has changed since: refresh with `{command}`",
                )
            )
    return findings


def _contents(table: pa.Table, ts: pa.Array) -> list[tuple[Kind, str]]:
    """The M1 part's checks of values, on buckets: finite prices, OHLC, volume."""
    out: list[tuple[Kind, str]] = []
    if not len(table):
        return out
    prices = ("open", "high", "low", "close", "volume", "wap")
    finite = pc.and_(*[pc.is_finite(table[n]) for n in prices[:2]])
    for name in prices[2:]:
        finite = pc.and_(finite, pc.is_finite(table[name]))

    def shown(mask: pa.Array | pa.ChunkedArray) -> str:
        bad = ts.filter(mask)
        return f"{len(bad)} bucket(s): " + ", ".join(_iso(v) for v in bad[:_SHOWN].to_pylist())

    if not pc.all(finite).as_py():
        out.append((Kind.NOT_FINITE, f"NaN or infinite values in {shown(pc.invert(finite))}"))
    o, h, low, c = (table[n] for n in ("open", "high", "low", "close"))
    sane = pc.and_(
        pc.and_(pc.less_equal(low, o), pc.less_equal(low, c)),
        pc.and_(pc.less_equal(o, h), pc.less_equal(c, h)),
    )
    broken = pc.and_(pc.invert(sane), finite)  # non-finite ones are reported above, once
    if pc.any(broken).as_py():
        out.append((Kind.OHLC, f"low <= open, close <= high broken in {shown(broken)}"))
    negative = pc.less(table["volume"], 0)
    if pc.any(negative).as_py():
        out.append((Kind.NEGATIVE_VOLUME, f"negative volume in {shown(negative)}"))
    return out


def verify_aggregates(
    lake: Path,
    symbols: Sequence[Symbol],
    first: date | None,
    last: date | None,
    now: datetime | None = None,
    *,
    orphans: bool = False,
) -> tuple[int, list[Finding]]:
    """Check every aggregate part of ``symbols`` whose month draws on M1 days in range;
    ``orphans``: also those of symbols with aggregate parts but no M1 folder."""
    now = datetime.now(UTC) if now is None else now
    parts = 0
    findings: list[Finding] = []
    if orphans:
        known = set(symbols)
        symbols = [
            *symbols,
            *(s for s in aggregate_symbols(lake, [tf.name for tf in TIMEFRAMES]) if s not in known),
        ]
    for symbol in symbols:
        coverage: dict[date, DayCoverage] | None = None
        for tf in TIMEFRAMES:
            for _, month, path in iter_aggregate_parts(lake, tf.name, [symbol]):
                lo, hi = source_days(month)
                if (first is not None and hi < first) or (last is not None and lo > last):
                    continue
                parts += 1
                if coverage is None:
                    coverage = read_m1_coverage(lake, symbol)[0]
                table = read_derived_part(path, symbol)
                if isinstance(table, Finding):
                    findings.append(table)
                    continue
                findings += check_aggregate_part(
                    table, lake, symbol, tf, month, path, coverage, now
                )
    return parts, findings


def read_derived_part(path: Path, symbol: Symbol) -> pa.Table | Finding:
    """A derived part (aggregate, levels, events) whole, or the ``unreadable`` finding."""
    try:
        return pq.read_table(arrow_source(path))
    except (OSError, ValueError, pa.ArrowException) as exc:
        return Finding(Severity.ERROR, Kind.UNREADABLE, symbol, path, None, f"cannot read: {exc}")


def _us(when: datetime) -> int:
    return int(when.timestamp()) * 1_000_000


def _iso(us: int) -> str:
    return datetime.fromtimestamp(us / 1e6, tz=UTC).isoformat()
