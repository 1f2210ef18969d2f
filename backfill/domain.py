"""Pure value types: symbols, days, months, request windows and coverage records."""

from __future__ import annotations

import re
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import date, datetime, timedelta, timezone

UTC = timezone.utc
MINUTE = timedelta(minutes=1)
DAY = timedelta(days=1)
MINUTES_PER_DAY = 1440

SOURCE = "ibkr"
MARKET = "crypto"
TIMEFRAME = "M1"
EXCHANGE = "PAXOS"
WHAT_TO_SHOW = "AGGTRADES"

_SYMBOL_RE = re.compile(r"^([A-Z0-9]{1,12})-([A-Z]{3,5})$")


class BadInput(ValueError):
    """Input from the user that cannot be acted on (exit code 2, nothing written)."""


@dataclass(frozen=True, order=True)
class Symbol:
    """A lake symbol such as ``BTC-USD``: base asset and quote currency."""

    base: str
    quote: str

    @classmethod
    def parse(cls, text: str) -> Symbol:
        # ASCII before upper-casing: Unicode case folding turns 'ﬆ-usd' into 'ST-USD'.
        stripped = text.strip()
        match = _SYMBOL_RE.match(stripped.upper()) if stripped.isascii() else None
        if not match:
            raise BadInput(
                f"malformed symbol {_shown(stripped)}: expected BASE-QUOTE such as BTC-USD"
            )
        return cls(match.group(1), match.group(2))

    def __str__(self) -> str:
        return f"{self.base}-{self.quote}"


_SHOWN_MAX = 16


def _shown(token: str) -> str:
    """An offending token as an error shows it: up to its first character no symbol has,
    at most ``_SHOWN_MAX`` characters (a symbols file pointed at a secret, such as
    /etc/shadow, must not have its first line echoed)."""
    cut = next(
        (i + 1 for i, c in enumerate(token) if not (c.isascii() and (c.isalnum() or c == "-"))),
        len(token),
    )
    cut = min(cut, _SHOWN_MAX)
    return repr(token[:cut]) + ("…" if cut < len(token) else "")


def parse_symbols(text: str) -> list[Symbol]:
    """Parse a comma-separated symbol list, keeping order and dropping repeats."""
    symbols: list[Symbol] = []
    for chunk in text.split(","):
        if chunk.strip():
            symbol = Symbol.parse(chunk)
            if symbol not in symbols:
                symbols.append(symbol)
    if not symbols:
        raise BadInput("no symbols given")
    return symbols


def read_symbols_file(text: str) -> list[Symbol]:
    """Parse a symbols file: one symbol a line, ``#`` starts a comment, repeats dropped."""
    symbols: list[Symbol] = []
    for number, line in enumerate(text.splitlines(), start=1):
        content = line.split("#", 1)[0].strip()
        if not content:
            continue
        try:
            symbol = Symbol.parse(content)
        except BadInput as exc:
            raise BadInput(f"line {number}: {exc}") from None
        if symbol not in symbols:
            symbols.append(symbol)
    if not symbols:
        raise BadInput("no symbols in the file")
    return symbols


def parse_day(text: str, flag: str = "date") -> date:
    """Parse a UTC calendar day written YYYY-MM-DD."""
    try:
        return date.fromisoformat(text.strip())
    except ValueError:
        raise BadInput(f"{flag}: {text!r} is not a date (expected YYYY-MM-DD)") from None


def check_range(first: date, last: date) -> None:
    if first > last:
        raise BadInput(f"--from {first} is after --to {last}")


def days_between(first: date, last: date) -> list[date]:
    """Every day from ``first`` to ``last``, both inclusive."""
    # date.fromordinal over a range is about 8x faster than adding timedeltas (plan: 180k days)
    return list(map(date.fromordinal, range(first.toordinal(), last.toordinal() + 1)))


def iso_day(day: date | None) -> str | None:
    """A day as ``YYYY-MM-DD`` in JSON documents; None stays None (null)."""
    return None if day is None else day.isoformat()


def day_start(day: date) -> datetime:
    return datetime(day.year, day.month, day.day, tzinfo=UTC)


@dataclass(frozen=True, order=True)
class Month:
    year: int
    month: int

    @classmethod
    def of(cls, when: date | datetime) -> Month:
        return cls(when.year, when.month)

    @property
    def first_day(self) -> date:
        return date(self.year, self.month, 1)

    @property
    def next(self) -> Month:
        return Month(self.year + 1, 1) if self.month == 12 else Month(self.year, self.month + 1)

    @property
    def last_day(self) -> date:
        return self.next.first_day - DAY

    def days(self) -> list[date]:
        return days_between(self.first_day, self.last_day)

    def __str__(self) -> str:
        return f"{self.year:04d}-{self.month:02d}"


def months_between(first: date, last: date) -> list[Month]:
    months = []
    month, final = Month.of(first), Month.of(last)
    while month <= final:  # not by first_day: December 9999 has no next month's day
        months.append(month)
        month = month.next
    return months


@dataclass(frozen=True)
class Window:
    """One IB request: ``days`` consecutive whole UTC days ending with ``last_day``.

    Day D holds bars whose END is in [D 00:00, D+1 00:00), so bars whose START is in
    [D-1 23:59, D 23:59): the request ends at ``last_day 23:59:00 UTC``.
    """

    first_day: date
    last_day: date

    @classmethod
    def single(cls, day: date) -> Window:
        return cls(day, day)

    @property
    def n_days(self) -> int:
        return (self.last_day - self.first_day).days + 1

    @property
    def days(self) -> list[date]:
        return days_between(self.first_day, self.last_day)

    @property
    def end_datetime(self) -> datetime:
        return day_start(self.last_day) + DAY - MINUTE

    @property
    def duration_str(self) -> str:
        return "86400 S" if self.n_days == 1 else f"{self.n_days} D"

    @property
    def ts_start(self) -> datetime:
        """Inclusive lower bound of bar-end timestamps in this window."""
        return day_start(self.first_day)

    @property
    def ts_stop(self) -> datetime:
        """Exclusive upper bound of bar-end timestamps in this window."""
        return day_start(self.last_day) + DAY

    def split(self) -> list[Window]:
        """Halve a window (for a gateway that refuses its duration)."""
        if self.n_days == 1:
            return [self]
        mid = self.first_day + timedelta(days=self.n_days // 2 - 1)
        return [Window(self.first_day, mid), Window(mid + DAY, self.last_day)]

    def __str__(self) -> str:
        if self.n_days == 1:
            return str(self.first_day)
        return f"{self.first_day}..{self.last_day}"


def group_windows(days: Iterable[date], window_days: int) -> list[Window]:
    """Cut sorted days into windows of at most ``window_days`` consecutive days."""
    windows: list[Window] = []
    run: list[date] = []
    for day in sorted(set(days)):
        if run and (day - run[-1] != DAY or len(run) == window_days):
            windows.append(Window(run[0], run[-1]))
            run = []
        run.append(day)
    if run:
        windows.append(Window(run[0], run[-1]))
    return windows


def day_ranges(days: Iterable[date]) -> list[tuple[date, date]]:
    """Collapse days into inclusive (first, last) runs of consecutive days."""
    return [(w.first_day, w.last_day) for w in group_windows(days, 10**9)]


@dataclass(frozen=True)
class DayCoverage:
    """What the lake knows about one fetched day of one symbol (from a part's footer).

    ``complete`` is False for a day that ended after the fetch (today): fetch it again.
    ``no_data``: the day is empty because IB said so ("HMDS query returned no data").
    """

    day: date
    rows: int
    fetched_at: datetime
    complete: bool
    no_data: bool = False


def missing_minute_ranges(
    bar_ends_us: list[int], start_us: int, stop_us: int
) -> list[tuple[int, int]]:
    """Minutes in [start_us, stop_us) with no bar, as inclusive (first, last) bar-end runs.

    ``bar_ends_us`` are sorted, minute-aligned bar ends in microseconds since the epoch.
    """
    step = 60_000_000
    gaps: list[tuple[int, int]] = []
    expected = start_us
    for ts in bar_ends_us:
        if ts < start_us or ts >= stop_us:
            continue
        if ts > expected:
            gaps.append((expected, ts - step))
        expected = ts + step
    last = stop_us - step
    if expected <= last:
        gaps.append((expected, last))
    return gaps
