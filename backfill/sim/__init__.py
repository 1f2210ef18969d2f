"""The embedded IB Gateway simulator (``backfill gateway``): see README "Simulator"."""

from backfill.sim.config import FAST_PACING, SimConfig
from backfill.sim.faults import FaultConfig
from backfill.sim.gateway import SimGateway
from backfill.sim.market import Market, SimBar, bars_between
from backfill.sim.pacing import NO_PACING, PacingConfig
from backfill.sim.records import RequestRecord, read_log

__all__ = [
    "FAST_PACING",
    "NO_PACING",
    "FaultConfig",
    "Market",
    "PacingConfig",
    "RequestRecord",
    "SimBar",
    "SimConfig",
    "SimGateway",
    "bars_between",
    "read_log",
]
