"""The embedded IB Gateway simulator (``backfill gateway``): see docs/simulator.md.

Names are imported on first use, so the CLI can import ``backfill.sim.flags`` for its option
types without loading the server (asyncio, the market generator) on every command.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING

_EXPORTS = {
    "Behaviour": "backfill.sim.behaviour",
    "DayDuration": "backfill.sim.behaviour",
    "HeaderFormat": "backfill.sim.behaviour",
    "Overload": "backfill.sim.behaviour",
    "TooLong": "backfill.sim.behaviour",
    "WindowEdges": "backfill.sim.behaviour",
    "FAST_PACING": "backfill.sim.config",
    "SimConfig": "backfill.sim.config",
    "FaultConfig": "backfill.sim.faults",
    "SimGateway": "backfill.sim.gateway",
    "Market": "backfill.sim.market",
    "SimBar": "backfill.sim.market",
    "bars_between": "backfill.sim.market",
    "NO_PACING": "backfill.sim.pacing",
    "PacingConfig": "backfill.sim.pacing",
    "RequestRecord": "backfill.sim.records",
    "read_log": "backfill.sim.records",
}

if TYPE_CHECKING:
    from backfill.sim.behaviour import (
        Behaviour,
        DayDuration,
        HeaderFormat,
        Overload,
        TooLong,
        WindowEdges,
    )
    from backfill.sim.config import FAST_PACING, SimConfig
    from backfill.sim.faults import FaultConfig
    from backfill.sim.gateway import SimGateway
    from backfill.sim.market import Market, SimBar, bars_between
    from backfill.sim.pacing import NO_PACING, PacingConfig
    from backfill.sim.records import RequestRecord, read_log

__all__ = [
    "FAST_PACING",
    "NO_PACING",
    "Behaviour",
    "DayDuration",
    "FaultConfig",
    "HeaderFormat",
    "Market",
    "Overload",
    "PacingConfig",
    "RequestRecord",
    "SimBar",
    "SimConfig",
    "SimGateway",
    "TooLong",
    "WindowEdges",
    "bars_between",
    "read_log",
]


def __getattr__(name: str) -> object:
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    return getattr(importlib.import_module(module), name)
