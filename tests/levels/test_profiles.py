"""Profile windows (levels.md section 1), pure: DST days, Tokyo, UTC, --scan."""

from __future__ import annotations

from datetime import date, time

import pytest

from backfill.domain import BadInput
from backfill.levels.profiles import PROFILES, Scan, parse_profiles, parse_scan, windows
from tests.levels.helpers import at

US, ASIA, UTC_OPEN = (PROFILES[n] for n in ("us_equity_open", "asia_open", "daily_open_utc"))


def test_new_york_sessions_are_1380_and_1500_minutes_on_dst_change_days() -> None:
    assert windows(US, date(2025, 3, 9)).session.minutes == 1380
    fall = windows(US, date(2025, 11, 2))
    assert (fall.session.start, fall.session.end, fall.session.minutes) == (
        at("2025-11-02T04:00"),
        at("2025-11-03T05:00"),
        1500,
    )
    assert fall.opening.start == at("2025-11-02T14:30")  # winter: 09:30 is 14:30Z
    assert windows(US, date(2025, 11, 3)).pd.minutes == 1500


def test_asia_open_and_daily_open_utc_windows() -> None:
    w = windows(ASIA, date(2025, 7, 15))
    assert (w.pd.start, w.pd.end) == (at("2025-07-13T15:00"), at("2025-07-14T15:00"))
    assert (w.pm.start, w.pm.end) == (at("2025-07-14T15:00"), at("2025-07-15T00:00"))
    assert (w.opening.start, w.opening.end) == (at("2025-07-15T00:00"), at("2025-07-15T00:05"))
    assert (w.scan.start, w.scan.end) == (at("2025-07-15T00:00"), at("2025-07-15T02:01"))
    u = windows(UTC_OPEN, date(2025, 7, 15))
    assert u.pm is None and (u.opening.start, u.opening.end) == (
        at("2025-07-15T00:00"),
        at("2025-07-15T00:05"),
    )
    assert (u.pd.start, u.pd.end) == (at("2025-07-14T00:00"), at("2025-07-15T00:00"))


def test_scan_labels_are_inclusive_and_overridable() -> None:
    w = windows(US, date(2025, 7, 15))
    assert (w.scan.start, w.scan.end) == (at("2025-07-15T13:30"), at("2025-07-15T15:31"))
    scan = parse_scan("08:00-08:59")
    assert scan == Scan(time(8), time(8, 59))
    w = windows(US, date(2025, 7, 15), scan)
    assert (w.scan.start, w.scan.end) == (at("2025-07-15T12:00"), at("2025-07-15T13:00"))


@pytest.mark.parametrize("text", ["9-11", "11:30-09:30", "09:30", "aa:bb-cc:dd"])
def test_bad_scans_and_profiles(text: str) -> None:
    with pytest.raises(BadInput):
        parse_scan(text)
    with pytest.raises(BadInput):
        parse_profiles("us_equity_open,tokyo")
