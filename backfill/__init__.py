"""backfill: 1-minute crypto bars from Interactive Brokers into a Parquet lake."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

__version__ = "0.1.0"
__all__ = ["read_bars", "read_events", "read_levels"]

if TYPE_CHECKING:
    from backfill.lake.read import read_bars
    from backfill.levels.read import read_events, read_levels


def __getattr__(name: str) -> Any:
    # Lazy: `import backfill` (every command's start-up) must not pay for pyarrow.
    if name == "read_bars":
        from backfill.lake.read import read_bars

        return read_bars
    if name in ("read_levels", "read_events"):
        from backfill.levels import read

        return getattr(read, name)
    raise AttributeError(f"module 'backfill' has no attribute {name!r}")
