"""Injected faults: a config and seeded, reproducible per-request decisions."""

from __future__ import annotations

import random
from dataclasses import dataclass

from backfill.sim.market import _seed_int

# IB's answer when its HMDS backend gives up on a query: a transient failure worth a retry.
TRANSIENT_ERROR_CODE = 162
TRANSIENT_ERROR_TEXT = (
    "Historical Market Data Service error message:API historical data query cancelled: {req_id}"
)


@dataclass(frozen=True)
class FaultConfig:
    """Faults applied to data requests (historical data and head timestamp).

    ``latency_ms`` is a (min, max) uniform range; ``drop_after=N`` serves N data requests on
    a connection and closes it when the next one arrives (that one is never answered).
    """

    latency_ms: tuple[float, float] = (0.0, 0.0)
    hang_share: float = 0.0
    error_share: float = 0.0
    error_code: int = TRANSIENT_ERROR_CODE
    error_text: str = TRANSIENT_ERROR_TEXT
    drop_after: int | None = None
    drop_share: float = 0.0
    seed: int = 0

    def __post_init__(self) -> None:
        low, high = self.latency_ms
        if not 0 <= low <= high:
            raise ValueError(f"latency_ms must be 0 <= min <= max, got {self.latency_ms}")
        for name in ("hang_share", "error_share", "drop_share"):
            if not 0.0 <= getattr(self, name) <= 1.0:
                raise ValueError(f"{name} must be within [0, 1]")
        if self.drop_after is not None and self.drop_after < 0:
            raise ValueError("drop_after must be >= 0")

    @property
    def active(self) -> bool:
        return (
            self.latency_ms != (0.0, 0.0)
            or self.hang_share > 0
            or self.error_share > 0
            or self.drop_share > 0
            or self.drop_after is not None
        )


@dataclass(frozen=True)
class FaultDecision:
    """What happens to one request: dropped wins over hung, hung over error."""

    latency_s: float = 0.0
    drop: bool = False
    hang: bool = False
    error: bool = False


NO_FAULT = FaultDecision()


def decide(config: FaultConfig, client_id: int, ordinal: int) -> FaultDecision:
    """Decide the fate of a connection's ``ordinal``-th data request (1-based).

    Keyed by (seed, clientId, ordinal), not by arrival order across connections, so a rerun
    gets the same faults however the connections interleave.
    """
    if not config.active:
        return NO_FAULT
    rng = random.Random(_seed_int(config.seed, "fault", client_id, ordinal))
    latency = rng.uniform(*config.latency_ms) / 1000.0
    drop_roll, hang_roll, error_roll = rng.random(), rng.random(), rng.random()
    drop = (config.drop_after is not None and ordinal > config.drop_after) or (
        drop_roll < config.drop_share
    )
    return FaultDecision(
        latency_s=latency,
        drop=drop,
        hang=hang_roll < config.hang_share,
        error=error_roll < config.error_share,
    )
