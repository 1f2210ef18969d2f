"""Fixtures shared by every test folder."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any

import pytest

from backfill.sim import FAST_PACING, SimConfig, SimGateway


@pytest.fixture
def make_sim() -> Iterator[Callable[..., SimGateway]]:
    """Factory: ``make_sim(**SimConfig fields)`` → a started simulator on a free port.

    Defaults: ``port=0``, ``pacing=FAST_PACING`` (IB's limits / 10, no soft throttle),
    ``keep_requests=True`` (``sim.requests()`` answers).
    Every simulator made is stopped after the test.
    """
    started: list[SimGateway] = []

    def make(**overrides: Any) -> SimGateway:
        overrides.setdefault("port", 0)
        overrides.setdefault("pacing", FAST_PACING)
        overrides.setdefault("keep_requests", True)
        gateway = SimGateway(SimConfig(**overrides)).start()
        started.append(gateway)
        return gateway

    yield make
    for gateway in started:
        gateway.stop()


@pytest.fixture
def sim(make_sim: Callable[..., SimGateway]) -> SimGateway:
    """A running simulator on a free port with test-friendly defaults (see ``make_sim``)."""
    return make_sim()


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """End-to-end tests first: with ``-n auto`` the long ones start early on every worker and
    the many short unit tests fill the end, instead of one worker finishing a 40 s run alone
    (longest first is how a scheduler keeps its workers busy)."""
    items.sort(key=lambda item: item.get_closest_marker("e2e") is None)
