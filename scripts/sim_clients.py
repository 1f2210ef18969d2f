"""What the simulator benchmarks share: the gateway as its own process, worker-like clients."""

from __future__ import annotations

import re
import subprocess
import sys
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from backfill.ib.client import IB, Contract

SYMBOLS = ["BTC", "ETH", "LTC", "BCH", "SOL", "AVAX", "LINK", "DOGE"]


def start_gateway() -> tuple[subprocess.Popen[str], int]:
    """``backfill gateway --port 0 --no-pacing`` (zero latency), and the port it listens on."""
    gateway = subprocess.Popen(
        [sys.executable, "-m", "backfill", "gateway", "--port", "0", "--no-pacing"],
        stdout=subprocess.PIPE,
        text=True,
    )
    assert gateway.stdout is not None
    match = re.search(r":(\d+)$", gateway.stdout.readline().strip())
    if not match:
        gateway.kill()
        sys.exit("gateway did not start")
    return gateway, int(match.group(1))


def connect(slot: int, port: int) -> tuple[IB, Contract]:
    """Client ``slot`` (in a process of its own) connected, its symbol's contract qualified."""
    import asyncio

    from backfill.ib.client import Contract, new_ib

    asyncio.set_event_loop(asyncio.new_event_loop())
    ib = new_ib()
    ib.connect("127.0.0.1", port, clientId=100 + slot, timeout=10)
    symbol = SYMBOLS[slot % len(SYMBOLS)]
    contract = Contract(secType="CRYPTO", symbol=symbol, currency="USD", exchange="PAXOS")
    ib.qualifyContracts(contract)
    return ib, contract
