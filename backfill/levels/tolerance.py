"""``--tolerance``: bps:N (relative, the default), abs:X, or consumer (levels.md section 4)."""

from __future__ import annotations

import math
from dataclasses import dataclass

from backfill.domain import BadInput

# What a strategy written for stocks uses, in price units per level.
CONSUMER = {"PDH": 0.5, "PDL": 0.5, "PMH": 0.3, "PML": 0.3, "ORH": 0.2, "ORL": 0.2}


@dataclass(frozen=True)
class Tolerance:
    kind: str  # "bps", "abs" or "consumer"
    amount: float = 0.0

    @property
    def spec(self) -> str:
        """The spec as given (normalised): also the ``tolerance=<spec>`` folder name."""
        if self.kind == "consumer":
            return "consumer"
        return f"{self.kind}:{self.amount:g}"

    def price(self, level: str, value: float) -> float:
        """The tolerance in price for ``level`` at ``value``."""
        if self.kind == "bps":
            return value * self.amount / 10_000
        if self.kind == "abs":
            return self.amount
        return CONSUMER[level]


def parse_tolerance(text: str) -> Tolerance:
    spec = text.strip().lower()
    if spec == "consumer":
        return Tolerance("consumer")
    kind, _, amount = spec.partition(":")
    try:
        value = float(amount)
    except ValueError:
        value = math.nan
    if kind not in ("bps", "abs") or not math.isfinite(value) or value < 0:
        raise BadInput(f"--tolerance {text!r}: expected bps:N, abs:X (N, X >= 0) or consumer")
    return Tolerance(kind, value)
