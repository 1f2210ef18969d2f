"""Small helpers shared by the simulator tests."""

from __future__ import annotations

from datetime import datetime, timezone

from backfill.ib.client import Contract

UTC = timezone.utc
DAY_END = datetime(2024, 3, 1, 23, 59, tzinfo=UTC)


def crypto(symbol: str = "BTC") -> Contract:
    """An unqualified PAXOS crypto contract, as the product builds it."""
    return Contract(secType="CRYPTO", symbol=symbol, currency="USD", exchange="PAXOS")
