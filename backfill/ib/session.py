"""The IB session: the one module that imports the IB client library (ib_insync).

Every outcome of a request is typed: bars come back as a table; IB's explicit "no data"
as an empty table with ``no_data=True``; everything else raises one of the errors below.
An empty answer is never taken as no-data unless IB said so.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from datetime import datetime
from typing import TypeVar

import pyarrow as pa
from ib_insync import IB, BarDataList, Contract
from ib_insync.wrapper import RequestError

from backfill.domain import EXCHANGE, MARKET, SOURCE, UTC, WHAT_TO_SHOW, Symbol, Window
from backfill.lake.schema import BAR_SCHEMA

# ib_insync logs every IB error at ERROR level; the worker reports them as events instead,
# so its log must not scribble over the dashboard.
_ib_logger = logging.getLogger("ib_insync")
_ib_logger.addHandler(logging.NullHandler())
_ib_logger.propagate = False

T = TypeVar("T")
_MICROS_PER_MINUTE = 60_000_000
UPSTREAM_LOST = 1100  # connectivity between IB and the gateway lost
UPSTREAM_RESTORED = (1101, 1102)  # restored, data lost / data maintained


class IBSessionError(Exception):
    """Base of every typed failure the session reports."""

    retryable = True


class GatewayUnreachable(IBSessionError):
    """Nothing listens at the address, or the API handshake never completed."""


class ClientIdInUse(IBSessionError):
    """IB error 326: another connection holds this clientId; take the next one."""

    def __init__(self, client_id: int) -> None:
        super().__init__(f"client id {client_id} is already in use")
        self.client_id = client_id


class UnknownSymbol(IBSessionError):
    """IB error 200: the gateway has no CRYPTO/PAXOS contract for this symbol."""

    retryable = False

    def __init__(self, symbol: Symbol) -> None:
        super().__init__(f"unknown symbol {symbol}: no CRYPTO contract on {EXCHANGE}")
        self.symbol = symbol


class Disconnected(IBSessionError):
    """The connection dropped (or was never up) while a request was open."""


class RequestTimeout(IBSessionError):
    """No answer in time; the request was cancelled at the gateway."""


class PacingViolation(IBSessionError):
    """IB error 162, pacing: the session asked too much too fast; every worker backs off."""


class DurationTooLong(IBSessionError):
    """The gateway refuses the window's duration: fetch shorter windows."""

    retryable = False


class EmptyAnswer(IBSessionError):
    """The gateway ended the request with no bars and without saying 'no data'."""


class _NoData(Exception):
    """IB said "no data" for a historical request (an answer, not a failure)."""


class IBError(IBSessionError):
    """Any other IB error, with its code and text."""

    # Codes that mean the request itself is wrong or not permitted: retrying cannot help.
    FATAL_CODES = frozenset({200, 321, 354, 10299})

    def __init__(self, code: int, text: str) -> None:
        super().__init__(f"IB error {code}: {text}")
        self.code = code
        self.text = text
        self.retryable = code not in self.FATAL_CODES


@dataclass(frozen=True)
class WindowBars:
    """The bars of one window, ``ts`` = bar end, exactly the window's bars."""

    window: Window
    bars: pa.Table
    no_data: bool
    latency_s: float


@dataclass(frozen=True)
class SentWindow:
    """A window request on the wire, waiting for its answer."""

    symbol: Symbol
    window: Window
    req_id: int
    future: asyncio.Future
    bars: BarDataList
    sent_at: float  # monotonic


def crypto_contract(symbol: Symbol) -> Contract:
    return Contract(
        secType="CRYPTO", symbol=symbol.base, currency=symbol.quote, exchange=EXCHANGE
    )


def classify_error(code: int, text: str) -> IBSessionError | None:
    """Turn an IB error into a typed one; None means IB said 'no data'."""
    lowered = text.lower()
    if code == 162:
        if "pacing violation" in lowered:
            return PacingViolation(text)
        if "returned no data" in lowered:
            return None
        if "time length exceed" in lowered or "duration" in lowered:
            return DurationTooLong(text)
        if "cancelled" in lowered:
            return IBError(code, text)
    if code == 321 and "duration" in lowered:
        return DurationTooLong(text)
    if code == 322:
        return PacingViolation(text)
    if code in (502, 504, 1100):
        return Disconnected(text)
    return IBError(code, text)


class IBSession:
    """One API connection with one clientId, used from one asyncio loop."""

    def __init__(self, host: str, port: int, client_id: int, *, timeout_s: float = 10.0) -> None:
        self.host = host
        self.port = port
        self.client_id = client_id
        self.timeout_s = timeout_s
        self._ib = IB()
        self._ib.RaiseRequestErrors = True
        # IB's link from the gateway to its servers (1100 lost, 1101/1102 back): while it is
        # down requests go unanswered, so the worker holds them rather than burn attempts.
        self.upstream_lost_since: float | None = None
        self.upstream_last_lost: float | None = None
        self._ib.errorEvent += self._on_session_message
        self._contracts: dict[Symbol, Contract] = {}

    @property
    def connected(self) -> bool:
        return self._ib.isConnected()

    def upstream_lost_after(self, moment: float) -> bool:
        """Whether IB reported its connectivity lost at or after ``moment`` (monotonic)."""
        return self.upstream_last_lost is not None and self.upstream_last_lost >= moment

    def _on_session_message(self, req_id: int, code: int, text: str, contract: object) -> None:
        if code == UPSTREAM_LOST:
            now = time.monotonic()
            self.upstream_last_lost = now
            if self.upstream_lost_since is None:
                self.upstream_lost_since = now
        elif code in UPSTREAM_RESTORED:
            self.upstream_lost_since = None

    async def connect(self) -> None:
        """Connect read-only; raises ClientIdInUse on 326, GatewayUnreachable otherwise."""
        id_in_use = asyncio.Event()

        def on_error(req_id: int, code: int, text: str, contract: object) -> None:
            if code == 326:
                id_in_use.set()

        self._ib.errorEvent += on_error
        connecting = asyncio.ensure_future(
            self._ib.connectAsync(
                self.host, self.port, clientId=self.client_id, timeout=self.timeout_s,
                readonly=True,
            )
        )
        # The gateway answers 326 and closes the socket, but the client only notices at its
        # connect timeout: race the two so a taken id costs milliseconds, not seconds.
        in_use = asyncio.ensure_future(id_in_use.wait())
        try:
            await asyncio.wait({connecting, in_use}, return_when=asyncio.FIRST_COMPLETED)
            if id_in_use.is_set():
                connecting.cancel()
                self.disconnect()
                raise ClientIdInUse(self.client_id)
            try:
                connecting.result()
            except asyncio.TimeoutError as exc:
                self.disconnect()
                raise GatewayUnreachable(
                    f"no API handshake from {self.host}:{self.port} within {self.timeout_s:g}s "
                    "(is it the API port of IB Gateway/TWS, with the API enabled?)"
                ) from exc
            except (OSError, ConnectionError) as exc:
                self.disconnect()
                raise GatewayUnreachable(
                    f"cannot connect to IB gateway at {self.host}:{self.port}: "
                    f"{str(exc) or type(exc).__name__}"
                ) from exc
        finally:
            in_use.cancel()
            self._ib.errorEvent -= on_error

    def disconnect(self) -> None:
        """Close the connection, whatever state the handshake reached."""
        try:
            self._ib.disconnect()
        except ConnectionError:
            # ib_insync's disconnect reads stats that exist only after the API handshake.
            self._ib.client.disconnect()

    async def qualify(self, symbol: Symbol) -> Contract:
        """The symbol's CRYPTO/PAXOS contract as the gateway knows it."""
        if symbol in self._contracts:
            return self._contracts[symbol]
        self._require_connection()
        try:
            details = await self._answer(
                self._ib.reqContractDetailsAsync(crypto_contract(symbol)),
                timed_out=f"contract details for {symbol}",
            )
        except IBError as exc:
            if exc.code == 200:
                raise UnknownSymbol(symbol) from None
            raise
        if not details:
            raise UnknownSymbol(symbol)
        contract = details[0].contract
        self._contracts[symbol] = contract
        return contract

    async def earliest_bar(self, symbol: Symbol) -> datetime:
        """When the gateway's AGGTRADES history for the symbol starts (reqHeadTimeStamp)."""
        contract = await self.qualify(symbol)
        head = await self._answer(
            self._ib.reqHeadTimeStampAsync(contract, WHAT_TO_SHOW, False, 2),
            timed_out=f"head timestamp for {symbol}",
        )
        if isinstance(head, datetime):
            return head if head.tzinfo else head.replace(tzinfo=UTC)
        raise IBError(0, f"unexpected head timestamp {head!r}")

    async def fetch_window(
        self, symbol: Symbol, window: Window, *, timeout_s: float | None = None
    ) -> WindowBars:
        """Fetch one window of 1-minute AGGTRADES bars exactly as the data contract says."""
        await self.qualify(symbol)
        return await self.await_window(self.send_window(symbol, window), timeout_s=timeout_s)

    def send_window(self, symbol: Symbol, window: Window) -> SentWindow:
        """Send the request for one window now (the symbol must be qualified already).

        Sending is synchronous so that a pacer can note the request at the very moment its
        bytes leave: IB times its pacing rules on arrival.
        """
        contract = self._contracts.get(symbol)
        if contract is None:
            raise IBError(0, f"{symbol} is not qualified on this session")
        self._require_connection()
        ib = self._ib
        # ib_insync's own reqHistoricalDataAsync turns a timeout into an empty list, which is
        # indistinguishable from an answer; issue the request ourselves to keep them apart.
        req_id = ib.client.getReqId()
        container = BarDataList()
        container.reqId = req_id
        future = ib.wrapper.startReq(req_id, contract, container=container)
        # After our timeout the gateway may still end the request (162 cancelled); consume
        # that late outcome so asyncio does not log it as never retrieved.
        future.add_done_callback(lambda f: f.cancelled() or f.exception())
        ib.client.reqHistoricalData(
            req_id, contract, window.end_datetime.strftime("%Y%m%d %H:%M:%S UTC"),
            window.duration_str, "1 min", WHAT_TO_SHOW, False, 2, False, [],
        )
        return SentWindow(symbol, window, req_id, future, container, time.monotonic())

    async def await_window(self, sent: SentWindow, *, timeout_s: float | None = None) -> WindowBars:
        """The typed outcome of a sent window; cancels it at the gateway on timeout."""
        symbol, window = sent.symbol, sent.window
        try:
            await self._answer(
                asyncio.shield(sent.future),
                timeout_s=timeout_s,
                timed_out=f"no answer for {symbol} {window} in time",
                lost=f"connection lost during {symbol} {window}",
                no_data_ok=True,
                on_timeout=lambda: self._cancel_historical(sent.req_id),
            )
        except _NoData:
            latency = time.monotonic() - sent.sent_at
            return WindowBars(window, BAR_SCHEMA.empty_table(), True, latency)
        latency = time.monotonic() - sent.sent_at
        if not sent.bars:
            raise EmptyAnswer(f"empty answer for {symbol} {window} without IB's no-data")
        return WindowBars(window, bars_to_table(symbol, window, sent.bars), False, latency)

    async def _answer(
        self,
        request: Awaitable[T],
        *,
        timed_out: str,
        lost: str = "",
        timeout_s: float | None = None,
        no_data_ok: bool = False,
        on_timeout: Callable[[], None] | None = None,
    ) -> T:
        """Await one ib_insync request, its failures typed: the one place IB's errors are
        mapped. IB's explicit no-data raises ``_NoData`` when ``no_data_ok``, else it is an
        ``IBError``; ``on_timeout`` runs before ``RequestTimeout`` is raised."""
        try:
            return await asyncio.wait_for(request, timeout_s or self.timeout_s)
        except RequestError as exc:
            error = classify_error(exc.code, exc.message)
            if error is None and no_data_ok:
                raise _NoData from None
            raise error or IBError(exc.code, exc.message) from None
        except ConnectionError as exc:
            raise Disconnected(f"{lost}: {exc}" if lost else str(exc)) from None
        except asyncio.TimeoutError:
            if on_timeout is not None:
                on_timeout()
            raise RequestTimeout(timed_out) from None

    def _cancel_historical(self, req_id: int) -> None:
        if self._ib.isConnected():
            self._ib.client.cancelHistoricalData(req_id)

    def _require_connection(self) -> None:
        if not self._ib.isConnected():
            raise Disconnected("not connected")


async def connect_free_id(
    host: str,
    port: int,
    client_id: int,
    *,
    tries: int,
    timeout_s: float,
    on_taken: Callable[[int], None] | None = None,
) -> IBSession:
    """A session on ``client_id`` or, while IB says an id is taken (326), the next one.

    At most ``tries`` ids; ``on_taken(next_id)`` is told of each move. Raises
    ``ClientIdInUse`` when every id tried was taken, other errors as ``connect`` does.
    """
    for n in range(tries):
        session = IBSession(host, port, client_id + n, timeout_s=timeout_s)
        try:
            await session.connect()
            return session
        except ClientIdInUse:
            session.disconnect()
            # Never past IB's top usable id (2^31-2): ib_insync sends 2^31-1 as empty.
            if n + 1 >= tries or client_id + n >= 2**31 - 2:
                raise
            if on_taken is not None:
                on_taken(client_id + n + 1)
        except BaseException:
            session.disconnect()
            raise
    raise ClientIdInUse(client_id)  # tries < 1


def bars_to_table(symbol: Symbol, window: Window, bars: list) -> pa.Table:
    """IB bars (stamped by start) → lake rows (stamped by end), keeping only the window's."""
    lo = int(window.ts_start.timestamp()) * 1_000_000
    hi = int(window.ts_stop.timestamp()) * 1_000_000
    ts: list[int] = []
    cols: tuple[list[float], ...] = ([], [], [], [], [], [])
    counts: list[int] = []
    for bar in bars:
        end = int(bar.date.timestamp()) * 1_000_000 + _MICROS_PER_MINUTE
        # Defensive: whatever the gateway sent, edges must never leak into a neighbour day.
        if not lo <= end < hi:
            continue
        ts.append(end)
        for col, value in zip(
            cols, (bar.open, bar.high, bar.low, bar.close, bar.volume, bar.average), strict=True
        ):
            col.append(float(value))
        counts.append(int(bar.barCount))
    n = len(ts)
    name = str(symbol)
    table = pa.table(
        [
            pa.array(ts, pa.int64()).cast(BAR_SCHEMA.field("ts").type),
            *(pa.array(col, pa.float64()) for col in cols[:5]),
            pa.array([SOURCE] * n, pa.string()),
            pa.array([MARKET] * n, pa.string()),
            pa.array([name] * n, pa.string()),
            pa.array([EXCHANGE] * n, pa.string()),
            pa.array([WHAT_TO_SHOW] * n, pa.string()),
            pa.array(cols[5], pa.float64()),
            pa.array(counts, pa.int64()),
        ],
        schema=BAR_SCHEMA,
    )
    return table.sort_by("ts")
