"""Fixtures for the simulator tests: real ib_insync clients over real sockets."""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Iterator
from typing import Any

import pytest

from backfill.ib.client import IB, new_ib
from backfill.sim import SimGateway


@pytest.fixture(autouse=True)
def _fresh_event_loop() -> Iterator[None]:
    # ib_insync's sync API runs on the thread's current loop; a fresh one per test keeps a
    # test that leaves it in a bad state from leaking into the next.
    loop = asyncio.new_event_loop()
    asyncio.set_event_loop(loop)
    yield
    asyncio.set_event_loop(None)
    loop.close()


@pytest.fixture
def connect() -> Iterator[Callable[..., IB]]:
    """Factory: ``connect(gateway, client_id=1, **IB.connect kwargs)`` → a connected IB."""
    clients: list[IB] = []

    def make(gateway: SimGateway, client_id: int = 1, **kwargs: Any) -> IB:
        ib = new_ib()
        ib.RaiseRequestErrors = True
        clients.append(ib)
        kwargs.setdefault("timeout", 5)
        ib.connect(gateway.host, gateway.port, clientId=client_id, **kwargs)
        return ib

    yield make
    for ib in clients:
        ib.disconnect()
