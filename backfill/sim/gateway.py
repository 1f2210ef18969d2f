"""The IB Gateway simulator: an asyncio TCP server speaking the TWS API wire protocol.

``SimGateway`` runs it in a daemon thread for tests and ``backfill run --gateway sim``;
``serve`` runs it in the foreground for ``backfill gateway``.
"""

from __future__ import annotations

import asyncio
import bisect
import contextlib
import itertools
import math
import signal
import threading
import time
from array import array
from collections import deque
from collections.abc import Awaitable, Callable, Iterable
from dataclasses import dataclass, replace
from datetime import date, datetime, timedelta, timezone
from types import TracebackType
from zoneinfo import ZoneInfo

from backfill.sim import protocol as p
from backfill.sim.behaviour import (
    Behaviour,
    DayDuration,
    HeaderFormat,
    TooLong,
    forming_row,
    overload_reason,
    served_interval,
    session_window_start,
)
from backfill.sim.buckets import DAY_S, SERVED_BAR_SECONDS, aggregate
from backfill.sim.cache import ByteLRU
from backfill.sim.config import SimConfig
from backfill.sim.contracts import Catalogue, ContractQuery, SimContract
from backfill.sim.faults import NO_FAULT, FaultConfig, FaultDecision, decide
from backfill.sim.lifeline import POLL_S, Lifeline
from backfill.sim.market import Market, Row, base_price, days_touching, price_decimals
from backfill.sim.pacing import PACING_TEXT, PacingConfig, PacingRules, RequestKey, Rule
from backfill.sim.records import RequestLog, RequestRecord

UTC = timezone.utc
HMDS = "Historical Market Data Service error message:"
TEXT_NO_SECURITY = "No security definition has been found for the request"
TEXT_AGGTRADES = "Expected what to show is AGGTRADES, please use that instead of TRADES."
TEXT_CLIENT_ID = (
    "Unable to connect as the client id is already in use. Retry with a unique client id."
)
TEXT_TOO_LONG = HMDS + "Time length exceed max."
TEXT_NO_PERMISSION = HMDS + "No market data permissions for PAXOS CRYPTO"
TEXT_COMPETING_162 = HMDS + "Trading TWS session is connected from a different IP address"
TEXT_COMPETING_10197 = "No market data during competing live session"
TEXT_FARM_BROKEN = "HMDS data farm connection is broken:ushmds"
TEXT_FARM_OK = "HMDS data farm connection is OK:ushmds"
TEXT_UPSTREAM_LOST = "Connectivity between IB and Trader Workstation has been lost."
TEXT_UPSTREAM_RESTORED = (
    "Connectivity between IB and Trader Workstation has been restored - data maintained."
)
FARM_MESSAGES = (
    (2104, "Market data farm connection is OK:usfarm"),
    (2106, "HMDS data farm connection is OK:ushmds"),
    (2158, "Sec-def data farm connection is OK:secdefnj"),
)
TEXT_IMPLIED_ZONE = (
    "Warning: You submitted request with date-time attributes without explicit time zone. "
    "Please switch to use yyyymmdd-hh:mm:ss in UTC or use instrument time zone, like "
    "US/Eastern. Implied time zone functionality will be removed in the next API release"
)
_CLIENT_ID_GRACE_S = 0.25


@dataclass(frozen=True)
class EncodedDay:
    """A day's bars as one wire string, with where each bar starts in it and in time."""

    text: str
    offsets: array[int]  # offsets[i]..offsets[i + 1] is bar i's text
    starts: array[int]  # epoch seconds of each bar's START

    @classmethod
    def join(cls, starts: array[int], texts: list[str]) -> EncodedDay:
        offsets = array("q", [0])
        offsets.extend(itertools.accumulate(map(len, texts)))
        return cls("".join(texts), offsets, starts)

    def index(self, start: datetime, stop: datetime) -> tuple[int, int]:
        """Bar indices ``first, stop`` of the bars whose start is in [start, stop)."""
        return (
            bisect.bisect_left(self.starts, start.timestamp()),
            bisect.bisect_left(self.starts, stop.timestamp()),
        )

    @property
    def nbytes(self) -> int:
        # The text is ASCII: one byte a character in CPython's compact strings.
        return len(self.text) + 8 * (len(self.offsets) + len(self.starts))


@dataclass(frozen=True)
class _Ask:
    """A historical request that passed validation: what it asks, and the window it gets."""

    contract: SimContract
    start: datetime
    end: datetime
    fmt: int
    length: timedelta  # as requested; under --day-duration sessions the window is longer
    bar_s: int


@dataclass
class _Open:
    """A data request not yet answered (pending latency, or hung)."""

    req_id: int
    task: asyncio.Task[None] | None
    base: RequestRecord


class _Refused(Exception):
    """A request answered with an IB error."""

    def __init__(self, code: int, text: str, detail: str | None = None) -> None:
        super().__init__(text)
        self.code = code
        self.text = text
        self.detail = detail


class _Server:
    """Gateway state shared by every connection of one session; lives on one event loop."""

    def __init__(self, config: SimConfig, log: RequestLog) -> None:
        self.config = config
        self.log = log
        self.catalogue = Catalogue(config.symbols, config.currency)
        self.faults = config.faults
        self.pacing = PacingRules(config.pacing)
        self.zone = UTC if config.timezone.upper() == "UTC" else ZoneInfo(config.timezone)
        self.zone_name = "UTC" if config.timezone.upper() == "UTC" else config.timezone
        self.clients: dict[int, _Connection] = {}
        self.connections: set[_Connection] = set()
        self.server: asyncio.AbstractServer | None = None
        self.port = 0
        # IB's own servers unreachable from the gateway (1100): data requests go unanswered.
        self.upstream_lost = False
        self.behaviour = config.behaviour
        self.data_requests = 0  # across every connection: the triggers below count these
        self.competing_until: float | None = None  # monotonic; inf: for good
        self.farm_triggered = False
        self.farm_is_down = False
        self.held: list[tuple[_Connection, _Open, Callable[[], None]]] = []
        self.soft_waiting = 0  # requests waiting on the soft throttle now
        self.slowed_since = 0.0  # monotonic; meaningful while soft_waiting > 0
        budget = config.cache_mb << 20
        self.market = Market(
            config.seed,
            no_trade_share=config.no_trade_share,
            listings=dict(config.listings),
            cache_bytes=budget // 4,
        )
        self._encoded: ByteLRU[tuple[str, date, int, bool], EncodedDay] = ByteLRU(
            budget - budget // 4
        )

    async def start(self) -> None:
        self.server = await asyncio.start_server(
            self._accept, self.config.host, self.config.port, limit=1 << 20
        )
        self.port = self.server.sockets[0].getsockname()[1]

    async def close(self) -> None:
        if self.server is not None:
            self.server.close()
        for conn in list(self.connections):
            conn.close()
        if self.server is not None:
            with contextlib.suppress(Exception):
                await asyncio.wait_for(self.server.wait_closed(), 2.0)

    async def _accept(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        conn = _Connection(self, reader, writer)
        self.connections.add(conn)
        try:
            await conn.run()
        finally:
            self.connections.discard(conn)
            conn.close()

    def set_upstream(self, *, lost: bool) -> None:
        """Tell every client, as IB does, that its link to IB's servers is lost or back."""
        if lost == self.upstream_lost:
            return
        self.upstream_lost = lost
        code, text = (1100, TEXT_UPSTREAM_LOST) if lost else (1102, TEXT_UPSTREAM_RESTORED)
        for conn in list(self.connections):
            conn.send_error(-1, code, text)

    def set_farm(self, *, down: bool) -> None:
        """The HMDS farm breaks (2105: requests held) or is back (2106: held ones answered)."""
        if down == self.farm_is_down:
            return
        self.farm_is_down = down
        code, text = (2105, TEXT_FARM_BROKEN) if down else (2106, TEXT_FARM_OK)
        for conn in list(self.connections):
            conn.send_error(-1, code, text)
        if down:
            return
        held, self.held = self.held, []
        for conn, item, proceed in held:
            if conn.open.get(item.req_id) is item:  # not cancelled, connection alive
                del conn.open[item.req_id]
                proceed()

    def session_refusal(self, contract: SimContract) -> _Refused | None:
        """Count a data request; the refusal IB's session state gives it, if any."""
        behaviour = self.behaviour
        self.data_requests += 1
        now = time.monotonic()
        after = behaviour.farm_down_after
        if after is not None and not self.farm_triggered and self.data_requests > after:
            self.farm_triggered = True
            self.set_farm(down=True)
            asyncio.get_running_loop().call_later(
                behaviour.farm_down_for, lambda: self.set_farm(down=False)
            )
        after = behaviour.competing_session_after
        if after is not None and self.competing_until is None and self.data_requests > after:
            lasts = behaviour.competing_session_for
            self.competing_until = math.inf if lasts is None else now + lasts
        if self.competing_until is not None and now < self.competing_until:
            if behaviour.competing_session_code == 10197:
                return _Refused(10197, TEXT_COMPETING_10197, detail="competing session")
            return _Refused(162, TEXT_COMPETING_162, detail="competing session")
        if contract.symbol in behaviour.no_permission:
            return _Refused(162, TEXT_NO_PERMISSION, detail="no permission")
        return None

    def open_count(self) -> int:
        return sum(len(c.open) for c in self.connections)

    def encoded_day(self, symbol: str, day: date, fmt: int) -> EncodedDay:
        """Wire text of a day's bars, cached: encoding is the hot path of a request."""
        # formatDate=1 text depends on the header format (older gateways: no zone name),
        # which set_behaviour may change while the cache holds days.
        key = (symbol, day, fmt, self.behaviour.header_format is HeaderFormat.LOGIN)
        cached = self._encoded.get(key)
        if cached is None:
            columns = self.market.columns(symbol, day)
            cached = EncodedDay.join(columns.starts, self.encode_rows(symbol, columns.rows(), fmt))
            self._encoded.put(key, cached, cached.nbytes)
        return cached

    def encode_rows(
        self, symbol: str, rows: Iterable[Row], fmt: int, *, daily: bool = False
    ) -> list[str]:
        """Each bar's wire fields, NUL-terminated; ``daily`` bars are dated ``yyyymmdd`` in the
        login zone whatever ``formatDate`` (as IB dates bars of a day or more)."""
        decimals = price_decimals(base_price(symbol))
        # Values are already rounded to these decimals, so this text parses back to exactly
        # the same floats (and is 3x cheaper than repr() per field).
        template = "\0".join([f"%.{decimals}f"] * 4 + ["%.8f", f"%.{decimals}f", "%d\0"])
        if daily:
            return [
                datetime.fromtimestamp(row[0], self.zone).strftime("%Y%m%d")
                + "\0"
                + template % row[1:]
                for row in rows
            ]
        if fmt == 2:
            return [f"{row[0]}\0" + template % row[1:] for row in rows]
        return [
            self.format_time(datetime.fromtimestamp(row[0], UTC), fmt) + "\0" + template % row[1:]
            for row in rows
        ]

    def window_rows(self, symbol: str, low: datetime, stop: datetime) -> list[Row]:
        """The 1-minute rows whose start is in [low, stop), in time order."""
        rows: list[Row] = []
        for day in days_touching(low, stop):
            columns = self.market.columns(symbol, day)
            span = columns.index(low, stop)
            rows.extend(columns.rows(span.start, span.stop))
        return rows

    def connection_time(self) -> str:
        """The handshake's time string: now in the login zone, then the zone's name."""
        now = datetime.fromtimestamp(self.config.clock(), UTC).astimezone(self.zone)
        return now.strftime("%Y%m%d %H:%M:%S ") + self.config.timezone

    @property
    def encoded_bytes(self) -> int:
        return self._encoded.nbytes

    def format_time(self, when: datetime, fmt: int) -> str:
        """A bar's time: formatDate 2 epoch seconds; 1 the login zone's wall clock, with its
        name unless the header format is ``login`` (``protocol.bar_time``)."""
        return p.bar_time(when, fmt, self.behaviour.header_format, self.zone, self.zone_name)

    def header_time(self, when: datetime) -> str:
        """A start or end of the header in ``--header-format``, moved by ``--header-shift-s``."""
        behaviour = self.behaviour
        shifted = when + timedelta(seconds=behaviour.header_shift_s)
        return p.header_time(shifted, behaviour.header_format, self.zone, self.zone_name)


class _Connection:
    """One client socket: handshake, then a read loop dispatching on message id."""

    def __init__(
        self, server: _Server, reader: asyncio.StreamReader, writer: asyncio.StreamWriter
    ) -> None:
        self.server = server
        self.reader = reader
        self.writer = writer
        self.client_id = -1
        self.open: dict[int, _Open] = {}
        self.data_requests = 0
        self.closed = asyncio.Event()
        self._msg_times: deque[float] = deque()
        self._registered = False

    # --- plumbing --------------------------------------------------------------------
    def send(self, fields: list[object]) -> None:
        if not self.writer.is_closing():
            self.writer.write(p.frame(fields))

    def send_error(self, req_id: int, code: int, text: str) -> None:
        self.send(p.error_fields(req_id, code, text))

    def close(self) -> None:
        for item in self.open.values():
            if item.task is not None:
                item.task.cancel()
        self.open.clear()
        if self._registered and self.server.clients.get(self.client_id) is self:
            del self.server.clients[self.client_id]
        self._registered = False
        if not self.writer.is_closing():
            self.writer.close()
        self.closed.set()

    async def _read(self) -> list[str]:
        header = await self.reader.readexactly(4)
        size = p.HEADER.unpack(header)[0]
        if size > p.MAX_MESSAGE_BYTES:
            raise p.ProtocolError(f"message of {size} bytes")
        return p.split_fields(await self.reader.readexactly(size))

    def _record(self, **fields: object) -> None:
        now = time.time()
        fields.setdefault("received", now)
        fields.setdefault("answered", now)
        fields.setdefault("client_id", self.client_id)
        fields.setdefault("req_id", -1)
        self.server.log.add(RequestRecord(**fields))  # type: ignore[arg-type]

    # --- lifecycle ---------------------------------------------------------------------
    async def run(self) -> None:
        try:
            if not await self._handshake():
                return
            while True:
                fields = await self._read()
                if not fields:
                    continue
                try:
                    await self._dispatch(fields)
                except (ValueError, IndexError) as exc:
                    # A field of the wrong type or a message cut short: TWS answers 320
                    # and goes on reading.
                    self._unreadable(exc, fields)
        except (asyncio.IncompleteReadError, ConnectionError, p.ProtocolError, OSError):
            pass

    def _unreadable(self, exc: Exception, fields: list[str]) -> None:
        text = (
            str(exc)
            if isinstance(exc, p.UnreadableField)
            else (f"Error reading request. Unable to parse data. {type(exc).__name__}: {exc}")
        )
        self.send_error(-1, 320, text)
        self._record(
            kind="unreadable",
            outcome="error",
            error_code=320,
            detail=f"msg_id={fields[0]!r}: {exc}",
        )

    async def _handshake(self) -> bool:
        prefix = await self.reader.readexactly(len(p.API_PREFIX))
        if prefix != p.API_PREFIX:
            return False
        _low, high = p.parse_version_range((await self._read())[0])
        version = min(high, p.MAX_SERVER_VERSION)
        if version < p.MIN_SERVER_VERSION:
            return False
        self.send([version, self.server.connection_time()])
        fields = await self._read()
        try:
            if not fields or p.parse_int(fields[0]) != p.In.START_API:
                return False
            # ib_insync sends clientId 2**31-1 (its "unset") as an empty field.
            self.client_id = p.parse_int(fields[2] if len(fields) > 2 else "")
        except p.UnreadableField as exc:
            self.send_error(-1, 320, str(exc))
            self._record(
                kind="connect",
                outcome="error",
                error_code=320,
                detail=f"clientId {fields[2] if len(fields) > 2 else None!r}",
            )
            await self._drain()
            return False
        received = time.time()
        other = self.server.clients.get(self.client_id)
        if other is not None:
            # A client that just disconnected may not have been reaped yet: give it a moment.
            with contextlib.suppress(asyncio.TimeoutError):
                await asyncio.wait_for(other.closed.wait(), _CLIENT_ID_GRACE_S)
        if self.client_id in self.server.clients:
            self._record(received=received, kind="connect", outcome="error", error_code=326)
            self.send_error(-1, 326, TEXT_CLIENT_ID)
            await self._drain()
            return False
        self.server.clients[self.client_id] = self
        self._registered = True
        self.send([p.Out.NEXT_VALID_ID, 1, 1])
        self.send([p.Out.MANAGED_ACCTS, 1, self.server.config.account])
        if self.server.config.farm_messages:
            for code, text in FARM_MESSAGES:
                self.send_error(-1, code, text)
        if self.server.upstream_lost:
            self.send_error(-1, 1100, TEXT_UPSTREAM_LOST)
        self._record(received=received, kind="connect", outcome="connected")
        return True

    async def _drain(self) -> None:
        with contextlib.suppress(ConnectionError, OSError):
            await self.writer.drain()

    def _over_message_rate(self) -> bool:
        pacing = self.server.pacing.config
        if not pacing.enabled:
            return False
        now = time.monotonic()
        times = self._msg_times
        while times and times[0] <= now - 1.0:
            times.popleft()
        times.append(now)
        return len(times) > pacing.max_msg_rate

    # --- dispatch ----------------------------------------------------------------------
    async def _dispatch(self, fields: list[str]) -> None:
        msg_id = int(fields[0])
        if self._over_message_rate():
            pos = (
                1
                if msg_id in (p.In.REQ_HISTORICAL_DATA, p.In.REQ_HEAD_TIMESTAMP)
                else (2 if msg_id in (p.In.REQ_CONTRACT_DETAILS, 1) else None)
            )
            req_id = int(fields[pos]) if pos is not None and len(fields) > pos else -1
            limit = self.server.pacing.config.max_msg_rate
            self.send_error(
                req_id,
                100,
                f"Max rate of messages per second has been exceeded:"
                f"max={limit} rec={len(self._msg_times)} (1)",
            )
            self._record(kind="rate_limit", req_id=req_id, outcome="error", error_code=100)
            return
        handler = self._handlers().get(msg_id)
        if handler is not None:
            await handler(fields)
        elif msg_id not in p.SILENT:
            # Refused with the request's own id, so the client's request ends now.
            _name, pos, code = p.UNSERVED.get(msg_id, ("", -1, 322))
            req_id = p.parse_int(fields[pos]) if 0 < pos < len(fields) else -1
            # Recorded before it is answered: whoever sees the answer finds the record.
            self._record(
                kind="unsupported",
                req_id=req_id,
                outcome="error",
                error_code=code,
                detail=f"msg_id={msg_id}",
            )
            self.send_error(req_id, code, p.unserved_text(msg_id, code, req_id))
        await self._drain()

    def _handlers(self) -> dict[int, Callable[[list[str]], Awaitable[None]]]:
        return {
            p.In.REQ_HISTORICAL_DATA: self._historical,
            p.In.CANCEL_HISTORICAL_DATA: self._cancel_historical,
            p.In.REQ_HEAD_TIMESTAMP: self._head_timestamp,
            p.In.REQ_CONTRACT_DETAILS: self._contract_details,
            p.In.REQ_POSITIONS: self._simple(p.Out.POSITION_END, 1),
            p.In.REQ_OPEN_ORDERS: self._simple(p.Out.OPEN_ORDER_END, 1),
            p.In.REQ_ALL_OPEN_ORDERS: self._simple(p.Out.OPEN_ORDER_END, 1),
            # Lists a client waits for with no request id to refuse: answered empty.
            p.In.REQ_FAMILY_CODES: self._simple(p.Out.FAMILY_CODES, 0),
            p.In.REQ_MKT_DEPTH_EXCHANGES: self._simple(p.Out.MKT_DEPTH_EXCHANGES, 0),
            p.In.REQ_NEWS_PROVIDERS: self._simple(p.Out.NEWS_PROVIDERS, 0),
            p.In.REQ_COMPLETED_ORDERS: self._simple(p.Out.COMPLETED_ORDERS_END),
            p.In.REQ_ACCOUNT_UPDATES: self._account_updates,
            p.In.REQ_ACCOUNT_UPDATES_MULTI: self._with_req_id(p.Out.ACCOUNT_UPDATE_MULTI_END),
            p.In.REQ_EXECUTIONS: self._with_req_id(p.Out.EXECUTION_DATA_END),
            # ib_insync asks for it again when IB's connectivity is restored (1102).
            p.In.REQ_ACCOUNT_SUMMARY: self._with_req_id(p.Out.ACCOUNT_SUMMARY_END),
            p.In.REQ_CURRENT_TIME: self._current_time,
            p.In.REQ_IDS: self._simple(p.Out.NEXT_VALID_ID, 1, 1),
        }

    def _simple(self, *answer: object) -> Callable[[list[str]], Awaitable[None]]:
        async def handler(_fields: list[str]) -> None:
            self.send(list(answer))

        return handler

    def _with_req_id(self, out: int) -> Callable[[list[str]], Awaitable[None]]:
        async def handler(fields: list[str]) -> None:
            self.send([out, 1, int(fields[2])])

        return handler

    async def _account_updates(self, fields: list[str]) -> None:
        if fields[2] in ("1", "True"):
            self.send([p.Out.ACCT_DOWNLOAD_END, 1, fields[3] or self.server.config.account])

    async def _current_time(self, _fields: list[str]) -> None:
        self.send([p.Out.CURRENT_TIME, 1, int(self.server.config.clock())])

    async def _contract_details(self, fields: list[str]) -> None:
        req_id = int(fields[2])
        query = ContractQuery.from_fields(fields[3:15])
        found = self.server.catalogue.match(query)
        symbol = query.symbol or query.local_symbol or str(query.con_id)
        if not found:
            self.send_error(req_id, 200, TEXT_NO_SECURITY)
            self._record(
                kind="contract_details",
                req_id=req_id,
                symbol=symbol,
                outcome="error",
                error_code=200,
            )
            return
        self._record(
            kind="contract_details",
            req_id=req_id,
            symbol=symbol,
            outcome="ok",
            detail=",".join(c.symbol for c in found),
        )
        for contract in found:
            self.send(Catalogue.details_fields(req_id, contract))
        self.send([p.Out.CONTRACT_DATA_END, 1, req_id])

    # --- historical data -----------------------------------------------------------------
    async def _historical(self, fields: list[str]) -> None:
        received = time.time()
        req_id = p.parse_int(fields[1])
        query = ContractQuery.from_fields(fields[2:14])
        end_text, bar_size, duration, _rth, what, fmt_text, keep = fields[15:22]
        base = RequestRecord(
            received=received,
            answered=None,
            client_id=self.client_id,
            req_id=req_id,
            kind="historical",
            outcome="",
            symbol=query.symbol or query.local_symbol,
            end=end_text,
            duration=duration,
            bar_size=bar_size,
            what_to_show=what,
        )
        try:
            ask = self._check_historical(
                req_id, query, end_text, bar_size, duration, what, fmt_text, keep
            )
        except _Refused as refused:
            self._refuse(base, refused)
            return
        contract = ask.contract
        base = replace(
            base,
            symbol=contract.symbol,
            window_start=ask.start.isoformat(),
            window_end=ask.end.isoformat(),
        )
        fate = self._fate(base)
        if fate is None:
            return
        refusal = self.server.session_refusal(contract)
        if refusal is not None:
            self._refuse(base, refusal)
            return
        if self.server.upstream_lost:
            # As IB does while it cannot reach its servers: the request is never answered.
            self.open[req_id] = _Open(req_id, None, base)
            self.server.log.add(replace(base, outcome="hung", detail="upstream lost"))
            return

        def proceed() -> None:
            soft_delay = self._pace(base, contract, end_text, bar_size, duration, what, fmt_text)
            if soft_delay is None:
                return
            if ask.bar_s not in SERVED_BAR_SECONDS:
                # IB has these sizes, the simulator's 1-minute market does not: an HMDS
                # refusal (162) that ends the request in every client.
                self._refuse(
                    base,
                    _Refused(
                        162,
                        f"{HMDS}Bar size {bar_size!r} is not served by the simulator for "
                        f"{contract.description}",
                    ),
                )
                return
            if ask.length > timedelta(days=self.server.config.max_duration_days):
                if self.server.behaviour.too_long is TooLong.HANG:
                    self.open[req_id] = _Open(req_id, None, base)
                    self.server.log.add(replace(base, outcome="hung", detail="too long"))
                else:
                    self._refuse(base, _Refused(162, TEXT_TOO_LONG))
                return

            def answer() -> None:
                self._answer_bars(base, contract, ask.start, ask.end, ask.fmt, ask.bar_s)

            self._run_with_faults(base, fate, answer, soft_delay)

        self._hold_or(base, proceed)

    def _hold_or(self, base: RequestRecord, proceed: Callable[[], None]) -> None:
        """Go on now, or, while the HMDS farm is down (2105), once it is back (2106)."""
        if not self.server.farm_is_down:
            proceed()
            return
        item = _Open(base.req_id, None, base)
        self.open[base.req_id] = item
        self.server.held.append((self, item, proceed))

    def _check_historical(
        self,
        req_id: int,
        query: ContractQuery,
        end_text: str,
        bar_size: str,
        duration: str,
        what: str,
        fmt_text: str,
        keep: str,
    ) -> _Ask:
        """Validate in IB's order; the window follows ``--day-duration``."""
        if req_id in self.open:
            raise _Refused(
                322, f"Error processing request.-'bX' : cause - Duplicate ticker id {req_id}"
            )
        contract = self.server.catalogue.resolve(query)
        if contract is None:
            raise _Refused(200, TEXT_NO_SECURITY)
        try:
            bar_s = p.parse_bar_size(bar_size)
            count, unit = p.duration_parts(duration)
            length = p.parse_duration(duration)
            now = datetime.fromtimestamp(self.server.config.clock(), UTC)
            end = p.parse_end_datetime(end_text, now, self.server.config.timezone)
            fmt = int(fmt_text or 1)
            if fmt not in (1, 2):
                raise p.ProtocolError(f"formatDate {fmt_text!r} is invalid")
            if keep in ("1", "True"):
                raise p.ProtocolError("keepUpToDate is not supported by the simulator")
        except (p.ProtocolError, ValueError) as exc:
            raise _Refused(321, f"Error validating request.-'bS' : cause - {exc}") from None
        if p.end_names_no_zone(end_text):
            # TWS 10.17+ warns, then serves the request with the end in the login zone.
            self.send_error(req_id, 2174, TEXT_IMPLIED_ZONE)
        if what.upper() != "AGGTRADES":
            raise _Refused(10299, TEXT_AGGTRADES)
        pacing = self.server.pacing.config
        if pacing.enabled and self.server.open_count() >= pacing.max_open:
            raise _Refused(
                322,
                "Error processing request.-'bX' : cause - Maximum number of "
                f"simultaneous historical data requests exceeded ({pacing.max_open})",
            )
        behaviour = self.server.behaviour
        start = end - length
        if unit == "D" and behaviour.day_duration is DayDuration.SESSIONS:
            start = session_window_start(end, count, self.server.zone, behaviour.session_break)
        return _Ask(contract, start, end, fmt, length, bar_s)

    def _pace(self, base: RequestRecord, contract: SimContract, *identity: str) -> float | None:
        """Apply the session's pacing rules: the soft delay, or None when refused (162) or
        when the soft throttle's backlog drops the connection (``--overload disconnect``)."""
        key = RequestKey(
            contract=f"{contract.con_id}|AGGTRADES",
            identity=f"{contract.con_id}|" + "|".join(identity),
            bar_seconds=p.BAR_SIZES[identity[1]],
        )
        server = self.server
        now = time.monotonic()
        verdict = server.pacing.check(now, key)
        if not verdict.allowed:
            rule = verdict.rule.value if isinstance(verdict.rule, Rule) else None
            self._refuse(base, _Refused(162, PACING_TEXT, detail=rule))
            return None
        if verdict.delay_s > 0:
            slowed_for = now - server.slowed_since if server.soft_waiting else 0.0
            reason = overload_reason(server.behaviour, server.soft_waiting, slowed_for)
            if reason is not None:
                server.pacing.release_soft_slot(now)
                server.log.add(
                    replace(base, answered=time.time(), outcome="dropped", detail=reason)
                )
                self.close()
                return None
        return verdict.delay_s

    def _refuse(self, base: RequestRecord, refused: _Refused, outcome: str = "error") -> None:
        self.server.log.add(
            replace(
                base,
                answered=time.time(),
                outcome=outcome,
                error_code=refused.code,
                detail=refused.detail,
            )
        )
        self.send_error(base.req_id, refused.code, refused.text)

    def _fate(self, base: RequestRecord) -> FaultDecision | None:
        """Decide this data request's faults; None when it drops the connection.

        Decided before pacing: a request lost with its connection never reached HMDS, so it
        must not count against the client's retry.
        """
        self.data_requests += 1
        faults: FaultConfig = self.server.faults
        if not faults.active:
            return NO_FAULT
        fate = decide(faults, self.client_id, self.data_requests)
        if fate.drop:
            self.server.log.add(replace(base, outcome="dropped", detail="fault"))
            self.close()
            return None
        return fate

    def _run_with_faults(
        self,
        base: RequestRecord,
        fate: FaultDecision,
        answer: Callable[[], None],
        soft_delay: float = 0.0,
    ) -> None:
        """Answer now, later, never, or with a transient error, as the faults decide."""
        faults: FaultConfig = self.server.faults
        if fate.hang:
            self.open[base.req_id] = _Open(base.req_id, None, base)
            self.server.log.add(replace(base, outcome="hung", detail="fault"))
            return
        if fate.error:

            def answer_error() -> None:
                code = faults.error_code
                self._refuse(
                    base,
                    _Refused(code, faults.error_text.format(req_id=base.req_id), detail="fault"),
                )

            answer = answer_error
        delay = fate.latency_s + soft_delay
        if delay <= 0:
            answer()
            return

        async def later() -> None:
            await asyncio.sleep(delay)
            self.open.pop(base.req_id, None)
            answer()
            await self._drain()

        task = asyncio.get_running_loop().create_task(later())
        self.open[base.req_id] = _Open(base.req_id, task, base)
        if soft_delay > 0:
            self._wait_on_soft_throttle(task)

    def _wait_on_soft_throttle(self, task: asyncio.Task[None]) -> None:
        """Count ``task`` in the soft throttle's queue until it is answered or dropped."""
        server = self.server
        if server.soft_waiting == 0:
            server.slowed_since = time.monotonic()
        server.soft_waiting += 1

        def done(finished: asyncio.Task[None]) -> None:
            server.soft_waiting -= 1
            if finished.cancelled():  # cancelled, or its connection lost: its slot is free
                server.pacing.release_soft_slot(time.monotonic())

        task.add_done_callback(done)

    def _answer_bars(
        self,
        base: RequestRecord,
        contract: SimContract,
        start: datetime,
        stop: datetime,
        fmt: int,
        bar_s: int = 60,
    ) -> None:
        server = self.server
        behaviour = server.behaviour
        clock = server.config.clock()
        now = datetime.fromtimestamp(clock, UTC)
        low, high = served_interval(start, stop, behaviour.window_edges)
        # Only completed minutes exist yet: a bar is a pure function of its minute.
        completed = min(high, now - timedelta(minutes=1) + timedelta(microseconds=1))
        chunks: list[str] = []
        count = 0
        listing = server.market.listing(contract.symbol)
        forming = (
            self._forming_bar(contract, clock, low, high, listing)
            if behaviour.partial_last_bar
            else None
        )
        if bar_s != 60:
            rows = server.window_rows(contract.symbol, max(low, listing), completed)
            if forming is not None:
                rows.append(forming)
            decimals = price_decimals(base_price(contract.symbol))
            merged = aggregate(rows, bar_s, server.zone, decimals)
            chunks = server.encode_rows(contract.symbol, merged, fmt, daily=bar_s == DAY_S)
            count = len(merged)
        else:
            for day in days_touching(max(low, listing), completed):
                encoded = server.encoded_day(contract.symbol, day, fmt)
                first, stop_at = encoded.index(low, completed)
                chunks.append(encoded.text[encoded.offsets[first] : encoded.offsets[stop_at]])
                count += stop_at - first
            if forming is not None:
                chunks.extend(server.encode_rows(contract.symbol, [forming], fmt))
                count += 1
        if count == 0:
            text = f"{HMDS}HMDS query returned no data: {contract.description}"
            self._refuse(base, _Refused(162, text), outcome="no_data")
            return
        server.log.add(replace(base, answered=time.time(), outcome="bars", bars=count))
        # IB's header is the window served, as text in --header-format whatever formatDate.
        head = (
            f"{p.Out.HISTORICAL_DATA:d}\0{base.req_id}\0{server.header_time(start)}\0"
            f"{server.header_time(min(stop, now))}\0{count}\0"
        )
        if not self.writer.is_closing():
            self.writer.write(p.frame_text(head + "".join(chunks)))

    def _forming_bar(
        self,
        contract: SimContract,
        clock: float,
        low: datetime,
        high: datetime,
        listing: datetime,
    ) -> Row | None:
        """The bar of the minute still under way at ``clock``, if the window holds it."""
        minute = datetime.fromtimestamp(clock // 60 * 60, UTC)
        if not (low <= minute < high and minute >= listing):
            return None
        columns = self.server.market.columns(contract.symbol, minute.date())
        span = columns.index(minute, minute + timedelta(minutes=1))
        if not span:
            return None  # no trade in this minute
        row = next(columns.rows(span.start, span.stop))
        return forming_row(row, clock, price_decimals(base_price(contract.symbol)))

    async def _cancel_historical(self, fields: list[str]) -> None:
        req_id = p.parse_int(fields[2])
        item = self.open.pop(req_id, None)
        if item is None:
            self.send_error(req_id, 366, f"No historical data query found for ticker id:{req_id}")
            self._record(kind="cancel", req_id=req_id, outcome="error", error_code=366)
            return
        code = self.server.behaviour.cancel_answer
        if item.task is not None:
            item.task.cancel()
            self.server.log.add(
                replace(item.base, answered=time.time(), outcome="cancelled", error_code=code)
            )
        else:
            self._record(
                kind="cancel",
                req_id=req_id,
                symbol=item.base.symbol,
                outcome="cancelled",
                error_code=code,
            )
        if code == 366:  # IB's other answer to a cancel (ib_async issue 88)
            self.send_error(req_id, 366, f"No historical data query found for ticker id:{req_id}")
        else:
            self.send_error(req_id, 162, f"{HMDS}API historical data query cancelled: {req_id}")

    # --- head timestamp --------------------------------------------------------------------
    async def _head_timestamp(self, fields: list[str]) -> None:
        received = time.time()
        req_id = p.parse_int(fields[1])
        query = ContractQuery.from_fields(fields[2:14])
        _expired, _rth, what, fmt_text = fields[14:18]
        base = RequestRecord(
            received=received,
            answered=None,
            client_id=self.client_id,
            req_id=req_id,
            kind="head_timestamp",
            outcome="",
            symbol=query.symbol or query.local_symbol,
            what_to_show=what,
        )
        contract = self.server.catalogue.resolve(query)
        if contract is None:
            self._refuse(base, _Refused(200, TEXT_NO_SECURITY))
            return
        if what.upper() != "AGGTRADES":
            self._refuse(base, _Refused(10299, TEXT_AGGTRADES))
            return
        fmt = 2 if fmt_text == "2" else 1

        def answer() -> None:
            first = self.server.market.first_bar(contract.symbol)
            self.server.log.add(
                replace(base, answered=time.time(), outcome="ok", window_start=first.isoformat())
            )
            self.send([p.Out.HEAD_TIMESTAMP, req_id, self.server.format_time(first, fmt)])

        fate = self._fate(base)
        if fate is None:
            return
        refused = self.server.session_refusal(contract)
        if refused is not None:
            self._refuse(base, refused)
            return
        self._hold_or(base, lambda: self._run_with_faults(base, fate, answer))


class SimGateway:
    """The simulator in a daemon thread with its own event loop; a context manager."""

    def __init__(self, config: SimConfig | None = None) -> None:
        self.config = config or SimConfig()
        self.log = RequestLog(self.config.log_path, keep=self.config.keep_requests)
        self._server: _Server | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None

    @property
    def host(self) -> str:
        return self.config.host

    @property
    def port(self) -> int:
        if self._server is None:
            raise RuntimeError("gateway not started")
        return self._server.port

    @property
    def market(self) -> Market:
        """The bar oracle the gateway serves from."""
        if self._server is None:
            return Market(
                self.config.seed,
                no_trade_share=self.config.no_trade_share,
                listings=dict(self.config.listings),
            )
        return self._server.market

    def start(self) -> SimGateway:
        """Start listening; returns once the port is bound."""
        if self._thread is not None:
            return self
        ready = threading.Event()
        failure: list[BaseException] = []
        loop = asyncio.new_event_loop()
        server = _Server(self.config, self.log)

        def run() -> None:
            asyncio.set_event_loop(loop)
            try:
                loop.run_until_complete(server.start())
            except BaseException as exc:
                failure.append(exc)
                ready.set()
                return
            ready.set()
            loop.run_forever()
            loop.run_until_complete(server.close())
            loop.close()

        self._thread = threading.Thread(target=run, name="sim-gateway", daemon=True)
        self._thread.start()
        ready.wait()
        if failure:
            self._thread = None
            raise failure[0]
        self._server, self._loop = server, loop
        return self

    def stop(self) -> None:
        """Close every connection and the listening socket."""
        if self._thread is None or self._loop is None:
            return
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(5.0)
        self._thread = None
        self.log.close()

    @property
    def cached_bytes(self) -> int:
        """Bytes of generated and encoded days held now (within ``cache_mb``)."""
        if self._server is None:
            return 0
        return self._server.market.cached_bytes + self._server.encoded_bytes

    def requests(self) -> list[RequestRecord]:
        """The request log so far, in the order requests were settled (``keep_requests``)."""
        return self.log.records()

    def set_faults(self, faults: FaultConfig) -> None:
        """Swap the fault config at runtime (takes effect for the next request)."""
        self._call(lambda server: setattr(server, "faults", faults))

    def set_pacing(self, pacing: PacingConfig) -> None:
        """Replace the pacing rules (and forget their history)."""
        self._call(lambda server: setattr(server, "pacing", PacingRules(pacing)))

    def set_behaviour(self, behaviour: Behaviour) -> None:
        """Swap the switches of ``Behaviour`` at runtime (the next request sees them)."""
        self._call(lambda server: setattr(server, "behaviour", behaviour))

    def farm_down(self) -> None:
        """The HMDS farm breaks: 2105 to every client; data requests held until ``farm_up``."""
        self._call(lambda server: server.set_farm(down=True))

    def farm_up(self) -> None:
        """The HMDS farm is back: 2106 to every client, then the held requests are answered."""
        self._call(lambda server: server.set_farm(down=False))

    def drop_connections(self) -> None:
        """Close every client connection now, as a gateway restart would."""

        def close_all(server: _Server) -> None:
            for conn in list(server.connections):
                conn.close()

        self._call(close_all)

    def lose_upstream(self) -> None:
        """IB's servers become unreachable: error 1100 to every client, data requests hang."""
        self._call(lambda server: server.set_upstream(lost=True))

    def restore_upstream(self) -> None:
        """IB's servers are back: error 1102 to every client; new requests are answered."""
        self._call(lambda server: server.set_upstream(lost=False))

    def open_requests(self) -> int:
        """Data requests received and not yet settled (waiting, hung or held)."""
        count = self._call(lambda server: server.open_count())
        return count if isinstance(count, int) else 0

    def _call(self, action: Callable[[_Server], object]) -> object:
        """Run ``action`` on the gateway's loop; its result."""
        if self._server is None or self._loop is None:
            raise RuntimeError("gateway not started")
        done = threading.Event()
        server = self._server
        result: list[object] = []

        def run() -> None:
            try:
                result.append(action(server))
            finally:
                done.set()

        self._loop.call_soon_threadsafe(run)
        done.wait(5.0)
        return result[0] if result else None

    def __enter__(self) -> SimGateway:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()


async def serve(config: SimConfig, ready: Callable[[str, int], None], stop: asyncio.Event) -> None:
    """Run the gateway on the current loop until ``stop`` is set (the CLI's foreground mode)."""
    log = RequestLog(config.log_path, keep=config.keep_requests)
    server = _Server(config, log)
    await server.start()
    ready(config.host, server.port)
    try:
        await stop.wait()
    finally:
        await server.close()
        log.close()


def run_forever(
    config: SimConfig, announce: Callable[[str, int], None], lifeline: Lifeline | None = None
) -> None:
    """Serve in the foreground until SIGINT or SIGTERM, or until ``lifeline``'s process dies."""

    async def main() -> None:
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()

        def request_stop(_signum: int, _frame: object) -> None:
            loop.call_soon_threadsafe(stop.set)

        async def watch(line: Lifeline) -> None:
            while line.alive():
                await asyncio.sleep(POLL_S)
            stop.set()

        previous = {
            sig: signal.signal(sig, request_stop) for sig in (signal.SIGINT, signal.SIGTERM)
        }
        watcher = None if lifeline is None else asyncio.create_task(watch(lifeline))
        try:
            await serve(config, announce, stop)
        finally:
            if watcher is not None:
                watcher.cancel()
            for sig, handler in previous.items():
                signal.signal(sig, handler)

    asyncio.run(main())
