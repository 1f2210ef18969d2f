"""A minute of the day missing on nearly every day: a loss with a cause, not a quiet market.

A minute without trades has no bar, so one missing minute proves nothing. But when the
same minute of the day is missing on nearly every fetched day of a symbol while those days
are otherwise nearly full, something took it: a request window that leaves out one of its
edges (the 00:00 bar when IB does not serve a bar starting exactly at ``end - duration``),
or a daily gap at the source. This check needs no knowledge of the cause. Pure: tallies in,
findings out; memory is 1,440 counters per symbol whatever the lake's size.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import pyarrow as pa
import pyarrow.compute as pc

from backfill.domain import MINUTES_PER_DAY

_US_PER_MINUTE = 60_000_000


@dataclass(frozen=True)
class MinuteCheckThresholds:
    """When a minute missing day after day is an error (``backfill verify --help``)."""

    min_days: int = 7  # whole days needed before judging
    full_share: float = 0.95  # a day counts if it holds at least this share of 1,440 bars
    missing_share: float = 0.9  # error if the minute is missing on this share of those days


@dataclass
class MinuteTally:
    """Per minute of the day, on how many counted days it had a bar."""

    days: int = 0
    present: list[int] = field(default_factory=lambda: [0] * MINUTES_PER_DAY)

    def add(self, ts_us: pa.Array, whole_days: set[int], thresholds: MinuteCheckThresholds) -> None:
        """Count the bars (``ts`` as int64 µs, bar ends) of the days in ``whole_days``
        (days since the epoch) that are nearly full."""
        if not len(ts_us) or not whole_days:
            return
        minutes = pc.divide(ts_us, _US_PER_MINUTE)
        days = pc.divide(minutes, MINUTES_PER_DAY)
        counts = pc.value_counts(pc.filter(days, pc.is_in(days, pa.array(sorted(whole_days)))))
        full = {
            day
            for day, n in zip(
                counts.field("values").to_pylist(), counts.field("counts").to_pylist(), strict=True
            )
            if n >= thresholds.full_share * MINUTES_PER_DAY
        }
        if not full:
            return
        mask = pc.is_in(days, pa.array(sorted(full), pa.int64()))
        of_day = pc.subtract(
            pc.filter(minutes, mask), pc.multiply(pc.filter(days, mask), MINUTES_PER_DAY)
        )
        counted = pc.value_counts(of_day)
        for minute, n in zip(
            counted.field("values").to_pylist(), counted.field("counts").to_pylist(), strict=True
        ):
            self.present[minute] += n
        self.days += len(full)


@dataclass(frozen=True)
class MissingMinute:
    minute: int  # of the day, 0..1439, by bar END (0 = the bar ending 00:00)
    missing_days: int
    days: int

    @property
    def label(self) -> str:
        return f"{self.minute // 60:02d}:{self.minute % 60:02d}"

    @property
    def cause(self) -> str:
        if self.minute == 0:
            return (
                "likely cause: the gateway does not serve the bar starting exactly at the "
                "window's start (its window-edge rule); the days are recorded complete, "
                "so repair with `backfill run --refetch` over them (a plain rerun asks "
                "nothing)"
            )
        if self.minute == MINUTES_PER_DAY - 1:
            return (
                "likely cause: the window's last bar is not served (its window-edge "
                "rule); repair with `backfill run --refetch` over the days"
            )
        return (
            "likely cause: a daily gap at the source (maintenance) or a time-zone shift "
            "in the requests"
        )

    def detail(self) -> str:
        return (
            f"the bar ending {self.label} UTC is missing on {self.missing_days} of "
            f"{self.days} nearly full days: {self.cause}"
        )


def missing_every_day(tally: MinuteTally, thresholds: MinuteCheckThresholds) -> list[MissingMinute]:
    """Minutes missing on at least ``missing_share`` of the counted days."""
    if tally.days < thresholds.min_days:
        return []
    return [
        MissingMinute(minute, tally.days - present, tally.days)
        for minute, present in enumerate(tally.present)
        if tally.days - present >= thresholds.missing_share * tally.days
    ]
