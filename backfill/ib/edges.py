"""Learn a gateway's window-edge rule with two small requests (see ``backfill.edges``).

1. ``1800 S`` ending at a past minute: which minutes of that half hour have bars.
2. ``[a, b]`` for two of those minutes 10 minutes apart, both well inside the first window:
   whether the bars starting at ``a`` and at ``b`` come back is the rule.

Both windows are asked in seconds ending at known UTC minutes, so their headers also show
how this gateway writes the served window (``backfill.ib.served.learn_clock``): no extra
request.

The run's start waits for both answers, so at the first anchor the second request goes out
with the first, for the pair a survey with every minute served would give; it is used
when the survey does pick that pair (a minute without a trade there is rare), else it was
one request spent for nothing and the pair is asked after the survey, as always.
"""

from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass
from datetime import datetime, timedelta

from backfill.domain import Symbol
from backfill.edges import UNKNOWN, EdgeRule, probe_pair, rule_from
from backfill.ib.served import UNTRUSTED, AskedHeader, HeaderClock, learn_clock
from backfill.ib.session import Answer, ClientIdInUse, IBSession, IBSessionError

SURVEY = timedelta(minutes=30)
SPAN = timedelta(minutes=10)
MINUTE = timedelta(minutes=1)


@dataclass(frozen=True)
class EdgeFinding:
    rule: EdgeRule
    requests: int
    seconds: float
    evidence: dict
    sent_at: tuple[float, ...] = ()  # wall clock of each request: IB's pacing remembers them
    clock: HeaderClock = UNTRUSTED  # how the answers' headers read (learned from the same)


async def learn_edges(
    session: IBSession,
    symbol: Symbol,
    anchors: list[datetime],
    *,
    pause_s: float = 0.0,
    timeout_s: float | None = None,
) -> EdgeFinding:
    """The rule, from the first anchor (a past minute, UTC) with two bars 10 minutes apart.

    ``pause_s`` between requests keeps IB's per-contract rules however fast they come back;
    a request unanswered after ``timeout_s`` (default: the session's) counts as no answer.
    """
    began = time.monotonic()
    requests = 0
    sent_at: list[float] = []
    evidence: dict = {"symbol": str(symbol), "tries": []}
    headers: list[AskedHeader] = []

    def done(rule: EdgeRule) -> EdgeFinding:
        clock = learn_clock(headers, session.login_zone)
        evidence["header"] = {
            "clock": clock.reading,
            "format": clock.format,
            "login_zone": session.login_zone.name,
            "seen": [[h.header_start, h.header_end] for h in headers[:2]],
        }
        if clock.note:
            evidence["header"]["note"] = clock.note
        return EdgeFinding(
            rule, requests, time.monotonic() - began, evidence, tuple(sent_at), clock
        )

    for n, anchor in enumerate(anchors):
        end = anchor.replace(second=0, microsecond=0)
        sent_at.append(time.time())
        asked = asyncio.ensure_future(_ask(session, symbol, end, SURVEY, timeout_s))
        # Only at the first anchor, and only unpaused: at most 5 requests for the symbol
        # in any 2 s whatever comes back (IB's per-contract rule).
        guess = _full_survey_pair(end) if n == 0 and pause_s <= 0 else None
        early = None
        if guess is not None:
            sent_at.append(time.time())
            early = asyncio.ensure_future(_ask(session, symbol, guess[1], SPAN, timeout_s))
            requests += 1
        try:
            answer = await asked
            # Waited for even when unused: it went out with the survey, so it ends about
            # as soon, and the next request keeps the per-contract count above.
            guessed = await early if early is not None else None
        finally:
            if early is not None and not early.done():
                early.cancel()  # the survey failed for good (or the run is stopping)
        requests += 1
        _note_header(headers, answer, end, SURVEY)
        survey = answer.starts if answer else None
        pair = probe_pair(survey or [], end - SURVEY, end, SPAN) if survey else None
        if pair is None:
            evidence["tries"].append({"end": end.isoformat(), "bars": len(survey or [])})
            continue
        a, b = pair
        if pair == guess:
            answer = guessed
        else:
            await asyncio.sleep(pause_s)
            sent_at.append(time.time())
            answer = await _ask(session, symbol, b, b - a, timeout_s)
            requests += 1
        if answer is None:
            evidence["tries"].append({"end": b.isoformat(), "error": "no answer"})
            continue
        _note_header(headers, answer, b, b - a)
        served = answer.starts
        rule = rule_from(a, b, served)
        evidence.update(
            asked_start=a.isoformat(),
            asked_end=b.isoformat(),
            first_served=a in served,
            last_served=b in served,
            bars=len(served),
        )
        return done(rule)
    return done(UNKNOWN)


def _full_survey_pair(end: datetime) -> tuple[datetime, datetime] | None:
    """The pair ``probe_pair`` picks from a survey ending at ``end`` with every minute served
    (whatever the edge rule: the survey's own edges are never picked)."""
    minutes = [end - SURVEY + timedelta(minutes=m) for m in range(SURVEY // MINUTE + 1)]
    return probe_pair(minutes, end - SURVEY, end, SPAN)


def _note_header(
    headers: list[AskedHeader],
    answer: Answer | None,
    end: datetime,
    length: timedelta,
) -> None:
    if answer is not None and answer.header is not None:
        headers.append(AskedHeader(end - length, end, *answer.header))


async def _ask(
    session: IBSession,
    symbol: Symbol,
    end: datetime,
    length: timedelta,
    timeout_s: float | None,
) -> Answer | None:
    """The answer for ``length`` ending at ``end``; None when IB did not answer.

    A refusal that no retry can help (no permission) is raised.
    """
    try:
        return await session.ask(
            symbol, end, f"{int(length.total_seconds())} S", timeout_s=timeout_s
        )
    except IBSessionError as exc:
        if not exc.retryable:
            raise
        return None


def learn_gateway_edges(
    host: str,
    port: int,
    client_id: int,
    symbol: Symbol,
    anchors: list[datetime],
    *,
    timeout_s: float = 10.0,
    pause_s: float = 0.0,
    request_timeout_s: float | None = None,
) -> EdgeFinding:
    """Connect (the next free clientId if taken), learn the rule, disconnect; each request
    waits ``request_timeout_s`` (default ``timeout_s``, the connection's)."""

    async def go() -> EdgeFinding:
        for session_id in range(client_id, client_id + 32):
            session = IBSession(host, port, session_id, timeout_s=timeout_s)
            try:
                await session.connect()
            except ClientIdInUse:
                continue
            try:
                return await learn_edges(
                    session, symbol, anchors, pause_s=pause_s, timeout_s=request_timeout_s
                )
            finally:
                session.disconnect()
        raise ClientIdInUse(client_id)

    return asyncio.run(go())
