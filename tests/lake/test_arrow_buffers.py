"""Arrow never holds a Python object for the lake's bytes (issue 21's aborts on exit).

A pyarrow reader over Python bytes holds them through a ``PyBuffer`` whose destructor takes
the GIL. Arrow's pool threads that decode a Parquet file may drop the last reference to the
source after ``read()`` returned; when that lands while the interpreter finalises, CPython
ends the thread inside the C++ destructor and the process aborts (SIGABRT, "terminate called
without an active exception") after printing its whole report: ``verify --lake s3://…`` did
so in 1 to 6 runs out of 10 on this machine, ``read_bars`` in about 1 in 20. How often comes
and goes with the load; these tests hold the cause (the readers take a copy in Arrow's own
memory, and no other reader is built), ``test_verify_on_s3_exits_cleanly_every_time`` the
symptom."""

from __future__ import annotations

import re
import sys
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq

from backfill.lake.objpath import bytes_reader

PACKAGE = Path(__file__).resolve().parents[2] / "backfill"


def _parquet_bytes() -> bytes:
    sink = pa.BufferOutputStream()
    pq.write_table(pa.table({"x": list(range(1000)), "s": ["a"] * 1000}), sink)
    return sink.getvalue().to_pybytes()


def test_a_reader_over_lake_bytes_holds_no_python_object():
    data = _parquet_bytes()
    before = sys.getrefcount(data)
    reader = bytes_reader(data)
    assert sys.getrefcount(data) == before, "the reader holds the bytes: a PyBuffer, GIL to free"
    table = pq.ParquetFile(reader).read()
    assert table.equals(pq.ParquetFile(pa.BufferReader(data)).read())


# Arrow sources over a Python object: a BufferReader or a buffer made from Python bytes.
PYTHON_BACKED = re.compile(r"\bBufferReader\(|\bpy_buffer\(|\bforeign_buffer\(")


def test_every_arrow_reader_over_lake_bytes_is_made_by_bytes_reader():
    found = []
    for path in sorted(PACKAGE.rglob("*.py")):
        for number, line in enumerate(path.read_text().splitlines(), 1):
            if PYTHON_BACKED.search(line) and not line.strip().startswith("#"):
                found.append((str(path.relative_to(PACKAGE)), line.strip(), number))
    # bytes_reader's own, over the Arrow buffer it copied into.
    assert [(file, line) for file, line, _ in found] == [
        ("lake/objpath.py", "return pa.BufferReader(buffer)")
    ], found
