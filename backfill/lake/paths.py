"""Where things live in the lake: part paths, and the names of lock, temp and quarantine files.

Every file the store makes that is not a part starts with '.' or '_', which ``pyarrow.dataset``
(and Spark) skip, and does not end in '.parquet', which DuckDB's and Polars'
``'**/*.parquet'`` globs need (they do read '.' and '_' names).
"""

from __future__ import annotations

import os
import re
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import TypeVar, cast

from backfill.domain import MARKET, SOURCE, TIMEFRAME, UTC, BadInput, Month, Symbol
from backfill.lake.objpath import LakePath, lake_path

# A lake's place, as the caller has it: a folder's ``Path``, an object store's ``ObjectPath``,
# or either (``LakePath``); what is built from it is of the same kind.
P = TypeVar("P", bound=LakePath)

DATA_DIR = "data"
PART_SUFFIX = ".parquet"
TEMP_SUFFIX = ".tmp"
LOCK_SUFFIX = ".lock"
QUARANTINE_PREFIX = "_corrupt-"
QUARANTINE_SUFFIX = ".bad"

_SYMBOL_DIR_RE = re.compile(r"^symbol=(.+)$")
_YEAR_DIR_RE = re.compile(r"^year=(\d{4})$")
_MONTH_DIR_RE = re.compile(r"^month=(\d{2})$")


def dataset_root(lake: P) -> P:
    """The folder to hand to ``pyarrow.dataset.dataset(..., partitioning='hive')``."""
    return cast(P, lake / DATA_DIR)


def market_dir(lake: P) -> P:
    """The folder holding one ``symbol=...`` folder per symbol."""
    return timeframe_dir(lake, TIMEFRAME)


def symbol_dir(lake: P, symbol: Symbol) -> P:
    return cast(P, market_dir(lake) / f"symbol={symbol}")


def part_name(month: Month) -> str:
    return f"part-{month}{PART_SUFFIX}"


def part_path(lake: P, symbol: Symbol, month: Month) -> P:
    """``<lake>/data/source=ibkr/market=crypto/timeframe=M1/symbol=X/year=Y/month=MM/part-Y-MM.parquet``."""
    return cast(P, symbol_dir(lake, symbol) / part_below_symbol(month))


def part_below_symbol(month: Month) -> str:
    """``year=Y/month=MM/part-Y-MM.parquet``: where a month's part lies in its symbol's folder."""
    return f"year={month.year:04d}/month={month.month:02d}/{part_name(month)}"


LOCKS_DIR = "_locks"  # per-symbol run locks, and what each symbol's last worker sent


def run_lock_path(lake: LakePath, symbol: object) -> LakePath:
    """The lock a run holds while it fetches ``symbol``: one run per symbol at a time."""
    return lake_path(lake) / LOCKS_DIR / f"{symbol}.run.lock"


def recent_sends_path(lake: LakePath, symbol: object) -> LakePath:
    """What the last worker for ``symbol`` sent in its final seconds (IB still counts it)."""
    return lake_path(lake) / LOCKS_DIR / f"{symbol}.sends.json"


def lock_path(part: P) -> P:
    return cast(P, part.with_name(f".{part.name}{LOCK_SUFFIX}"))


def temp_path(part: Path) -> Path:
    """A temp file per writing process, so a stale one can be told from a live one."""
    return part.with_name(f".{part.name}.{os.getpid()}{TEMP_SUFFIX}")


def temp_glob(part: Path) -> str:
    return f".{part.name}.*{TEMP_SUFFIX}"


def quarantine_path(part: P, now: datetime) -> P:
    """A name for a corrupt part moved aside; it never collides with an existing file."""
    stamp = now.astimezone(UTC).strftime("%Y%m%dT%H%M%S%fZ")
    # Not ending in .parquet: DuckDB's and Polars' '**/*.parquet' globs must not pick it up.
    candidate = part.with_name(f"{QUARANTINE_PREFIX}{part.name}.{stamp}{QUARANTINE_SUFFIX}")
    counter = 1
    while candidate.exists():
        candidate = part.with_name(
            f"{QUARANTINE_PREFIX}{part.name}.{stamp}-{counter}{QUARANTINE_SUFFIX}"
        )
        counter += 1
    return cast(P, candidate)


def is_hidden(name: str) -> bool:
    """``pyarrow.dataset`` (and Spark) skip files and folders so named; DuckDB and Polars don't."""
    return name.startswith((".", "_"))


def readers_of(lake: LakePath, path: LakePath) -> str | None:
    """Which readers of ``<lake>/data`` would read ``path`` with the parts (None: no reader).

    DuckDB's and Polars' ``'data/**/*.parquet'`` take every name ending in '.parquet', hidden
    or not; ``pyarrow.dataset('data')`` takes every file with no '.' or '_' name on its way.
    """
    names = path.relative_to(dataset_root(lake)).parts
    globbed = path.name.endswith(PART_SUFFIX)
    listed = not any(is_hidden(name) for name in names)
    if globbed and listed:
        return "DuckDB, Polars and pyarrow.dataset"
    if globbed:
        return "DuckDB and Polars ('**/*.parquet')"
    return "pyarrow.dataset" if listed else None


def relative(lake: LakePath, path: LakePath | None) -> str | None:
    """``path`` below ``lake`` as POSIX text for reports (whole when outside it)."""
    if path is None:
        return None
    try:
        return path.relative_to(lake).as_posix()
    except ValueError:
        return path.as_posix()


def is_quarantined(path: LakePath) -> bool:
    return path.name.startswith(QUARANTINE_PREFIX) and path.name.endswith(QUARANTINE_SUFFIX)


def is_temp(path: LakePath) -> bool:
    return path.name.startswith(".") and path.name.endswith(TEMP_SUFFIX)


def is_lock(path: LakePath) -> bool:
    return path.name.startswith(".") and path.name.endswith(LOCK_SUFFIX)


def lake_symbols(lake: LakePath) -> list[Symbol]:
    """Symbols that have a folder in the lake, sorted; folders with malformed names are skipped."""
    return _symbols_below(market_dir(lake))


def aggregate_symbols(lake: LakePath, timeframes: Iterable[str]) -> list[Symbol]:
    """Symbols with a folder under any of the aggregate ``timeframes``, sorted."""
    return sorted({s for tf in timeframes for s in _symbols_below(timeframe_dir(lake, tf))})


def _symbols_below(root: LakePath) -> list[Symbol]:
    if not root.is_dir():
        return []
    symbols = []
    for child in root.iterdir():
        match = _SYMBOL_DIR_RE.match(child.name)
        if not (child.is_dir() and match):
            continue
        try:
            symbol = Symbol.parse(match.group(1))
        except BadInput:
            continue
        if str(symbol) == match.group(1):
            symbols.append(symbol)
    return sorted(symbols)


def month_dirs(lake: P, symbol: Symbol) -> Iterator[tuple[Month, P]]:
    """The ``year=Y/month=MM`` folders of one symbol, in month order."""
    return _month_folders(symbol_dir(lake, symbol))


def _month_folders(root: P) -> Iterator[tuple[Month, P]]:
    """The ``year=Y/month=MM`` folders below ``root`` (a symbol's folder), in month order."""
    if not root.is_dir():
        return
    found: list[tuple[Month, P]] = []
    for year_dir in root.iterdir():
        year_match = _YEAR_DIR_RE.match(year_dir.name)
        if not (year_dir.is_dir() and year_match):
            continue
        for month_dir in year_dir.iterdir():
            month_match = _MONTH_DIR_RE.match(month_dir.name)
            if month_dir.is_dir() and month_match and 1 <= int(month_match.group(1)) <= 12:
                month = Month(int(year_match.group(1)), int(month_match.group(1)))
                found.append((month, cast(P, month_dir)))
    yield from sorted(found)


def iter_parts(
    lake: P, symbols: Iterable[Symbol] | None = None
) -> Iterator[tuple[Symbol, Month, P]]:
    """Every existing part of the given symbols (default: all in the lake), by symbol then month."""
    for symbol in lake_symbols(lake) if symbols is None else symbols:
        for month, folder in month_dirs(lake, symbol):
            path = cast(P, folder / part_name(month))
            if path.is_file():
                yield symbol, month, path


@dataclass(frozen=True)
class Place:
    """Where a file under ``data/`` sits: the symbol and month its folders name, if canonical."""

    symbol: Symbol | None
    month: Month | None
    part: bool  # the file is the canonical part of that symbol and month


def locate(lake: LakePath, path: LakePath, timeframe: str = TIMEFRAME) -> Place:
    """Read the symbol and month off a file's folders (``symbol=X/year=Y/month=MM``) below
    ``timeframe=...`` (M1, or an aggregate's).

    ``part`` is true only for the month's part itself (``part_path``, ``aggregate_part_path``);
    a copy beside it or a part in a misnamed folder (``month=1``) is not a part, though
    readers would read it.
    """
    try:
        names = path.relative_to(timeframe_dir(lake, timeframe)).parts
    except ValueError:
        return Place(None, None, False)
    symbol = month = None
    if len(names) > 1 and (match := _SYMBOL_DIR_RE.match(names[0])):
        try:
            parsed = Symbol.parse(match.group(1))
        except BadInput:
            parsed = None
        symbol = parsed if parsed is not None and str(parsed) == match.group(1) else None
    if symbol is not None and len(names) > 3:
        year_match = _YEAR_DIR_RE.match(names[1])
        month_match = _MONTH_DIR_RE.match(names[2])
        if year_match and month_match and 1 <= int(month_match.group(1)) <= 12:
            month = Month(int(year_match.group(1)), int(month_match.group(1)))
    part = (
        symbol is not None
        and month is not None
        and len(names) == 4
        and names[3] == part_name(month)
    )
    return Place(symbol, month, part)


# ---------------------------------------------------------------- higher timeframes
# The M1 tree with ``timeframe=M5`` and so on: the same symbol/year/month folders and names.


def timeframe_dir(lake: P, timeframe: str) -> P:
    """The folder holding one ``symbol=...`` folder per symbol, for one aggregate timeframe."""
    root = dataset_root(lake)
    return cast(P, root / f"source={SOURCE}" / f"market={MARKET}" / f"timeframe={timeframe}")


def aggregate_part_path(lake: P, symbol: Symbol, timeframe: str, month: Month) -> P:
    """``<lake>/data/source=ibkr/market=crypto/timeframe=H1/symbol=X/year=Y/month=MM/part-Y-MM.parquet``."""
    return cast(
        P,
        timeframe_dir(lake, timeframe)
        / f"symbol={symbol}"
        / f"year={month.year:04d}"
        / f"month={month.month:02d}"
        / part_name(month),
    )


def iter_aggregate_parts(
    lake: P, timeframe: str, symbols: Iterable[Symbol]
) -> Iterator[tuple[Symbol, Month, P]]:
    """Every existing aggregate part of one timeframe for the given symbols, by symbol, month."""
    for symbol in symbols:
        folder_of_symbol = cast(P, timeframe_dir(lake, timeframe) / f"symbol={symbol}")
        for month, folder in _month_folders(folder_of_symbol):
            path = cast(P, folder / part_name(month))
            if path.is_file():
                yield symbol, month, path
