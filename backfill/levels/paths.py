"""Where levels and B&R event parts live: beside ``data/``, partitioned like the bars by
the month of ``session_date`` (levels.md section 5)."""

from __future__ import annotations

import re
from collections.abc import Iterator
from pathlib import Path

from backfill.domain import MARKET, SOURCE, Month, Symbol
from backfill.lake.paths import _month_folders, part_name

LEVELS_DIR = "levels"
EVENTS_DIR = "br_events"
_SYMBOL_RE = re.compile(r"^symbol=(.+)$")


def levels_root(lake: Path) -> Path:
    return lake / LEVELS_DIR


def events_root(lake: Path) -> Path:
    return lake / EVENTS_DIR


def levels_symbol_dir(lake: Path, profile: str, symbol: Symbol) -> Path:
    return (
        levels_root(lake)
        / f"source={SOURCE}"
        / f"market={MARKET}"
        / f"profile={profile}"
        / f"symbol={symbol}"
    )


def events_symbol_dir(lake: Path, profile: str, tolerance: str, symbol: Symbol) -> Path:
    return (
        events_root(lake)
        / f"source={SOURCE}"
        / f"market={MARKET}"
        / f"profile={profile}"
        / f"tolerance={tolerance}"
        / f"symbol={symbol}"
    )


def _below(folder: Path, month: Month) -> Path:
    return folder / f"year={month.year:04d}" / f"month={month.month:02d}" / part_name(month)


def levels_part_path(lake: Path, profile: str, symbol: Symbol, month: Month) -> Path:
    """``<lake>/levels/source=ibkr/market=crypto/profile=P/symbol=S/year=Y/month=MM/part-Y-MM.parquet``."""
    return _below(levels_symbol_dir(lake, profile, symbol), month)


def events_part_path(
    lake: Path, profile: str, tolerance: str, symbol: Symbol, month: Month
) -> Path:
    """``<lake>/br_events/…/profile=P/tolerance=T/symbol=S/year=Y/month=MM/part-Y-MM.parquet``."""
    return _below(events_symbol_dir(lake, profile, tolerance, symbol), month)


def iter_month_parts(folder: Path) -> Iterator[tuple[Month, Path]]:
    """The existing parts below one symbol folder, by month."""
    for month, month_dir in _month_folders(folder):
        path = month_dir / part_name(month)
        if path.is_file():
            yield month, path


def event_tolerances(lake: Path, profile: str) -> list[str]:
    """The ``tolerance=<spec>`` folders built for ``profile``."""
    root = events_root(lake) / f"source={SOURCE}" / f"market={MARKET}" / f"profile={profile}"
    if not root.is_dir():
        return []
    return sorted(
        p.name.removeprefix("tolerance=")
        for p in root.iterdir()
        if p.is_dir() and p.name.startswith("tolerance=")
    )
