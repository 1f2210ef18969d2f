"""IB's historical-data pacing rules as pure checks over an injected clock.

Scope mirrors IB: the rules count per gateway session, i.e. across every client connection
(see docs/design.md "Pacing model"). Refused requests are not counted, so a client that
backs off after a 162 is not punished twice.
"""

from __future__ import annotations

from collections import defaultdict, deque
from dataclasses import dataclass
from enum import Enum

PACING_TEXT = (
    "Historical Market Data Service error message:Historical data request pacing violation"
)


@dataclass(frozen=True)
class PacingConfig:
    """Every limit of IB's pacing, scalable so tests can run in a fraction of real time."""

    enabled: bool = True
    identical_window_s: float = 15.0
    contract_window_s: float = 2.0
    contract_max: int = 5  # IB: "six or more ... within two seconds" is a violation
    session_window_s: float = 600.0
    session_max: int = 60
    strict: bool = False  # apply session_max to every bar size, not only <= small_bar_s
    small_bar_s: int = 30
    soft_rate: float | None = 1.0  # req/s sustained above which answers are delayed
    soft_burst: int = 10
    max_rate: float | None = 5.0  # req/s over rate_window_s above which: 162
    rate_window_s: float = 10.0
    max_open: int = 50
    max_msg_rate: int = 50  # messages per second per connection, else error 100

    def __post_init__(self) -> None:
        if self.contract_max < 1 or self.session_max < 1 or self.max_open < 1:
            raise ValueError("pacing limits must be >= 1")
        if self.soft_rate is not None and self.soft_rate <= 0:
            raise ValueError("soft_rate must be > 0")
        if self.max_rate is not None and self.max_rate <= 0:
            raise ValueError("max_rate must be > 0")


NO_PACING = PacingConfig(enabled=False)


class Rule(str, Enum):
    """Which rule refused a request."""

    IDENTICAL = "identical"
    CONTRACT = "contract"
    SESSION = "session"
    MAX_RATE = "max_rate"


@dataclass(frozen=True)
class Verdict:
    """Outcome of a pacing check: refused by ``rule``, or allowed after ``delay_s``."""

    rule: Rule | None = None
    delay_s: float = 0.0

    @property
    def allowed(self) -> bool:
        return self.rule is None


@dataclass(frozen=True)
class RequestKey:
    """What IB compares: the contract/tick type, and the whole request for identity."""

    contract: str
    identity: str
    bar_seconds: int


class PacingRules:
    """Stateful rule book for one gateway session; call ``check`` once per request."""

    def __init__(self, config: PacingConfig) -> None:
        self.config = config
        self._identical: dict[str, float] = {}
        self._per_contract: defaultdict[str, deque[float]] = defaultdict(deque)
        self._session: deque[float] = deque()
        self._recent: deque[float] = deque()
        self._soft_tokens = float(config.soft_burst)
        self._soft_at = 0.0
        self._soft_free_at = 0.0

    def check(self, now: float, key: RequestKey) -> Verdict:
        """Apply every rule at time ``now``; an allowed request is recorded."""
        cfg = self.config
        if not cfg.enabled:
            return Verdict()
        last = self._identical.get(key.identity)
        if last is not None and now - last < cfg.identical_window_s:
            return Verdict(Rule.IDENTICAL)
        times = _trim(self._per_contract[key.contract], now - cfg.contract_window_s)
        if len(times) >= cfg.contract_max:
            return Verdict(Rule.CONTRACT)
        session = _trim(self._session, now - cfg.session_window_s)
        small = key.bar_seconds <= cfg.small_bar_s
        if (cfg.strict or small) and len(session) >= cfg.session_max:
            return Verdict(Rule.SESSION)
        recent = _trim(self._recent, now - cfg.rate_window_s)
        if (
            not small
            and cfg.max_rate is not None
            and len(recent) + 1 > cfg.max_rate * cfg.rate_window_s
        ):
            return Verdict(Rule.MAX_RATE)
        delay = 0.0 if small else self._soft_delay(now)
        self._identical[key.identity] = now
        times.append(now)
        session.append(now)
        recent.append(now)
        if len(self._identical) > 10_000:
            self._identical = {
                k: t for k, t in self._identical.items() if now - t < cfg.identical_window_s
            }
        return Verdict(None, delay)

    def release_soft_slot(self, now: float) -> None:
        """A request waiting on the soft throttle went away (cancelled, or its client lost)."""
        if self.config.soft_rate is not None and self._soft_free_at > now:
            self._soft_free_at = max(now, self._soft_free_at - 1.0 / self.config.soft_rate)

    def _soft_delay(self, now: float) -> float:
        # A token bucket: a burst passes untouched, a sustained excess queues behind it.
        rate = self.config.soft_rate
        if rate is None:
            return 0.0
        self._soft_tokens = min(
            float(self.config.soft_burst), self._soft_tokens + (now - self._soft_at) * rate
        )
        self._soft_at = now
        if self._soft_tokens >= 1.0 and self._soft_free_at <= now:
            self._soft_tokens -= 1.0
            return 0.0
        start = max(now, self._soft_free_at)
        self._soft_free_at = start + 1.0 / rate
        self._soft_tokens = 0.0
        return self._soft_free_at - now


def _trim(times: deque[float], horizon: float) -> deque[float]:
    while times and times[0] <= horizon:
        times.popleft()
    return times
