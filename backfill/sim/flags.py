"""Typed ``backfill gateway`` flags → a ``SimConfig`` (typer checks types and bounds).

What typer cannot say on an option (a ``MIN-MAX`` range, an open bound, NaN) is checked
here and raised as ``BadInput``.
"""

from __future__ import annotations

import ipaddress
import math
from dataclasses import dataclass, fields
from pathlib import Path
from typing import TYPE_CHECKING

from backfill.domain import BadInput

if TYPE_CHECKING:
    from backfill.sim.config import SimConfig


@dataclass(frozen=True)
class MsRange:
    """A ``MIN-MAX`` (or single ``N``) span of milliseconds, 0 <= MIN <= MAX."""

    low: float
    high: float

    @classmethod
    def parse(cls, text: str) -> MsRange:
        """Typer's ``parser=`` for ``--latency-ms``; a ValueError becomes a usage error."""
        low_text, _, high_text = text.strip().partition("-")
        try:
            low = float(low_text)
            high = float(high_text) if high_text else low
        except ValueError:
            raise ValueError(f"{text!r} is not MIN-MAX milliseconds") from None
        if not (math.isfinite(low) and math.isfinite(high) and 0 <= low <= high):
            raise ValueError(f"{text!r} is not MIN-MAX with 0 <= MIN <= MAX")
        return cls(low, high)

    def __str__(self) -> str:
        return f"{self.low:g}-{self.high:g}"


@dataclass(frozen=True)
class GatewayFlags:
    """The flags as typer typed and bounded them; ``to_config`` adds the remaining checks."""

    host: str = "127.0.0.1"
    port: int = 7497
    seed: int = 0
    latency_ms: MsRange = MsRange(0.0, 0.0)
    no_pacing: bool = False
    strict_pacing: bool = False
    log: Path | None = None
    symbols: str | None = None
    soft_rate: float = 1.0
    max_rate: float = 5.0
    identical_window: float = 15.0
    contract_window: float = 2.0
    max_open: int = 50
    hang_share: float = 0.0
    error_share: float = 0.0
    drop_after: int | None = None
    drop_share: float = 0.0
    max_duration_days: float = 10.0
    no_trade_share: float = 0.02
    window_edges: str = "[)"
    timezone: str = "UTC"
    day_duration: str = "calendar"
    session_break: str = "sat"
    too_long: str = "error"
    no_permission: str | None = None
    competing_session_after: int | None = None
    competing_session_for: float | None = None
    competing_session_code: int = 162
    farm_down_after: int | None = None
    farm_down_for: float = 60.0
    partial_last_bar: bool = False
    cancel_answer: int = 162
    overload: str = "slow"
    overload_queue: int = 10
    overload_after: float = 20.0
    header_format: str = "named"
    header_shift_s: int = 0

    def to_config(self) -> SimConfig:
        """Build the config; the first flag typer could not check raises BadInput."""
        # Imported here: the CLI imports this module for its option types on every command.
        from backfill.sim.behaviour import (
            Behaviour,
            DayDuration,
            HeaderFormat,
            Overload,
            TooLong,
            WindowEdges,
        )
        from backfill.sim.config import DEFAULT_SYMBOLS, SimConfig
        from backfill.sim.faults import FaultConfig
        from backfill.sim.pacing import PacingConfig

        for item in fields(self):
            value = getattr(self, item.name)
            if isinstance(value, float) and not math.isfinite(value):
                raise BadInput(f"--{item.name.replace('_', '-')}: {value} is not a number")
        if self.max_duration_days <= 0:
            raise BadInput("--max-duration-days must be > 0")
        if self.no_trade_share >= 1:
            raise BadInput("--no-trade-share must be below 1")
        symbols = None
        if self.symbols is not None:
            symbols = _bases(self.symbols)
            if not symbols:
                raise BadInput("--symbols: no symbols given")
        pacing = PacingConfig(
            enabled=not self.no_pacing,
            strict=self.strict_pacing,
            # 0 switches a rate limit off.
            soft_rate=self.soft_rate or None,
            max_rate=self.max_rate or None,
            identical_window_s=self.identical_window,
            contract_window_s=self.contract_window,
            max_open=self.max_open,
        )
        faults = FaultConfig(
            latency_ms=(self.latency_ms.low, self.latency_ms.high),
            hang_share=self.hang_share,
            error_share=self.error_share,
            drop_after=self.drop_after,
            drop_share=self.drop_share,
            seed=self.seed,
        )
        session_break = "" if self.session_break.strip().lower() == "none" else self.session_break
        try:
            # A name no member has raises ValueError here, as Behaviour would (same order).
            behaviour = Behaviour(
                window_edges=WindowEdges(self.window_edges),
                day_duration=DayDuration(self.day_duration),
                session_break=frozenset(d for d in session_break.split(",") if d.strip()),
                too_long=TooLong(self.too_long),
                no_permission=frozenset(_bases(self.no_permission or "")),
                competing_session_after=self.competing_session_after,
                competing_session_for=self.competing_session_for,
                competing_session_code=self.competing_session_code,
                farm_down_after=self.farm_down_after,
                farm_down_for=self.farm_down_for,
                partial_last_bar=self.partial_last_bar,
                cancel_answer=self.cancel_answer,
                overload=Overload(self.overload),
                overload_queue=self.overload_queue,
                overload_after_s=self.overload_after,
                header_format=HeaderFormat(self.header_format),
                header_shift_s=self.header_shift_s,
            )
            return SimConfig(
                host=self.host,
                port=self.port,
                seed=self.seed,
                symbols=DEFAULT_SYMBOLS if symbols is None else symbols,
                pacing=pacing,
                faults=faults,
                log_path=self.log,
                max_duration_days=self.max_duration_days,
                no_trade_share=self.no_trade_share,
                timezone=self.timezone,
                behaviour=behaviour,
            )
        except ValueError as exc:
            # Messages start with the field's name, the flag's but for dashes.
            name, _, rest = str(exc).partition(" ")
            field_name = name.rstrip(":")
            flag = {"overload_after_s": "overload_after"}.get(field_name, field_name)
            if hasattr(self, flag):
                name = "--" + flag.replace("_", "-") + name[len(field_name) :]
            raise BadInput(f"{name} {rest}") from None


def _bases(text: str) -> tuple[str, ...]:
    """``BTC,eth-usd`` → ``("BTC", "ETH")``: the simulator keys contracts by base asset."""
    return tuple(s.split("-")[0].strip().upper() for s in text.split(",") if s.strip())


def exposure_warning(host: str) -> str | None:
    """What to tell an operator whose simulator others can reach (it has no authentication)."""
    if host == "localhost":
        return None
    try:
        address = ipaddress.ip_address(host.strip("[]"))
    except ValueError:  # a host name: it may well resolve to a public address
        return (
            f"the simulator listens on {host}, which other machines may reach; it has no "
            "authentication"
        )
    if address.is_loopback:
        return None
    where = "every interface" if address.is_unspecified else str(address)
    return (
        f"the simulator listens on {where} with no authentication: anyone who can reach "
        "this port can connect; use --host 127.0.0.1 unless you mean it"
    )
