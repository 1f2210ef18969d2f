"""Stall detection, pure: which workers have been silent too long, on a given clock.

A worker with work sends something at least every ``heartbeat_every(stall_after_s)``
seconds, even while it legitimately waits (a long pacing delay, IB's 1100 outage held, a
request hung within its timeout): its event loop sends a heartbeat when it has been quiet.
So silence past ``stall_after_s`` means its process is not running (stopped, swapped out,
stuck in a blocking call), not that it waits. Past ``restart_after_s`` of silence it is
restarted like a crashed worker.
"""

from __future__ import annotations

from collections.abc import Callable, Hashable
from dataclasses import dataclass
from enum import Enum

Clock = Callable[[], float]


class Verdict(str, Enum):
    STALLED = "stalled"  # silent past stall_after_s: its share of the rate goes to the others
    RESUMED = "resumed"  # heard again after a stall: its share comes back
    RESTART = "restart"  # silent past restart_after_s: kill it, restart it from the lake


def heartbeat_every(stall_after_s: float) -> float:
    """How often a quiet worker sends a heartbeat: four within the stall limit."""
    return max(0.05, stall_after_s / 4)


@dataclass
class _Watched:
    last_heard: float
    stalled: bool = False
    restart_told: bool = False


class StallWatch:
    """Last-heard times of the watched workers, and each verdict told once.

    ``stall_after_s`` 0 turns detection off; ``restart_after_s`` 0 turns only restarts off.
    """

    def __init__(self, stall_after_s: float, restart_after_s: float, *, clock: Clock) -> None:
        self.stall_after_s = stall_after_s
        self.restart_after_s = restart_after_s
        self.clock = clock
        self._watched: dict[Hashable, _Watched] = {}

    def watch(self, key: Hashable) -> None:
        """A worker started: its silence counts from now."""
        self._watched[key] = _Watched(self.clock())

    def forget(self, key: Hashable) -> None:
        self._watched.pop(key, None)

    def stalled(self, key: Hashable) -> bool:
        watched = self._watched.get(key)
        return watched is not None and watched.stalled

    def heard(self, key: Hashable) -> Verdict | None:
        """The worker sent something: ``RESUMED`` if it was stalled, else None."""
        watched = self._watched.get(key)
        if watched is None:
            return None
        watched.last_heard = self.clock()
        if watched.stalled and not watched.restart_told:
            watched.stalled = False
            return Verdict.RESUMED
        return None

    def check(self) -> list[tuple[Hashable, Verdict, float]]:
        """New verdicts since the last check: ``(key, verdict, seconds silent)``."""
        if self.stall_after_s <= 0:
            return []
        now = self.clock()
        verdicts: list[tuple[Hashable, Verdict, float]] = []
        for key, watched in self._watched.items():
            silent = now - watched.last_heard
            if not watched.stalled and silent >= self.stall_after_s:
                watched.stalled = True
                verdicts.append((key, Verdict.STALLED, silent))
            if (
                watched.stalled
                and not watched.restart_told
                and self.restart_after_s > 0
                and silent >= self.restart_after_s
            ):
                watched.restart_told = True
                verdicts.append((key, Verdict.RESTART, silent))
        return verdicts
