"""Read levels and B&R events back: ``backfill.read_levels`` and ``backfill.read_events``.

Only the parts of the asked symbols and months are opened; the result is one Arrow table
in the dataset's schema and sort (by symbol in the order asked, then as each part is).
"""

from __future__ import annotations

from os import PathLike
from pathlib import Path

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from backfill.domain import BadInput, check_range, months_between
from backfill.lake.objpath import arrow_source, lake_path
from backfill.lake.read import DayArg, SymbolsArg, _day, _symbols
from backfill.levels.paths import events_part_path, levels_part_path
from backfill.levels.profiles import PROFILES
from backfill.levels.tables import EVENTS_SCHEMA, LEVELS_SCHEMA, empty
from backfill.levels.tolerance import parse_tolerance


def read_levels(
    lake: str | PathLike[str],
    symbols: SymbolsArg,
    start: DayArg,
    end: DayArg,
    profile: str = "us_equity_open",
) -> pa.Table:
    """The level rows of session dates ``start`` … ``end`` (inclusive) of ``profile``.

    ``symbols`` as for ``read_bars`` (None: every symbol of the M1 lake). Raises
    ``BadInput`` (a ValueError) on a malformed argument.
    """
    root, wanted, first, last = _args(lake, symbols, start, end, profile)
    return _read(
        LEVELS_SCHEMA,
        first,
        last,
        [
            levels_part_path(root, profile, s, m)
            for s in wanted
            for m in months_between(first, last)
        ],
    )


def read_events(
    lake: str | PathLike[str],
    symbols: SymbolsArg,
    start: DayArg,
    end: DayArg,
    profile: str = "us_equity_open",
    tolerance: str = "bps:5",
) -> pa.Table:
    """The B&R event rows of session dates ``start`` … ``end`` built with ``tolerance``."""
    root, wanted, first, last = _args(lake, symbols, start, end, profile)
    spec = parse_tolerance(tolerance).spec
    return _read(
        EVENTS_SCHEMA,
        first,
        last,
        [
            events_part_path(root, profile, spec, s, m)
            for s in wanted
            for m in months_between(first, last)
        ],
    )


def _args(lake, symbols, start, end, profile):  # type: ignore[no-untyped-def]
    root = lake_path(lake)
    if not root.is_dir():
        raise BadInput(f"no lake at {root}: not a folder")
    if profile not in PROFILES:
        raise BadInput(f"profile {profile!r}: known profiles are {', '.join(PROFILES)}")
    first, last = _day(start, "start"), _day(end, "end")
    try:
        check_range(first, last)
    except BadInput:
        raise BadInput(f"start {first} is after end {last}") from None
    return root, _symbols(root, symbols), first, last


def _read(schema: pa.Schema, first, last, paths: list[Path]) -> pa.Table:  # type: ignore[no-untyped-def]
    tables = []
    for path in paths:
        if not path.is_file():
            continue
        table = pq.read_table(arrow_source(path)).replace_schema_metadata(None)
        if not table.schema.equals(schema):
            raise BadInput(f"{path}: not a part of this dataset's schema")
        day = table["session_date"]
        tables.append(
            table.filter(
                pc.and_(
                    pc.greater_equal(day, pa.scalar(first, pa.date32())),
                    pc.less_equal(day, pa.scalar(last, pa.date32())),
                )
            )
        )
    if not tables:
        return empty(schema)
    return pa.concat_tables(tables).combine_chunks()
