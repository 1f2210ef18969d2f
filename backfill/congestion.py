"""Congestion control of the session-wide request rate, read from IB's answers.

For 1-minute bars IB throttles softly: past its (undocumented) capacity answers slow down,
then time out, then the session is dropped; a 162 is rare. So the global rate is steered
like a TCP sender's: every congestion signal (a 162, a timeout while connected, latency
well above the measured base) steps it down multiplicatively, and it climbs back
additively. With ``auto`` it starts at 0.7 req/s and probes upward while latency does not
inflate (in the spirit of TCP Vegas and BBR), never above ``max_rate``.

Pure: no I/O and no sleeps; every class takes ``clock`` (seconds, one time base for the
clock and for the ``sent_at`` of the samples fed in).
"""

from __future__ import annotations

import itertools
import math
import statistics
from collections import deque
from collections.abc import Callable, Hashable, Mapping
from dataclasses import dataclass
from enum import Enum
from typing import TypeVar

Clock = Callable[[], float]
Slot = TypeVar("Slot", bound=Hashable)

DEFAULT_RATE = 0.7  # requests/s across all workers: the figure IB users know as safe for M1
IB_MAX_IN_FLIGHT = 50  # IB: at most 50 historical requests open at once (a ceiling)


class Signal(str, Enum):
    """What a request's end says about the gateway."""

    ANSWERED = "answered"  # bars or "no data": a latency sample
    TIMEOUT = "timeout"  # no answer in time while the connection stayed up
    PACING = "pacing"  # a 162 pacing violation
    DROPPED = "dropped"  # the gateway dropped the connection with the request out


@dataclass(frozen=True)
class CongestionConfig:
    """Every knob of the controller; the defaults are the run's."""

    rate: float = DEFAULT_RATE  # fixed: the rate; auto: where the probing starts
    auto: bool = False
    max_rate: float = 10.0  # auto: never above; fixed: ``rate`` is the ceiling
    floor: float = 0.05
    # Multiplicative decrease: CUBIC's 0.7 for latency and timeouts; a 162 is IB saying
    # no outright, so Reno's halving, as the run always did.
    decrease: float = 0.7
    pacing_decrease: float = 0.5
    # A latency step-down goes at most to ``drain`` × what IB served meanwhile, so the queue
    # drains; once it has (the first answer to a request sent after the step-down comes
    # back unqueued), the rate goes back to ``cruise`` × that (BBR's drain, cruise). What
    # IB served is read off the spacing of the queued answers: a standing queue hands them
    # out one per 1/capacity, where a count over the last seconds also counts the burst a
    # token bucket let through before the queue formed.
    drain: float = 0.5
    cruise: float = 0.98
    hold_s: float = 10.0  # after a decrease, no increase for this long
    # Fixed: back to ``rate`` in ``climb_steps`` equal steps, one every ``climb_every_s``.
    climb_steps: int = 4
    climb_every_s: float = 10.0
    # Auto: one probe step at most every ``probe_every_s``, and only after ``min_samples``
    # answers to requests sent at the current rate (a run that does not use its rate,
    # e.g. waiting on IB's per-contract rules, learns nothing by raising it).
    probe_every_s: float = 2.0
    # Until the first sign of a queue: ×``startup_gain`` every ``startup_every_s`` while the
    # last answers (``min_samples`` of any pace, ``startup_samples`` will do for the first
    # round; one at least to the current rate) show no queue. Below a soft throttle's
    # capacity latency says nothing (a token bucket hides even an overshoot for a while),
    # so start-up goes by the clock: at 0.7 req/s, rounds of 5 answers to the current rate
    # spent 20 s under a 3 req/s capacity.
    startup_gain: float = 2.0
    startup_every_s: float = 1.0
    startup_samples: int = 3
    probe_step: float = 0.05  # after it: additive, this share of the rate after the last cut
    min_samples: int = 5
    # A retry never goes out faster than the pace that timed out: until the timed-out
    # request is answered (or this long has passed: its day may have been given up on),
    # the rate stays at or below that pace.
    retry_hold_s: float = 600.0
    # "Well above the base latency": the p50 of the answers of the last ``recent_s``
    # (sent since the last decrease) exceeds max(latency_factor × base, base + slack_s),
    # base being the smallest such p50 of the last ``base_window_s`` (TCP Vegas's BaseRTT,
    # BBR's min_rtt, taken of the p50 so that like is compared with like: on a gateway
    # answering in 50-400 ms the fastest answer is 50 ms, its p50 225 ms, and a line from
    # the minimum read a busy machine's few ms more as congestion). The slack keeps jitter
    # on a fast gateway (50-150 ms) from reading as congestion. A queue forming shows in
    # the fastest fresh answer first (see ``zone``).
    latency_factor: float = 2.0
    latency_slack_s: float = 0.25
    recent_s: float = 10.0
    base_window_s: float = 300.0
    # In flight across all workers: Little's law (rate × the latency of an unqueued IB: the
    # lowest recent p95) with ``in_flight_gain`` headroom, so that it never binds while IB
    # keeps up, and a queue building at IB does not raise it; at least ``min_in_flight``
    # and ``in_flight_per_worker`` per worker, never more than ``max_in_flight`` (IB's 50
    # is a ceiling, not a target).
    max_in_flight: int = IB_MAX_IN_FLIGHT
    min_in_flight: int = 4
    in_flight_per_worker: int = 1
    in_flight_gain: float = 2.0
    # The gateway's base latency measured beforehand (``backfill probe``, 1 in flight): the
    # first base estimate, so the first answers are judged against a quiet gateway's (a
    # queue already standing at the start reads as one) and the in-flight cap is sized from
    # the start. Like any sample it leaves the window after ``base_window_s``.
    base_hint_s: float | None = None

    def __post_init__(self) -> None:
        checks = [
            (math.isfinite(self.rate) and self.rate > 0, "rate must be > 0"),
            (self.max_rate > 0, "max_rate must be > 0"),
            (self.floor > 0, "floor must be > 0"),
            (
                all(
                    0 < f < 1
                    for f in (self.decrease, self.pacing_decrease, self.drain, self.cruise)
                ),
                "decreases in (0, 1)",
            ),
            (
                self.climb_steps >= 1 and self.min_samples >= 1 and self.startup_samples >= 1,
                "steps and samples >= 1",
            ),
            (self.startup_gain > 1 and self.probe_step > 0, "probing must raise the rate"),
            (self.latency_factor > 1 and self.latency_slack_s >= 0, "latency line above base"),
            (1 <= self.min_in_flight <= self.max_in_flight, "1 <= min_in_flight <= max"),
            (
                self.in_flight_per_worker >= 1 and self.in_flight_gain > 0,
                "in_flight_per_worker >= 1, in_flight_gain > 0",
            ),
            (
                self.base_hint_s is None
                or (math.isfinite(self.base_hint_s) and self.base_hint_s > 0),
                "base_hint_s > 0",
            ),
        ]
        for ok, why in checks:
            if not ok:
                raise ValueError(why)

    @property
    def ceiling(self) -> float:
        return self.max_rate if self.auto else self.rate

    @property
    def start(self) -> float:
        return min(self.rate, self.ceiling)


@dataclass(frozen=True)
class RateChange:
    """The global rate moved: the new rate and why (a ``budget`` event's fields)."""

    rate: float
    reason: str


# --- rolling statistics ---------------------------------------------------------------


class RollingLatency:
    """Latency samples of the last ``window_s`` seconds, for p50/p95 (the footer's)."""

    def __init__(self, window_s: float = 60.0, *, clock: Clock, max_samples: int = 4096):
        if window_s <= 0 or max_samples < 1:
            raise ValueError("need window_s > 0 and max_samples >= 1")
        self.window_s = window_s
        self._clock = clock
        # Bounded whatever the rate: past max_samples the oldest go first, still a fair
        # picture of the last minute.
        self._samples: deque[tuple[float, float]] = deque(maxlen=max_samples)

    def add(self, latency_s: float, at: float | None = None) -> None:
        """One answer's latency, answered ``at`` (default: now; events carry their time)."""
        self._samples.append((self._clock() if at is None else at, latency_s))

    def values(self) -> list[float]:
        horizon = self._clock() - self.window_s
        while self._samples and self._samples[0][0] <= horizon:
            self._samples.popleft()
        return [latency for _, latency in self._samples]

    def quantile(self, q: float) -> float | None:
        """The ``q`` quantile (0 < q < 1) of the window's samples; None without any."""
        return quantile(self.values(), q)

    def p50(self) -> float | None:
        return self.quantile(0.5)

    def p95(self) -> float | None:
        return self.quantile(0.95)


def quantile(values: list[float], q: float) -> float | None:
    """Linear-interpolated quantile (numpy's default); None for no values."""
    if not 0 < q < 1:
        raise ValueError(f"q must be in (0, 1), not {q}")
    if not values:
        return None
    if len(values) == 1:
        return values[0]
    cuts = statistics.quantiles(values, n=1000, method="inclusive")
    return cuts[round(q * 1000) - 1]


class WindowedMin:
    """The smallest value added in the last ``window_s`` seconds (a monotonic deque)."""

    def __init__(self, window_s: float, *, clock: Clock) -> None:
        self.window_s = window_s
        self._clock = clock
        self._queue: deque[tuple[float, float]] = deque()  # values ascend, times ascend

    def add(self, value: float) -> None:
        now = self._clock()
        while self._queue and self._queue[-1][1] >= value:
            self._queue.pop()
        self._queue.append((now, value))

    def get(self) -> float | None:
        horizon = self._clock() - self.window_s
        while self._queue and self._queue[0][0] <= horizon:
            self._queue.popleft()
        return self._queue[0][1] if self._queue else None


# --- the controller -------------------------------------------------------------------


class Zone(str, Enum):
    """What the answers to requests sent at the current rate say about IB's queue."""

    FLAT = "flat"  # no queue: room to probe
    QUEUE = "queue"  # a queue is forming (TCP Vegas: more than beta queued): ease off
    CONGESTED = "congested"  # latency well above the base: step down multiplicatively


class RateController:
    """The session-wide request rate, steered by what the gateway's answers say.

    Feed every request's end to ``observe``; call ``tick`` every loop. Both return a
    ``RateChange`` when the rate moved, else None. One burst of bad news is one decrease:
    a signal from a request sent before the last decrease reports the old pace, not this
    one (TCP's one decrease per round trip). See the module docstring.
    """

    def __init__(self, config: CongestionConfig, *, clock: Clock) -> None:
        self.config = config
        self._clock = clock
        self._rate = max(config.floor, config.start)
        self.reason = "auto: probing from the start rate" if config.auto else "start"
        self._decreased_at = -math.inf
        self._changed_at = clock()
        self._low = self._rate  # the rate right after the last decrease
        self._startup = config.auto  # multiplicative probing until the first sign of a queue
        self._flat_rounds = 0  # probe rounds in a row that found latency flat
        self._served: float | None = None  # what IB served when latency last cut the rate
        self._drained = False  # since that cut, an answer came back unqueued
        self._peak = self._rate  # the rate before the first latency cut of this drain
        self._known = math.inf  # what IB served at the last latency cut: probe gently past it
        self._drain_until = -math.inf  # no second latency cut while the backlog drains
        self._base = WindowedMin(config.base_window_s, clock=clock)  # fastest answer
        self._base_p50 = WindowedMin(config.base_window_s, clock=clock)  # lowest fresh p50
        self._base_p95 = WindowedMin(config.base_window_s, clock=clock)  # lowest fresh p95
        if config.base_hint_s is not None:
            # A quiet gateway's latency (one request at a time): the first estimate of both
            # the fastest answer and the typical one.
            self._base.add(config.base_hint_s)
            self._base_p50.add(config.base_hint_s)
        # (sent_at, answered_at, latency) of the answers of the last ``recent_s``.
        self._recent: deque[tuple[float, float, float]] = deque()
        self._first_answer: float | None = None
        # key of a timed-out request -> (the pace it timed out at, when)
        self._timed_out: dict[Hashable, tuple[float, float]] = {}
        self.signals = 0  # congestion signals seen, decreasing or not

    @property
    def rate(self) -> float:
        return self._rate

    def base_latency(self) -> float | None:
        """The typical latency of an unqueued gateway: the lowest recent p50 (or, before
        ``min_samples`` answers, the fastest answer)."""
        typical = self._base_p50.get()
        return self._base.get() if typical is None else typical

    def latency_line(self) -> float | None:
        """Above this p50 latency the gateway is congested (None until measured)."""
        base = self.base_latency()
        if base is None:
            return None
        cfg = self.config
        return max(cfg.latency_factor * base, base + cfg.latency_slack_s)

    def _fresh(self) -> list[float]:
        """Latencies of the recent answers to requests sent at the current rate."""
        # Long enough to hold ``min_samples`` answers at a slow rate, or it never learns.
        cfg = self.config
        horizon = self._clock() - max(cfg.recent_s, 2 * cfg.min_samples / self._rate)
        while self._recent and self._recent[0][1] <= horizon:
            self._recent.popleft()
        return [lat for sent, _, lat in self._recent if sent >= self._changed_at]

    def delivered(self) -> float | None:
        """Answers per second over the last ``recent_s`` (None before ``min_samples``).

        While a queue stands at IB this is what IB serves: BBR's bottleneck bandwidth.
        """
        now = self._clock()
        if self._first_answer is None:
            return None
        span = min(self.config.recent_s, now - self._first_answer)
        answered = sum(1 for _, at, _ in self._recent if at > now - span)
        if answered < self.config.min_samples or span <= 0:
            return None
        return answered / span

    def zone(self) -> Zone | None:
        """What the fresh answers say; None before ``min_samples`` of them.

        Congested: their p50 is above ``latency_line``. A queue: even the fastest of them
        is a quarter of the way from the base to the line. Queueing delays every answer,
        so it shows in the minimum (as BBR reads it), where jitter mostly does not.
        """
        return self._zone_of(self._fresh(), self.config.min_samples)

    def _zone_of(self, latencies: list[float], enough: int) -> Zone | None:
        line, queued = self.latency_line(), self._queued_above()
        if line is None or queued is None or len(latencies) < enough:
            return None
        if statistics.median(latencies) > line:
            return Zone.CONGESTED
        if min(latencies) > queued:
            return Zone.QUEUE
        return Zone.FLAT

    def _queued_above(self) -> float | None:
        """An answer slower than this waited in a queue at IB: a quarter of the way from the
        fastest answer to the line (None until measured)."""
        fastest, line, base = self._base.get(), self.latency_line(), self.base_latency()
        if fastest is None or line is None or base is None:
            return None
        return fastest + (line - base) / 4

    def served(self) -> float | None:
        """What IB serves while a queue stands at it: the spacing of the longest recent run of
        answers (in the order answered, at ``sent_at + latency``) each above the latency line,
        at most ``delivered``. None before ``min_samples`` answers.

        A FIFO queue hands answers out one per 1/capacity whatever we send; a count over the
        last seconds also counts the burst a token bucket let through before it. Above the
        line, not merely slower than the fastest: jitter must not join two runs. At most
        ``delivered``: on a busy machine a few slow answers can arrive bunched.
        """
        delivered, line = self.delivered(), self.latency_line()
        if delivered is not None and line is not None:
            run: list[float] = []
            best: list[float] = []
            for at, lat in sorted((sent + lat, lat) for sent, _, lat in self._recent):
                run = [*run, at] if lat > line else []
                best = run if len(run) > len(best) else best
            if len(best) >= self.config.min_samples and best[-1] > best[0]:
                return min(delivered, (len(best) - 1) / (best[-1] - best[0]))
        return delivered

    def in_flight_cap(self, workers: int = 1) -> int:
        """Requests in flight across all workers: rate × unqueued p95 latency, with headroom.

        Little's law says what a healthy IB holds at our rate. The fastest answer would
        starve the workers of a gateway answering in 50-400 ms (each waited for its one
        answer before the next send); the latest answers would let a queue at IB raise
        the cap that is to bound it. So: the p95 of the recent answers, its lowest of the
        last ``base_window_s``. At least ``in_flight_per_worker`` each, or a worker could
        not use its rate share; never above ``max_in_flight``.
        """
        cfg = self.config
        latency = self.healthy_latency()
        # What IB delivers, when it is less than our rate (BBR's cwnd: gain × bottleneck
        # bandwidth × round trip): a rate probing past a soft throttle's must not queue
        # more at IB. Twice what it delivers still lets the rate be reached.
        served = self.delivered()
        pace = self._rate if served is None else min(self._rate, served)
        wanted = 0 if latency is None else math.ceil(cfg.in_flight_gain * pace * latency)
        floor = max(cfg.min_in_flight, cfg.in_flight_per_worker * workers)
        return min(cfg.max_in_flight, max(floor, wanted))

    def healthy_latency(self) -> float | None:
        """The p95 latency of an unqueued IB: the lowest p95 of the recent answers lately
        (20 at least; before them, the fastest answer); None before any."""
        p95 = self._base_p95.get()
        return self._base.get() if p95 is None else p95

    # -- signals ----------------------------------------------------------------------

    def retry_ceiling(self) -> float:
        """The slowest pace a request still waiting for its retry timed out at (or inf)."""
        now = self._clock()
        self._timed_out = {
            key: (pace, at)
            for key, (pace, at) in self._timed_out.items()
            if now - at < self.config.retry_hold_s
        }
        return min((pace for pace, _ in self._timed_out.values()), default=math.inf)

    def observe(
        self,
        signal: Signal,
        sent_at: float,
        latency_s: float = 0.0,
        key: Hashable | None = None,
    ) -> RateChange | None:
        """A request sent at ``sent_at`` (clock time) ended; the change it calls for.

        ``key`` names the request (symbol and window) so its retry is recognised.
        """
        if key is not None:
            if signal is Signal.TIMEOUT:
                pace, _ = self._timed_out.get(key, (math.inf, 0.0))
                self._timed_out[key] = (min(pace, self._rate), self._clock())
            else:
                self._timed_out.pop(key, None)
        if signal is Signal.PACING:
            return self._cut(sent_at, self.config.pacing_decrease, "pacing violation (162)")
        if signal is Signal.TIMEOUT:
            return self._cut(
                sent_at, self.config.decrease, f"request timed out after {latency_s:.0f}s"
            )
        if signal is Signal.DROPPED:
            # IB's last word on overload ("eventually an API disconnect"); a restarting
            # gateway costs a step down and the climb back, no more.
            return self._cut(sent_at, self.config.decrease, "connection dropped")
        now = self._clock()
        if self._first_answer is None:
            self._first_answer = now
        self._base.add(latency_s)
        self._recent.append((sent_at, now, latency_s))
        fresh = self._fresh()
        if len(fresh) >= self.config.min_samples:
            self._base_p50.add(statistics.median(fresh))
        # Of every recent answer, whatever its pace: a slow start (auto probing every 2 s)
        # holds too few answers at one pace before the rate is past a soft throttle's.
        recent = sorted(lat for _, _, lat in self._recent)
        # Not while the last answers waited in a queue at IB: every p95 of them is the
        # queue's (a fixed rate above IB's capacity queues from its first requests).
        enough = self.config.min_samples
        last = [lat for _, _, lat in itertools.islice(reversed(self._recent), enough)]
        queue = self._zone_of(last, enough) in (Zone.QUEUE, Zone.CONGESTED)
        if len(recent) >= 20 and not queue:  # fewer: the p95 is the maximum, or a low one
            self._base_p95.add(recent[round(0.95 * (len(recent) - 1))])
        queued = self._queued_above()
        if (
            self._served is not None
            and sent_at >= self._decreased_at
            and queued is not None
            and latency_s <= queued
        ):
            # Sent after the cut and answered without waiting: IB's queue is empty, and
            # every second more at the drain rate is capacity unused.
            self._drained = True
        if self.zone() is not Zone.CONGESTED:
            return None
        p50 = statistics.median(self._fresh())
        now = self._clock()
        if now < self._drain_until:
            # The answers after a latency cut wait behind the backlog the overshoot left,
            # which drains at the rate IB serves minus ours: they say nothing new yet.
            return None
        line, base = self.latency_line(), self.base_latency()
        assert line is not None and base is not None  # zone() is CONGESTED: both measured
        # A queue stands at IB, so it serves what it can: go below that and the queue
        # drains, whatever rate the overshoot had reached (BBR's drain).
        served = self.served()
        # The rate the queue formed at: IB serves no more than that. A second cut while
        # the queue drains keeps the first one's.
        peak = self._rate if self._served is None else max(self._rate, self._peak)
        factor = self.config.decrease
        if served is not None:
            factor = min(factor, self.config.drain * served / self._rate)
        change = self._cut(
            sent_at, factor, f"latency p50 {p50:.2f}s > {line:.2f}s (base {base:.2f}s)"
        )
        if change is not None:
            self._served = None if served is None else min(served, peak)
            self._peak, self._drained = peak, False
            # A backlog of p50 - base seconds at IB's pace drains at what IB serves above
            # our new rate, and what is sent meanwhile is answered a p50 later.
            spare = 1 - change.rate / served if served else 1 - factor
            self._drain_until = now + (p50 - base) / max(spare, 0.1) + p50
        return change

    def _cut(self, sent_at: float, factor: float, why: str) -> RateChange | None:
        self.signals += 1
        if sent_at < self._decreased_at:
            return None  # sent before the last decrease: that decrease answered it already
        self._startup, self._flat_rounds, self._served = False, 0, None
        self._decreased_at = self._clock()
        self._low = max(self.config.floor, self._rate * factor)
        return self._set(self._low, f"{why}: stepped down")

    def tick(self) -> RateChange | None:
        """Climb back (fixed) or probe (auto) when it is time; the change if any."""
        cfg = self.config
        now = self._clock()
        zone = self.zone()
        if cfg.auto and self._served is not None and self._drained:
            served, self._served = self._served, None
            self._known = served
            if self._rate < cfg.cruise * served:
                self._low = min(cfg.ceiling, cfg.cruise * served)
                return self._set(
                    self._low,
                    f"auto: IB's queue drained, back to "
                    f"{cfg.cruise:.0%} of the {served:.2f} req/s it served",
                )
        if now - self._decreased_at < cfg.hold_s:
            return None
        if not cfg.auto:
            if self._rate >= cfg.ceiling or now - self._changed_at < cfg.climb_every_s:
                return None
            if zone not in (Zone.FLAT, None):
                return None
            step = (cfg.ceiling - self._low) / cfg.climb_steps
            return self._set(min(cfg.ceiling, self._rate + step), "climbing back")
        if self._startup and self._rate < cfg.ceiling:
            if now - self._changed_at < cfg.startup_every_s:
                return None
            change = self._startup_round()
            if self._startup:
                return change
        if now - self._changed_at < cfg.probe_every_s:
            return None
        if zone is None:
            return None
        # A share of the rate after the last cut (never less than of the start rate), so
        # the climb's pace is the same after a deep cut as after a small one.
        step = cfg.probe_step * max(self._low, cfg.start)
        if zone is Zone.QUEUE:
            self._startup, self._flat_rounds = False, 0
            if math.isfinite(self._known) and self._rate <= cfg.cruise * self._known:
                # Below what IB served at the last latency cut no queue stands at a soft
                # throttle: a busy machine slows every answer a little. Hold, do not climb
                # (a real fall in capacity shows as congestion, and that still cuts).
                return None
            return self._set(
                max(cfg.floor, self._rate - step), "auto: a queue is forming at IB, easing off"
            )
        if zone is not Zone.FLAT:
            self._startup, self._flat_rounds = False, 0
            return None
        if self._rate >= cfg.ceiling:
            return None
        # Small steps near the rate that was too much; each flat round in a row doubles
        # the step (BBRv2's probe-up), never beyond half the rate a round, and not at all
        # past what IB served at the last latency cut: a throttle with a burst allowance
        # shows nothing for a while, and doubling would overshoot.
        if self._rate < self._known:
            step = min(step * 2**self._flat_rounds, self._rate / 2)
        self._flat_rounds += 1
        return self._set(min(cfg.ceiling, self._rate + step), "auto: latency flat, climbing")

    def _startup_round(self) -> RateChange | None:
        """Start-up: ×``startup_gain`` while the last answers, of any pace, show no queue."""
        cfg = self.config
        if not any(sent >= self._changed_at for sent, _, _ in self._recent):
            return None  # nothing sent at this rate came back: the run is not using it
        # The last ``min_samples`` answers once there are so many: fewer would read a
        # queue into jitter now and then, and end the start-up early.
        latest = [lat for _, _, lat in list(self._recent)[-cfg.min_samples :]]
        zone = self._zone_of(latest, min(cfg.startup_samples, cfg.min_samples))
        if zone is None:
            return None
        if zone is not Zone.FLAT:
            self._startup, self._flat_rounds = False, 0
            return None  # from here the climb is additive, and a queue is eased off
        return self._set(
            min(cfg.ceiling, self._rate * cfg.startup_gain), "auto: latency flat, probing up"
        )

    def _set(self, rate: float, reason: str) -> RateChange | None:
        self._changed_at = self._clock()
        rate = max(self.config.floor, min(rate, self.retry_ceiling()))
        if rate == self._rate:
            return None
        self._rate, self.reason = rate, reason
        return RateChange(rate, reason)


# --- the in-flight cap across workers --------------------------------------------------


def split_in_flight(
    cap: int,
    in_flight: Mapping[Slot, int],
    old: Mapping[Slot, int],
    *,
    turn: int = 0,
) -> dict[Slot, int]:
    """Each active slot's allowance of requests in flight: equal shares of ``cap``.

    ``in_flight`` has one entry per active slot (what its worker has out); ``old`` is the
    allowance each worker may still be acting on. A worker sends only while its count is
    under its allowance. Cuts apply at once; raises only from what no slot holds or may
    still use (``max(in flight, old)``), so workers acting on either allowance never have
    more than ``cap`` out between them, once what was out before a cut has come back.
    Call it every loop with ``old`` = its last answer: it converges to the equal shares,
    the remainder rotating with ``turn`` so a cap below the number of slots starves none.
    """
    if cap < 0:
        raise ValueError(f"cap must be >= 0, not {cap}")
    slots = sorted(in_flight, key=repr)
    if not slots:
        return {}
    k = turn % len(slots)
    slots = slots[k:] + slots[:k]
    share, extra = divmod(cap, len(slots))
    target = {slot: share + (i < extra) for i, slot in enumerate(slots)}
    held = {slot: max(0, in_flight[slot], old.get(slot, 0)) for slot in slots}
    new = {slot: min(target[slot], old.get(slot, 0)) for slot in slots}
    room = cap - sum(held.values())
    for slot in slots:  # raises, in rotation order, from the room nobody may be using
        if room <= 0:
            break
        raise_by = min(room, target[slot] - max(new[slot], held[slot]))
        if raise_by > 0:
            new[slot] = held[slot] + raise_by
            room -= raise_by
    return new


# --- what earlier runs measured -----------------------------------------------------------


def held_rate(changes: list[tuple[float, float]], end: float) -> float | None:
    """The time-weighted mean of a rate set at ``(time, rate)`` moments, up to ``end``.

    What an earlier ``auto`` run held, from its ``budget`` events: the figure ``plan
    --rate auto`` estimates with. None when no time passed.
    """
    points = sorted(changes)
    if not points or end <= points[0][0]:
        return None
    total = 0.0
    for (t, rate), (t_next, _) in zip(points, [*points[1:], (end, 0.0)], strict=True):
        total += rate * max(0.0, min(t_next, end) - min(t, end))
    return total / (end - points[0][0])
