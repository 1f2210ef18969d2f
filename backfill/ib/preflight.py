"""What the parent asks the gateway before a run or a plan: are the symbols known, and
where does each one's history start.

Bad answers become ``BadInput`` (exit 2): they happen before anything is written.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import date, datetime

from backfill.domain import BadInput, Symbol
from backfill.ib.edges import EdgeFinding, learn_edges
from backfill.ib.served import ZoneDatabaseMissing
from backfill.ib.session import (
    ClientIdInUse,
    IBSession,
    IBSessionError,
    UnknownSymbol,
    connect_free_id,
)

# Contract-details requests during the gateway check: a first burst, then a steady rate.
# With the connect handshake's messages, any second stays under the gateway's 50 messages.
PREFLIGHT_BURST = 16
PREFLIGHT_RATE = 20.0
# A head timestamp not answered by then is done without: the run starts, unclipped for that
# symbol (days before its listing come back as no-data days), and asks again next run.
HEAD_TIMEOUT_S = 3.0


@dataclass(frozen=True)
class EdgeProbe:
    """The window-edge rule to learn meanwhile: ``backfill.ib.edges.learn_edges``'s asks."""

    symbol: Symbol
    anchors: tuple[datetime, ...]


@dataclass(frozen=True)
class Preflight:
    """What the gateway said before the run: heads answered, and the edge rule if asked."""

    heads: dict[Symbol, datetime]
    edges: EdgeFinding | None = None
    # Why the edge rule could not be learned (an IBSessionError, NoPermission among them).
    edges_error: IBSessionError | None = field(default=None, compare=False)
    # When each step ended (wall clock): "connected", "qualified", "heads", "edges" (the
    # benchmark's start-up shares; information only).
    marks: tuple[tuple[str, float], ...] = field(default=(), compare=False)


def check_gateway(
    host: str,
    port: int,
    client_id: int,
    symbols: Sequence[Symbol],
    *,
    client_id_tries: int,
    timeout_s: float,
    heads_for: Sequence[Symbol] = (),
    edges_for: EdgeProbe | None = None,
    edges_timeout_s: float | None = None,
) -> Preflight:
    """Connect once and qualify every symbol; raise BadInput on what no worker could fix.

    Then, on the same connection, ask the head timestamp of each of ``heads_for`` (a
    symbol whose head could not be had is left out: its range is not clipped) and,
    meanwhile, the window-edge rule of ``edges_for``: its two requests overlap the heads
    instead of following them on a connection of their own (the run's start waits for
    both); each waits at most ``edges_timeout_s`` (default ``timeout_s``)."""

    async def check() -> Preflight:
        session = await _connect(host, port, client_id, client_id_tries, timeout_s)
        began = asyncio.get_running_loop().time()
        marks = {"connected": time.time()}

        def slot_s(n: int) -> float:
            """When the check's ``n``-th message may go, from now: a first burst of
            PREFLIGHT_BURST, then PREFLIGHT_RATE a second, counted from the first."""
            at = max(0, n - PREFLIGHT_BURST + 1) / PREFLIGHT_RATE
            return max(0.0, at - (asyncio.get_running_loop().time() - began))

        async def known(symbol: Symbol, start_s: float) -> bool:
            await asyncio.sleep(start_s)
            try:
                await session.qualify(symbol)
            except UnknownSymbol:
                return False
            return True

        try:
            # Overlapping, so a long list costs its send time, not a round trip per symbol;
            # spaced well under the gateway's 50 messages/s, which it counts on arrival.
            found = await asyncio.gather(*(known(s, slot_s(n)) for n, s in enumerate(symbols)))
            unknown = [str(s) for s, ok in zip(symbols, found, strict=True) if not ok]
            if unknown:
                raise BadInput(
                    f"unknown symbol{'s' if len(unknown) > 1 else ''} {', '.join(unknown)}: "
                    f"the gateway has no CRYPTO contract on PAXOS for "
                    f"{'them' if len(unknown) > 1 else 'it'}"
                )
            marks["qualified"] = time.time()

            async def head(symbol: Symbol, start_s: float) -> datetime | None:
                await asyncio.sleep(start_s)
                with contextlib.suppress(IBSessionError, asyncio.TimeoutError):
                    return await asyncio.wait_for(session.earliest_bar(symbol), HEAD_TIMEOUT_S)
                return None

            async def edges() -> tuple[EdgeFinding | None, IBSessionError | None]:
                if edges_for is None:
                    return None, None
                try:
                    rule = await learn_edges(
                        session,
                        edges_for.symbol,
                        list(edges_for.anchors),
                        timeout_s=edges_timeout_s,
                    )
                except IBSessionError as exc:
                    return None, exc
                finally:
                    marks["edges"] = time.time()
                return rule, None

            # Once per symbol for the life of a lake; overlapping and spaced as above, so a
            # gateway that does not answer costs HEAD_TIMEOUT_S once, not once per symbol.
            # They and the edge rule's two requests continue the qualifications' schedule:
            # a few symbols go in one burst, a long list at the steady rate.
            learning = asyncio.ensure_future(edges())
            sent = len(symbols) + (2 if edges_for is not None else 0)
            answers = await asyncio.gather(
                *(head(s, slot_s(sent + n)) for n, s in enumerate(heads_for))
            )
            marks["heads"] = time.time()
            finding, error = await learning
            heads = {s: h for s, h in zip(heads_for, answers, strict=True) if h is not None}
            return Preflight(heads, finding, error, tuple(marks.items()))
        finally:
            session.disconnect()

    try:
        return asyncio.run(check())
    except IBSessionError as exc:
        raise BadInput(f"gateway {host}:{port}: {exc}") from None
    except ZoneDatabaseMissing as exc:
        raise BadInput(f"gateway {host}:{port}: {exc}") from None


def earliest_days(
    host: str,
    port: int,
    client_id: int,
    symbols: Sequence[Symbol],
    *,
    client_id_tries: int,
    timeout_s: float,
) -> dict[Symbol, date]:
    """Each symbol's first day with data at the gateway (reqHeadTimeStamp), for plan --head."""

    async def ask() -> dict[Symbol, date]:
        session = await _connect(host, port, client_id, client_id_tries, timeout_s)
        try:
            return {s: (await session.earliest_bar(s)).date() for s in symbols}
        finally:
            session.disconnect()

    try:
        return asyncio.run(ask())
    except UnknownSymbol as exc:
        raise BadInput(str(exc)) from None
    except IBSessionError as exc:
        raise BadInput(f"gateway {host}:{port}: {exc}") from None


async def _connect(host: str, port: int, client_id: int, tries: int, timeout_s: float) -> IBSession:
    try:
        return await connect_free_id(host, port, client_id, tries=tries, timeout_s=timeout_s)
    except ClientIdInUse:
        raise BadInput(f"no free client id from {client_id} at {host}:{port}") from None
