"""Pacing is pure: every test drives a fake clock, nothing sleeps."""

from __future__ import annotations

import itertools
import math
import random
from bisect import bisect_right

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from backfill.pacing import (
    Backoff,
    Budget,
    ContractRules,
    Pacer,
    Rule,
    SessionGrants,
    SlidingWindow,
    TokenBucket,
    rebalance,
    split_rate,
    staggered_start,
)
from backfill.settings import RunSettings

FAST = settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
TOL = 1e-6


class FakeClock:
    def __init__(self, now: float = 1000.0) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        assert seconds >= 0
        self.now += seconds


class RateTimeline:
    """Piecewise-constant rate over time, to integrate what a bucket may grant."""

    def __init__(self, t0: float, rate: float) -> None:
        self.times = [t0]
        self.rates = [rate]

    def set(self, t: float, rate: float) -> None:
        self.times.append(t)
        self.rates.append(rate)

    def integral(self, a: float, b: float) -> float:
        total = 0.0
        i = max(0, bisect_right(self.times, a) - 1)
        while i < len(self.times) and self.times[i] < b:
            start = max(a, self.times[i])
            stop = b if i + 1 == len(self.times) else min(b, self.times[i + 1])
            total += self.rates[i] * max(0.0, stop - start)
            i += 1
        return total


def assert_within_rate(grants: list[float], timeline: RateTimeline, burst: float) -> None:
    """Grants in every closed interval [t_i, t_j] fit in burst + the rate's integral."""
    for i in range(len(grants)):
        for j in range(i, len(grants)):
            allowed = burst + timeline.integral(grants[i], grants[j])
            assert j - i + 1 <= allowed + TOL, (i, j, grants[i], grants[j], allowed)


def wait_until_clear(clock: FakeClock, delay) -> bool:
    """A worker's loop: wait what delay() says, ask again, until it says 0."""
    for _ in range(1000):
        wait = delay()
        if isinstance(wait, tuple):
            wait = wait[0]
        if wait == 0:
            return True
        if math.isinf(wait):
            return False
        clock.advance(wait)
    raise AssertionError("delay() never reached 0")


rates = st.one_of(st.just(0.0), st.floats(0.05, 20.0))
ops = st.lists(
    st.one_of(
        st.tuples(st.just("grant"), st.integers(1, 8)),
        st.tuples(st.just("idle"), st.floats(0.0, 30.0)),
        st.tuples(st.just("rate"), rates),
    ),
    max_size=25,
)


# --- TokenBucket ---------------------------------------------------------------------


def test_bucket_starts_with_burst_then_paces() -> None:
    clock = FakeClock()
    bucket = TokenBucket(2.0, burst=3, clock=clock)
    assert [bucket.try_take() for _ in range(4)] == [True, True, True, False]
    assert bucket.delay() == pytest.approx(0.5)
    clock.advance(0.5)
    assert bucket.try_take()


def test_bucket_can_start_empty() -> None:
    clock = FakeClock()
    bucket = TokenBucket(0.5, clock=clock, initial=0)
    assert bucket.delay() == pytest.approx(2.0)


def test_rate_zero_pauses_and_resuming_gives_no_backlog() -> None:
    clock = FakeClock()
    bucket = TokenBucket(1.0, burst=2, clock=clock)
    bucket.take()
    bucket.take()
    bucket.set_rate(0)
    assert bucket.delay() == math.inf
    clock.advance(10_000)
    assert bucket.delay() == math.inf
    bucket.set_rate(1.0)
    # Paused time earns nothing; only the rate from now on refills.
    assert bucket.delay() == pytest.approx(1.0)


def test_lowering_the_rate_keeps_at_most_one_burst() -> None:
    clock = FakeClock()
    bucket = TokenBucket(100.0, burst=2, clock=clock)
    clock.advance(60)
    bucket.set_rate(0.1)
    assert bucket.tokens == pytest.approx(2)
    bucket.take()
    bucket.take()
    assert bucket.delay() == pytest.approx(10.0)


def test_raising_the_rate_does_not_credit_elapsed_time() -> None:
    clock = FakeClock()
    bucket = TokenBucket(0.1, clock=clock, initial=0)
    clock.advance(5)  # half a token at the old rate
    bucket.set_rate(10.0)
    assert bucket.delay() == pytest.approx(0.05)


@pytest.mark.parametrize("bad", [-1.0, math.nan, math.inf])
def test_bad_rates_are_refused(bad: float) -> None:
    with pytest.raises(ValueError):
        TokenBucket(bad, clock=FakeClock())


@FAST
@given(rate=st.floats(0.05, 20.0), burst=st.integers(1, 5), program=ops)
def test_grants_never_exceed_rate_even_across_rate_changes(
    rate: float, burst: int, program: list
) -> None:
    clock = FakeClock()
    bucket = TokenBucket(rate, burst, clock=clock)
    timeline = RateTimeline(clock.now, rate)
    grants: list[float] = []
    for op, arg in program:
        if op == "grant":
            for _ in range(arg):
                if not wait_until_clear(clock, bucket.delay):
                    break
                bucket.take()
                grants.append(clock.now)
        elif op == "idle":
            clock.advance(arg)
        else:
            bucket.set_rate(arg)
            timeline.set(clock.now, arg)
    assert_within_rate(grants, timeline, burst)


# --- ContractRules -------------------------------------------------------------------


def test_sixth_request_waits_for_the_two_second_window() -> None:
    clock = FakeClock()
    rules = ContractRules(clock=clock, margin_s=0.05)
    for i in range(5):
        assert rules.delay(i) == 0
        rules.record(i)
        clock.advance(0.1)
    assert rules.wait(99) == (pytest.approx(2.05 - 0.5), Rule.CONTRACT)


def test_identical_request_waits_fifteen_seconds() -> None:
    clock = FakeClock()
    rules = ContractRules(clock=clock, margin_s=0.05)
    rules.record("2025-07-01")
    clock.advance(3)
    assert rules.wait("2025-07-01") == (pytest.approx(12.05), Rule.IDENTICAL)
    assert rules.delay("2025-07-02") == 0


def test_a_request_refused_for_pacing_is_not_counted_as_asked() -> None:
    clock = FakeClock()
    pacer = Pacer(100.0, clock=clock, rng=random.Random(1), burst=10)
    pacer.record("2025-07-01")
    pause = pacer.violation("2025-07-01")
    clock.advance(pause)
    # Its retry waits out the backoff, not the 15 s identical-request interval.
    assert pacer.delay("2025-07-01") == (0.0, Rule.NONE)


def test_strict_rule_only_when_asked() -> None:
    clock = FakeClock()
    loose = ContractRules(clock=clock, max_per_window=100)
    strict = ContractRules(clock=clock, max_per_window=100, strict=True)
    for i in range(60):
        loose.record(i)
        strict.record(i)
        clock.advance(1)
    assert loose.delay("x") == 0
    margin = RunSettings().pacing_margin_s  # the rules' default slack is the run's
    assert strict.wait("x") == (pytest.approx(600 + margin - 60), Rule.STRICT)


def test_sliding_window_refuses_bad_limits() -> None:
    with pytest.raises(ValueError):
        SlidingWindow(0, 1.0)


# --- Pacer ---------------------------------------------------------------------------

pacer_ops = st.lists(
    st.one_of(
        # A few keys (identical requests happen) and many (so the contract rule can bind:
        # with four keys, identical requests 15 s apart left no room for six in 2 s).
        st.tuples(st.just("send"), st.integers(0, 3)),
        st.tuples(st.just("send"), st.integers(4, 10_000)),
        st.tuples(st.just("burst"), st.integers(2, 12)),  # that many new keys, back to back
        st.tuples(st.just("idle"), st.floats(0.0, 20.0)),
        st.tuples(st.just("rate"), st.floats(0.05, 50.0)),
        st.tuples(st.just("violation"), st.none()),
    ),
    max_size=40,
)


@FAST
@given(
    rate=st.floats(0.05, 50.0),
    burst=st.integers(1, 4),
    strict=st.booleans(),
    seed=st.integers(0, 2**32 - 1),
    program=pacer_ops,
)
def test_a_worker_that_waits_for_its_pacer_breaks_no_rule(
    rate: float, burst: int, strict: bool, seed: int, program: list
) -> None:
    clock = FakeClock()
    # A scaled-down strict rule (7 in 20 s) so short programs reach it.
    rules = ContractRules(clock=clock, strict=strict, strict_max=7, strict_window_s=20.0)
    backoff = Backoff(clock=clock, rng=random.Random(seed), base_s=0.5, max_s=8.0)
    pacer = Pacer(
        rate, clock=clock, rng=random.Random(seed), burst=burst, rules=rules, backoff=backoff
    )
    timeline = RateTimeline(clock.now, rate)
    sends: list[tuple[float, int]] = []
    pauses: list[tuple[float, float]] = []
    fresh = itertools.count(-1, -1)  # keys no "send" op draws

    def send(key: int) -> None:
        assert wait_until_clear(clock, lambda: pacer.delay(key))
        pacer.record(key)
        sends.append((clock.now, key))

    for op, arg in program:
        if op == "send":
            send(arg)
        elif op == "burst":
            for _ in range(arg):
                send(next(fresh))
        elif op == "idle":
            clock.advance(arg)
        elif op == "rate":
            pacer.set_rate(arg)
            timeline.set(clock.now, arg)
        else:
            pause = pacer.violation()
            assert 0 < pause <= 8.0
            pauses.append((clock.now, clock.now + pause))

    times = [t for t, _ in sends]
    assert_within_rate(times, timeline, burst)
    for i in range(len(times) - 5):
        assert times[i + 5] - times[i] > 2.0  # IB: 6 or more in 2 s is a violation
    if strict:
        for i in range(len(times) - 7):
            assert times[i + 7] - times[i] > 20.0
    for i, (t_i, key_i) in enumerate(sends):
        for t_j, key_j in sends[i + 1 :]:
            if key_j == key_i:
                assert t_j - t_i > 15.0
    for start, stop in pauses:
        assert not any(start < t < stop - TOL for t in times)


def test_pacer_names_the_binding_rule() -> None:
    clock = FakeClock()
    backoff = Backoff(clock=clock, rng=random.Random(1), base_s=5.0)
    pacer = Pacer(1.0, clock=clock, rng=random.Random(1), backoff=backoff)
    assert pacer.delay("a") == (0.0, Rule.NONE)
    pacer.record("a")
    assert pacer.delay("b") == (pytest.approx(1.0), Rule.RATE)
    assert pacer.delay("a")[1] is Rule.IDENTICAL
    pause = pacer.violation()
    assert pacer.delay("b") == (pytest.approx(pause), Rule.BACKOFF)
    pacer.set_rate(0)
    clock.advance(pause)
    assert pacer.delay("b") == (math.inf, Rule.RATE)


def test_pause_all_from_another_worker() -> None:
    clock = FakeClock()
    pacer = Pacer(1.0, clock=clock, rng=random.Random(1))
    pacer.pause(7.0)
    assert pacer.delay("a") == (pytest.approx(7.0), Rule.BACKOFF)


# --- Backoff -------------------------------------------------------------------------


@FAST
@given(
    seed=st.integers(0, 2**32 - 1),
    base=st.floats(0.1, 5.0),
    cap=st.floats(5.0, 120.0),
    jitter=st.floats(0.0, 0.5),
    n=st.integers(1, 40),
)
def test_backoff_is_bounded_and_grows_until_the_cap(
    seed: int, base: float, cap: float, jitter: float, n: int
) -> None:
    clock = FakeClock()
    backoff = Backoff(
        clock=clock, rng=random.Random(seed), base_s=base, max_s=cap, jitter=jitter, quiet_s=60.0
    )
    pauses = []
    for attempt in range(1, n + 1):
        pause = backoff.violation()
        ceiling = backoff.ceiling(attempt)
        assert ceiling * (1 - jitter) - TOL <= pause <= ceiling <= cap
        assert ceiling == pytest.approx(min(cap, base * 2 ** (attempt - 1)))
        pauses.append(pause)
        clock.advance(pause)  # the next 162 comes right after the pause: no quiet period
    for attempt in range(1, n):
        if backoff.ceiling(attempt + 1) < cap:
            assert pauses[attempt] >= pauses[attempt - 1] - TOL


def test_backoff_resets_after_a_quiet_period() -> None:
    clock = FakeClock()
    backoff = Backoff(clock=clock, rng=random.Random(3), jitter=0.0, quiet_s=300.0)
    assert [backoff.violation() for _ in range(3)] == [1.0, 2.0, 4.0]
    clock.advance(4.0 + 299.0)
    assert backoff.violation() == 8.0
    clock.advance(8.0 + 301.0)
    assert backoff.violation() == 1.0


def test_backoff_survives_a_long_streak() -> None:
    backoff = Backoff(clock=FakeClock(), rng=random.Random(0), jitter=0.0)
    assert backoff.ceiling(100_000) == 60.0


# --- Budget and rebalance ------------------------------------------------------------


def test_split_rate() -> None:
    assert split_rate(0.7, 2) == pytest.approx(0.35)
    assert split_rate(0.7, 0) == 0.0
    with pytest.raises(ValueError):
        split_rate(0.7, -1)


def test_session_grants_one_unused_grant_per_slot_and_refill_as_sends_age() -> None:
    clock = FakeClock()
    grants = SessionGrants(3, 10.0, clock=clock, margin_s=0.5)
    assert grants.grant("a") and not grants.grant("a"), "one unused grant per slot"
    assert grants.grant("b") and grants.grant("c")
    assert not grants.grant("d") and grants.delay() == math.inf, "unused grants never age"
    clock.advance(1.0)
    grants.used("a")  # seen used at t+1: counts from then, not from its issue
    assert grants.delay() == pytest.approx(10.5)
    clock.advance(10.5)
    assert grants.grant("d") and grants.in_window() == 3


def test_a_dead_workers_grant_counts_as_sent_when_its_death_is_seen() -> None:
    clock = FakeClock()
    grants = SessionGrants(1, 10.0, clock=clock, margin_s=0.0)
    assert grants.grant(0)
    clock.advance(4.0)
    grants.release(0)  # it may have sent just before dying
    assert not grants.holds(0)
    clock.advance(9.9)
    assert not grants.grant(1)
    clock.advance(0.1)
    assert grants.grant(1)


@settings(max_examples=300, deadline=None)
@given(
    max_count=st.integers(1, 4),
    program=st.lists(
        st.tuples(
            st.sampled_from(["want", "send", "die", "idle"]),
            st.integers(0, 2),  # slot
            # idle seconds, or how long before the send is seen; a few values, so that
            # sends land on window edges.
            st.sampled_from([0.0, 0.1, 1.0, 4.0, 6.0, 9.9, 10.0]),
            st.sampled_from([0.0, 0.5, 1.0]),  # where between grant and sighting it was sent
        ),
        max_size=80,
    ),
)
def test_no_window_ever_holds_more_sends_than_the_session_allows(
    max_count: int, program: list
) -> None:
    # Workers send at any moment between their grant and when the orchestrator sees it.
    clock = FakeClock()
    window_s = 10.0
    grants = SessionGrants(max_count, window_s, clock=clock, margin_s=0.0)
    issued: dict[int, float] = {}
    sends: list[float] = []
    for op, slot, seconds, when in program:
        if op == "want" and grants.grant(slot):
            issued[slot] = clock.now
        elif op in ("send", "die") and slot in issued:
            clock.advance(seconds)  # the orchestrator sees the send (or the death) now
            granted = issued.pop(slot)
            sends.append(granted + when * (clock.now - granted))
            grants.used(slot) if op == "send" else grants.release(slot)
        elif op == "idle":
            clock.advance(seconds)
    sends.sort()
    for i in range(len(sends) - max_count):
        assert sends[i + max_count] - sends[i] >= window_s - TOL


def apply_in_order(shares: dict, changes: list) -> list[float]:
    sums = []
    for slot, rate in changes:
        shares[slot] = rate
        sums.append(sum(shares.values()))
    return sums


@FAST
@given(
    old=st.dictionaries(st.integers(0, 8), st.floats(0.0, 2.0), max_size=8),
    active=st.frozensets(st.integers(0, 8), max_size=8),
    global_rate=st.floats(0.0, 5.0),
)
def test_rebalance_lowers_before_it_raises(old: dict, active: frozenset, global_rate: float):
    changes = rebalance(old, active, global_rate)
    deltas = [rate - old.get(slot, 0.0) for slot, rate in changes]
    first_raise = next((i for i, d in enumerate(deltas) if d > 0), len(deltas))
    assert all(d > 0 for d in deltas[first_raise:])
    assert {slot for slot in active if slot not in old} <= {slot for slot, _ in changes}
    shares = dict(old)
    bound = max(sum(old.values()), global_rate)
    for total in apply_in_order(shares, changes):
        assert total <= bound * (1 + 1e-9) + TOL
    final = {slot: rate for slot, rate in shares.items() if slot in active}
    assert set(final) == set(active)
    assert sum(final.values()) <= global_rate * (1 + 1e-9)
    assert all(rate == 0 for slot, rate in shares.items() if slot not in active)


budget_ops = st.lists(
    st.one_of(
        st.tuples(st.just("start"), st.integers(0, 5)),
        st.tuples(st.just("finish"), st.integers(0, 5)),
        st.tuples(st.just("global"), st.floats(0.0, 3.0)),
    ),
    max_size=30,
)


@FAST
@given(global_rate=st.floats(0.01, 3.0), program=budget_ops)
def test_budget_sum_never_exceeds_the_global_rate(global_rate: float, program: list) -> None:
    budget = Budget(global_rate)
    applied: dict = {}
    for op, arg in program:
        if op == "start":
            if arg in budget.shares:
                with pytest.raises(ValueError):
                    budget.start(arg)
                continue
            changes = budget.start(arg)
        elif op == "finish":
            changes = budget.finish(arg)
        else:
            changes = budget.set_global(arg)
        before = sum(applied.values())
        for total in apply_in_order(applied, changes):
            assert total <= max(before, budget.global_rate) * (1 + 1e-9) + TOL
        applied = {s: r for s, r in applied.items() if r > 0}
        assert applied == {s: r for s, r in budget.shares.items() if r > 0}
        assert sum(applied.values()) <= budget.global_rate * (1 + 1e-9)


@settings(max_examples=40, deadline=None)
@given(
    global_rate=st.floats(0.2, 5.0),
    program=st.lists(
        st.one_of(
            st.tuples(st.just("start"), st.integers(0, 3)),
            st.tuples(st.just("finish"), st.integers(0, 3)),
            st.tuples(st.just("grants"), st.integers(1, 10)),
        ),
        max_size=25,
    ),
)
def test_workers_sharing_a_budget_stay_under_the_global_rate(
    global_rate: float, program: list
) -> None:
    """Buckets that start empty: at most global*T + (slots)*burst grants in any T seconds."""
    clock = FakeClock()
    budget = Budget(global_rate)
    pacers: dict[int, Pacer] = {}
    grants: list[float] = []
    sequence = 0
    for op, arg in program:
        if op == "start" and arg not in pacers:
            for slot, rate in budget.start(arg):
                if slot == arg:
                    pacers[slot] = Pacer(
                        rate, clock=clock, rng=random.Random(slot), initial_tokens=0
                    )
                else:
                    pacers[slot].set_rate(rate)
        elif op == "finish" and arg in pacers:
            for slot, rate in budget.finish(arg):
                if slot != arg:
                    pacers[slot].set_rate(rate)
            del pacers[arg]
        elif op == "grants" and pacers:
            for _ in range(arg):
                sequence += 1
                waits = {s: p.delay(sequence)[0] for s, p in pacers.items()}
                slot = min(waits, key=waits.__getitem__)
                clock.advance(waits[slot])
                assert pacers[slot].delay(sequence)[0] == 0
                pacers[slot].record(sequence)
                grants.append(clock.now)
    timeline = RateTimeline(0.0, global_rate)
    assert_within_rate(grants, timeline, burst=4 * 1.0)


def test_a_successor_takes_on_the_sends_ib_still_remembers() -> None:
    clock = FakeClock()
    first = ContractRules(
        clock=clock, identical_s=15.0, max_per_window=5, window_s=2.0, margin_s=0.1
    )
    for key in ("d1", "d2", "d3", "d4", "d5"):
        first.record(key)
        clock.advance(0.1)
    clock.advance(0.5)  # the worker ends 1.0 s after its first send
    later = FakeClock(clock.now + 7000.0)  # another process, another clock origin
    successor = ContractRules(
        clock=later, identical_s=15.0, max_per_window=5, window_s=2.0, margin_s=0.1
    )
    successor.restore(first.recent())
    assert successor.wait("d1") == (pytest.approx(15.1 - 1.0), Rule.IDENTICAL)
    assert successor.wait("d6") == (pytest.approx(2.1 - 1.0), Rule.CONTRACT)
    later.advance(14.3)
    assert successor.wait("d6") == (0.0, Rule.NONE)
    assert first.recent()[0] == ("d1", pytest.approx(1.0))


def test_staggered_first_sends_keep_the_global_rate() -> None:
    # 8 workers under 0.7 req/s: one sends at once, the others one every 1/0.7 s.
    n, rate = 8, 0.7
    share = rate / n
    firsts = [(1 - staggered_start(slot, n, rate)) / share for slot in range(n)]
    assert firsts == pytest.approx([k / rate for k in range(n)])
    # A budget of a second's worth or more lets everyone start at once.
    assert [staggered_start(slot, 8, 20.0) for slot in range(8)] == [1.0] * 8
    assert [staggered_start(slot, 4, 2.0) for slot in range(4)] == [1.0, 1.0, 0.75, 0.5]
