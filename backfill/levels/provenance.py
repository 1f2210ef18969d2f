"""What a levels or events part was built from, as its footer records it (pure values)."""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import date

from backfill.domain import DayCoverage, Month
from backfill.lake.schema import decode_coverage, encode_coverage
from backfill.levels.profiles import Profile, Scan, windows

PROVENANCE_VERSION = 1


def source_days(profile: Profile, month: Month, scan: Scan | None = None) -> tuple[date, date]:
    """The M1 lake days the sessions of ``month`` draw on: from the first session's PD to the
    last session's OR, PM and (for events: ``scan`` given) scan."""
    first = windows(profile, month.first_day, scan)
    last = windows(profile, month.last_day, scan)
    ends = [last.pd, last.opening] + ([last.pm] if last.pm is not None else [])
    if scan is not None:
        ends.append(last.scan)
    return first.pd.lake_days()[0], max(w.lake_days()[1] for w in ends)


def source_of(
    coverage: Mapping[date, DayCoverage], first: date, last: date
) -> dict[date, DayCoverage]:
    return {d: c for d, c in sorted(coverage.items()) if first <= d <= last}


@dataclass(frozen=True)
class Provenance:
    """A part's footer record: its kind, month, parameters and the M1 coverage it used."""

    kind: str  # "levels" or "events"
    month: Month
    params: Mapping[str, object]  # profile, include_partial and (events) the B&R settings
    source: Mapping[date, DayCoverage]

    def encode(self) -> bytes:
        record = {
            "version": PROVENANCE_VERSION,
            "kind": self.kind,
            "month": str(self.month),
            "params": dict(self.params),
            "source": json.loads(encode_coverage(self.source.values())),
        }
        return json.dumps(record, separators=(",", ":")).encode()

    @classmethod
    def decode(cls, raw: bytes) -> Provenance:
        """Parse a footer record; raises ValueError (or KeyError, TypeError) when malformed."""
        record = json.loads(raw)
        if not isinstance(record, dict) or record.get("version") != PROVENANCE_VERSION:
            raise ValueError("unknown levels provenance version")
        year, month = (int(x) for x in str(record["month"]).split("-"))
        params = record["params"]
        if not isinstance(params, dict) or record["kind"] not in ("levels", "events"):
            raise ValueError("malformed levels provenance record")
        return cls(
            record["kind"],
            Month(year, month),
            params,
            decode_coverage(json.dumps(record["source"]).encode()),
        )
