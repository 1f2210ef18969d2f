"""The simulator's one frozen configuration object."""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from types import MappingProxyType
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from backfill.sim.behaviour import Behaviour
from backfill.sim.faults import FaultConfig
from backfill.sim.market import BASE_PRICES, DEFAULT_LISTINGS
from backfill.sim.pacing import PacingConfig

DEFAULT_SYMBOLS: tuple[str, ...] = tuple(BASE_PRICES)


@dataclass(frozen=True)
class SimConfig:
    """Everything the gateway simulator needs; ``port=0`` picks a free port.

    ``symbols`` are base assets quoted in ``currency`` on PAXOS; ``listings`` maps a base
    to its first tradable minute (missing ones default to 2019-01-01). ``clock`` gives
    "now" in epoch seconds (bars after it are not served yet).
    """

    host: str = "127.0.0.1"
    port: int = 7497
    seed: int = 0
    symbols: tuple[str, ...] = DEFAULT_SYMBOLS
    currency: str = "USD"
    listings: Mapping[str, datetime] = field(
        default_factory=lambda: MappingProxyType(dict(DEFAULT_LISTINGS))
    )
    no_trade_share: float = 0.02
    max_duration_days: float = 10.0
    account: str = "DU1234567"
    timezone: str = "UTC"  # the "TWS login zone": formatDate=1 and zone-less end times
    pacing: PacingConfig = field(default_factory=PacingConfig)
    faults: FaultConfig = field(default_factory=FaultConfig)
    behaviour: Behaviour = field(default_factory=Behaviour)
    log_path: Path | None = None
    clock: Callable[[], float] = time.time
    farm_messages: bool = True  # IB greets with 2104/2106/2158 farm-status warnings
    # Generated and encoded days kept for reuse; the gateway's memory stays about this much
    # above its start whatever the range served.
    cache_mb: int = 48
    # Keep every RequestRecord in memory for ``SimGateway.requests()`` (tests); ``--log``
    # is the record otherwise, and an in-memory list would grow ~1 KB a request.
    keep_requests: bool = False

    def __post_init__(self) -> None:
        if not 0.0 <= self.no_trade_share < 1.0:
            raise ValueError("no_trade_share must be within [0, 1)")
        if self.timezone.upper() != "UTC":
            try:
                ZoneInfo(self.timezone)
            except (ValueError, ZoneInfoNotFoundError):
                raise ValueError(f"timezone {self.timezone!r} is not a known zone") from None
        if self.cache_mb < 0:
            raise ValueError("cache_mb must be >= 0")
        if self.max_duration_days <= 0:
            raise ValueError("max_duration_days must be > 0")
        if not self.symbols:
            raise ValueError("at least one symbol is required")
        object.__setattr__(self, "symbols", tuple(s.strip().upper() for s in self.symbols))


# IB's limits divided by ten (the 10-minute window by ten too), and no soft throttle: the
# rules still bite in tests, but a client that paces itself in real time never trips them.
FAST_PACING = PacingConfig(
    identical_window_s=1.5,
    contract_window_s=0.2,
    session_window_s=60.0,
    soft_rate=None,
    max_rate=None,
)
