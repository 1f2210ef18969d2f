"""Window edges: which bars a gateway serves at the ends of a request (pure, no I/O).

IB serves the bars whose START lies between ``end - duration`` and ``end``; whether a bar
starting exactly at either end is served is undocumented. The rule is one of ``[)``, ``(]``,
``[]``, ``()`` (which ends are served), learned from the gateway at start-up
(``backfill.ib.edges``). Day D needs the bars starting in ``[D-1 23:59, D 23:58]`` (the lake
stamps bars by their end), so each rule gets the request that covers its days whole, and an
answer's days count only if the window IB says it served covers them under the rule.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import date, datetime, timedelta

from backfill.domain import DAY, MINUTE, Window, day_start

RULES = ("[)", "(]", "[]", "()")
DEFAULT_RULE = "[)"  # what the requests assumed before the rule was learned


@dataclass(frozen=True)
class EdgeRule:
    """Which ends of ``[end - duration, end]`` a gateway serves; ``known`` False: not learned,
    so neither end is relied on."""

    text: str = "()"
    known: bool = False

    def __post_init__(self) -> None:
        if self.text not in RULES:
            raise ValueError(f"window edges {self.text!r}: expected one of {', '.join(RULES)}")

    @classmethod
    def parse(cls, text: str) -> EdgeRule:
        return cls(text, True)

    @property
    def first_served(self) -> bool:
        return self.known and self.text[0] == "["

    @property
    def last_served(self) -> bool:
        return self.known and self.text[1] == "]"

    def __str__(self) -> str:
        return self.text if self.known else "unknown"


UNKNOWN = EdgeRule()


@dataclass(frozen=True)
class Request:
    """What goes on the wire for a window: ``endDateTime`` (UTC) and ``durationStr``."""

    end: datetime
    duration: str


def first_start(window: Window) -> datetime:
    """The START of the first bar the window's days hold (``first_day - 1`` 23:59)."""
    return day_start(window.first_day) - MINUTE


def last_start(window: Window) -> datetime:
    """The START of the last bar the window's days hold (``last_day`` 23:58)."""
    return day_start(window.last_day) + DAY - 2 * MINUTE


def request_for(window: Window, rule: EdgeRule, *, in_seconds: bool = False) -> Request:
    """The request whose served bars include every bar of the window's days under ``rule``.

    ``[)`` and ``[]`` end at ``last_day 23:59`` with the window's whole days; ``(]`` ends a
    minute earlier. Under ``()`` (or a rule not learned) no whole-day duration can take in
    both ends, so the window is asked as seconds, one minute longer: IB has not documented
    whether it accepts more than ``86400 S`` (a refusal is read as "too long", down to one
    day). ``in_seconds``: the duration in seconds whatever the rule (an untrusted header:
    seconds do not depend on IB's sessions, so the asked window is the served one).
    """
    if rule.known and rule.text in ("[)", "[]"):
        duration = f"{window.n_days * 86_400} S" if in_seconds else window.duration_str
        return Request(last_start(window) + MINUTE, duration)
    if rule.known and rule.text == "(]":
        duration = f"{window.n_days * 86_400} S" if in_seconds else window.duration_str
        return Request(last_start(window), duration)
    return Request(last_start(window) + MINUTE, f"{window.n_days * 86_400 + 60} S")


def asked_span(request: Request) -> tuple[datetime, datetime] | None:
    """``[end - duration, end]`` of a request in seconds; None for "N D" (IB's count)."""
    count, _, unit = request.duration.partition(" ")
    if unit != "S" or not count.isdigit():
        return None
    return request.end - timedelta(seconds=int(count)), request.end


def covered_days(
    window: Window,
    rule: EdgeRule,
    served_start: datetime | None,
    served_end: datetime | None,
    asked_at: datetime,
) -> list[date]:
    """The window's days whose every bar lies in the window IB says it served.

    A day still running when asked (``asked_at``) needs only its minutes ended by then. No
    readable header: no day is known to be covered.
    """
    if served_start is None or served_end is None:
        return []
    ended = asked_at.replace(second=0, microsecond=0) - MINUTE  # last start of an ended bar
    covered = []
    for day in window.days:
        need_first = day_start(day) - MINUTE
        need_last = min(day_start(day) + DAY - 2 * MINUTE, ended)
        starts_ok = served_start < need_first or (served_start == need_first and rule.first_served)
        ends_ok = served_end > need_last or (served_end == need_last and rule.last_served)
        if starts_ok and ends_ok:
            covered.append(day)
    return covered


def probe_pair(
    starts: list[datetime], asked_start: datetime, asked_end: datetime, span: timedelta
) -> tuple[datetime, datetime] | None:
    """Two served bar starts ``span`` apart, strictly inside the asked window, to ask for
    again as ``[a, b]``: whether ``a`` and ``b`` come back tells the rule."""
    present = set(starts)
    for a in sorted(present):
        b = a + span
        if asked_start < a and b < asked_end and b in present:
            return a, b
    return None


def rule_from(a: datetime, b: datetime, served: list[datetime]) -> EdgeRule:
    """The rule shown by asking ``[a, b]`` (both minutes known to have bars)."""
    got = set(served)
    return EdgeRule.parse(("[" if a in got else "(") + ("]" if b in got else ")"))
