"""What the parent asks the gateway before a run or a plan: are the symbols known, and
where does each one's history start.

Bad answers become ``BadInput`` (exit 2): they happen before anything is written.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Sequence
from datetime import date, datetime

from backfill.domain import BadInput, Symbol
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


def preflight(
    host: str,
    port: int,
    client_id: int,
    symbols: Sequence[Symbol],
    *,
    client_id_tries: int,
    timeout_s: float,
    heads_for: Sequence[Symbol] = (),
) -> dict[Symbol, datetime]:
    """Connect once and qualify every symbol; raise BadInput on what no worker could fix.

    Then, on the same connection, ask the head timestamp of each of ``heads_for``: the
    answers (a symbol whose head could not be had is left out: its range is not clipped).
    """

    async def check() -> dict[Symbol, datetime]:
        session = await _connect(host, port, client_id, client_id_tries, timeout_s)

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
            found = await asyncio.gather(
                *(known(s, max(0, n - PREFLIGHT_BURST + 1) / PREFLIGHT_RATE)
                  for n, s in enumerate(symbols))
            )
            unknown = [str(s) for s, ok in zip(symbols, found, strict=True) if not ok]
            if unknown:
                raise BadInput(
                    f"unknown symbol{'s' if len(unknown) > 1 else ''} {', '.join(unknown)}: "
                    f"the gateway has no CRYPTO contract on PAXOS for "
                    f"{'them' if len(unknown) > 1 else 'it'}"
                )

            async def head(symbol: Symbol, start_s: float) -> datetime | None:
                await asyncio.sleep(start_s)
                with contextlib.suppress(IBSessionError, asyncio.TimeoutError):
                    return await asyncio.wait_for(session.earliest_bar(symbol), HEAD_TIMEOUT_S)
                return None

            # Once per symbol for the life of a lake; overlapping and spaced as above, so a
            # gateway that does not answer costs HEAD_TIMEOUT_S once, not once per symbol.
            answers = await asyncio.gather(
                *(head(s, n / PREFLIGHT_RATE) for n, s in enumerate(heads_for))
            )
            return {s: h for s, h in zip(heads_for, answers, strict=True) if h is not None}
        finally:
            session.disconnect()

    try:
        return asyncio.run(check())
    except IBSessionError as exc:
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


async def _connect(
    host: str, port: int, client_id: int, tries: int, timeout_s: float
) -> IBSession:
    try:
        return await connect_free_id(host, port, client_id, tries=tries, timeout_s=timeout_s)
    except ClientIdInUse:
        raise BadInput(f"no free client id from {client_id} at {host}:{port}") from None
