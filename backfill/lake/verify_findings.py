"""What ``verify`` reports: a finding (severity, kind, where, what, which minutes) and how one
names its runs of minutes.

``verify`` and its checks of derived parts (``verify_aggregates``, ``verify_levels``) all
make findings; they import them from here, so none of those modules imports another back.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import date, datetime, timedelta
from enum import Enum
from pathlib import Path

from backfill.domain import UTC, Symbol

MAX_RANGES = 5  # runs of minutes a finding names unless every one is asked for (--gaps)
EPOCH = datetime(1970, 1, 1, tzinfo=UTC)


class Severity(str, Enum):
    ERROR = "error"
    WARNING = "warning"


class Kind(str, Enum):
    """What a finding is about; the value is the stable name used in JSON."""

    UNREADABLE = "unreadable"
    SCHEMA = "schema"
    SCHEMA_VARIANT = "schema_variant"
    NULLS = "nulls"
    TS_UNSORTED = "ts_unsorted"
    TS_DUPLICATE = "ts_duplicate"
    TS_OUTSIDE_MONTH = "ts_outside_month"
    TS_NOT_MINUTE = "ts_not_minute"
    NOT_FINITE = "not_finite"
    OHLC = "ohlc"
    NEGATIVE_VOLUME = "negative_volume"
    PARTITION = "partition"
    NOT_CONSTANT = "not_constant"
    COVERAGE_MISSING = "coverage_missing"
    COVERAGE_MALFORMED = "coverage_malformed"
    COVERAGE_OUTSIDE_MONTH = "coverage_outside_month"
    COVERAGE_ROWS = "coverage_rows"
    UNCOVERED_ROWS = "uncovered_rows"
    NOT_FETCHED = "not_fetched"
    NO_DATA = "no_data"
    STRAY_FILE = "stray_file"
    GAP = "gap"
    PARTIAL_DAY = "partial_day"
    EMPTY_DAY = "empty_day"
    MINUTE_MISSING_DAILY = "minute_missing_daily"
    EDGE_MINUTE_MISSING = "edge_minute_missing"
    QUARANTINED = "quarantined"
    STALE_TEMP = "stale_temp"
    NO_PARTS = "no_parts"
    # aggregate parts (backfill/lake/verify_aggregates.py)
    BUCKET_MISALIGNED = "bucket_misaligned"
    BUCKET_MINUTES = "bucket_minutes"
    PROVENANCE_MISSING = "provenance_missing"
    AGGREGATE_STALE = "aggregate_stale"
    # levels and B&R event parts (backfill/lake/verify_levels.py)
    LEVELS_WINDOW = "levels_window"
    EVENT_ORDER = "event_order"
    LEVELS_STALE = "levels_stale"
    AGGREGATE_ORPHAN = "aggregate_orphan"
    BUCKET_INCOMPLETE = "bucket_incomplete"


MinuteRange = tuple[datetime, datetime]
MinuteRun = tuple[int, int]  # inclusive run of minute numbers (minutes since the epoch)


@dataclass(frozen=True)
class DayGaps:
    """How many minutes of a day had no bar, in how many runs."""

    day: date
    gap_minutes: int
    gaps: int


@dataclass(frozen=True)
class Finding:
    """One thing wrong (error) or worth knowing (warning) about one file, day or symbol.

    ``minutes`` may be the first runs only: ``ranges_total`` runs (``minutes_total`` minutes)
    were found in all.
    """

    severity: Severity
    kind: Kind
    symbol: Symbol | None
    path: Path | None
    day: date | None
    detail: str
    minutes: tuple[MinuteRange, ...] = ()
    ranges_total: int = 0
    minutes_total: int = 0
    days: tuple[DayGaps, ...] = ()  # a symbol's gap warning: the counts of each day

    @property
    def truncated(self) -> bool:
        return self.ranges_total > len(self.minutes)


def finding(
    severity: Severity,
    kind: Kind,
    symbol: Symbol | None,
    path: Path | None,
    day: date | None,
    detail: str,
    runs: Sequence[MinuteRun] = (),
    max_ranges: int | None = MAX_RANGES,
) -> Finding:
    """A finding naming the first ``max_ranges`` of ``runs`` (all of them if None)."""
    shown = runs if max_ranges is None else runs[:max_ranges]
    return Finding(
        severity, kind, symbol, path, day, detail,
        minutes=tuple((minute_of(a), minute_of(b)) for a, b in shown),
        ranges_total=len(runs),
        minutes_total=sum(b - a + 1 for a, b in runs),
    )  # fmt: skip


def minute_of(minute: int) -> datetime:
    """The bar-end timestamp of a minute number (minutes since the epoch)."""
    return EPOCH + timedelta(minutes=minute)
