"""``verify``'s checks of aggregate parts (M5 … D1): schema, order, bucket alignment, and
provenance against the M1 footers. ``check_aggregate_part`` is pure; ``verify_aggregates``
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
from backfill.lake.paths import iter_aggregate_parts
from backfill.lake.schema import AGGREGATE_SCHEMA, PROVENANCE_KEY
from backfill.lake.verify import Finding, Kind, Severity

_SHOWN = 3


def refresh_command(lake: Path, symbol: Symbol, timeframe: Timeframe, month: Month,
                    include_partial: bool) -> str:
    """The command that rebuilds one aggregate part from the M1 lake as it is now."""
    first, last = source_days(month)
    partial = ("--include-partial",) if include_partial else ()
    # Quoted for a shell: pasted, a lake named `x $(touch PWNED)` must stay a name.
    return shlex.join(("backfill", "aggregate", "--lake", str(lake), "--symbols", str(symbol),
                       "--tf", str(timeframe), "--from", str(first), "--to", str(last),
                       *partial))


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
    off_grid = pc.not_equal(pc.subtract(ts, pc.multiply(pc.divide(ts, timeframe.width_us),
                                                        timeframe.width_us)), 0)
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
    if len(minutes) and not pc.all(
        pc.and_(pc.greater_equal(minutes, 1), pc.less_equal(minutes, timeframe.minutes))
    ).as_py():
        findings.append(
            error(Kind.BUCKET_MINUTES, f"minutes outside 1..{timeframe.minutes} in a bucket")
        )
    if len(table) and not pc.all(pc.equal(table["symbol"], str(symbol))).as_py():
        findings.append(error(Kind.PARTITION, f"symbol column differs from the path ({symbol})"))
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
            error(Kind.PROVENANCE_MISSING, f"footer is for {provenance.timeframe} "
                  f"{provenance.month}, the path for {timeframe} {month}")
        )
    elif is_stale(provenance, m1_coverage, now):
        command = refresh_command(lake, symbol, timeframe, month, provenance.include_partial)
        findings.append(
            Finding(
                Severity.WARNING, Kind.AGGREGATE_STALE, symbol, path, None,
                f"{timeframe} {month} was built from M1 coverage that has changed since: "
                f"refresh with `{command}`",
            )
        )
    return findings


def verify_aggregates(
    lake: Path,
    symbols: Sequence[Symbol],
    first: date | None,
    last: date | None,
    now: datetime | None = None,
) -> tuple[int, list[Finding]]:
    """Check every aggregate part of ``symbols`` whose month draws on M1 days in range."""
    now = datetime.now(UTC) if now is None else now
    parts = 0
    findings: list[Finding] = []
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
                try:
                    table = pq.read_table(arrow_source(path))
                except (OSError, ValueError, pa.ArrowException) as exc:
                    findings.append(
                        Finding(Severity.ERROR, Kind.UNREADABLE, symbol, path, None,
                                f"cannot read: {exc}")
                    )
                    continue
                findings += check_aggregate_part(
                    table, lake, symbol, tf, month, path, coverage, now
                )
    return parts, findings


def _us(when: datetime) -> int:
    return int(when.timestamp()) * 1_000_000


def _iso(us: int) -> str:
    return datetime.fromtimestamp(us / 1e6, tz=UTC).isoformat()
