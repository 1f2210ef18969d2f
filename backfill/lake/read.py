"""Read bars back from the lake: ``backfill.read_bars``.

Only the parts of the asked symbols and months are opened (the path says which part holds
what, so there is nothing to discover); each is checked against the data contract like any
part the store reads. The result is one Arrow table with the lake's columns, which pandas
(``.to_pandas()``) and Polars (``polars.from_arrow``) take in one call. Plain readers
pointed at ``lake/data`` trip over ``source``/``market``/``symbol`` being both file columns
and hive keys; this does not, and it needs no ``pyarrow.dataset``.
"""

from __future__ import annotations

import errno
from collections.abc import Iterable
from datetime import date, datetime
from os import PathLike

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from backfill.aggregate.timeframes import BY_NAME
from backfill.domain import (
    DAY,
    TIMEFRAME,
    UTC,
    BadInput,
    Symbol,
    check_range,
    day_start,
    months_between,
    parse_day,
    parse_symbols,
)
from backfill.lake.objpath import LakePath, bytes_reader, lake_path
from backfill.lake.paths import aggregate_part_path, aggregate_symbols, lake_symbols, part_path
from backfill.lake.schema import AGGREGATE_SCHEMA, TS_TYPE, empty_bars
from backfill.lake.storage import StorageError
from backfill.lake.store import CorruptPart, PartUnreadable, read_part

# The timeframes the lake defines: M1 (``run``), and those ``backfill aggregate`` builds.
TIMEFRAMES = (TIMEFRAME, *BY_NAME)

SymbolsArg = str | Symbol | Iterable[str | Symbol] | None
DayArg = date | str


def read_bars(
    lake: str | PathLike[str],
    symbols: SymbolsArg,
    start: DayArg,
    end: DayArg,
    timeframe: str = TIMEFRAME,
) -> pa.Table:
    """The bars of ``symbols`` whose ``ts`` falls in the UTC days ``start`` to ``end`` inclusive.

    ``symbols``: ``"BTC-USD"``, ``"BTC-USD,ETH-USD"``, a list of those or of ``Symbol``, or
    None for every symbol in the lake. ``start``/``end``: ``datetime.date`` or
    ``"YYYY-MM-DD"``. A day holds the bars stamped ``[D 00:00, D+1 00:00)`` UTC (a bar is
    stamped with its end). Rows come by symbol (in the order asked, else sorted), then ``ts``.
    ``timeframe``: ``"M1"``, or one ``backfill aggregate`` built (``"M5"`` … ``"D1"``: the
    aggregate columns, ``minutes`` and ``complete`` too; the D1 bar of day D is stamped
    D+1 00:00, so it is read with day D+1).

    Raises ``BadInput`` (a ``ValueError``) on a malformed argument, a lake folder that does
    not exist, or a symbol the lake has never held; ``store.CorruptPart`` or
    ``store.PartUnreadable`` on a part in the range that cannot be read.
    """
    root = lake_path(lake)
    if not root.is_dir():
        raise BadInput(f"no lake at {root}: not a folder")
    if not isinstance(timeframe, str) or timeframe not in TIMEFRAMES:
        raise BadInput(f"timeframe {timeframe!r}: choose from {', '.join(TIMEFRAMES)}")
    first, last = _day(start, "start"), _day(end, "end")
    try:
        check_range(first, last)
    except BadInput:
        raise BadInput(f"start {first} is after end {last}") from None
    aggregate = timeframe != TIMEFRAME
    wanted = _symbols(root, symbols, timeframe if aggregate else None)

    low = pa.scalar(day_start(first), TS_TYPE)
    # Any day a date can name is a day to read: 9999-12-31 has no next day to bound it with.
    high = pa.scalar(
        day_start(last) + DAY if last < date.max else datetime.max.replace(tzinfo=UTC), TS_TYPE
    )
    tables = []
    for symbol in wanted:
        for month in months_between(first, last):
            path = (
                aggregate_part_path(root, symbol, timeframe, month)
                if aggregate
                else part_path(root, symbol, month)
            )
            if not path.is_file():
                continue
            table = _read_aggregate(path) if aggregate else read_part(path)
            table = table.replace_schema_metadata(None)
            inside = pc.and_(pc.greater_equal(table["ts"], low), pc.less(table["ts"], high))
            tables.append(table.filter(inside))
    if not tables:
        return AGGREGATE_SCHEMA.empty_table() if aggregate else empty_bars()
    return pa.concat_tables(tables).combine_chunks()


def _read_aggregate(path: LakePath) -> pa.Table:
    """An aggregate part, held to the aggregate schema as ``read_part`` holds M1's."""
    try:
        data = path.read_bytes()
    except OSError as exc:
        raise PartUnreadable(path, exc) from exc
    except StorageError as exc:
        raise PartUnreadable(path, OSError(errno.EIO, str(exc))) from exc
    try:
        table = pq.ParquetFile(bytes_reader(data)).read()
    except (OSError, ValueError, pa.ArrowException) as exc:
        raise CorruptPart(path, f"unreadable: {exc}") from exc
    if not table.schema.remove_metadata().equals(AGGREGATE_SCHEMA):
        raise CorruptPart(path, "schema differs from the aggregate schema")
    return table


def _day(value: object, name: str) -> date:
    if isinstance(value, datetime):  # a date too, but its time would be silently dropped
        raise BadInput(f"{name}: give a day (date or 'YYYY-MM-DD'), not a datetime: {value!r}")
    if isinstance(value, date):
        return value
    if isinstance(value, str):
        return parse_day(value, name)
    raise BadInput(f"{name}: give a day (date or 'YYYY-MM-DD'), not {type(value).__name__}")


def _symbols(lake: LakePath, symbols: SymbolsArg, timeframe: str | None = None) -> list[Symbol]:
    """The symbols asked, each held in the lake (at ``timeframe``, when one is given)."""
    present = lake_symbols(lake) if timeframe is None else aggregate_symbols(lake, [timeframe])
    if symbols is None:
        return present
    if isinstance(symbols, Symbol):
        asked = [symbols]
    elif isinstance(symbols, str):
        asked = parse_symbols(symbols)
    else:
        asked = []
        for item in symbols:
            if not isinstance(item, (str, Symbol)):
                raise BadInput(f"symbols: expected 'BASE-QUOTE' strings, got {item!r}")
            symbol = item if isinstance(item, Symbol) else Symbol.parse(item)
            if symbol not in asked:
                asked.append(symbol)
        if not asked:
            raise BadInput("symbols: none given (None reads every symbol)")
    absent = [str(s) for s in asked if s not in present]
    if absent:
        held = ", ".join(map(str, present)) or "none"
        if timeframe is not None:
            raise BadInput(
                f"no {timeframe} parts in the lake {lake} for {', '.join(absent)} (it holds "
                f"{timeframe} of: {held}; `backfill aggregate --tf {timeframe}` builds them)"
            )
        raise BadInput(f"not in the lake {lake}: {', '.join(absent)} (it holds: {held})")
    return asked
