"""The lake store's errors about parts, apart from the store so that reading a footer
(plan's helpers read 6,000) needs neither pyarrow.compute nor filelock."""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from backfill.lake.objpath import LakePath


class BadJson(ValueError):
    """A file or record that is not the JSON it should be; the message says why, briefly."""


class StoreError(Exception):
    """Base of the lake store's errors."""


class CorruptPart(StoreError):
    """A part that cannot be read, or breaks the data contract."""

    def __init__(self, path: LakePath, reason: str) -> None:
        self.path = path
        self.reason = reason
        super().__init__(f"{path}: {reason}")


class NonConformingPart(CorruptPart):
    """A part that was read but whose schema is not the contract's and cannot be cast to it
    without loss (a column missing, another type, nulls). Its days may be good: it is never
    moved aside, only reported (``verify`` names it); a write to its month is refused."""
