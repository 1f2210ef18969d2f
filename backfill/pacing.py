"""Pacing: token buckets, IB's per-contract rules, backoff and the global rate budget.

Pure: no sleeps and no I/O. Every class takes ``clock`` (monotonic seconds) and answers
"how long until I may send"; the caller does the waiting. docs/run.md says how the
run uses them.
"""

from __future__ import annotations

import math
import random
from collections import deque
from collections.abc import Callable, Hashable, Mapping, Sequence, Set
from enum import Enum
from typing import TypeVar

from backfill.settings import IBRules, RunSettings

Clock = Callable[[], float]
Slot = TypeVar("Slot", bound=Hashable)

_IB = IBRules()  # IB's limits: the defaults of the rules below
_RUN = RunSettings()
INF = math.inf
# Float slack: after waiting exactly delay(), the refill may land a hair under one token.
_EPS = 1e-9


class Rule(str, Enum):
    """Which limit a wait is for (``NONE`` when there is nothing to wait for)."""

    NONE = "none"
    RATE = "rate"  # the worker's share of the global rate (inf when paused)
    IDENTICAL = "identical"  # IB: no identical request within 15 s
    CONTRACT = "contract"  # IB: at most 5 requests for one contract in any 2 s
    STRICT = "strict"  # IB: at most 60 requests in any 10 minutes (strict mode only)
    BACKOFF = "backoff"  # pausing after a pacing violation


def _check_rate(rate: float) -> float:
    if not rate >= 0 or rate == INF:  # also refuses NaN
        raise ValueError(f"rate must be a finite number >= 0, not {rate!r}")
    return float(rate)


class TokenBucket:
    """``rate`` tokens a second, at most ``burst`` saved; one token per request.

    Tokens held never exceed ``burst``, so whatever the rate changes, the grants in any
    interval of T seconds are at most ``burst + ∫ rate dt`` over it. Rate 0 pauses.
    """

    def __init__(
        self,
        rate: float,
        burst: float = 1.0,
        *,
        clock: Clock,
        initial: float | None = None,
    ) -> None:
        if not burst >= 1:
            raise ValueError(f"burst must be >= 1 token, not {burst!r}")
        self._rate = _check_rate(rate)
        self._burst = float(burst)
        self._clock = clock
        # A bucket that starts empty adds no burst of its own to the global sum (new workers).
        self._tokens = self._burst if initial is None else min(float(initial), self._burst)
        self._last = clock()

    @property
    def rate(self) -> float:
        return self._rate

    @property
    def burst(self) -> float:
        return self._burst

    @property
    def tokens(self) -> float:
        self._refill()
        return self._tokens

    def _refill(self) -> None:
        now = self._clock()
        elapsed = max(0.0, now - self._last)  # a clock that steps back earns nothing
        self._last = max(self._last, now)
        self._tokens = min(self._burst, self._tokens + elapsed * self._rate)

    def set_rate(self, rate: float) -> None:
        """Change the rate from now on; time already elapsed is credited at the old rate."""
        rate = _check_rate(rate)
        self._refill()
        self._rate = rate
        # Saved tokens never exceed one burst: a lowered rate gets no backlog from the old one.
        self._tokens = min(self._tokens, self._burst)

    def delay(self) -> float:
        """Seconds until a token is available: 0 now, ``inf`` while paused."""
        self._refill()
        if self._tokens >= 1 - _EPS:
            return 0.0
        if self._rate == 0:
            return INF
        return (1 - self._tokens) / self._rate

    def try_take(self) -> bool:
        """Take a token if one is available now."""
        if self.delay() > 0:
            return False
        self._tokens -= 1
        return True

    def take(self) -> None:
        """Take a token at send time, going into debt if none is there (the caller sent)."""
        self._refill()
        self._tokens -= 1


class SlidingWindow:
    """At most ``max_count`` events in any ``window_s`` seconds (inclusive), plus a margin."""

    def __init__(self, max_count: int, window_s: float, *, margin_s: float = 0.0) -> None:
        if max_count < 1 or window_s <= 0 or margin_s < 0:
            raise ValueError("need max_count >= 1, window_s > 0, margin_s >= 0")
        self.max_count = max_count
        self.window_s = window_s
        self.margin_s = margin_s
        self._sent: deque[float] = deque(maxlen=max_count)

    def delay(self, now: float) -> float:
        """Seconds until one more event keeps every window within the limit."""
        if len(self._sent) < self.max_count:
            return 0.0
        # The max_count-th most recent send must be more than window_s (+ margin) old.
        return max(0.0, self._sent[0] + self.window_s + self.margin_s - now)

    def record(self, now: float) -> None:
        self._sent.append(now)


class ContractRules:
    """IB's per-contract pacing rules for one worker (a worker owns one contract).

    No identical request within ``identical_s``; at most ``max_per_window`` requests in any
    ``window_s``; with ``strict``, at most ``strict_max`` in any ``strict_window_s``. The
    gateway times requests on arrival, so every limit gets ``margin_s`` of slack.
    """

    def __init__(
        self,
        *,
        clock: Clock,
        identical_s: float = _IB.identical_s,
        max_per_window: int = _IB.contract_max,
        window_s: float = _IB.contract_window_s,
        strict: bool = False,
        strict_max: int = _IB.session_max,
        strict_window_s: float = _IB.session_window_s,
        margin_s: float = _RUN.pacing_margin_s,
    ) -> None:
        self._clock = clock
        self.identical_s = identical_s
        self.margin_s = margin_s
        self._last_sent: dict[Hashable, float] = {}
        self._contract = SlidingWindow(max_per_window, window_s, margin_s=margin_s)
        self._strict = (
            SlidingWindow(strict_max, strict_window_s, margin_s=margin_s) if strict else None
        )

    def wait(self, request_key: Hashable) -> tuple[float, Rule]:
        """Seconds until sending ``request_key`` breaks no rule, and the rule that binds."""
        now = self._clock()
        waits = [(0.0, Rule.NONE), (self._contract.delay(now), Rule.CONTRACT)]
        if self._strict is not None:
            waits.append((self._strict.delay(now), Rule.STRICT))
        waits.append((self.identical_wait(request_key), Rule.IDENTICAL))
        return max(waits, key=lambda w: w[0])

    def delay(self, request_key: Hashable) -> float:
        """Seconds until sending ``request_key`` breaks no rule."""
        return self.wait(request_key)[0]

    def identical_wait(self, request_key: Hashable) -> float:
        """Seconds until ``request_key`` is no longer a repeat within ``identical_s``."""
        last = self._last_sent.get(request_key)
        if last is None:
            return 0.0
        return max(0.0, last + self.identical_s + self.margin_s - self._clock())

    def record(self, request_key: Hashable) -> None:
        """Note a request sent now."""
        now = self._clock()
        self._contract.record(now)
        if self._strict is not None:
            self._strict.record(now)
        self._last_sent[request_key] = now
        # Forget keys that can no longer bind, so a years-long run stays small.
        horizon = now - self.identical_s - self.margin_s
        if len(self._last_sent) > 64:
            self._last_sent = {k: t for k, t in self._last_sent.items() if t > horizon}

    def recent(self) -> list[tuple[Hashable, float]]:
        """(key, seconds ago) of the sends that still bind a successor, oldest first.

        A worker that ends hands these on (see ``restore``), so a restarted worker or the
        next run does not repeat a request IB still remembers.
        """
        now = self._clock()
        horizon = max(self.identical_s, self._contract.window_s) + self.margin_s
        sent = sorted((t, k) for k, t in self._last_sent.items() if now - t < horizon)
        return [(key, now - t) for t, key in sent]

    def restore(self, recent: Sequence[tuple[Hashable, float]]) -> None:
        """Take on a predecessor's ``recent`` sends (before this one sends anything)."""
        now = self._clock()
        for key, ago in sorted(recent, key=lambda entry: -entry[1]):
            self._last_sent[key] = now - ago
            self._contract.record(now - ago)

    def forget(self, request_key: Hashable) -> None:
        """The gateway refused this request for pacing: it does not count as asked, so its
        retry need not wait out the identical-request interval."""
        self._last_sent.pop(request_key, None)


def worker_rules(settings: RunSettings, *, clock: Clock, strict: bool) -> ContractRules:
    """The rules one worker keeps, from the run's settings (``strict``: the session rule
    too, when no orchestrator grants sends across workers)."""
    ib = settings.ib
    return ContractRules(
        clock=clock,
        identical_s=ib.identical_s,
        max_per_window=ib.contract_max,
        window_s=ib.contract_window_s,
        strict=strict,
        strict_max=ib.session_max,
        strict_window_s=ib.session_window_s,
        margin_s=settings.pacing_margin_s,
    )


class Backoff:
    """Exponential backoff with jitter after pacing violations, reset after a quiet period.

    The n-th consecutive pause lies in ``[b*(1-jitter), b]`` with ``b = min(max_s,
    base_s*factor**(n-1))``; with ``jitter <= 0.5`` and ``factor >= 2`` pauses never shrink
    before reaching ``max_s``. After ``quiet_s`` with no violation past the last pause, n resets.
    """

    def __init__(
        self,
        *,
        clock: Clock,
        rng: random.Random,
        base_s: float = 1.0,
        max_s: float = 60.0,
        factor: float = 2.0,
        jitter: float = 0.5,
        quiet_s: float = 300.0,
    ) -> None:
        if not (0 < base_s <= max_s and factor >= 1 and 0 <= jitter < 1 and quiet_s >= 0):
            raise ValueError("need 0 < base_s <= max_s, factor >= 1, 0 <= jitter < 1")
        self._clock = clock
        self._rng = rng
        self.base_s, self.max_s, self.factor = base_s, max_s, factor
        self.jitter, self.quiet_s = jitter, quiet_s
        self.attempt = 0
        self._until = -INF

    def ceiling(self, attempt: int) -> float:
        """The largest pause of the ``attempt``-th consecutive violation (1-based)."""
        # Compare exponents rather than compute factor**n, which overflows for long streaks.
        if self.factor == 1 or (attempt - 1) * math.log(self.factor) >= math.log(
            self.max_s / self.base_s
        ):
            return self.max_s if self.factor > 1 else self.base_s
        return min(self.max_s, self.base_s * self.factor ** (attempt - 1))

    def violation(self) -> float:
        """Record a violation now; return the pause (seconds) it calls for."""
        now = self._clock()
        if now - self._until > self.quiet_s:
            self.attempt = 0
        self.attempt += 1
        ceiling = self.ceiling(self.attempt)
        pause = ceiling * (1 - self.jitter * self._rng.random())
        self.pause(pause)
        return pause

    def pause(self, seconds: float) -> None:
        """Pause at least ``seconds`` from now (a violation seen by another worker)."""
        self._until = max(self._until, self._clock() + seconds)

    def remaining(self) -> float:
        return max(0.0, self._until - self._clock())


class Pacer:
    """One worker's pacing: its share of the global rate, IB's contract rules and backoff.

    The worker loops: ``wait, rule = pacer.delay(key)``; sleep ``wait`` if positive and
    ask again; when it is 0, send and ``record(key)``.
    """

    def __init__(
        self,
        rate: float,
        *,
        clock: Clock,
        rng: random.Random,
        burst: float = 1.0,
        initial_tokens: float | None = None,
        rules: ContractRules | None = None,
        backoff: Backoff | None = None,
    ) -> None:
        self._clock = clock
        self.bucket = TokenBucket(rate, burst, clock=clock, initial=initial_tokens)
        self.rules = rules if rules is not None else ContractRules(clock=clock)
        self.backoff = backoff if backoff is not None else Backoff(clock=clock, rng=rng)

    @property
    def rate(self) -> float:
        return self.bucket.rate

    def delay(self, request_key: Hashable) -> tuple[float, Rule]:
        """Seconds until ``request_key`` may be sent, and the rule that binds."""
        waits = [
            (0.0, Rule.NONE),
            (self.backoff.remaining(), Rule.BACKOFF),
            (self.bucket.delay(), Rule.RATE),
            self.rules.wait(request_key),
        ]
        return max(waits, key=lambda w: w[0])

    def record(self, request_key: Hashable) -> None:
        """Note ``request_key`` sent now."""
        self.bucket.take()
        self.rules.record(request_key)

    def set_rate(self, rate: float) -> None:
        self.bucket.set_rate(rate)

    def violation(self, request_key: Hashable | None = None) -> float:
        """A 162 pacing answer (to ``request_key``): back off; the pause.

        Every later ``delay`` includes the pause; the refused request is not counted as asked.
        """
        if request_key is not None:
            self.rules.forget(request_key)
        return self.backoff.violation()

    def pause(self, seconds: float) -> None:
        """Pause-all: another worker's violation stops this one too."""
        self.backoff.pause(seconds)


# --- global budget -------------------------------------------------------------------


def split_rate(global_rate: float, n_workers: int) -> float:
    """Each worker's equal share of the global rate (0 with no worker)."""
    _check_rate(global_rate)
    if n_workers < 0:
        raise ValueError(f"n_workers must be >= 0, not {n_workers}")
    return global_rate / n_workers if n_workers else 0.0


class SessionGrants:
    """IB's "at most ``max_count`` requests in any ``window_s``" across a whole session.

    Strict mode only; the orchestrator owns it. Workers send only with a grant, and each
    slot holds at most one unused grant. A grant counts from when it is issued; once its
    worker is seen to have used it (``used``), it counts from then instead: the send happened
    at or before that moment, so this window never forgets a send before IB does. A grant
    left unused by a worker that died counts as used when the death is seen (``release``).
    """

    def __init__(
        self,
        max_count: int,
        window_s: float,
        *,
        clock: Clock,
        margin_s: float = _RUN.pacing_margin_s,
    ) -> None:
        if max_count < 1 or window_s <= 0 or margin_s < 0:
            raise ValueError("need max_count >= 1, window_s > 0, margin_s >= 0")
        self.max_count, self.window_s, self.margin_s = max_count, window_s, margin_s
        self._clock = clock
        self._used: deque[float] = deque()  # when each used grant was seen used, ascending
        self._open: dict[Hashable, float] = {}  # slot -> when its unused grant was issued

    def _trim(self, now: float) -> None:
        while self._used and self._used[0] + self.window_s + self.margin_s <= now:
            self._used.popleft()

    def in_window(self) -> int:
        """Grants that still count: used ones inside the window, and every unused one."""
        self._trim(self._clock())
        return len(self._used) + len(self._open)

    def delay(self) -> float:
        """Seconds until one more grant fits (inf while only unused grants block it)."""
        now = self._clock()
        self._trim(now)
        excess = len(self._used) + len(self._open) - self.max_count + 1
        if excess <= 0:
            return 0.0
        if excess > len(self._used):
            return INF
        return max(0.0, self._used[excess - 1] + self.window_s + self.margin_s - now)

    def note_sent(self, at: float) -> None:
        """A send made outside the grants (before the workers: the run's probe of the
        gateway) at ``at`` on this clock: IB counts it too."""
        self._used.append(at)
        self._used = deque(sorted(self._used))

    def holds(self, slot: Hashable) -> bool:
        """Whether ``slot`` has an unused grant."""
        return slot in self._open

    def grant(self, slot: Hashable) -> bool:
        """Give ``slot`` one send if it holds none and the window has room; whether it did."""
        if slot in self._open or self.delay() > 0:
            return False
        self._open[slot] = self._clock()
        return True

    def used(self, slot: Hashable) -> None:
        """``slot``'s worker has sent with its grant (seen now)."""
        if self._open.pop(slot, None) is not None:
            self._used.append(self._clock())

    def release(self, slot: Hashable) -> None:
        """``slot``'s worker is gone: its unused grant may have been sent; count it now."""
        self.used(slot)


def staggered_start(slot: int, n_workers: int, global_rate: float) -> float:
    """The tokens worker ``slot`` starts with, so first sends together keep the global rate.

    Up to one second's worth of the budget (at least one request) goes out at once; the
    other workers' first sends follow at the global rate, one every ``1/global_rate`` s,
    and each worker's own sends then interleave with the others' instead of bunching.
    """
    if n_workers < 1 or slot < 0:
        raise ValueError("need n_workers >= 1 and slot >= 0")
    waiting = max(0.0, slot + 1 - max(1.0, global_rate))
    return max(0.0, 1.0 - waiting / n_workers)


def rebalance(
    old: Mapping[Slot, float], active: Set[Slot], global_rate: float
) -> list[tuple[Slot, float]]:
    """The rate changes to apply, in order, to share ``global_rate`` among ``active`` slots.

    Decreases (finished slots go to 0) come before increases, so applying them one by one,
    the sum of shares never exceeds ``max(sum(old), global_rate)``. Across processes the
    orchestrator must see each decrease applied before it sends any increase.
    """
    share = split_rate(global_rate, len(active))
    target = {slot: share for slot in active}
    target.update({slot: 0.0 for slot in old if slot not in active})
    # A new slot always gets an entry, even 0 (paused), so its worker knows its rate.
    changes = [(slot, rate) for slot, rate in target.items() if old.get(slot) != rate]
    # Biggest cuts first, then smallest raises: a stable, readable order for the dashboard.
    changes.sort(key=lambda c: c[1] - old.get(c[0], 0.0))
    return changes


class Budget:
    """The global rate split among active worker slots, rebalanced as they come and go.

    Each method returns the ordered ``(slot, rate)`` changes to apply (see ``rebalance``);
    a new slot's own entry comes last, so its worker can start once the others are lowered.
    """

    def __init__(self, global_rate: float) -> None:
        self._global = _check_rate(global_rate)
        self._shares: dict[Hashable, float] = {}

    @property
    def global_rate(self) -> float:
        return self._global

    @property
    def shares(self) -> dict[Hashable, float]:
        return dict(self._shares)

    def _apply(self, active: set[Hashable]) -> list[tuple[Hashable, float]]:
        changes = rebalance(self._shares, active, self._global)
        for slot, rate in changes:
            self._shares[slot] = rate
        self._shares = {slot: rate for slot, rate in self._shares.items() if slot in active}
        return changes

    def start(self, slot: Hashable) -> list[tuple[Hashable, float]]:
        """A worker starts on ``slot``."""
        if slot in self._shares:
            raise ValueError(f"slot {slot!r} is already active")
        return self._apply({*self._shares, slot})

    def finish(self, slot: Hashable) -> list[tuple[Hashable, float]]:
        """The worker on ``slot`` ended (finished, failed or crashed)."""
        return self._apply({s for s in self._shares if s != slot})

    def set_global(self, global_rate: float) -> list[tuple[Hashable, float]]:
        """The global rate changed (a violation, or the climb back)."""
        self._global = _check_rate(global_rate)
        return self._apply(set(self._shares))
