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
    REQ_ALL_OPEN_ORDERS = 16
    REQ_HISTORICAL_DATA = 20
    CANCEL_HISTORICAL_DATA = 25
    REQ_CURRENT_TIME = 49
    REQ_POSITIONS = 61
    REQ_ACCOUNT_SUMMARY = 62
    CANCEL_ACCOUNT_SUMMARY = 63
    CANCEL_POSITIONS = 64
    START_API = 71
    REQ_ACCOUNT_UPDATES_MULTI = 76
    REQ_FAMILY_CODES = 80
    REQ_MKT_DEPTH_EXCHANGES = 82
    REQ_NEWS_PROVIDERS = 85
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
    FAMILY_CODES = 78
    MKT_DEPTH_EXCHANGES = 80
    NEWS_PROVIDERS = 85
    HEAD_TIMESTAMP = 88
    COMPLETED_ORDERS_END = 102


class ProtocolError(ValueError):
    """A client message that cannot be parsed (answered with error 321)."""


class UnreadableField(ProtocolError):
    """A field TWS could not read as its type (answered with error 320)."""

    def __init__(self, text: str) -> None:
        # TWS is Java: its answer quotes the exception its parser threw.
        super().__init__(
            "Error reading request. Unable to parse data. "
            f'java.lang.NumberFormatException: For input string: "{text}"'
        )


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
    "1 secs": 1,
    "5 secs": 5,
    "10 secs": 10,
    "15 secs": 15,
    "30 secs": 30,
    "1 min": 60,
    "2 mins": 120,
    "3 mins": 180,
    "5 mins": 300,
    "10 mins": 600,
    "15 mins": 900,
    "20 mins": 1200,
    "30 mins": 1800,
    "1 hour": 3600,
    "2 hours": 7200,
    "3 hours": 10800,
    "4 hours": 14400,
    "8 hours": 28800,
    "1 day": 86400,
    "1 week": 604800,
    "1 month": 2592000,
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


def end_names_no_zone(text: str) -> bool:
    """Whether ``endDateTime`` is a time with no zone, read in the login zone (TWS 10.17+
    warns 2174); empty (now), ``yyyymmdd-hh:mm:ss`` (UTC) and a named zone are explicit."""
    text = text.strip()
    if not text or ("-" in text[:9] and len(text) == 17):
        return False
    return len(text.split()) < 3


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


# --- requests the simulator does not serve ------------------------------------------------

# Message id → (name, field holding the request or order id, error code). Each is refused at
# once with that id so no client waits for its timeout. Codes that both ib_insync and ib_async
# treat as errors (ib_async reads 321 as a warning and would leave the request open): 201
# rejects an order (its trade ends Cancelled), 10147 an unknown order's cancel, 354 market
# data "not subscribed", 322 "Error processing request" for the rest.
UNSERVED: dict[int, tuple[str, int, int]] = {
    1: ("reqMktData", 2, 354),
    3: ("placeOrder", 1, 201),
    4: ("cancelOrder", 2, 10147),
    10: ("reqMktDepth", 2, 354),
    19: ("replaceFA", 4, 322),
    21: ("exerciseOptions", 2, 201),
    22: ("reqScannerSubscription", 1, 322),
    50: ("reqRealTimeBars", 2, 354),
    52: ("reqFundamentalData", 2, 322),
    54: ("calculateImpliedVolatility", 2, 322),
    55: ("calculateOptionPrice", 2, 322),
    67: ("queryDisplayGroups", 2, 322),
    68: ("subscribeToGroupEvents", 2, 322),
    69: ("updateDisplayGroup", 2, 322),
    74: ("reqPositionsMulti", 2, 322),
    78: ("reqSecDefOptParams", 1, 322),
    79: ("reqSoftDollarTiers", 1, 322),
    81: ("reqMatchingSymbols", 1, 322),
    83: ("reqSmartComponents", 1, 322),
    84: ("reqNewsArticle", 1, 322),
    86: ("reqHistoricalNews", 1, 322),
    88: ("reqHistogramData", 1, 322),
    92: ("reqPnL", 1, 322),
    94: ("reqPnLSingle", 1, 322),
    96: ("reqHistoricalTicks", 1, 322),
    97: ("reqTickByTickData", 1, 354),
    100: ("reqWshMetaData", 1, 322),
    102: ("reqWshEventData", 1, 322),
    104: ("reqUserInfo", 1, 322),
}
# Cancels and settings: IB sends nothing back, so neither does the simulator.
SILENT: frozenset[int] = frozenset(
    {
        2,
        11,
        12,
        13,
        14,
        15,
        23,
        51,
        53,
        56,
        57,
        58,
        59,
        63,
        64,
        70,
        75,
        77,
        89,
        90,
        93,
        95,
        98,
        101,
        103,
    }
)


def unserved_text(msg_id: int, code: int, req_id: int) -> str:
    """The error text for an unserved request, in IB's words for its code."""
    name = UNSERVED[msg_id][0] if msg_id in UNSERVED else f"message id {msg_id}"
    if code == 201:
        return f"Order rejected - reason:{name} is not accepted: the simulator serves no orders"
    if code == 10147:
        return f"OrderId {req_id} that needs to be cancelled is not found."
    if code == 354:
        return "Requested market data is not subscribed."
    return (
        f"Error processing request.-'bX' : cause - {name} (message id {msg_id}) is not "
        "served by the simulator"
    )


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
