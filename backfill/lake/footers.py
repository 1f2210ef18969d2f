"""A part's footer read alone: its coverage record, and whether its schema is the contract's.

Apart from the store so that the processes that read many footers (plan's helpers) import
only pyarrow's Parquet reader: not pyarrow.compute, filelock or the writing side.
"""

from __future__ import annotations

import errno
import functools

import pyarrow as pa
import pyarrow.parquet as pq

from backfill.lake.errors import CorruptPart, NonConformingPart
from backfill.lake.lakeio import footer_source
from backfill.lake.objpath import LakePath, lake_path
from backfill.lake.schema import BAR_SCHEMA, COVERAGE_KEY, PART_WRITE_OPTIONS, conformance
from backfill.lake.storage import StorageError

try:  # what pq.ParquetFile wraps; _read_footer falls back to the public API without it
    from pyarrow._parquet import ParquetReader as _ParquetReader
except ImportError:  # pragma: no cover
    _ParquetReader = None


def read_coverage_record(path: LakePath | str) -> bytes:
    """A part's coverage record as stored (JSON), from its footer only; raises ``CorruptPart``
    if the footer cannot be read, has another schema or holds no record."""
    try:
        metadata = _read_footer(path)
    except (OSError, ValueError, pa.ArrowException) as exc:
        raise CorruptPart(_as_path(path), f"unreadable footer: {exc}") from exc
    if not metadata.schema.equals(_bar_parquet_schema()):
        _footer_castable(_as_path(path), metadata)
    raw = (metadata.metadata or {}).get(COVERAGE_KEY)
    if raw is None:
        raise CorruptPart(_as_path(path), "no coverage record in the footer")
    return raw


def read_footer(path: LakePath | str) -> pq.FileMetaData:
    """A Parquet file's footer alone, as ``plan`` reads them; raises as pyarrow does
    (``OSError``, ``ValueError``, ``ArrowException``)."""
    try:
        return _read_footer(path)
    except StorageError as exc:
        raise OSError(errno.EIO, str(exc)) from exc


def _read_footer(path: LakePath | str) -> pq.FileMetaData:
    """A Parquet file's footer, and nothing else (plan reads 6,000 of them).

    The footer alone, not the Arrow schema (``read_schema``), from an open file, not a path
    (no filesystem lookup), through the reader ``ParquetFile`` wraps, without the column
    index ``ParquetFile`` builds in Python: about a quarter of ``read_schema``'s time.
    Not ``pyarrow._parquet._reconstruct_filemetadata`` on the tail's bytes, 40% faster: a
    damaged footer aborts the process there (its C++ exception is not translated; found by
    ``test_a_damaged_footer_is_a_corrupt_part_and_nothing_else``). On an object store the
    file is the object's tail alone (``lakeio.footer_source``).
    """
    with footer_source(path) as source:
        if _ParquetReader is None:
            return pq.read_metadata(source)
        reader = _ParquetReader()
        reader.open(source)
        return reader.metadata


def read_schema(path: LakePath) -> pa.Schema:
    """A part's Arrow schema with its footer metadata (``pq.read_schema``), from the footer
    alone on an object store too. Raises like ``pq.read_schema`` (OSError, ArrowException)."""
    try:
        with footer_source(path) as source:
            return pq.read_schema(source)
    except StorageError as exc:
        raise OSError(errno.EIO, str(exc)) from exc


def _footer_castable(path: LakePath, metadata: pq.FileMetaData) -> None:
    """From the footer alone, as ``_read_checked`` would judge the rows: a variant of the
    contract whose columns hold no null (by the footer's statistics) is read by casting, so
    its days count; anything else raises ``NonConformingPart``. (A timestamp finer than the
    contract's that holds sub-microsecond values is found only when the rows are read.)"""
    try:
        schema = metadata.schema.to_arrow_schema()
        verdict = conformance(schema)  # decodes the names: one not UTF-8 raises here
    except (ValueError, pa.ArrowException) as exc:
        raise CorruptPart(path, f"unreadable footer schema: {exc}") from exc
    if verdict.problem is not None:
        raise NonConformingPart(path, f"schema differs from the bar schema: {verdict.problem}")
    for group in range(metadata.num_row_groups):
        row_group = metadata.row_group(group)
        for index in range(row_group.num_columns):
            stats = row_group.column(index).statistics
            if stats is not None and stats.has_null_count and stats.null_count:
                raise NonConformingPart(
                    path,
                    f"schema differs from the bar schema: nulls in "
                    f"{row_group.column(index).path_in_schema}",
                )


def _as_path(path: LakePath | str) -> LakePath:
    return lake_path(path)


@functools.lru_cache(maxsize=1)
def _bar_parquet_schema() -> pq.ParquetSchema:
    """The Parquet schema every part has (as written from ``BAR_SCHEMA``)."""
    sink = pa.BufferOutputStream()
    pq.ParquetWriter(sink, BAR_SCHEMA, **PART_WRITE_OPTIONS).close()  # no rows: no pandas import
    return pq.read_metadata(sink.getvalue()).schema  # an Arrow buffer: no Python object held
