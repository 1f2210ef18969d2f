"""Learn a gateway's window-edge rule with two small requests (see ``backfill.edges``).

1. ``1800 S`` ending at a past minute: which minutes of that half hour have bars.
2. ``[a, b]`` for two of those minutes 10 minutes apart, both well inside the first window:
   whether the bars starting at ``a`` and at ``b`` come back is the rule.
"""

from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass
from datetime import datetime, timedelta

from backfill.domain import Symbol
from backfill.edges import UNKNOWN, EdgeRule, probe_pair, rule_from
from backfill.ib.session import IBSession, IBSessionError

SURVEY = timedelta(minutes=30)
SPAN = timedelta(minutes=10)


@dataclass(frozen=True)
class EdgeFinding:
    rule: EdgeRule
    requests: int
    seconds: float
    evidence: dict


async def learn_edges(
    session: IBSession, symbol: Symbol, anchors: list[datetime], *, pause_s: float = 0.0,
) -> EdgeFinding:
    """The rule, from the first anchor (a past minute, UTC) with two bars 10 minutes apart.

    ``pause_s`` between requests keeps IB's per-contract rules however fast they come back.
    """
    began = time.monotonic()
    requests = 0
    evidence: dict = {"symbol": str(symbol), "tries": []}
    for anchor in anchors:
        end = anchor.replace(second=0, microsecond=0)
        survey = await _starts(session, symbol, end, SURVEY)
        requests += 1
        pair = probe_pair(survey or [], end - SURVEY, end, SPAN) if survey else None
        if pair is None:
            evidence["tries"].append({"end": end.isoformat(), "bars": len(survey or [])})
            continue
        a, b = pair
        await asyncio.sleep(pause_s)
        served = await _starts(session, symbol, b, b - a)
        requests += 1
        if served is None:
            evidence["tries"].append({"end": b.isoformat(), "error": "no answer"})
            continue
        rule = rule_from(a, b, served)
        evidence.update(asked_start=a.isoformat(), asked_end=b.isoformat(),
                        first_served=a in served, last_served=b in served,
                        bars=len(served))
        return EdgeFinding(rule, requests, time.monotonic() - began, evidence)
    return EdgeFinding(UNKNOWN, requests, time.monotonic() - began, evidence)


async def _starts(
    session: IBSession, symbol: Symbol, end: datetime, length: timedelta
) -> list[datetime] | None:
    """Bar starts served for ``length`` ending at ``end``; None when IB did not answer.

    A refusal that no retry can help (no permission) is raised.
    """
    try:
        return await session.bar_starts(symbol, end, f"{int(length.total_seconds())} S")
    except IBSessionError as exc:
        if not exc.retryable:
            raise
        return None
