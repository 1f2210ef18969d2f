"""TWS API wire format: framing, field encoding, message ids and request-field parsing.

Layouts follow ib-notes.md ("The wire protocol a simulator must speak"), checked against
ib_insync 0.9.86 and ib_async 2.1 at server versions 166..178.
"""

from __future__ import annotations

import math
import re
import struct
from collections.abc import Iterable
from datetime import datetime, timedelta, timezone, tzinfo
from enum import IntEnum
from zoneinfo import ZoneInfo

from backfill.sim.behaviour import HeaderFormat

UTC = timezone.utc
HEADER = struct.Struct(">I")
API_PREFIX = b"API\0"
# Layouts below are identical for 166..178 in both clients; 166 is the first version whose
# error message carries the advancedOrderRejectJson field we always send.
MIN_SERVER_VERSION = 166
MAX_SERVER_VERSION = 178
MAX_MESSAGE_BYTES = 1 << 24


class In(IntEnum):
    """Message ids a client sends."""

    REQ_MKT_DATA = 1
    REQ_OPEN_ORDERS = 5
    REQ_ACCOUNT_UPDATES = 6
    REQ_EXECUTIONS = 7
    REQ_IDS = 8
    REQ_CONTRACT_DETAILS = 9
    REQ_AUTO_OPEN_ORDERS = 15
    REQ_HISTORICAL_DATA = 20
    CANCEL_HISTORICAL_DATA = 25
    REQ_CURRENT_TIME = 49
    REQ_POSITIONS = 61
    REQ_ACCOUNT_SUMMARY = 62
    CANCEL_ACCOUNT_SUMMARY = 63
    CANCEL_POSITIONS = 64
    START_API = 71
    REQ_ACCOUNT_UPDATES_MULTI = 76
    CANCEL_ACCOUNT_UPDATES_MULTI = 77
    REQ_HEAD_TIMESTAMP = 87
    CANCEL_HEAD_TIMESTAMP = 90
    REQ_COMPLETED_ORDERS = 99


class Out(IntEnum):
    """Message ids the server sends."""

    ERR_MSG = 4
    NEXT_VALID_ID = 9
    CONTRACT_DATA = 10
    MANAGED_ACCTS = 15
    HISTORICAL_DATA = 17
    CURRENT_TIME = 49
    CONTRACT_DATA_END = 52
    OPEN_ORDER_END = 53
    ACCT_DOWNLOAD_END = 54
    EXECUTION_DATA_END = 55
    POSITION_END = 62
    ACCOUNT_SUMMARY_END = 64
    ACCOUNT_UPDATE_MULTI_END = 74
    HEAD_TIMESTAMP = 88
    COMPLETED_ORDERS_END = 102


class ProtocolError(ValueError):
    """A client message that cannot be parsed (answered with error 321)."""


class UnreadableField(ProtocolError):
    """A field TWS could not read as its type (answered with error 320)."""

    def __init__(self, text: str) -> None:
        # TWS is Java: its answer quotes the exception its parser threw.
        super().__init__("Error reading request. Unable to parse data. "
                         f'java.lang.NumberFormatException: For input string: "{text}"')


_JAVA_INT = re.compile(r"^[+-]?\d{1,10}$")


def parse_int(text: str) -> int:
    """A field read as TWS reads it, a Java ``int`` (Python's ``int()`` accepts more)."""
    if _JAVA_INT.match(text):
        value = int(text)
        if -(2**31) <= value < 2**31:
            return value
    raise UnreadableField(text)


def frame(fields: Iterable[object]) -> bytes:
    """One framed message: 4-byte big-endian length, then NUL-terminated text fields."""
    payload = "".join(f"{field}\0" for field in fields).encode()
    return HEADER.pack(len(payload)) + payload


def frame_text(payload: str) -> bytes:
    """Frame an already NUL-joined payload (the fast path for big bar messages)."""
    data = payload.encode()
    return HEADER.pack(len(data)) + data


def split_fields(payload: bytes) -> list[str]:
    """Decode one message payload into its text fields."""
    fields = payload.decode(errors="backslashreplace").split("\0")
    if fields and fields[-1] == "":
        fields.pop()
    return fields


def fmt_float(value: float) -> str:
    """repr() round-trips exactly, so the client parses back the very same float."""
    return repr(float(value))


def parse_version_range(text: str) -> tuple[int, int]:
    """Parse the client's ``v157..176 [options]`` greeting into (min, max)."""
    match = re.match(r"^v(\d+)(?:\.\.(\d+))?", text.strip())
    if not match:
        raise ProtocolError(f"bad version greeting {text!r}")
    low = int(match.group(1))
    high = int(match.group(2) or low)
    return low, high


def error_fields(req_id: int, code: int, text: str) -> list[object]:
    """An error message; the trailing empty field is required from server version 166."""
    return [int(Out.ERR_MSG), 2, req_id, code, text, ""]


# --- request-field parsing -------------------------------------------------------------

BAR_SIZES: dict[str, int] = {
    "1 secs": 1, "5 secs": 5, "10 secs": 10, "15 secs": 15, "30 secs": 30,
    "1 min": 60, "2 mins": 120, "3 mins": 180, "5 mins": 300, "10 mins": 600,
    "15 mins": 900, "20 mins": 1200, "30 mins": 1800, "1 hour": 3600, "2 hours": 7200,
    "3 hours": 10800, "4 hours": 14400, "8 hours": 28800, "1 day": 86400,
    "1 week": 604800, "1 month": 2592000,
}

_DURATION_RE = re.compile(r"^\s*(\d+)\s+([SDWMY])\s*$")
_DURATION_UNIT_S = {"S": 1, "D": 86400, "W": 7 * 86400}


def parse_bar_size(text: str) -> int:
    """Bar size in seconds for IB's spelling (e.g. ``1 min``)."""
    seconds = BAR_SIZES.get(text.strip())
    if seconds is None:
        raise ProtocolError(f"Invalid bar size {text!r}")
    return seconds


def parse_duration(text: str) -> timedelta:
    """IB duration ``N S|D|W``; months and years are refused (their length is ambiguous)."""
    count, unit = duration_parts(text)
    return timedelta(seconds=count * _DURATION_UNIT_S[unit])


def duration_parts(text: str) -> tuple[int, str]:
    """``N S|D|W`` as (N, unit), checked as ``parse_duration`` checks it."""
    match = _DURATION_RE.match(text)
    if not match:
        raise ProtocolError(f"Historical data query duration {text!r} is invalid")
    count, unit = int(match.group(1)), match.group(2)
    if unit not in _DURATION_UNIT_S:
        raise ProtocolError(f"duration unit {unit!r} is not supported by the simulator")
    if count <= 0:
        raise ProtocolError(f"Historical data query duration {text!r} is invalid")
    return count, unit


def parse_end_datetime(text: str, now: datetime, session_zone: str = "UTC") -> datetime:
    """Parse ``endDateTime``: empty means now; a time without a zone is in the session zone.

    Accepts ``yyyymmdd hh:mm:ss [zone]`` and ``yyyymmdd-hh:mm:ss`` (UTC).
    """
    text = text.strip()
    if not text:
        return now
    try:
        if "-" in text[:9] and len(text) == 17:
            return datetime.strptime(text, "%Y%m%d-%H:%M:%S").replace(tzinfo=UTC)
        parts = text.split()
        if len(parts) == 1 and len(parts[0]) == 8:
            naive = datetime.strptime(parts[0], "%Y%m%d")
            zone = session_zone
        elif len(parts) in (2, 3):
            naive = datetime.strptime(parts[0] + " " + parts[1], "%Y%m%d %H:%M:%S")
            zone = parts[2] if len(parts) == 3 else session_zone
        else:
            raise ValueError(text)
        tz = UTC if zone.upper() in ("UTC", "GMT") else ZoneInfo(zone)
        return naive.replace(tzinfo=tz).astimezone(UTC)
    except (ValueError, KeyError, OSError):
        raise ProtocolError(f"Invalid endDateTime {text!r}") from None


# --- times as the gateway writes them --------------------------------------------------


def header_time(when: datetime, form: HeaderFormat, zone: tzinfo, zone_name: str) -> str:
    """A start or end of a historical answer's header in ``form`` (see ``HeaderFormat``).

    ``zone`` is the login zone and ``zone_name`` its IANA name (``UTC`` for UTC). Seconds
    are truncated, as IB writes them; ``dashed`` always carries a ``.0`` fraction.
    """
    if form is HeaderFormat.EPOCH:
        return str(math.floor(when.timestamp()))
    utc = when.astimezone(UTC)
    wall = when.astimezone(zone)
    if form is HeaderFormat.LOGIN:
        return wall.strftime("%Y%m%d  %H:%M:%S")
    if form is HeaderFormat.NAMED:
        return wall.strftime("%Y%m%d %H:%M:%S ") + zone_name
    if form is HeaderFormat.UTC_DASH:
        return utc.strftime("%Y%m%d-%H:%M:%S")
    if form is HeaderFormat.DASHED:
        return wall.strftime("%Y-%m-%d %H:%M:%S.0 ") + zone_name
    return utc.strftime("%Y%m%d %H:%M:%S")  # UTC_BARE


def bar_time(when: datetime, fmt: int, form: HeaderFormat, zone: tzinfo, zone_name: str) -> str:
    """A bar's (or head timestamp's) time: ``formatDate=2`` epoch seconds; 1 the login-zone
    wall clock, ``yyyymmdd  hh:mm:ss`` for older gateways (``login``), else with one space
    and the zone's name as current gateways write it (``20250714 09:30:00 America/New_York``).
    """
    if fmt == 2:
        return str(math.floor(when.timestamp()))
    wall = when.astimezone(zone)
    if form is HeaderFormat.LOGIN:
        return wall.strftime("%Y%m%d  %H:%M:%S")
    return wall.strftime("%Y%m%d %H:%M:%S ") + zone_name
