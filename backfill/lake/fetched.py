"""Each recorded day with its fetch time, from the parts' footers (``--refetch`` plans by it).

``coverage_index`` keeps only whether a day is complete; a refetch must also know whether
the day was recorded before or after it began. A part whose footer cannot be read counts
as no record: its days are asked again, as ``coverage_index`` does.
"""

from __future__ import annotations

from collections.abc import Iterable
from datetime import date
from pathlib import Path

from backfill.domain import DayCoverage, Symbol, months_between
from backfill.lake.objpath import lake_path
from backfill.lake.paths import part_path
from backfill.lake.store import StoreError, read_part_coverage


def read_fetched_days(
    lake: Path, symbols: Iterable[Symbol], first: date, last: date
) -> dict[Symbol, dict[date, DayCoverage]]:
    """Each symbol's recorded days in ``[first, last]``, every field of the record."""
    out: dict[Symbol, dict[date, DayCoverage]] = {}
    for symbol in dict.fromkeys(symbols):
        days = out[symbol] = {}
        if first > last:
            continue
        for month in months_between(first, last):
            path = part_path(lake_path(lake), symbol, month)
            if not path.is_file():
                continue
            try:
                recorded = read_part_coverage(path)
            except (StoreError, OSError):
                continue
            days.update((d, c) for d, c in recorded.items() if first <= d <= last)
    return out
