"""The lake's data contract: column order and types, and the coverage record in a footer."""

from __future__ import annotations

import functools
import json
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from datetime import date, datetime
from typing import Any

import pyarrow as pa

from backfill.domain import MINUTES_PER_DAY, UTC, DayCoverage
from backfill.lake.safe_json import FOOTER_MAX_BYTES, BadJson, expect_dict, parse_json

TS_TYPE = pa.timestamp("us", tz="UTC")

BAR_SCHEMA = pa.schema(
    [
        pa.field("ts", TS_TYPE, nullable=False),
        pa.field("open", pa.float64(), nullable=False),
        pa.field("high", pa.float64(), nullable=False),
        pa.field("low", pa.float64(), nullable=False),
        pa.field("close", pa.float64(), nullable=False),
        pa.field("volume", pa.float64(), nullable=False),
        pa.field("source", pa.string(), nullable=False),
        pa.field("market", pa.string(), nullable=False),
        pa.field("symbol", pa.string(), nullable=False),
        pa.field("exchange", pa.string(), nullable=False),
        pa.field("what_to_show", pa.string(), nullable=False),
        pa.field("wap", pa.float64(), nullable=False),
        pa.field("bar_count", pa.int64(), nullable=False),
    ]
)

COLUMNS = tuple(BAR_SCHEMA.names)
CONSTANT_COLUMNS = ("source", "market", "symbol", "exchange", "what_to_show")

# How a part is written: ``pq.write_table(table, where, **PART_WRITE_OPTIONS)``, the one place
# the encoding is decided. Measured by scripts/bench_encoding.py on the simulator's bars (a
# month of BTC: 1,999 KB with pyarrow's defaults, 1,093 KB so): dictionaries pay only on the
# five constant text columns (on ts and the floats they cost a third more); ts, a minute
# apart, delta-encodes to 3 KB a month; byte-stream-split makes the cent-rounded floats a
# third larger; ZSTD 3 saves nothing, 9 and 19 save 2% and 4% for 3x and 20x the write time
# (a month part is rewritten as it fills); one row group a part (a month is at most 44,640
# rows; a row group a day is 7% larger). Read times in pyarrow and DuckDB differed by less
# than the noise. pyarrow, pandas, DuckDB and Polars read it (tests/lake/test_readers.py).
PART_WRITE_OPTIONS: dict[str, Any] = {
    "compression": "zstd",
    "compression_level": 1,
    "write_statistics": True,
    "use_dictionary": list(CONSTANT_COLUMNS),
    "column_encoding": {"ts": "DELTA_BINARY_PACKED"},
}

COVERAGE_KEY = b"backfill.coverage"
COVERAGE_VERSION = 1


def empty_bars() -> pa.Table:
    return BAR_SCHEMA.empty_table()


def encode_coverage(days: Iterable[DayCoverage]) -> bytes:
    """The coverage record as stored in a part's key-value metadata (JSON, sorted by day)."""
    record = {
        "version": COVERAGE_VERSION,
        "days": {
            d.day.isoformat(): {
                "rows": d.rows,
                "fetched_at": d.fetched_at.astimezone(UTC).isoformat(),
                "complete": d.complete,
                # Why an empty day is empty; written only when set, so older readers and
                # older records agree.
                **({"no_data": True} if d.no_data else {}),
            }
            for d in sorted(days, key=lambda d: d.day)
        },
    }
    return json.dumps(record, separators=(",", ":")).encode()


def decode_coverage(raw: bytes) -> dict[date, DayCoverage]:
    """Parse a coverage record; raises ValueError on a malformed one."""
    return {day: DayCoverage(day, *fields) for day, fields in _recorded_days(raw)}


def coverage_bits(raw: bytes, year: int, month: int) -> tuple[int, int]:
    """A coverage record's complete days in one month, and of those the no-data days, as
    bits (bit d: day d), without building a ``DayCoverage`` per day (plan reads 180,000).

    Raises ValueError on a record ``decode_coverage`` would refuse.
    """
    complete = no_data = 0
    try:
        for day, (_, _, whole, empty) in _recorded_days(raw):
            if whole and day.year == year and day.month == month:
                complete |= 1 << day.day
                if empty:
                    no_data |= 1 << day.day
    except (KeyError, TypeError, AttributeError) as exc:
        raise ValueError(f"malformed coverage record: {exc}") from exc
    return complete, no_data


def _recorded_days(raw: bytes) -> Iterator[tuple[date, tuple[int, datetime, bool, bool]]]:
    """Each recorded day and its (rows, fetched_at, complete, no_data), checked: the record
    is input (anyone can rewrite a footer), so its size, nesting, types and ranges are
    checked before anything is believed (``"false"`` is not a boolean, -1 not a count)."""
    return _days_of(parse_json(raw, FOOTER_MAX_BYTES))


def decode_coverage_record(record: object) -> dict[date, DayCoverage]:
    """``decode_coverage`` of a record already parsed (one nested in another record)."""
    return {day: DayCoverage(day, *fields) for day, fields in _days_of(record)}


def _days_of(parsed: object) -> Iterator[tuple[date, tuple[int, datetime, bool, bool]]]:
    record = expect_dict(parsed, "coverage record")
    if record.get("version") != COVERAGE_VERSION:
        raise ValueError("unknown coverage record version")
    for key, entry in expect_dict(record.get("days"), "coverage days").items():
        # Checked inline (plan reads 180,000 of these): ``type(x) is int`` refuses a bool.
        if type(entry) is not dict:
            raise BadJson(f"coverage of {key[:10]!r}: expected an object")
        rows, fetched_at = entry.get("rows"), entry.get("fetched_at")
        complete, no_data = entry.get("complete"), entry.get("no_data", False)
        if type(rows) is not int or not 0 <= rows <= MINUTES_PER_DAY:
            raise BadJson(f"coverage of {key[:10]!r}: rows must be 0 to {MINUTES_PER_DAY}")
        if type(complete) is not bool or type(no_data) is not bool:
            raise BadJson(f"coverage of {key[:10]!r}: complete, no_data must be true or false")
        if type(fetched_at) is not str or len(fetched_at) > 64 or len(key) != 10:
            raise BadJson(f"coverage of {key[:10]!r}: malformed day or fetched_at")
        yield date.fromisoformat(key), (rows, _instant(fetched_at), complete, no_data)


@functools.lru_cache(maxsize=256)
def _instant(text: str) -> datetime:
    # The days of one write share one fetch time: parse it once (plan reads 6,000 footers).
    value = datetime.fromisoformat(text)
    if value.tzinfo is None:
        raise ValueError(f"fetched_at {text!r} has no time zone")
    try:
        value.astimezone(UTC)  # year 1 at +01:00 is before any UTC instant a date holds
    except OverflowError:
        raise ValueError(f"fetched_at {text!r} out of range") from None
    return value


# Higher timeframes (M5 … D1): the bar columns, then the M1 rows in the bucket and whether
# every lake day the bucket's minutes belong to was recorded whole.
AGGREGATE_SCHEMA = pa.schema(
    [
        *BAR_SCHEMA,
        pa.field("minutes", pa.int64(), nullable=False),
        pa.field("complete", pa.bool_(), nullable=False),
    ]
)
AGGREGATE_COLUMNS = tuple(AGGREGATE_SCHEMA.names)
# An aggregate part's footer: what it was built from (each M1 day's coverage entry).
PROVENANCE_KEY = b"backfill.aggregate"


# ---------------------------------------------------------------- conformance
# One rule, used by every reader (store, read_bars, plan's footer reads, aggregate, verify):
# a part conforms when its schema IS the contract's. A part another tool rewrote (pyarrow's
# defaults make every field nullable, a dictionary or large text column, a timestamp in ms or
# ns, the columns in another order) holds the same bars: it is a *variant*, read by casting
# to the contract when the cast loses nothing, and stored conforming on the next write.
# Anything else (a column missing or extra, another kind of type) does not conform.

# Time zone names that mean UTC; a naive timestamp does not say, so it is not a variant.
_UTC_NAMES = frozenset({"UTC", "utc", "Etc/UTC", "Etc/UCT", "UCT", "Z", "+00:00", "GMT"})


@dataclass(frozen=True)
class Conformance:
    """A schema judged against the contract: ``exact``; else ``problem`` (None: a variant
    that casts losslessly by type, named in ``variant``; else why it does not conform)."""

    exact: bool
    problem: str | None = None
    variant: str = ""

    @property
    def castable(self) -> bool:
        return self.problem is None


class NonConforming(ValueError):
    """A table that cannot be cast to the contract without loss (or at all)."""


def castable_type(actual: pa.DataType, expected: pa.DataType) -> bool:
    """``actual`` casts to ``expected`` without loss for every value it can hold (a finer
    timestamp can still hold a value that does not: the cast itself checks that)."""
    if pa.types.is_dictionary(actual):
        actual = actual.value_type
    if actual == expected:
        return True
    if pa.types.is_string(expected):
        return (
            pa.types.is_string(actual)
            or pa.types.is_large_string(actual)
            or pa.types.is_string_view(actual)
        )
    if pa.types.is_timestamp(expected):
        return pa.types.is_timestamp(actual) and actual.tz in _UTC_NAMES
    return False


def conformance(schema: pa.Schema, contract: pa.Schema = BAR_SCHEMA) -> Conformance:
    """How ``schema`` (metadata aside) stands to ``contract``: the one schema rule."""
    names = schema.names
    if names == contract.names and schema.remove_metadata().equals(contract):
        return Conformance(True)
    missing = [n for n in contract.names if n not in names]
    extra = [n for n in names if n not in contract.names]
    if missing or extra or len(names) != len(set(names)):
        return Conformance(
            False,
            f"missing columns {missing}, unexpected columns {extra}"
            if missing or extra
            else f"repeated columns in {names}",
        )
    wrong = [
        f"column {f.name!r} is {schema.field(f.name).type}, not {f.type}"
        for f in contract
        if not castable_type(schema.field(f.name).type, f.type)
    ]
    if wrong:
        return Conformance(False, "; ".join(wrong))
    variant = []
    if names != contract.names:
        variant.append("columns in another order")
    nullable = [f.name for f in contract if schema.field(f.name).nullable and not f.nullable]
    if nullable:
        variant.append(f"nullable {', '.join(nullable)}")
    retyped = [
        f"{f.name} {schema.field(f.name).type}"
        for f in contract
        if schema.field(f.name).type != f.type
    ]
    if retyped:
        variant.append(f"types {', '.join(retyped)}")
    return Conformance(False, None, "; ".join(variant))


def conform(table: pa.Table, contract: pa.Schema = BAR_SCHEMA) -> pa.Table:
    """``table`` in the contract's schema (its metadata kept), cast without loss; raises
    ``NonConforming`` naming why it cannot be (not a variant, nulls, a lossy cast)."""
    verdict = conformance(table.schema, contract)
    if verdict.exact:
        return table
    if verdict.problem is not None:
        raise NonConforming(verdict.problem)
    columns = []
    for field in contract:
        column = table[field.name]
        if column.null_count:
            raise NonConforming(f"column {field.name!r} has {column.null_count} null(s)")
        try:
            columns.append(column.cast(field.type, safe=True))
        except (pa.ArrowInvalid, pa.ArrowNotImplementedError) as exc:
            raise NonConforming(f"column {field.name!r}: {exc}") from exc
    return pa.Table.from_arrays(columns, schema=contract.with_metadata(table.schema.metadata))
