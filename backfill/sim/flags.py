"""Turn ``backfill gateway`` flag text into a ``SimConfig`` (bad input → ``BadInput``)."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from backfill.domain import BadInput
from backfill.sim.config import SimConfig
from backfill.sim.faults import FaultConfig
from backfill.sim.pacing import PacingConfig


@dataclass(frozen=True)
class GatewayFlags:
    """The flags exactly as typed; every number stays text until ``to_config``."""

    host: str = "127.0.0.1"
    port: str = "7497"
    seed: str = "0"
    latency_ms: str = "0"
    no_pacing: bool = False
    strict_pacing: bool = False
    log: Path | None = None
    symbols: str | None = None
    soft_rate: str = "1.0"
    max_rate: str = "5.0"
    identical_window: str = "15"
    contract_window: str = "2"
    max_open: str = "50"
    hang_share: str = "0"
    error_share: str = "0"
    drop_after: str | None = None
    drop_share: str = "0"
    max_duration_days: str = "10"
    no_trade_share: str = "0.02"

    def to_config(self) -> SimConfig:
        """Validate every flag and build the config; the first bad one raises BadInput."""
        low, high = parse_latency(self.latency_ms)
        seed = _int("--seed", self.seed)
        port = _int("--port", self.port)
        if not 0 <= port < 65536:
            raise BadInput(f"--port: {port} is not within 0..65535")
        pacing = PacingConfig(
            enabled=not self.no_pacing,
            strict=self.strict_pacing,
            soft_rate=_rate("--soft-rate", self.soft_rate),
            max_rate=_rate("--max-rate", self.max_rate),
            identical_window_s=_number("--identical-window", self.identical_window),
            contract_window_s=_number("--contract-window", self.contract_window),
            max_open=_int("--max-open", self.max_open, minimum=1),
        )
        drop_after = None if self.drop_after is None else _int("--drop-after", self.drop_after)
        faults = FaultConfig(
            latency_ms=(low, high),
            hang_share=_share("--hang-share", self.hang_share),
            error_share=_share("--error-share", self.error_share),
            drop_after=drop_after,
            drop_share=_share("--drop-share", self.drop_share),
            seed=seed,
        )
        symbols = None
        if self.symbols is not None:
            symbols = tuple(s.split("-")[0].strip().upper() for s in self.symbols.split(",")
                            if s.strip())
            if not symbols:
                raise BadInput("--symbols: no symbols given")
        max_days = _number("--max-duration-days", self.max_duration_days)
        if max_days <= 0:
            raise BadInput("--max-duration-days must be > 0")
        share = _share("--no-trade-share", self.no_trade_share)
        if share >= 1:
            raise BadInput("--no-trade-share must be below 1")
        extra = {} if symbols is None else {"symbols": symbols}
        return SimConfig(
            host=self.host, port=port, seed=seed, pacing=pacing, faults=faults,
            log_path=self.log, max_duration_days=max_days, no_trade_share=share, **extra,
        )


def parse_latency(text: str) -> tuple[float, float]:
    """``MIN-MAX`` or a single ``N`` milliseconds."""
    low_text, _, high_text = text.strip().partition("-")
    low = _number("--latency-ms", low_text)
    high = _number("--latency-ms", high_text) if high_text else low
    if low < 0 or high < low:
        raise BadInput(f"--latency-ms: {text!r} is not MIN-MAX with 0 <= MIN <= MAX")
    return low, high


def _number(flag: str, text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise BadInput(f"{flag}: {text!r} is not a number") from None
    if value < 0 or value != value:
        raise BadInput(f"{flag}: {text!r} must be >= 0")
    return value


def _int(flag: str, text: str, minimum: int = 0) -> int:
    try:
        value = int(text)
    except ValueError:
        raise BadInput(f"{flag}: {text!r} is not an integer") from None
    if value < minimum:
        raise BadInput(f"{flag}: {value} must be >= {minimum}")
    return value


def _share(flag: str, text: str) -> float:
    value = _number(flag, text)
    if value > 1:
        raise BadInput(f"{flag}: {text!r} is not a share within [0, 1]")
    return value


def _rate(flag: str, text: str) -> float | None:
    """Requests per second; 0 switches the limit off."""
    value = _number(flag, text)
    return value or None
