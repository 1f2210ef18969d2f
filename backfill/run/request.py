"""``backfill run`` as the user asked for it: the one value start-up and the run read.

Below every other ``run`` module (it imports none of them), so that start-up, the edge
learning and the launcher all name it without importing each other.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import date, datetime
from pathlib import Path

from backfill.domain import Symbol
from backfill.settings import GatewayAddress, RunSettings


@dataclass(frozen=True)
class RunRequest:
    """``backfill run`` as the user asked for it, validated."""

    lake: Path
    symbols: tuple[Symbol, ...]
    first: date
    last: date
    gateway: GatewayAddress
    settings: RunSettings
    json: bool = False
    command: tuple[str, ...] = ()
    # --refetch: when the run began; days recorded before it are asked again.
    refetch_since: datetime | None = None
    verbose: bool = False  # plain lines: every event, not only days and parts
    # --unsafe-single-writer: an object store that ignores conditional writes is used anyway.
    unsafe_single_writer: bool = False
    store_note: str = ""  # what the run says first and logs about its store (set at start)
