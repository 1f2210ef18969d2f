"""The window IB says it served, read from the historical-data header (pure, no I/O).

IB's answer to reqHistoricalData starts with the start and end of the window it served.
They are text, ``yyyymmdd  hh:mm:ss`` (two spaces) in the gateway's login time zone with no
zone written, whatever ``formatDate`` says; the zone is named once, at the end of the
connection time string of the API handshake (``20250702 12:00:00 EST``, a zone name, or a
long name such as ``China Standard Time``). Epoch seconds are accepted too.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone, tzinfo
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

UTC = timezone.utc

# Names TWS writes for the zones of its login screen, mapped to IANA zones. Abbreviations
# are ambiguous in general (IST, CST); these are the readings TWS users' zones give them.
_ALIASES: dict[str, str] = {
    "UTC": "UTC", "GMT": "UTC", "Z": "UTC", "Coordinated Universal Time": "UTC",
    "Greenwich Mean Time": "Europe/London", "BST": "Europe/London",
    "British Summer Time": "Europe/London",
    "EST": "America/New_York", "EDT": "America/New_York", "ET": "America/New_York",
    "Eastern Standard Time": "America/New_York", "Eastern Daylight Time": "America/New_York",
    "CST": "America/Chicago", "CDT": "America/Chicago", "CT": "America/Chicago",
    "Central Standard Time": "America/Chicago", "Central Daylight Time": "America/Chicago",
    "MST": "America/Denver", "MDT": "America/Denver",
    "Mountain Standard Time": "America/Denver", "Mountain Daylight Time": "America/Denver",
    "PST": "America/Los_Angeles", "PDT": "America/Los_Angeles",
    "Pacific Standard Time": "America/Los_Angeles",
    "Pacific Daylight Time": "America/Los_Angeles",
    "CET": "Europe/Paris", "CEST": "Europe/Paris", "MET": "Europe/Paris",
    "Central European Time": "Europe/Paris",
    "Central European Standard Time": "Europe/Paris",
    "Central European Summer Time": "Europe/Paris",
    "EET": "Europe/Athens", "EEST": "Europe/Athens",
    "Eastern European Time": "Europe/Athens",
    "Eastern European Summer Time": "Europe/Athens",
    "MSK": "Europe/Moscow", "Moscow Standard Time": "Europe/Moscow",
    "HKT": "Asia/Hong_Kong", "Hong Kong Time": "Asia/Hong_Kong",
    "Hong Kong Standard Time": "Asia/Hong_Kong",
    "China Standard Time": "Asia/Shanghai", "中国标准时间": "Asia/Shanghai",
    "SGT": "Asia/Singapore", "Singapore Standard Time": "Asia/Singapore",
    "JST": "Asia/Tokyo", "Japan Standard Time": "Asia/Tokyo",
    "KST": "Asia/Seoul", "Korean Standard Time": "Asia/Seoul",
    "IST": "Asia/Kolkata", "India Standard Time": "Asia/Kolkata",
    "AEST": "Australia/Sydney", "AEDT": "Australia/Sydney",
    "Australian Eastern Standard Time": "Australia/Sydney",
    "Australian Eastern Daylight Time": "Australia/Sydney",
}

_HEADER_RE = re.compile(r"^(\d{8})\s+(\d{2}):(\d{2}):(\d{2})(?:\s+(\S.*))?$")


def zone_named(name: str) -> tzinfo | None:
    """The zone TWS means by ``name`` (an alias above or an IANA name), else None."""
    name = name.strip()
    if not name:
        return None
    alias = _ALIASES.get(name) or _ALIASES.get(name.upper())
    try:
        return ZoneInfo(alias or name)
    except (ZoneInfoNotFoundError, ValueError):
        return None


@dataclass(frozen=True)
class LoginZone:
    """The gateway's login time zone as the handshake named it."""

    name: str  # as written by the gateway ("" when the handshake named none)
    zone: tzinfo | None  # None: a name we cannot read; headers in it are not trusted


def login_zone(connection_time: str) -> LoginZone:
    """The zone at the end of the handshake's connection time (``yyyymmdd hh:mm:ss ZONE``)."""
    parts = connection_time.strip().split(None, 2)
    name = parts[2].strip() if len(parts) == 3 else ""
    return LoginZone(name, zone_named(name))


def parse_served_time(text: str, zone: tzinfo | None) -> datetime | None:
    """A header time as a UTC datetime; None when it cannot be read for sure.

    Epoch seconds need no zone; wall-clock text is read in its own zone when it names one,
    else in the login zone (``zone``).
    """
    text = text.strip()
    if text.isdigit():
        return datetime.fromtimestamp(int(text), UTC)
    match = _HEADER_RE.match(text)
    if not match:
        return None
    day, hh, mm, ss, named = match.groups()
    if named:
        zone = zone_named(named)
    if zone is None:
        return None
    try:
        wall = datetime.strptime(f"{day} {hh}:{mm}:{ss}", "%Y%m%d %H:%M:%S")
    except ValueError:
        return None
    return wall.replace(tzinfo=zone).astimezone(UTC)


@dataclass(frozen=True)
class ServedWindow:
    """[start, end] of bar START times IB says it served (edges as its rule says)."""

    start: datetime
    end: datetime

    @property
    def duration(self) -> timedelta:
        return self.end - self.start


def parse_served(start: str, end: str, zone: tzinfo | None) -> ServedWindow | None:
    """The header's window, or None when either end cannot be read."""
    first, last = parse_served_time(start, zone), parse_served_time(end, zone)
    if first is None or last is None or last < first:
        return None
    return ServedWindow(first, last)
