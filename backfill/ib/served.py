"""The window IB says it served, read from the historical-data header (pure, no I/O).

IB's answer to reqHistoricalData starts with the start and end of the window it served, as
text whose rendering depends on the gateway (``FORMATS``, as ``backfill gateway
--header-format`` names them): ``20250714  08:59:54`` (two spaces, the login zone, no zone
written), ``20250714 08:59:54 US/Eastern`` (a zone name), ``20250714-12:59:54`` (UTC, a
dash), ``2025-07-14 12:59:54[.0]`` with or without a zone name, a zone-less
``20250714 12:59:54`` that some gateways write in UTC, and epoch seconds. A zone NAME in
the text is authoritative; a zone-less wall clock is ambiguous (UTC or the login zone, named
once at the end of the handshake's connection time: ``20250702 12:00:00 EST``, an IANA name
or a long name such as ``China Standard Time``). Which one a gateway means is learned at
start-up (``learn_clock``) from answers whose asked window is known in UTC.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone, tzinfo
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError, available_timezones

UTC = timezone.utc

# Names TWS writes for the zones of its login screen, mapped to IANA zones. Abbreviations
# are ambiguous in general (IST, CST); these are the readings TWS users' zones give them.
_ALIASES: dict[str, str] = {
    "UTC": "UTC",
    "GMT": "UTC",
    "Z": "UTC",
    "Coordinated Universal Time": "UTC",
    "Greenwich Mean Time": "Europe/London",
    "BST": "Europe/London",
    "British Summer Time": "Europe/London",
    "EST": "America/New_York",
    "EDT": "America/New_York",
    "ET": "America/New_York",
    "Eastern Standard Time": "America/New_York",
    "Eastern Daylight Time": "America/New_York",
    "CST": "America/Chicago",
    "CDT": "America/Chicago",
    "CT": "America/Chicago",
    "Central Standard Time": "America/Chicago",
    "Central Daylight Time": "America/Chicago",
    "MST": "America/Denver",
    "MDT": "America/Denver",
    "Mountain Standard Time": "America/Denver",
    "Mountain Daylight Time": "America/Denver",
    "PST": "America/Los_Angeles",
    "PDT": "America/Los_Angeles",
    "Pacific Standard Time": "America/Los_Angeles",
    "Pacific Daylight Time": "America/Los_Angeles",
    "CET": "Europe/Paris",
    "CEST": "Europe/Paris",
    "MET": "Europe/Paris",
    "Central European Time": "Europe/Paris",
    "Central European Standard Time": "Europe/Paris",
    "Central European Summer Time": "Europe/Paris",
    "EET": "Europe/Athens",
    "EEST": "Europe/Athens",
    "Eastern European Time": "Europe/Athens",
    "Eastern European Summer Time": "Europe/Athens",
    "MSK": "Europe/Moscow",
    "Moscow Standard Time": "Europe/Moscow",
    "HKT": "Asia/Hong_Kong",
    "Hong Kong Time": "Asia/Hong_Kong",
    "Hong Kong Standard Time": "Asia/Hong_Kong",
    "China Standard Time": "Asia/Shanghai",
    "中国标准时间": "Asia/Shanghai",
    "SGT": "Asia/Singapore",
    "Singapore Standard Time": "Asia/Singapore",
    "JST": "Asia/Tokyo",
    "Japan Standard Time": "Asia/Tokyo",
    "KST": "Asia/Seoul",
    "Korean Standard Time": "Asia/Seoul",
    "IST": "Asia/Kolkata",
    "India Standard Time": "Asia/Kolkata",
    "AEST": "Australia/Sydney",
    "AEDT": "Australia/Sydney",
    "Australian Eastern Standard Time": "Australia/Sydney",
    "Australian Eastern Daylight Time": "Australia/Sydney",
}

# Renderings, as ``backfill gateway --header-format`` names them.
FORMATS = ("login", "named", "utc-dash", "dashed", "utc-bare", "epoch")
_COMPACT_RE = re.compile(r"^(\d{8})( +)(\d{2}):(\d{2}):(\d{2})(\.\d+)?(?:\s+(\S.*))?$")
_UTC_DASH_RE = re.compile(r"^(\d{8})-(\d{2}):(\d{2}):(\d{2})(\.\d+)?$")
_DASHED_RE = re.compile(
    r"^(\d{4})-(\d{2})-(\d{2})[ T](\d{2}):(\d{2}):(\d{2})(\.\d+)?(?:\s+(\S.*))?$"
)
# What an IANA zone name looks like ("Area/Location", "EST5EDT"): on a machine without a
# zone database such a name is not unknown, it is unreadable here (install tzdata).
_IANA_RE = re.compile(r"^[A-Za-z][A-Za-z0-9_+\-]*(/[A-Za-z0-9_+\-]+)+$|^[A-Z]{3,4}\d[A-Z]{3,4}$")
TZDATA_HINT = "pip install tzdata"


class ZoneDatabaseMissing(Exception):
    """A zone name that needs a time zone database this machine does not have."""

    def __init__(self, name: str) -> None:
        super().__init__(
            f"time zone {name!r} cannot be read: this machine has no time zone database "
            f"(install one: {TZDATA_HINT})"
        )
        self.name = name


def _zone_database_present() -> bool:
    try:
        return bool(available_timezones())
    except OSError:
        return False


def zone_named(name: str) -> tzinfo | None:
    """The zone TWS means by ``name`` (an alias above or an IANA name), else None.

    Raises ``ZoneDatabaseMissing`` for a name that would be read with a zone database the
    machine lacks (Windows without the ``tzdata`` package): not the same as an unknown name.
    """
    name = name.strip()
    if not name:
        return None
    iana = _ALIASES.get(name) or _ALIASES.get(name.upper()) or name
    if iana.upper() in ("UTC", "ETC/UTC", "GMT", "ETC/GMT"):
        return UTC  # needs no database
    try:
        return ZoneInfo(iana)
    except (ZoneInfoNotFoundError, ValueError, OSError):
        pass
    if (iana != name or _IANA_RE.match(name)) and not _zone_database_present():
        raise ZoneDatabaseMissing(name)
    return None


@dataclass(frozen=True)
class LoginZone:
    """The gateway's login time zone as the handshake named it."""

    name: str  # as written by the gateway ("" when the handshake named none)
    zone: tzinfo | None  # None: a name we cannot read; zone-less headers not read in it
    missing: str = ""  # why the name cannot be read HERE (no zone database): an error


def login_zone(connection_time: str) -> LoginZone:
    """The zone at the end of the handshake's connection time (``yyyymmdd hh:mm:ss ZONE``)."""
    parts = connection_time.strip().split(None, 2)
    name = parts[2].strip() if len(parts) == 3 else ""
    try:
        return LoginZone(name, zone_named(name))
    except ZoneDatabaseMissing as exc:
        return LoginZone(name, None, str(exc))


@dataclass(frozen=True)
class HeaderTime:
    """One header time as written: its rendering, and either an instant (epoch, UTC dash) or
    a wall clock with the zone it names ("" when none: ambiguous)."""

    format: str
    wall: datetime  # naive; for epoch the UTC wall clock
    zone_name: str = ""
    instant: bool = False  # the text fixes the instant (epoch, UTC dash)


def _fraction(text: str | None) -> int:
    return int((text[1:] + "000000")[:6]) if text else 0


def split_header_time(text: str) -> HeaderTime | None:
    """The rendering and fields of one header time; None for text in no known rendering."""
    text = text.strip()
    try:
        if text.isdigit():
            when = datetime.fromtimestamp(int(text), UTC).replace(tzinfo=None)
            return HeaderTime("epoch", when, instant=True)
        if match := _UTC_DASH_RE.match(text):
            day, hh, mm, ss, frac = match.groups()
            wall = datetime.strptime(f"{day} {hh}:{mm}:{ss}", "%Y%m%d %H:%M:%S")
            return HeaderTime("utc-dash", wall.replace(microsecond=_fraction(frac)), instant=True)
        if match := _DASHED_RE.match(text):
            y, mo, d, hh, mm, ss, frac, named = match.groups()
            wall = datetime(int(y), int(mo), int(d), int(hh), int(mm), int(ss), _fraction(frac))
            return HeaderTime("dashed", wall, (named or "").strip())
        if match := _COMPACT_RE.match(text):
            day, spaces, hh, mm, ss, frac, named = match.groups()
            wall = datetime.strptime(f"{day} {hh}:{mm}:{ss}", "%Y%m%d %H:%M:%S")
            wall = wall.replace(microsecond=_fraction(frac))
            if named:
                return HeaderTime("named", wall, named.strip())
            return HeaderTime("login" if len(spaces) > 1 else "utc-bare", wall)
    except (ValueError, OverflowError, OSError):
        return None
    return None


def _instants(wall: datetime, zone: tzinfo) -> list[datetime]:
    """The UTC instants a wall clock in ``zone`` may mean: one, two in a fall-back hour,
    none in a spring-forward gap (a time that never existed there)."""
    out = []
    for fold in (0, 1):
        local = wall.replace(tzinfo=zone, fold=fold)
        instant = local.astimezone(UTC)
        if instant.astimezone(zone).replace(tzinfo=None) == wall and instant not in out:
            out.append(instant)
    return sorted(out)


def read_header_time(text: str, zone: tzinfo | None) -> list[datetime]:
    """Every UTC instant a header time may mean, zone-less text read in ``zone`` (None: not
    read); [] when it cannot be read. Raises ``ZoneDatabaseMissing`` (see ``zone_named``)."""
    parsed = split_header_time(text)
    if parsed is None:
        return []
    if parsed.instant:
        return [parsed.wall.replace(tzinfo=UTC)]
    if parsed.zone_name:
        zone = zone_named(parsed.zone_name)
    if zone is None:
        return []
    return _instants(parsed.wall, zone)


def parse_served_time(text: str, zone: tzinfo | None, *, latest: bool = False) -> datetime | None:
    """A header time as a UTC datetime; None when it cannot be read for sure.

    Epoch seconds and the UTC dash need no zone; wall-clock text is read in its own zone
    when it names one, else in ``zone`` (how this gateway's zone-less headers are read).
    A wall clock of a fall-back hour means two instants: the earliest, or with ``latest``
    the latest (the start of a window is read late and its end early, so a served window is
    never read wider than it was).
    """
    try:
        instants = read_header_time(text, zone)
    except ZoneDatabaseMissing:
        return None
    if not instants:
        return None
    return instants[-1] if latest else instants[0]


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
    first = parse_served_time(start, zone, latest=True)
    last = parse_served_time(end, zone)
    if first is None or last is None or last < first:
        return None
    return ServedWindow(first, last)


# How a gateway's zone-less header times are read, learned at start-up: in UTC, in the login
# zone, "written" (every time it wrote named its zone or was an instant: zone-less text is
# not read), or "untrusted" (the header matched the asked windows in no reading: not read at
# all; the asked window is taken as served, which only seconds durations allow).
CLOCKS = ("utc", "login", "written", "untrusted")


@dataclass(frozen=True)
class HeaderClock:
    """How this gateway's served-window header is read (``CLOCKS``), the rendering seen
    (``FORMATS``, "" when none was seen) and, untrusted, why."""

    reading: str = "login"  # before anything was learned: as the handshake's zone says
    format: str = ""
    note: str = ""

    def __post_init__(self) -> None:
        if self.reading not in CLOCKS:
            raise ValueError(f"header clock {self.reading!r}: expected one of {CLOCKS}")

    @property
    def trusted(self) -> bool:
        return self.reading != "untrusted"

    def zone(self, login: LoginZone) -> tzinfo | None:
        """The zone zone-less header times are read in (None: not read)."""
        if self.reading == "utc":
            return UTC
        return login.zone if self.reading == "login" else None

    def read(self, start: str, end: str, login: LoginZone) -> ServedWindow | None:
        """The served window as this clock reads the header; None untrusted or unreadable."""
        return parse_served(start, end, self.zone(login)) if self.trusted else None


UNTRUSTED = HeaderClock("untrusted")


@dataclass(frozen=True)
class AskedHeader:
    """One answered request: the window asked (UTC, known exactly) and its header as sent."""

    start: datetime
    end: datetime
    header_start: str
    header_end: str


def _matches(asked: AskedHeader, zone: tzinfo | None) -> bool:
    return asked.start in read_header_time(
        asked.header_start, zone
    ) and asked.end in read_header_time(asked.header_end, zone)


def learn_clock(answers: list[AskedHeader], login: LoginZone) -> HeaderClock:
    """How the header reads, from answers whose asked windows are known in UTC.

    Every answer must match its asked window in one reading: as written (zone names,
    instants), in UTC, or in the login zone. Neither, or both where they differ elsewhere
    (a login zone at UTC+0 on these dates only: London in winter), leaves the header
    untrusted. Raises ``ZoneDatabaseMissing`` when a zone it names cannot be read here.
    """
    if login.missing:
        raise ZoneDatabaseMissing(login.name)
    if not answers:
        return HeaderClock("untrusted", "", "no answer with a header to learn it from")
    seen = [split_header_time(t) for a in answers for t in (a.header_start, a.header_end)]
    formats = sorted({t.format for t in seen if t is not None})
    shape = ",".join(formats) or "unreadable"
    if _matches_all(answers, None):
        return HeaderClock("written", shape)
    in_utc = _matches_all(answers, UTC)
    in_login = login.zone is not None and _matches_all(answers, login.zone)
    login_is_utc = login.zone is UTC or getattr(login.zone, "key", "") in ("UTC", "Etc/UTC")
    if in_utc and (not in_login or login_is_utc):
        return HeaderClock("utc", shape)
    if in_login and not in_utc:
        return HeaderClock("login", shape)
    where = login.name or "none named"
    if in_utc:
        note = (
            f"it reads the same in UTC and in the login zone ({where}) on these dates, "
            "which differ on others"
        )
    else:
        sample = answers[0]
        note = (
            f"{sample.header_start!r} to {sample.header_end!r} for the asked "
            f"{sample.start:%Y-%m-%d %H:%M:%S} to {sample.end:%Y-%m-%d %H:%M:%S} UTC: "
            f"neither as written, nor in UTC, nor in the login zone ({where})"
        )
    return HeaderClock("untrusted", shape, note)


def _matches_all(answers: list[AskedHeader], zone: tzinfo | None) -> bool:
    return all(_matches(a, zone) for a in answers)
