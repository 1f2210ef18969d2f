"""The IB session: the one module that uses the IB client library (``ib/client.py`` picks
ib_async or ib_insync; both behave the same here).

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
from datetime import date, datetime
from typing import TYPE_CHECKING, TypeVar

from backfill.domain import EXCHANGE, MARKET, SOURCE, UTC, WHAT_TO_SHOW, Symbol, Window
from backfill.edges import DEFAULT_RULE, EdgeRule, request_for
from backfill.ib.client import NAME, BarDataList, Contract, RequestError, new_ib
from backfill.ib.served import HeaderClock, LoginZone, ServedWindow, login_zone

if TYPE_CHECKING:
    import pyarrow as pa

# The client logs every IB error at ERROR level; the worker reports them as events instead,
# so its log must not scribble over the dashboard.
_ib_logger = logging.getLogger(NAME)
_ib_logger.addHandler(logging.NullHandler())
_ib_logger.propagate = False

T = TypeVar("T")
_MICROS_PER_MINUTE = 60_000_000
UPSTREAM_LOST = 1100  # connectivity between IB and the gateway lost
UPSTREAM_RESTORED = (1101, 1102)  # restored, data lost / data maintained
HMDS_BROKEN = 2105  # "HMDS data farm connection is broken": history is not served until 2106
HMDS_OK = 2106
# Data-farm status lines: information, never an error (ib_insync logs them as warnings).
INFORMATION_CODES = frozenset({2104, 2106, 2107, 2108, 2158})
DEFAULT_EDGES = EdgeRule.parse(DEFAULT_RULE)
COMPETING_SESSION = 10197  # "No market data during competing live session"


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


class NoPermission(IBSessionError):
    """IB error 162 "No market data permissions for ..." (or 354): the symbol cannot be read.

    Fatal for the symbol at once: asking its other days again cannot help.
    """

    retryable = False


class SessionBlocked(IBSessionError):
    """The account's market data is taken by another session (10197, or 162 "Trading TWS
    session is connected from a different IP address"): nothing is served until it goes."""


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
    # The window IB's header says it served (bar START times, UTC); None when the header
    # could not be read (a zone we cannot name), is untrusted, or IB said "no data".
    served_start: datetime | None = None
    served_end: datetime | None = None
    answered_at: float = 0.0  # wall clock, when the answer arrived


@dataclass(frozen=True)
class Answer:
    """A probe request's answer as IB sent it (``IBSession.ask``)."""

    starts: list[datetime]  # bar START times, UTC
    served: ServedWindow | None  # the header's window (None: unreadable, or no data)
    latency_s: float
    answered_at: float  # wall clock
    no_data: bool
    last_bar: list[tuple[datetime, float, int]]  # (start, volume, trade count) of the last
    header: tuple[str, str] | None = None  # the served window's start and end as sent


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
    return Contract(secType="CRYPTO", symbol=symbol.base, currency=symbol.quote, exchange=EXCHANGE)


def classify_error(code: int, text: str, *, bars: bool = False) -> IBSessionError | None:
    """Turn an IB error into a typed one; None means IB said 'no data'.

    ``bars``: the error ended a historical-bars request, where IB's validation error 321 is
    how a too-long duration can come back (with 162 "Time length exceed max" or "invalid
    step", the other ways seen on real gateways).
    """
    lowered = text.lower()
    if "no market data permissions" in lowered or code == 354:
        return NoPermission(f"IB error {code}: {text}")
    if code == COMPETING_SESSION or "different ip address" in lowered:
        return SessionBlocked(f"IB error {code}: {text}")
    if code == 162:
        if "pacing violation" in lowered:
            return PacingViolation(text)
        if "returned no data" in lowered:
            return None
        if _too_long(lowered):
            return DurationTooLong(text)
        if "cancelled" in lowered:
            return IBError(code, text)
    if code == 321 and (bars or _too_long(lowered)):
        return DurationTooLong(f"IB error {code}: {text}")
    if code == 322:
        return PacingViolation(text)
    if code in (502, 504, 1100):
        return Disconnected(text)
    return IBError(code, text)


def _minute_time(when: date) -> datetime:
    """A minute bar's time as the client gives it: a datetime (typed ``date | datetime``
    because daily bars carry a plain date, which no request here asks for)."""
    if not isinstance(when, datetime):
        raise IBError(0, f"unexpected bar time {when!r} for a 1-minute bar")
    return when


def _too_long(lowered: str) -> bool:
    return any(k in lowered for k in ("time length exceed", "invalid step", "duration"))


class IBSession:
    """One API connection with one clientId, used from one asyncio loop."""

    def __init__(self, host: str, port: int, client_id: int, *, timeout_s: float = 10.0) -> None:
        self.host = host
        self.port = port
        self.client_id = client_id
        self.timeout_s = timeout_s
        self._ib = new_ib()  # either client: a refusal (321) ends its request at once
        self._ib.RaiseRequestErrors = True
        # IB's link from the gateway to its servers (1100 lost, 1101/1102 back): while it is
        # down requests go unanswered, so the worker holds them rather than burn attempts.
        self.upstream_lost_since: float | None = None
        self.upstream_last_lost: float | None = None
        # IB's historical farm (2105 broken, 2106 OK): held the same way, for its own reason.
        self.hmds_down_since: float | None = None
        # Another session holds the account's market data (10197, "different IP address"):
        # no message says when it ends, so the worker retries slowly; an answer clears it.
        self.blocked_since: float | None = None
        self.blocked_text = ""
        self._ib.errorEvent += self._on_session_message
        self._contracts: dict[Symbol, Contract] = {}
        # The header of each historical answer (served window), kept by reqId: ib_insync's
        # decoder hands it to historicalDataEnd, whose own version drops it.
        self._served: dict[int, tuple[str, str]] = {}
        self.login_zone = LoginZone("", None)
        # How the served-window header reads: learned at start-up (``ib.served.learn_clock``)
        # and set by the run; untrusted, no header is read (the asked window is taken).
        self.header_clock = HeaderClock()
        self._hook_client()

    @property
    def connected(self) -> bool:
        return self._ib.isConnected()

    def upstream_lost_after(self, moment: float) -> bool:
        """Whether IB reported its connectivity lost at or after ``moment`` (monotonic)."""
        return self.upstream_last_lost is not None and self.upstream_last_lost >= moment

    def hold(self) -> tuple[float, str] | None:
        """(since, why) while IB says nothing will be answered (1100 or 2105), else None."""
        if self.upstream_lost_since is not None:
            return self.upstream_lost_since, "IB connectivity lost (1100)"
        if self.hmds_down_since is not None:
            return self.hmds_down_since, "IB's historical data farm is down (2105)"
        return None

    def _on_session_message(self, req_id: int, code: int, text: str, contract: object) -> None:
        now = time.monotonic()
        if code in (UPSTREAM_LOST, HMDS_BROKEN):
            self.upstream_last_lost = now
        if code == UPSTREAM_LOST:
            if self.upstream_lost_since is None:
                self.upstream_lost_since = now
        elif code in UPSTREAM_RESTORED:
            self.upstream_lost_since = None
        elif code == HMDS_BROKEN:
            if self.hmds_down_since is None:
                self.hmds_down_since = now
        elif code == HMDS_OK:
            self.hmds_down_since = None
        elif isinstance(classify_error(code, text), SessionBlocked):
            if self.blocked_since is None:
                self.blocked_since = now
            self.blocked_text = f"IB error {code}: {text}"

    def _hook_client(self) -> None:
        """Catch the two things ib_insync reads and drops: the handshake's connection time
        (it names the login time zone) and each historical answer's served window."""
        client, wrapper = self._ib.client, self._ib.wrapper
        client_on_data = client._onSocketHasData

        def on_data(data: bytes) -> None:
            if not client._serverVersion:
                # The handshake answer is one frame of two fields: version, connection time.
                buffer = client._data + data
                if len(buffer) > 4:
                    end = 4 + int.from_bytes(buffer[:4], "big")
                    fields = buffer[4:end].decode(errors="replace").split("\0")
                    if len(buffer) >= end and len(fields) == 3:
                        self.login_zone = login_zone(fields[1])
            client_on_data(data)

        client.conn.hasData -= client_on_data
        client.conn.hasData += on_data
        wrapper_end = wrapper.historicalDataEnd

        def historical_data_end(req_id: int, start: str, end: str) -> None:
            self._served[req_id] = (start, end)
            wrapper_end(req_id, start, end)

        wrapper.historicalDataEnd = historical_data_end

    async def connect(self) -> None:
        """Connect read-only; raises ClientIdInUse on 326, GatewayUnreachable otherwise."""
        id_in_use = asyncio.Event()

        def on_error(req_id: int, code: int, text: str, contract: object) -> None:
            if code == 326:
                id_in_use.set()

        self._ib.errorEvent += on_error
        connecting = asyncio.ensure_future(
            self._ib.connectAsync(
                self.host,
                self.port,
                clientId=self.client_id,
                timeout=self.timeout_s,
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
        contract = details[0].contract if details else None
        if contract is None:  # typed Optional by the client; IB always fills it in
            raise UnknownSymbol(symbol)
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

    async def bar_starts(
        self, symbol: Symbol, end: datetime, duration: str, *, timeout_s: float | None = None
    ) -> list[datetime]:
        """The START of every bar served for ``duration`` ending at ``end``, as sent (no
        trimming): what a probe of the gateway's behaviour needs. IB's no-data is []."""
        return (await self.ask(symbol, end, duration, timeout_s=timeout_s)).starts

    async def ask(
        self, symbol: Symbol, end: datetime, duration: str, *, timeout_s: float | None = None
    ) -> Answer:
        """One request of 1-minute bars as given (``end`` UTC, ``duration`` IB's text), its
        answer as sent: bar starts, the window the header says was served, timing. IB's
        no-data is an empty answer; every other failure is typed as for windows."""
        contract = await self.qualify(symbol)
        sent_at = time.monotonic()
        req_id, future, container = self._request_bars(contract, end, duration)
        no_data = False
        try:
            await self._answer(
                asyncio.shield(future),
                timeout_s=timeout_s,
                bars=True,
                no_data_ok=True,
                timed_out=f"no answer for {symbol} {duration} to {end:%Y-%m-%d %H:%M}",
                lost=f"connection lost during {symbol} {duration}",
                on_timeout=lambda: self._cancel_historical(req_id),
            )
        except _NoData:
            no_data = True
        finally:
            header = self._served.pop(req_id, None)
        served = self.header_clock.read(*header, self.login_zone) if header else None
        times = [_minute_time(b.date) for b in container]
        starts = [t if t.tzinfo else t.replace(tzinfo=UTC) for t in times]
        return Answer(
            starts,
            served,
            time.monotonic() - sent_at,
            time.time(),
            no_data,
            [(times[-1], float(b.volume), int(b.barCount)) for b in container[-1:]],
            header,
        )

    def send_window(
        self,
        symbol: Symbol,
        window: Window,
        rule: EdgeRule = DEFAULT_EDGES,
        *,
        in_seconds: bool = False,
    ) -> SentWindow:
        """Send the request for one window now (the symbol must be qualified already), as
        the gateway's edge rule needs it to cover the window's days whole.

        Sending is synchronous so that a pacer can note the request at the very moment its
        bytes leave: IB times its pacing rules on arrival.
        """
        contract = self._contracts.get(symbol)
        if contract is None:
            raise IBError(0, f"{symbol} is not qualified on this session")
        request = request_for(window, rule, in_seconds=in_seconds)
        req_id, future, container = self._request_bars(contract, request.end, request.duration)
        return SentWindow(symbol, window, req_id, future, container, time.monotonic())

    def _request_bars(
        self, contract: Contract, end: datetime, duration: str
    ) -> tuple[int, asyncio.Future, BarDataList]:
        """Send one request of 1-minute AGGTRADES bars (UTC, epoch bar times) now."""
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
            req_id,
            contract,
            end.strftime("%Y%m%d %H:%M:%S UTC"),
            duration,
            "1 min",
            WHAT_TO_SHOW,
            False,
            2,
            False,
            [],
        )
        return req_id, future, container

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
                bars=True,
                on_timeout=lambda: self._cancel_historical(sent.req_id),
            )
        except _NoData:
            self.blocked_since = None  # an answer: nothing blocks the session any more
            latency = time.monotonic() - sent.sent_at
            from backfill.lake.schema import BAR_SCHEMA  # see bars_to_table

            return WindowBars(
                window, BAR_SCHEMA.empty_table(), True, latency, answered_at=time.time()
            )
        finally:
            header = self._served.pop(sent.req_id, None)
        answered_at = time.time()
        latency = time.monotonic() - sent.sent_at
        served = self.header_clock.read(*header, self.login_zone) if header else None
        if not sent.bars:
            raise EmptyAnswer(f"empty answer for {symbol} {window} without IB's no-data")
        self.blocked_since = None
        return WindowBars(
            window,
            bars_to_table(symbol, window, sent.bars, answered_at=answered_at),
            False,
            latency,
            served.start if served else None,
            served.end if served else None,
            answered_at,
        )

    async def _answer(
        self,
        request: Awaitable[T],
        *,
        timed_out: str,
        lost: str = "",
        timeout_s: float | None = None,
        no_data_ok: bool = False,
        bars: bool = False,
        on_timeout: Callable[[], None] | None = None,
    ) -> T:
        """Await one ib_insync request, its failures typed: the one place IB's errors are
        mapped. IB's explicit no-data raises ``_NoData`` when ``no_data_ok``, else it is an
        ``IBError``; ``on_timeout`` runs before ``RequestTimeout`` is raised. ``bars``: a
        historical-bars request (see ``classify_error``)."""
        try:
            return await asyncio.wait_for(request, timeout_s or self.timeout_s)
        except RequestError as exc:
            error = classify_error(exc.code, exc.message, bars=bars)
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


def bars_to_table(
    symbol: Symbol, window: Window, bars: list, *, answered_at: float | None = None
) -> pa.Table:
    """IB bars (stamped by start) → lake rows (stamped by end), keeping only the window's.

    A bar whose minute had not ended by ``answered_at`` (wall clock) was still forming
    when IB served it: it is dropped, never kept.
    """
    # Imported here: the workers have pyarrow loaded (their forkserver preloads it); the
    # run's parent asks only the gateway check, which needs none, before its first request.
    import pyarrow as pa

    from backfill.lake.schema import BAR_SCHEMA

    lo = int(window.ts_start.timestamp()) * 1_000_000
    hi = int(window.ts_stop.timestamp()) * 1_000_000
    if answered_at is not None:
        hi = min(hi, int(answered_at * 1_000_000) + 1)
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
