"""What an aggregate part was built from, as recorded in its footer (pure values)."""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import date, datetime, timedelta

from backfill.aggregate.timeframes import BY_NAME, Timeframe
from backfill.domain import UTC, DayCoverage, Month
from backfill.lake.safe_json import FOOTER_MAX_BYTES, expect_bool, parse_json
from backfill.lake.schema import decode_coverage_record, encode_coverage

PROVENANCE_VERSION = 1


def source_days(month: Month) -> tuple[date, date]:
    """The M1 lake days a month of buckets is built from: the day before the month, to its end.

    The month's first bucket ends at its first 00:00 (or a bucket width later) and holds
    minutes of the day before; its last bucket ends before the next month and holds no
    minute of it (a bucket ending on the next month's first 00:00 lives in the next month).
    """
    return month.first_day - timedelta(days=1), month.last_day


def source_of(coverage: Mapping[date, DayCoverage], month: Month) -> dict[date, DayCoverage]:
    """The coverage entries a month of buckets depends on (days without an entry are absent)."""
    first, last = source_days(month)
    return {d: c for d, c in sorted(coverage.items()) if first <= d <= last}


@dataclass(frozen=True)
class Provenance:
    """An aggregate part's footer record: enough to tell, from footers only, if it is stale.

    ``recheck_after``: the part left out a bucket only because it had not ended yet;
    after that time it must be rebuilt even if the M1 coverage has not changed.
    """

    timeframe: Timeframe
    month: Month
    include_partial: bool
    source: Mapping[date, DayCoverage]
    recheck_after: datetime | None = None

    def encode(self) -> bytes:
        record = {
            "version": PROVENANCE_VERSION,
            "timeframe": self.timeframe.name,
            "month": str(self.month),
            "include_partial": self.include_partial,
            "recheck_after": (
                None
                if self.recheck_after is None
                else self.recheck_after.astimezone(UTC).isoformat()
            ),
            # Each M1 day's coverage entry, in the M1 footer's own format.
            "source": json.loads(encode_coverage(self.source.values())),
        }
        return json.dumps(record, separators=(",", ":")).encode()

    @classmethod
    def decode(cls, raw: bytes) -> Provenance:
        """Parse a footer record; raises ValueError (or KeyError, TypeError) when malformed."""
        record = parse_json(raw, FOOTER_MAX_BYTES)  # input: size and nesting checked
        if not isinstance(record, dict) or record.get("version") != PROVENANCE_VERSION:
            raise ValueError("unknown aggregate provenance version")
        year, month = (int(x) for x in str(record["month"]).split("-"))
        recheck = record.get("recheck_after")
        return cls(
            timeframe=BY_NAME[record["timeframe"]],
            month=Month(year, month),
            include_partial=expect_bool(record["include_partial"], "include_partial"),
            source=decode_coverage_record(record["source"]),
            recheck_after=None if recheck is None else datetime.fromisoformat(recheck),
        )
