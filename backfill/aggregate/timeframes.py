"""The aggregate timeframes: names, widths, and the parsing of ``--tf``."""

from __future__ import annotations

import itertools
from dataclasses import dataclass
from datetime import timedelta

from backfill.domain import MINUTES_PER_DAY, BadInput

US_PER_MINUTE = 60_000_000
US_PER_DAY = MINUTES_PER_DAY * US_PER_MINUTE


@dataclass(frozen=True, order=True)
class Timeframe:
    """A bucket width on a grid anchored at 00:00 UTC; every width divides a day."""

    minutes: int
    name: str

    @property
    def width(self) -> timedelta:
        return timedelta(minutes=self.minutes)

    @property
    def width_us(self) -> int:
        return self.minutes * US_PER_MINUTE

    def __str__(self) -> str:
        return self.name


M5 = Timeframe(5, "M5")
M15 = Timeframe(15, "M15")
M30 = Timeframe(30, "M30")
H1 = Timeframe(60, "H1")
H4 = Timeframe(240, "H4")
D1 = Timeframe(MINUTES_PER_DAY, "D1")
TIMEFRAMES = (M5, M15, M30, H1, H4, D1)
BY_NAME = {tf.name: tf for tf in TIMEFRAMES}

# Each width divides the next one's, so every timeframe can be built from the one before it
# (and any of them from M1): the whole chain costs one pass over the minutes.
assert all(b.minutes % a.minutes == 0 for a, b in itertools.pairwise(TIMEFRAMES))
assert all(MINUTES_PER_DAY % tf.minutes == 0 for tf in TIMEFRAMES)


def parse_timeframes(text: str) -> tuple[Timeframe, ...]:
    """``M5,H1,D1`` → timeframes, sorted and without repeats; BadInput on an unknown name."""
    found: set[Timeframe] = set()
    for chunk in text.split(","):
        name = chunk.strip().upper()
        if not name:
            continue
        if name not in BY_NAME:
            choices = ",".join(BY_NAME)
            raise BadInput(f"--tf: unknown timeframe {chunk.strip()!r} (choose from {choices})")
        found.add(BY_NAME[name])
    if not found:
        raise BadInput(f"--tf: no timeframe given (choose from {','.join(BY_NAME)})")
    return tuple(sorted(found))
