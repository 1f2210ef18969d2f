"""Where real IB's behaviour is undocumented or known to vary: one switch per plausible answer.

Each switch of ``Behaviour`` is a ``backfill gateway`` flag of the same name (see
docs/simulator.md); the defaults are the simulator's long-standing behaviour. The functions here are
pure: they take times and return times.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import date, datetime, timedelta, timezone, tzinfo
from enum import Enum

UTC = timezone.utc
_MICROSECOND = timedelta(microseconds=1)
WEEKDAYS = ("mon", "tue", "wed", "thu", "fri", "sat", "sun")


class WindowEdges(str, Enum):
    """Which bar STARTS a window ``end - duration .. end`` serves (interval notation)."""

    CLOSED_OPEN = "[)"
    OPEN_CLOSED = "(]"
    CLOSED = "[]"
    OPEN = "()"


class DayDuration(str, Enum):
    """How ``N D`` is counted: N * 24 hours, or N sessions of the session calendar."""

    CALENDAR = "calendar"
    SESSIONS = "sessions"


class TooLong(str, Enum):
    """A request longer than ``max_duration_days``: 162 "Time length exceed max.", or silence."""

    ERROR = "error"
    HANG = "hang"


class HeaderFormat(str, Enum):
    """How the start/end of a historical answer's header are written (ib-notes.md)."""

    LOGIN = "login"  # 20250714  08:59:54: two spaces, login-zone wall clock (older gateways)
    NAMED = "named"  # 20250714 08:59:54 America/New_York: TWS 10.17 and later
    UTC_DASH = "utc-dash"  # 20250714-12:59:54: UTC, no zone (IB's "UTC format", API 10.18)
    DASHED = "dashed"  # 2025-07-14 08:59:54.0 America/New_York
    UTC_BARE = "utc-bare"  # 20250714 12:59:54: UTC wall clock with no zone (ib_async #230)
    EPOCH = "epoch"  # 1752497994


class Overload(str, Enum):
    """Past the soft rate answers slow; under ``disconnect`` sustained overload drops the client."""

    SLOW = "slow"
    DISCONNECT = "disconnect"


@dataclass(frozen=True)
class Behaviour:
    """IB's answers where the documentation is silent (ib-notes.md), one field per switch.

    ``no_permission``: base assets answered 162 "No market data permissions".
    ``competing_session_after``: data requests served before a competing session takes over
    (then 162 or 10197, ``competing_session_code``) for ``competing_session_for`` seconds
    (None: for good). ``farm_down_after``: data requests served before 2105 "HMDS data farm
    connection is broken"; requests are then held until 2106, ``farm_down_for`` seconds later.
    ``cancel_answer``: 162 "query cancelled" or 366 "No historical data query found".
    ``overload_queue``/``overload_after_s``: under ``Overload.DISCONNECT``, the requests waiting
    on the soft throttle, or the seconds it has kept some waiting, past which the connection
    that sends one more is dropped. ``header_format``: how the header's start and end are
    written; ``header_shift_s`` moves both (a gateway whose header lies; bars unaffected).
    """

    window_edges: WindowEdges = WindowEdges.CLOSED_OPEN
    day_duration: DayDuration = DayDuration.CALENDAR
    session_break: frozenset[str] = frozenset({"sat"})
    too_long: TooLong = TooLong.ERROR
    no_permission: frozenset[str] = frozenset()
    competing_session_after: int | None = None
    competing_session_for: float | None = None
    competing_session_code: int = 162
    farm_down_after: int | None = None
    farm_down_for: float = 60.0
    partial_last_bar: bool = False
    cancel_answer: int = 162
    overload: Overload = Overload.SLOW
    overload_queue: int = 10
    overload_after_s: float = 20.0
    header_format: HeaderFormat = HeaderFormat.NAMED
    header_shift_s: int = 0  # a lying header: both its times moved by this much, bars not

    def __post_init__(self) -> None:
        # Plain strings are accepted (tests, flags) and stored as the enums they name.
        set_ = object.__setattr__
        set_(self, "window_edges", WindowEdges(self.window_edges))
        set_(self, "day_duration", DayDuration(self.day_duration))
        set_(self, "too_long", TooLong(self.too_long))
        set_(self, "overload", Overload(self.overload))
        set_(self, "header_format", HeaderFormat(self.header_format))
        set_(self, "session_break", frozenset(d.strip().lower()[:3] for d in self.session_break))
        set_(self, "no_permission", frozenset(s.strip().upper() for s in self.no_permission))
        unknown = self.session_break - set(WEEKDAYS)
        if unknown:
            raise ValueError(f"session_break: unknown weekday(s) {sorted(unknown)}")
        if len(self.session_break) == len(WEEKDAYS):
            raise ValueError("session_break: a week needs at least one session")
        if self.competing_session_code not in (162, 10197):
            raise ValueError("competing_session_code must be 162 or 10197")
        if self.cancel_answer not in (162, 366):
            raise ValueError("cancel_answer must be 162 or 366")
        for name in ("competing_session_after", "farm_down_after"):
            value = getattr(self, name)
            if value is not None and value < 0:
                raise ValueError(f"{name} must be >= 0")
        for name in ("competing_session_for", "farm_down_for", "overload_after_s"):
            value = getattr(self, name)
            if value is not None and value < 0:
                raise ValueError(f"{name} must be >= 0")
        if self.overload_queue < 1:
            raise ValueError("overload_queue must be >= 1")
        if isinstance(self.header_shift_s, bool) or not isinstance(self.header_shift_s, int):
            raise ValueError("header_shift_s must be whole seconds")


def served_interval(
    start: datetime, end: datetime, edges: WindowEdges | str
) -> tuple[datetime, datetime]:
    """The half-open [low, high) of bar starts a window serves under ``edges``.

    Bars start on whole seconds, so a microsecond turns an open edge into a closed one.
    """
    left, right = WindowEdges(edges).value
    low = start if left == "[" else start + _MICROSECOND
    high = end if right == ")" else end + _MICROSECOND
    return low, high


def session_window_start(
    end: datetime, sessions: int, zone: tzinfo, session_break: frozenset[str]
) -> datetime:
    """Start of ``sessions`` sessions ending at ``end``: days in ``zone`` outside the break.

    The first counted is the session holding the instant before ``end``; days of the weekly
    break are skipped, so the window spans them too.
    """
    day: date = (end - _MICROSECOND).astimezone(zone).date()
    counted = 0
    while True:
        if WEEKDAYS[day.weekday()] not in session_break:
            counted += 1
            if counted == sessions:
                local = datetime(day.year, day.month, day.day, tzinfo=zone)
                return local.astimezone(UTC)
        day -= timedelta(days=1)


def forming_row(
    row: tuple[int, float, float, float, float, float, float, int], now: float, decimals: int
) -> tuple[int, float, float, float, float, float, float, int] | None:
    """The bar of ``row``'s minute as seen at ``now`` while the minute is still forming.

    Its close, range, volume and trade count are the part of the final bar's that has
    happened, so it differs from the bar the minute ends with; None before any trade.
    """
    start, open_, high, low, close, volume, wap, count = row
    share = (now - start) / 60.0
    if not 0.0 < share < 1.0:
        return None
    scale = 10.0**decimals
    part_close = round((open_ + (close - open_) * share) * scale) / scale
    top, bottom = max(open_, part_close), min(open_, part_close)
    part_high = max(top, round((top + (high - max(open_, close)) * share) * scale) / scale)
    part_low = min(bottom, round((bottom - (min(open_, close) - low) * share) * scale) / scale)
    part_wap = min(max(wap, part_low), part_high)
    part_volume = max(1e-8, round(volume * share, 8))
    if part_volume >= volume:
        part_volume = max(1e-8, volume - 1e-8)
    return (
        start,
        open_,
        part_high,
        part_low,
        part_close,
        part_volume,
        part_wap,
        max(1, int(count * share)),
    )


def overload_reason(behaviour: Behaviour, queued: int, slowed_for_s: float) -> str | None:
    """Why one more request is too many under ``Overload.DISCONNECT``, else None."""
    if behaviour.overload is not Overload.DISCONNECT:
        return None
    if queued >= behaviour.overload_queue:
        return f"overload: {queued} requests already waiting"
    if slowed_for_s > behaviour.overload_after_s:
        return f"overload: answers slowed for {slowed_for_s:.0f} s"
    return None
