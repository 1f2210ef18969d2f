"""Stall detection as pure logic, on a fake clock."""

from __future__ import annotations

import pytest

from backfill.domain import BadInput
from backfill.run.stall import StallWatch, Verdict, heartbeat_every
from backfill.settings import RunSettings


class FakeClock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def watch(stall: float = 60.0, restart: float = 300.0) -> tuple[StallWatch, FakeClock]:
    clock = FakeClock()
    return StallWatch(stall, restart, clock=clock), clock


def test_a_worker_heard_within_the_limit_is_never_stalled():
    stalls, clock = watch()
    stalls.watch(1)
    for _ in range(100):
        clock.now += heartbeat_every(60.0)  # a quiet worker's heartbeats
        stalls.heard(1)
        assert stalls.check() == []


def test_silence_past_the_limit_is_a_stall_told_once_then_a_restart():
    stalls, clock = watch()
    stalls.watch("a")
    stalls.watch("b")
    clock.now += 59.9
    stalls.heard("b")
    assert stalls.check() == []
    clock.now += 0.1
    assert stalls.check() == [("a", Verdict.STALLED, 60.0)]
    assert stalls.stalled("a") and not stalls.stalled("b")
    clock.now += 100
    assert [v for _, v, _ in stalls.check()] == [Verdict.STALLED]  # b, silent 100 s
    clock.now += 140
    assert stalls.check() == [("a", Verdict.RESTART, 300.0)]
    assert stalls.check() == []
    assert stalls.heard("a") is None, "a worker being restarted does not resume"


def test_a_stalled_worker_heard_again_resumes():
    stalls, clock = watch(stall=1.0, restart=4.0)
    stalls.watch(0)
    clock.now += 2.0
    assert [v for _, v, _ in stalls.check()] == [Verdict.STALLED]
    assert stalls.heard(0) is Verdict.RESUMED
    assert not stalls.stalled(0)
    assert stalls.heard(0) is None
    clock.now += 3.5  # silence counts from the last message, not from the stall
    assert [v for _, v, _ in stalls.check()] == [Verdict.STALLED]
    clock.now += 0.5
    assert [v for _, v, _ in stalls.check()] == [Verdict.RESTART]


def test_a_forgotten_worker_is_not_checked_and_zero_turns_detection_off():
    stalls, clock = watch()
    stalls.watch(0)
    stalls.forget(0)
    clock.now += 1000
    assert stalls.check() == [] and stalls.heard(0) is None
    off, clock = watch(stall=0.0)
    off.watch(0)
    clock.now += 1e6
    assert off.check() == []
    no_restart, clock = watch(stall=1.0, restart=0.0)
    no_restart.watch(0)
    clock.now += 1e6
    assert [v for _, v, _ in no_restart.check()] == [Verdict.STALLED]


def test_heartbeats_come_four_times_within_the_limit():
    assert heartbeat_every(60.0) == 15.0
    assert heartbeat_every(1.0) == 0.25


def test_a_restart_limit_below_the_stall_limit_is_bad_input():
    with pytest.raises(BadInput, match="--stall-restart-after"):
        RunSettings(stall_after_s=5, stall_restart_after_s=1).check()
    with pytest.raises(BadInput, match="--stall-after"):
        RunSettings(stall_after_s=-1).check()
    RunSettings(stall_after_s=5, stall_restart_after_s=0).check()  # 0: restarts off
    RunSettings(stall_after_s=0, stall_restart_after_s=1).check()  # 0: detection off
