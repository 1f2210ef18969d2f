"""The lake store: the only module that writes Parquet.

A write merges a batch into its monthly parts under a per-part file lock, deduplicates on
``ts`` (newest batch wins), sorts, writes a temp file, fsyncs it and ``os.replace``s the part,
so a reader never sees a half-written file and a killed writer leaves the old part intact.
"""

from __future__ import annotations

import errno
import os
from collections.abc import Callable, Collection, Sequence
from dataclasses import dataclass
from datetime import date, datetime
from pathlib import Path

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq
from filelock import FileLock

from backfill.domain import (
    MARKET,
    SOURCE,
    UTC,
    DayCoverage,
    Month,
    Symbol,
    day_start,
)
from backfill.lake.errors import CorruptPart, NonConformingPart, StoreError
from backfill.lake.footers import _refuse_special, read_coverage_record
from backfill.lake.paths import (
    lock_path,
    part_path,
    quarantine_path,
    temp_glob,
    temp_path,
)
from backfill.lake.schema import (
    BAR_SCHEMA,
    COLUMNS,
    COVERAGE_KEY,
    PART_WRITE_OPTIONS,
    TS_TYPE,
    NonConforming,
    conform,
    conformance,
    decode_coverage,
    empty_bars,
    encode_coverage,
)

_SHOWN_OFFENDERS = 5

# Test seam: crash-safety tests pause a writer here (temp file complete, part not yet
# replaced) so a SIGKILL lands exactly in the window that matters. None in production.
_before_replace: Callable[[Path], None] | None = None


class BadBars(StoreError, ValueError):
    """A batch that breaks the data contract: a bug upstream, never written."""


class OutOfWindowRows(BadBars):
    """Rows whose ``ts`` lies outside the batch's declared days."""

    def __init__(self, symbol: Symbol, offending: Sequence[datetime], count: int) -> None:
        self.symbol = symbol
        self.offending = tuple(offending)
        self.count = count
        shown = ", ".join(ts.isoformat() for ts in self.offending)
        more = f" (and {count - len(self.offending)} more)" if count > len(self.offending) else ""
        super().__init__(f"{symbol}: {count} row(s) outside the declared days: {shown}{more}")


class PartUnreadable(StoreError, OSError):
    """A part the OS would not let us read (EACCES, EMFILE, EIO, a folder in its place...).

    Not corruption: nothing was read, so nothing is known to be wrong with the file, and it
    is never moved aside. An ``OSError`` too (``errno``, ``strerror``, ``filename`` set), so
    code that handles a lake it cannot write handles a lake it cannot read the same way.
    """

    def __init__(self, path: Path, cause: OSError) -> None:
        super().__init__(cause.errno, cause.strerror or str(cause), str(path))
        self.path = path

    def __str__(self) -> str:
        return f"cannot read {self.path}: {self.strerror}"

    def __reduce__(self) -> tuple:
        # OSError pickles as (errno, strerror, filename), which this __init__ does not take.
        return (_part_unreadable, (self.path, self.errno, self.strerror))


def _part_unreadable(path: Path, errno_: int | None, strerror: str) -> PartUnreadable:
    return PartUnreadable(path, OSError(errno_, strerror))


@dataclass(frozen=True)
class PartWrite:
    """One monthly part written by ``write_batch``."""

    path: Path
    month: Month
    rows: int
    days: tuple[date, ...]
    quarantined: Path | None
    size_bytes: int = 0


def write_batch(
    lake: Path,
    symbol: Symbol,
    bars: pa.Table,
    days: Sequence[date],
    *,
    fetched_at: datetime,
    partial_days: Collection[date] = (),
    no_data_days: Collection[date] = (),
) -> list[PartWrite]:
    """Merge one fetched batch of ``symbol`` into its monthly parts; one ``PartWrite`` per month.

    Every day in ``days`` is recorded in coverage (a day with no rows is a fetched no-data
    day; ``no_data_days`` are those IB said had none, recorded as such); rows outside
    ``days`` raise ``OutOfWindowRows`` before anything is touched.
    """
    if fetched_at.tzinfo is None:
        raise ValueError("fetched_at must be timezone-aware")
    declared = sorted(set(days))
    partial = set(partial_days)
    if not partial <= set(declared):
        raise ValueError(
            f"partial days not among the batch's days: {sorted(partial - set(declared))}"
        )
    table = _conform(bars, symbol)
    _refuse_out_of_window(table, symbol, declared)
    writes = []
    for month in sorted({Month.of(day) for day in declared}):
        month_days = [day for day in declared if Month.of(day) == month]
        month_rows = table.filter(_in_month(table["ts"], month))
        writes.append(
            _write_month(lake, symbol, month, month_rows, month_days, fetched_at, partial,
                         set(no_data_days))
        )
    return writes


def read_part(path: Path) -> pa.Table:
    """A part's rows and footer metadata.

    Raises ``CorruptPart`` if it was read and breaks the contract, ``PartUnreadable`` if the
    OS would not let it be read.
    """
    table, _ = _read_checked(path)
    return table


def read_part_coverage(path: Path | str) -> dict[date, DayCoverage]:
    """A part's coverage record, from its footer only; raises ``CorruptPart``."""
    return _decode(path, read_coverage_record(path))


def _conform(bars: pa.Table, symbol: Symbol) -> pa.Table:
    missing = [name for name in COLUMNS if name not in bars.column_names]
    if missing:
        raise BadBars(f"{symbol}: batch lacks columns {missing}")
    try:
        table = bars.select(list(COLUMNS)).cast(BAR_SCHEMA)
    except (pa.ArrowInvalid, pa.ArrowNotImplementedError, ValueError) as exc:
        raise BadBars(f"{symbol}: batch does not fit the bar schema: {exc}") from exc
    for name in COLUMNS:
        if table[name].null_count:
            raise BadBars(f"{symbol}: column {name!r} has nulls")
    for name, expected in (("source", SOURCE), ("market", MARKET), ("symbol", str(symbol))):
        if table.num_rows and not pc.all(pc.equal(table[name], expected)).as_py():
            raise BadBars(f"{symbol}: column {name!r} is not {expected!r} on every row")
    if (
        table.num_rows
        and not pc.all(pc.equal(pc.floor_temporal(table["ts"], unit="minute"), table["ts"])).as_py()
    ):
        raise BadBars(f"{symbol}: ts not on a whole minute")
    return table.combine_chunks()


def _refuse_out_of_window(table: pa.Table, symbol: Symbol, days: list[date]) -> None:
    if not table.num_rows:
        return
    row_days = pc.cast(table["ts"], pa.date32())  # ts is UTC, so this is the UTC day
    outside = pc.invert(pc.is_in(row_days, value_set=pa.array(days, pa.date32())))
    count = pc.sum(outside).as_py() or 0
    if count:
        offending = table["ts"].filter(outside)[:_SHOWN_OFFENDERS].to_pylist()
        raise OutOfWindowRows(symbol, offending, count)


def _ts_scalar(when: datetime) -> pa.Scalar:
    return pa.scalar(when, type=TS_TYPE)


def _in_month(ts: pa.ChunkedArray | pa.Array, month: Month) -> pa.Array:
    start = _ts_scalar(day_start(month.first_day))
    stop = _ts_scalar(day_start(month.next.first_day))
    return pc.and_(pc.greater_equal(ts, start), pc.less(ts, stop))


def _write_month(
    lake: Path,
    symbol: Symbol,
    month: Month,
    rows: pa.Table,
    days: list[date],
    fetched_at: datetime,
    partial: set[date],
    no_data: set[date] = frozenset(),  # type: ignore[assignment]
) -> PartWrite:
    path = part_path(lake, symbol, month)
    path.parent.mkdir(parents=True, exist_ok=True)
    with FileLock(lock_path(path)):
        # Under the lock no other writer is mid-write on this part: any temp file is stale.
        for stale in path.parent.glob(temp_glob(path)):
            stale.unlink(missing_ok=True)
        old, coverage, quarantined = _load_for_merge(path)
        merged = _merge(old, _dedupe_keep_last(rows))
        for day in days:
            if day in partial and day in coverage and coverage[day].complete:
                # A refetch answered while the day ran knows less than the whole day
                # recorded: its bars merge in, the complete record stays.
                continue
            coverage[day] = DayCoverage(day, 0, fetched_at.astimezone(UTC), day not in partial,
                                        day in no_data)
        counts = rows_per_day(merged)
        coverage = {
            day: DayCoverage(day, counts.get(day, 0), c.fetched_at, c.complete,
                             c.no_data and not counts.get(day, 0))
            for day, c in coverage.items()
        }
        size = _replace_atomically(path, merged, coverage)
    return PartWrite(path, month, merged.num_rows, tuple(days), quarantined, size)


def _load_for_merge(path: Path) -> tuple[pa.Table, dict[date, DayCoverage], Path | None]:
    try:
        table, coverage = _read_checked(path)
    except PartUnreadable as exc:
        if exc.errno == errno.ENOENT:
            return empty_bars(), {}, None
        raise  # not known to be bad: leave it where it is and let the run say why
    except NonConformingPart:
        raise  # readable, its days perhaps good: left where it is, for verify to report
    except CorruptPart:
        # Never overwrite a part that is bad: keep it aside for a human, start it afresh.
        destination = quarantine_path(path, datetime.now(UTC))
        os.rename(path, destination)
        _fsync(path.parent)
        return empty_bars(), {}, destination
    return table.replace_schema_metadata(None), coverage, None


def _read_checked(path: Path) -> tuple[pa.Table, dict[date, DayCoverage]]:
    # Read the bytes ourselves: an OSError here is the OS refusing (permissions, too many
    # open files, I/O error), never a verdict on the file. pyarrow reports bad Parquet as
    # OSError too ("Couldn't deserialize thrift"), so only after this can it mean corrupt.
    try:
        _refuse_special(path)
        data = path.read_bytes()
    except OSError as exc:
        raise PartUnreadable(path, exc) from exc
    try:
        table = pq.ParquetFile(pa.BufferReader(data)).read()
    except (OSError, ValueError, pa.ArrowException) as exc:
        raise CorruptPart(path, f"unreadable: {exc}") from exc
    coverage = _decode(path, (table.schema.metadata or {}).get(COVERAGE_KEY))
    try:
        # A variant of the contract (rewritten by another tool) is read by casting; the
        # store writes what it read back conforming, so a write to the month mends it.
        table = conform(table)
    except NonConforming as exc:
        raise NonConformingPart(path, f"schema differs from the bar schema: {exc}") from exc
    return table, coverage


def _decode(path: Path | str, raw: bytes | None) -> dict[date, DayCoverage]:
    if raw is None:
        raise CorruptPart(Path(path), "no coverage record in the footer")
    try:
        return decode_coverage(raw)
    except (ValueError, KeyError, TypeError, AttributeError) as exc:
        raise CorruptPart(Path(path), f"malformed coverage record: {exc}") from exc


def _strictly_increasing(ts: pa.Array) -> bool:
    if len(ts) < 2:
        return True
    steps = pc.pairwise_diff(ts.cast(pa.int64()))
    return bool(pc.all(pc.greater(steps[1:], 0)).as_py())


def _dedupe_keep_last(table: pa.Table) -> pa.Table:
    """Sort by ts and keep the last row of each ts: within one batch, later rows are newer."""
    table = table.combine_chunks()
    if _strictly_increasing(table["ts"].combine_chunks()):
        return table
    order = pa.array(range(table.num_rows), pa.int64())
    ranked = table.append_column("_order", order).sort_by(
        [("ts", "ascending"), ("_order", "descending")]
    )
    ts = ranked["ts"].combine_chunks().cast(pa.int64())
    first_of_ts = pc.fill_null(pc.not_equal(pc.pairwise_diff(ts), 0), True)
    return ranked.filter(first_of_ts).drop_columns(["_order"])


def _merge(old: pa.Table, new: pa.Table) -> pa.Table:
    """Old rows whose ts the new batch also has are dropped: the newest fetch wins."""
    if not old.num_rows:
        return new
    if not new.num_rows:
        return old
    kept = old.filter(pc.invert(pc.is_in(old["ts"], value_set=new["ts"].combine_chunks())))
    # A backfill mostly adds days after (or before) what is there: skip the sort then.
    if not kept.num_rows or kept["ts"][-1].value < new["ts"][0].value:
        return pa.concat_tables([kept, new]).combine_chunks()
    if new["ts"][-1].value < kept["ts"][0].value:
        return pa.concat_tables([new, kept]).combine_chunks()
    return pa.concat_tables([kept, new]).sort_by("ts").combine_chunks()


def rows_per_day(table: pa.Table) -> dict[date, int]:
    """Row count per UTC day of ``ts``."""
    if not table.num_rows:
        return {}
    counts = pc.value_counts(pc.cast(table["ts"], pa.date32()).combine_chunks())
    return dict(
        zip(
            counts.field("values").to_pylist(),
            counts.field("counts").to_pylist(),
            strict=True,
        )
    )


def _replace_atomically(path: Path, table: pa.Table, coverage: dict[date, DayCoverage]) -> int:
    table = table.replace_schema_metadata({COVERAGE_KEY: encode_coverage(coverage.values())})
    return _write_replace(path, table)


def _fsync(path: Path) -> None:
    """Flush a file's data, or a folder's entries (so a replace survives a power cut)."""
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


# ---------------------------------------------------------------- aggregate parts
# Higher timeframes are derived data: a part is rebuilt whole from the M1 parts, never merged,
# but it is written with the same care (lock, temp file, fsync, replace) and an unreadable
# one is still moved aside rather than overwritten.


@dataclass(frozen=True)
class AggregateWrite:
    """One aggregate part written by ``write_aggregate``."""

    path: Path
    rows: int
    size_bytes: int
    quarantined: Path | None


def write_aggregate(
    lake: Path,
    symbol: Symbol,
    timeframe: str,
    month: Month,
    buckets: pa.Table,
    provenance: bytes,
) -> AggregateWrite:
    """Replace one aggregate part with ``buckets``; its footer records ``provenance``.

    ``buckets`` must have the aggregate schema, be sorted and unique on ``ts``, and lie in
    ``month``: anything else is a bug upstream (``BadBars``), never written.
    """
    from backfill.lake.paths import aggregate_part_path
    from backfill.lake.schema import AGGREGATE_SCHEMA, PROVENANCE_KEY

    if not buckets.schema.equals(AGGREGATE_SCHEMA):
        raise BadBars(f"{symbol} {timeframe} {month}: buckets do not have the aggregate schema")
    ts = buckets["ts"].combine_chunks()
    if not _strictly_increasing(ts):
        raise BadBars(f"{symbol} {timeframe} {month}: bucket ends not strictly increasing")
    if buckets.num_rows and not pc.all(_in_month(ts, month)).as_py():
        raise BadBars(f"{symbol} {timeframe} {month}: a bucket ends outside the month")
    path = aggregate_part_path(lake, symbol, timeframe, month)
    path.parent.mkdir(parents=True, exist_ok=True)
    table = buckets.replace_schema_metadata({PROVENANCE_KEY: provenance})
    with FileLock(lock_path(path)):
        # Under the lock no other writer is mid-write on this part: any temp file is stale.
        for stale in path.parent.glob(temp_glob(path)):
            stale.unlink(missing_ok=True)
        quarantined = None
        if path.exists():
            # An OSError opening it is the OS refusing, not a verdict on the file: it
            # propagates. Only a footer read and found bad makes the part corrupt.
            with open(path, "rb") as handle:
                try:
                    pq.read_metadata(handle)
                    corrupt = False
                except (OSError, ValueError, pa.ArrowException):
                    corrupt = True
            if corrupt:
                quarantined = quarantine_path(path, datetime.now(UTC))
                os.rename(path, quarantined)
                _fsync(path.parent)
        size = _write_replace(path, table)
    return AggregateWrite(path, table.num_rows, size, quarantined)


def _write_replace(path: Path, table: pa.Table, options: dict | None = None) -> int:
    """Temp file, fsync, ``os.replace``, fsync the folder: the part is old or new, never half."""
    tmp = temp_path(path)
    try:
        pq.write_table(table, tmp, **(PART_WRITE_OPTIONS if options is None else options))
        _fsync(tmp)  # the bytes must be on disk before the rename makes them the part
        size = tmp.stat().st_size
        if _before_replace is not None:
            _before_replace(tmp)
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    _fsync(path.parent)  # and the rename itself must survive a power cut
    return size


# ---------------------------------------------------------------- levels and B&R events
# Derived like the aggregates (rebuilt whole, never merged), with the same care.


def write_derived(
    path: Path, table: pa.Table, metadata: dict[bytes, bytes], options: dict
) -> AggregateWrite:
    """Replace the part at ``path`` (a levels or events part) with ``table`` under its lock;
    an unreadable part there is moved aside, never overwritten."""
    path.parent.mkdir(parents=True, exist_ok=True)
    table = table.replace_schema_metadata(metadata)
    with FileLock(lock_path(path)):
        # Under the lock no other writer is mid-write on this part: any temp file is stale.
        for stale in path.parent.glob(temp_glob(path)):
            stale.unlink(missing_ok=True)
        quarantined = None
        if path.exists():
            with open(path, "rb") as handle:
                try:
                    pq.read_metadata(handle)
                    corrupt = False
                except (OSError, ValueError, pa.ArrowException):
                    corrupt = True
            if corrupt:
                quarantined = quarantine_path(path, datetime.now(UTC))
                os.rename(path, quarantined)
                _fsync(path.parent)
        size = _write_replace(path, table, options)
    return AggregateWrite(path, table.num_rows, size, quarantined)


def read_part_columns(
    path: Path, columns: Sequence[str]
) -> tuple[pa.Table, dict[date, DayCoverage]]:
    """Some columns of a part, and its coverage, from one read of the file (levels need
    five of the thirteen: a third of ``read_part``'s time). Raises like ``read_part``."""
    try:
        _refuse_special(path)
        data = path.read_bytes()
    except OSError as exc:
        raise PartUnreadable(path, exc) from exc
    try:
        parquet = pq.ParquetFile(pa.BufferReader(data))
        verdict = conformance(parquet.schema_arrow)
        coverage = _decode(path, (parquet.schema_arrow.metadata or {}).get(COVERAGE_KEY))
        table = parquet.read(columns=list(columns)).replace_schema_metadata(None)
    except CorruptPart:
        raise
    except (OSError, ValueError, pa.ArrowException) as exc:
        raise CorruptPart(path, f"unreadable: {exc}") from exc
    if verdict.problem is not None:
        raise NonConformingPart(path, f"schema differs from the bar schema: {verdict.problem}")
    if not verdict.exact:  # a variant: the same columns, cast without loss (see conform)
        wanted = pa.schema([BAR_SCHEMA.field(name) for name in columns])
        try:
            table = conform(table, wanted)
        except NonConforming as exc:
            raise NonConformingPart(path, f"schema differs from the bar schema: {exc}") from exc
    return table, coverage
