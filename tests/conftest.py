"""Fixtures shared by every test folder."""

from __future__ import annotations

import signal
from collections.abc import Callable, Iterator
from typing import Any

import pytest

from backfill.sim import FAST_PACING, SimConfig, SimGateway


@pytest.fixture(autouse=True)
def _ctrl_c_left_as_found() -> Iterator[None]:
    """A test leaves the process's Ctrl-C as it found it: handled, and not blocked.

    Processes the suite starts inherit both; one that started with SIGINT blocked or
    ignored never hears the Ctrl-C an operator test sends it, and runs on to exit 0.
    """
    handler = signal.getsignal(signal.SIGINT)
    blocked = signal.SIGINT in signal.pthread_sigmask(signal.SIG_BLOCK, [])
    yield
    assert signal.getsignal(signal.SIGINT) == handler, "the test left SIGINT's handler changed"
    now_blocked = signal.SIGINT in signal.pthread_sigmask(signal.SIG_BLOCK, [])
    assert now_blocked == blocked, "the test left SIGINT blocked"


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
