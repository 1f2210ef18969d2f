"""The lake store: the only module that writes Parquet.

A write reads a monthly part with its version, merges the batch in, deduplicates on ``ts``
(newest batch wins), sorts, encodes the part in memory and commits it through ``Storage``
with a conditional put: only if the part is still the version read (create-only when it was
new). A writer that lost the race reads again and merges again, a bounded number of times.
Locally the put is a temp file, fsync and ``os.replace`` under the part's file lock (held over
the whole read-merge-put, so local writers queue); on an object store it is ``If-Match`` /
``If-None-Match``. A reader never sees a half-written part and a killed writer leaves the old
part intact.
"""

from __future__ import annotations

import errno
import random
import time
from collections.abc import Callable, Collection, Sequence
from dataclasses import dataclass
from datetime import date, datetime
from pathlib import Path

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

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
from backfill.lake.footers import _as_path, read_coverage_record
from backfill.lake.footers import read_footer as read_footer  # re-exported: the store's API
from backfill.lake.footers import read_schema as read_schema
from backfill.lake.lakeio import footer_source, refuse_special, storage_target
from backfill.lake.objpath import LakePath, bytes_reader
from backfill.lake.paths import part_path, quarantine_path
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
from backfill.lake.storage import (
    CREATE,
    OVERWRITE,
    NotFound,
    ObjectMeta,
    Storage,
    StorageError,
    Version,
    WriteConflict,
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

    def __init__(self, path: LakePath, cause: OSError) -> None:
        super().__init__(cause.errno, cause.strerror or str(cause), str(path))
        self.path = path

    def __str__(self) -> str:
        return f"cannot read {self.path}: {self.strerror}"

    def __reduce__(self) -> tuple:
        # OSError pickles as (errno, strerror, filename), which this __init__ does not take.
        return (_part_unreadable, (self.path, self.errno, self.strerror))


def _part_unreadable(path: LakePath, errno_: int | None, strerror: str) -> PartUnreadable:
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
            _write_month(
                lake, symbol, month, month_rows, month_days, fetched_at, partial, set(no_data_days)
            )
        )
    return writes


def read_part(path: LakePath) -> pa.Table:
    """A part's rows and footer metadata.

    Raises ``CorruptPart`` if it was read and breaks the contract, ``PartUnreadable`` if the
    OS would not let it be read.
    """
    table, _ = _read_checked(path)
    return table


def read_part_coverage(path: LakePath | str) -> dict[date, DayCoverage]:
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
    storage, key = storage_target(path)
    new = _dedupe_keep_last(rows)
    quarantined: Path | None = None
    with storage.exclusive(key):
        for attempt in range(COMMIT_ATTEMPTS):
            # Read with its version, merge, put only if it is still that version: a writer
            # that got there first makes this one read again and merge again (nothing lost).
            old, coverage, aside, version = _load_for_merge(storage, key, path)
            quarantined = aside or quarantined
            merged = _merge(old, new)
            for day in days:
                if day in partial and day in coverage and coverage[day].complete:
                    # A refetch answered while the day ran knows less than the whole day
                    # recorded: its bars merge in, the complete record stays.
                    continue
                coverage[day] = DayCoverage(
                    day, 0, fetched_at.astimezone(UTC), day not in partial, day in no_data
                )
            counts = rows_per_day(merged)
            coverage = {
                day: DayCoverage(
                    day,
                    counts.get(day, 0),
                    c.fetched_at,
                    c.complete,
                    c.no_data and not counts.get(day, 0),
                )
                for day, c in coverage.items()
            }
            table = merged.replace_schema_metadata(
                {COVERAGE_KEY: encode_coverage(coverage.values())}
            )
            try:
                size = _put(storage, key, _encode(table), version)
                break
            except WriteConflict as exc:
                _back_off(attempt, exc)
        else:  # pragma: no cover - _back_off raises on the last attempt
            raise AssertionError("unreachable")
    return PartWrite(path, month, merged.num_rows, tuple(days), quarantined, size)


COMMIT_ATTEMPTS = 8  # conditional puts per part before the month fails (the run says why)
_BACKOFF_BASE = 0.05  # seconds; doubled per attempt, jittered


class CommitConflict(StoreError):
    """Other writers kept changing a part between our read and our put: the month failed,
    nothing was lost (their bars are in the part; ours are refetched by a rerun)."""


def _back_off(attempt: int, exc: WriteConflict) -> None:
    if attempt + 1 >= COMMIT_ATTEMPTS:
        raise CommitConflict(f"{exc}; gave up after {COMMIT_ATTEMPTS} attempts") from exc
    # Full jitter: writers that collided once do not collide again in lockstep.
    time.sleep(random.uniform(0, _BACKOFF_BASE * 2**attempt))


def _put(storage: Storage, key: str, data: pa.Buffer, version: str | None) -> int:
    mode = CREATE if version is None else Version(version)
    return storage.put(key, data, mode, before_replace=_before_replace).size


def _encode(table: pa.Table, options: dict | None = None) -> pa.Buffer:
    sink = pa.BufferOutputStream()
    pq.write_table(table, sink, **(PART_WRITE_OPTIONS if options is None else options))
    return sink.getvalue()


def _get(storage: Storage, key: str, path: Path) -> tuple[bytes, str] | None:
    """A part's bytes and version; None if there is none. The OS or the store refusing is
    ``PartUnreadable``, never a verdict on the part."""
    try:
        refuse_special(path)  # a FIFO would block the read forever
        data, meta = storage.get(key)
    except NotFound:
        return None
    except FileNotFoundError:
        return None
    except OSError as exc:
        raise PartUnreadable(path, exc) from exc
    except StorageError as exc:
        raise PartUnreadable(path, OSError(errno.EIO, str(exc))) from exc
    return data, meta.version


def _load_for_merge(
    storage: Storage, key: str, path: Path
) -> tuple[pa.Table, dict[date, DayCoverage], Path | None, str | None]:
    found = _get(storage, key, path)
    if found is None:
        return empty_bars(), {}, None, None
    data, version = found
    try:
        table, coverage = _decode_part(path, data)
    except NonConformingPart:
        raise  # readable, its days perhaps good: left where it is, for verify to report
    except CorruptPart:
        # Never overwrite a part that is bad: keep it aside for a human, start it afresh.
        return empty_bars(), {}, _move_aside(storage, key, path), None
    return table.replace_schema_metadata(None), coverage, None, version


def _move_aside(storage: Storage, key: str, path: Path) -> Path:
    destination = quarantine_path(path, datetime.now(UTC))
    try:
        storage.move_aside(
            key, key.rsplit("/", 1)[0] + "/" + destination.name if "/" in key else destination.name
        )
    except (NotFound, FileNotFoundError) as exc:
        # Another writer moved it first; our CREATE will meet whatever it wrote since.
        raise WriteConflict(f"{key} was moved aside by another writer") from exc
    return destination


def _read_checked(path: LakePath) -> tuple[pa.Table, dict[date, DayCoverage]]:
    # Read the bytes ourselves: an OSError here is the OS refusing (permissions, too many
    # open files, I/O error), never a verdict on the file. pyarrow reports bad Parquet as
    # OSError too ("Couldn't deserialize thrift"), so only after this can it mean corrupt.
    return _decode_part(path, _read_bytes(path))


def _read_bytes(path: LakePath) -> bytes:
    try:
        refuse_special(path)  # a FIFO would block the read forever
        return path.read_bytes()
    except OSError as exc:
        raise PartUnreadable(path, exc) from exc
    except StorageError as exc:
        raise PartUnreadable(path, OSError(errno.EIO, str(exc))) from exc


def _decode_part(path: LakePath, data: bytes) -> tuple[pa.Table, dict[date, DayCoverage]]:
    try:
        table = pq.ParquetFile(bytes_reader(data)).read()
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


def _decode(path: LakePath | str, raw: bytes | None) -> dict[date, DayCoverage]:
    if raw is None:
        raise CorruptPart(_as_path(path), "no coverage record in the footer")
    try:
        return decode_coverage(raw)
    except (ValueError, KeyError, TypeError, AttributeError) as exc:
        raise CorruptPart(_as_path(path), f"malformed coverage record: {exc}") from exc


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
    """Replace a part whole, unconditionally, by a caller that holds its lock (tools, tests)."""
    table = table.replace_schema_metadata({COVERAGE_KEY: encode_coverage(coverage.values())})
    storage, key = storage_target(path)
    # The caller holds the file lock: do not wait on it.
    return storage.put(key, _encode(table).to_pybytes(), OVERWRITE, held=True).size


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
    table = buckets.replace_schema_metadata({PROVENANCE_KEY: provenance})
    size, quarantined = _replace_derived(path, table, None)
    return AggregateWrite(path, table.num_rows, size, quarantined)


def remove_aggregate(lake: Path, symbol: Symbol, timeframe: str, month: Month) -> bool:
    """Remove one aggregate part (under its lock, as a write); whether there was one."""
    from backfill.lake.paths import aggregate_part_path

    path = aggregate_part_path(lake, symbol, timeframe, month)
    storage, key = storage_target(path)
    if storage.surely_absent(key):  # no folder made for a lock on nothing
        return False
    with storage.exclusive(key):
        if _head(storage, key, path) is None:
            return False
        storage.delete(key)
    return True


def _replace_derived(path: Path, table: pa.Table, options: dict | None) -> tuple[int, Path | None]:
    """Put a derived part whole (aggregates, levels, events: rebuilt, never merged), by a
    conditional put on the version seen; an unreadable part there is moved aside first."""
    storage, key = storage_target(path)
    data = _encode(table, options)
    quarantined = None
    with storage.exclusive(key):
        for attempt in range(COMMIT_ATTEMPTS):
            meta = _head(storage, key, path)
            version = None
            if meta is not None:
                if _footer_is_corrupt(path):
                    quarantined = _move_aside(storage, key, path)
                else:
                    version = meta.version
            try:
                return _put(storage, key, data, version), quarantined
            except WriteConflict as exc:
                _back_off(attempt, exc)
    raise AssertionError("unreachable")  # pragma: no cover


def _head(storage: Storage, key: str, path: Path) -> ObjectMeta | None:
    try:
        return storage.head(key)
    except OSError as exc:
        raise PartUnreadable(path, exc) from exc
    except StorageError as exc:
        raise PartUnreadable(path, OSError(errno.EIO, str(exc))) from exc


def _footer_is_corrupt(path: Path) -> bool:
    # An OSError opening it is the OS refusing, not a verdict on the file: it propagates.
    # Only a footer read and found bad makes the part corrupt.
    with footer_source(path) as source:
        try:
            pq.read_metadata(source)
        except (OSError, ValueError, pa.ArrowException):
            return True
    return False


# ---------------------------------------------------------------- levels and B&R events
# Derived like the aggregates (rebuilt whole, never merged), with the same care.


def write_derived(
    path: Path, table: pa.Table, metadata: dict[bytes, bytes], options: dict
) -> AggregateWrite:
    """Replace the part at ``path`` (a levels or events part) with ``table`` under its lock;
    an unreadable part there is moved aside, never overwritten."""
    table = table.replace_schema_metadata(metadata)
    size, quarantined = _replace_derived(path, table, options)
    return AggregateWrite(path, table.num_rows, size, quarantined)


def read_part_columns(
    path: LakePath, columns: Sequence[str], dictionary: Collection[str] = ()
) -> tuple[pa.Table, dict[date, DayCoverage]]:
    """Some columns of a part, and its coverage, from one read of the file (levels need
    five of the thirteen: a third of ``read_part``'s time). Raises like ``read_part``.

    The text columns named in ``dictionary`` come back dictionary-encoded: decoding the
    constant text columns to one string a row is most of a whole part's read time."""
    data = _read_bytes(path)
    try:
        parquet = pq.ParquetFile(bytes_reader(data), read_dictionary=list(dictionary) or None)
        # Judged as stored (``schema_arrow`` names the columns read as dictionaries so).
        stored = parquet.metadata.schema.to_arrow_schema() if dictionary else parquet.schema_arrow
        verdict = conformance(stored)
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
        for name in dictionary:  # conform cast them to plain text
            index = table.schema.get_field_index(name)
            table = table.set_column(index, name, pc.dictionary_encode(table[name]))
    return table, coverage
