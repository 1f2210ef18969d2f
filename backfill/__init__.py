"""backfill: 1-minute crypto bars from Interactive Brokers into a Parquet lake."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

__version__ = "0.1.0"
__all__ = ["read_bars"]

if TYPE_CHECKING:
    from backfill.lake.read import read_bars


def __getattr__(name: str) -> Any:
    # Lazy: `import backfill` (every command's start-up) must not pay for pyarrow.
    if name == "read_bars":
        from backfill.lake.read import read_bars

        return read_bars
    raise AttributeError(f"module 'backfill' has no attribute {name!r}")
