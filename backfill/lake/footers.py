"""A part's footer read alone: its coverage record, and whether its schema is the contract's.

Apart from the store so that the processes that read many footers (plan's helpers) import
only pyarrow's Parquet reader: not pyarrow.compute, filelock or the writing side.
"""

from __future__ import annotations

import errno
import functools
import io
import os
import stat
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq

from backfill.lake.errors import CorruptPart, NonConformingPart
from backfill.lake.objpath import ObjectPath
from backfill.lake.schema import BAR_SCHEMA, COVERAGE_KEY, PART_WRITE_OPTIONS, conformance
from backfill.lake.storage import StorageError

try:  # what pq.ParquetFile wraps; _read_footer falls back to the public API without it
    from pyarrow._parquet import ParquetReader as _ParquetReader
except ImportError:  # pragma: no cover
    _ParquetReader = None


def read_coverage_record(path: Path | str) -> bytes:
    """A part's coverage record as stored (JSON), from its footer only; raises ``CorruptPart``
    if the footer cannot be read, has another schema or holds no record."""
    try:
        metadata = _read_footer(path if isinstance(path, ObjectPath) else str(path))
    except (OSError, ValueError, pa.ArrowException) as exc:
        raise CorruptPart(_as_path(path), f"unreadable footer: {exc}") from exc
    if not metadata.schema.equals(_bar_parquet_schema()):
        _footer_castable(_as_path(path), metadata)
    raw = (metadata.metadata or {}).get(COVERAGE_KEY)
    if raw is None:
        raise CorruptPart(_as_path(path), "no coverage record in the footer")
    return raw


def read_footer(path: Path | str | ObjectPath) -> pq.FileMetaData:
    """A Parquet file's footer alone, as ``plan`` reads them; raises as pyarrow does
    (``OSError``, ``ValueError``, ``ArrowException``)."""
    if isinstance(path, ObjectPath):
        try:
            return _read_object_footer(path)
        except StorageError as exc:
            raise OSError(errno.EIO, str(exc)) from exc
    return _read_footer(str(path))


def _read_footer(path: str | ObjectPath) -> pq.FileMetaData:
    """A Parquet file's footer, and nothing else (plan reads 6,000 of them).

    The footer alone, not the Arrow schema (``read_schema``), from an open file, not a path
    (no filesystem lookup), through the reader ``ParquetFile`` wraps, without the column
    index ``ParquetFile`` builds in Python: about a quarter of ``read_schema``'s time.
    Not ``pyarrow._parquet._reconstruct_filemetadata`` on the tail's bytes, 40% faster: a
    damaged footer aborts the process there (its C++ exception is not translated; found by
    ``test_a_damaged_footer_is_a_corrupt_part_and_nothing_else``).
    """
    if isinstance(path, ObjectPath):
        return _read_object_footer(path)
    _refuse_special(path)  # a FIFO would block the open below forever
    with pa.OSFile(path) as source:
        if _ParquetReader is None:
            return pq.read_metadata(source)
        reader = _ParquetReader()
        reader.open(source)
        return reader.metadata


def read_schema(path: Path) -> pa.Schema:
    """A part's Arrow schema with its footer metadata (``pq.read_schema``), from the footer
    alone on an object store too. Raises like ``pq.read_schema`` (OSError, ArrowException)."""
    if isinstance(path, ObjectPath):
        try:
            return _read_object_footer(path).schema.to_arrow_schema()
        except StorageError as exc:
            raise OSError(errno.EIO, str(exc)) from exc
    return pq.read_schema(path)


_TAIL_GUESS = 64 * 1024  # one ranged get holds a part's footer (a few KiB) nearly always


def _read_object_footer(path: ObjectPath) -> pq.FileMetaData:
    """The footer of a Parquet object from its tail alone (one ranged get, two if the footer
    is larger than the guess): a plan over thousands of parts fetches no row data."""
    tail, size = path.read_tail(_TAIL_GUESS)
    if len(tail) < 8 or tail[-4:] != b"PAR1":
        raise ValueError("not a Parquet file (no PAR1 at the end)")
    needed = int.from_bytes(tail[-8:-4], "little") + 8
    if needed > len(tail) and needed <= size:
        tail, size = path.read_tail(needed)
    return pq.read_metadata(pa.PythonFile(_Tail(tail, size), mode="r"))


class _Tail(io.RawIOBase):
    """A read-only file of ``size`` bytes of which only the tail is held: enough for a
    Parquet reader that reads the footer and nothing else."""

    def __init__(self, tail: bytes, size: int) -> None:
        self._tail, self._size, self._pos = tail, size, 0
        self._start = size - len(tail)

    def readable(self) -> bool:
        return True

    def seekable(self) -> bool:
        return True

    def seek(self, offset: int, whence: int = 0) -> int:
        self._pos = {0: 0, 1: self._pos, 2: self._size}[whence] + offset
        return self._pos

    def tell(self) -> int:
        return self._pos

    def read(self, n: int = -1) -> bytes:
        if self._pos < self._start:
            raise OSError("read before the fetched footer")
        end = self._size if n is None or n < 0 else min(self._size, self._pos + n)
        data = self._tail[self._pos - self._start : end - self._start]
        self._pos = end
        return data

    def readinto(self, buffer: Any) -> int:
        data = self.read(len(buffer))
        buffer[: len(data)] = data
        return len(data)


def _footer_castable(path: Path, metadata: pq.FileMetaData) -> None:
    """From the footer alone, as ``_read_checked`` would judge the rows: a variant of the
    contract whose columns hold no null (by the footer's statistics) is read by casting, so
    its days count; anything else raises ``NonConformingPart``. (A timestamp finer than the
    contract's that holds sub-microsecond values is found only when the rows are read.)"""
    try:
        schema = metadata.schema.to_arrow_schema()
    except (ValueError, pa.ArrowException) as exc:
        raise CorruptPart(path, f"unreadable footer schema: {exc}") from exc
    verdict = conformance(schema)
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


def _as_path(path: Path | str) -> Path:
    return path if isinstance(path, ObjectPath) else Path(path)  # type: ignore[return-value]


def _refuse_special(path: Path | str) -> None:
    """``OSError`` unless ``path`` is a regular file: a FIFO, a device or a socket in a
    part's place is not read (opening a FIFO blocks until a writer comes)."""
    if isinstance(path, ObjectPath):
        return  # an object is bytes, never a FIFO
    mode = os.stat(path).st_mode
    if not stat.S_ISREG(mode) and not stat.S_ISDIR(mode):  # a folder: the OS says EISDIR
        raise OSError(errno.EINVAL, "not a regular file", str(path))


@functools.lru_cache(maxsize=1)
def _bar_parquet_schema() -> pq.ParquetSchema:
    """The Parquet schema every part has (as written from ``BAR_SCHEMA``)."""
    sink = pa.BufferOutputStream()
    pq.ParquetWriter(sink, BAR_SCHEMA, **PART_WRITE_OPTIONS).close()  # no rows: no pandas import
    return pq.read_metadata(pa.BufferReader(sink.getvalue())).schema
