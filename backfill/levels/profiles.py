"""Profiles and their session windows (levels.md section 1), pure and DST-aware.

A window is a half-open interval of bar ENDs ``(start, end]`` in UTC: it holds the bars of
the wall-clock minutes ``[start, end)``. Wall times are converted with ``zoneinfo`` for the
date they fall on, never with a fixed offset (New York is UTC-5 in winter, UTC-4 in summer).
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import date, datetime, time, timedelta
from functools import lru_cache
from zoneinfo import ZoneInfo

from backfill.domain import DAY, MINUTE, UTC, BadInput

OR_MINUTES = 5  # the same in every profile (levels.md: --or-minutes is not asked for)


@dataclass(frozen=True)
class Scan:
    """The labels (bar starts) searched for B&R events, both ends inclusive."""

    first: time
    last: time

    def __str__(self) -> str:
        return f"{self.first:%H:%M}-{self.last:%H:%M}"


@dataclass(frozen=True)
class Profile:
    name: str
    tz: str
    premarket: tuple[time, time] | None  # None: the profile has no PM window
    opening: time
    scan: Scan


PROFILES: dict[str, Profile] = {
    p.name: p
    for p in (
        Profile(
            "us_equity_open",
            "America/New_York",
            (time(4), time(9, 30)),
            time(9, 30),
            Scan(time(9, 30), time(11, 30)),
        ),
        Profile("asia_open", "Asia/Tokyo", (time(0), time(9)), time(9), Scan(time(9), time(11))),
        Profile("daily_open_utc", "UTC", None, time(0), Scan(time(0), time(2))),
    )
}
DEFAULT_PROFILE = "us_equity_open"


@dataclass(frozen=True)
class Window:
    """``(start, end]`` of bar ends, UTC."""

    start: datetime
    end: datetime

    @property
    def minutes(self) -> int:
        return int((self.end - self.start) / MINUTE)

    def lake_days(self) -> tuple[date, date]:
        """The lake days whose bars the window may hold: utc_date(start + 1 min) … utc_date(end)."""
        return (self.start + MINUTE).date(), self.end.date()


@dataclass(frozen=True)
class SessionWindows:
    """Every window of one profile's session date ``day``."""

    day: date
    session: Window
    pd: Window
    pm: Window | None
    opening: Window
    scan: Window


def parse_profiles(text: str) -> tuple[Profile, ...]:
    names = [n.strip() for n in text.split(",") if n.strip()]
    if not names:
        raise BadInput("--profiles: give at least one of " + ", ".join(PROFILES))
    unknown = [n for n in names if n not in PROFILES]
    if unknown:
        raise BadInput(f"--profiles: unknown {', '.join(unknown)} (known: {', '.join(PROFILES)})")
    return tuple(PROFILES[n] for n in dict.fromkeys(names))


def parse_scan(text: str) -> Scan:
    """``HH:MM-HH:MM`` (labels, both inclusive, first <= last)."""
    try:
        first, last = (time.fromisoformat(part.strip()) for part in text.split("-"))
    except ValueError:
        raise BadInput(f"--scan {text!r}: expected HH:MM-HH:MM, e.g. 09:30-11:30") from None
    if first.second or last.second or first > last:
        raise BadInput(f"--scan {text!r}: expected HH:MM-HH:MM with the first not after the last")
    return Scan(first, last)


@lru_cache(maxsize=8)
def _zone(name: str) -> ZoneInfo:
    return ZoneInfo(name)


def local(tz: str, day: date, at: time) -> datetime:
    """Wall time ``at`` on ``day`` in ``tz``, in UTC, with that date's offset."""
    return datetime.combine(day, at, tzinfo=_zone(tz)).astimezone(UTC)


def windows(profile: Profile, day: date, scan: Scan | None = None) -> SessionWindows:
    """The windows of session ``day`` (levels.md section 1)."""
    tz = profile.tz
    scan = scan or profile.scan
    start = local(tz, day, time(0))
    opening = local(tz, day, profile.opening)
    pm = None
    if profile.premarket is not None:
        pm = Window(local(tz, day, profile.premarket[0]), local(tz, day, profile.premarket[1]))
    return SessionWindows(
        day=day,
        session=Window(start, local(tz, day + DAY, time(0))),
        pd=Window(local(tz, day - DAY, time(0)), start),
        pm=pm,
        opening=Window(opening, opening + timedelta(minutes=OR_MINUTES)),
        scan=Window(local(tz, day, scan.first), local(tz, day, scan.last) + MINUTE),
    )
