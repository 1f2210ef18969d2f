"""The simulator's contract catalogue: CRYPTO on PAXOS, matched the way IB matches."""

from __future__ import annotations

import zlib
from dataclasses import dataclass

EXCHANGE = "PAXOS"
SEC_TYPE = "CRYPTO"


@dataclass(frozen=True)
class ContractQuery:
    """The 12 contract fields every request carries."""

    con_id: int
    symbol: str
    sec_type: str
    exchange: str
    currency: str
    local_symbol: str

    @classmethod
    def from_fields(cls, fields: list[str]) -> ContractQuery:
        """Parse ``conId, symbol, secType, lastTrade, strike, right, multiplier, exchange,
        primaryExchange, currency, localSymbol, tradingClass``."""
        con_id = int(fields[0] or 0)
        return cls(
            con_id,
            fields[1].upper(),
            fields[2].upper(),
            fields[7].upper(),
            fields[9].upper(),
            fields[10].upper(),
        )


@dataclass(frozen=True)
class SimContract:
    """A tradable crypto pair of the simulator."""

    symbol: str
    currency: str
    con_id: int

    @property
    def local_symbol(self) -> str:
        return f"{self.symbol}.{self.currency}"

    @property
    def description(self) -> str:
        """How IB names it in HMDS messages, e.g. ``BTC.USD@PAXOS AggTrades``."""
        return f"{self.local_symbol}@{EXCHANGE} AggTrades"


def con_id_of(symbol: str, currency: str) -> int:
    """A stable conId independent of the order of the configured symbols."""
    return 400_000_000 + zlib.crc32(f"{symbol}.{currency}".encode()) % 100_000_000


class Catalogue:
    """Resolve contract queries to simulator contracts."""

    def __init__(self, symbols: tuple[str, ...], currency: str) -> None:
        self.contracts = [SimContract(s, currency, con_id_of(s, currency)) for s in symbols]
        self._by_id = {c.con_id: c for c in self.contracts}

    def match(self, query: ContractQuery) -> list[SimContract]:
        """All contracts a query matches (an empty field matches anything, as at IB)."""
        if query.con_id:
            found = self._by_id.get(query.con_id)
            return [found] if found else []
        if query.sec_type not in ("", SEC_TYPE) or query.exchange not in ("", EXCHANGE, "SMART"):
            return []
        return [
            c
            for c in self.contracts
            if (
                query.symbol in ("", c.symbol)
                and query.currency in ("", c.currency)
                and query.local_symbol in ("", c.local_symbol)
            )
            and (query.symbol or query.local_symbol)
        ]

    def resolve(self, query: ContractQuery) -> SimContract | None:
        """The single contract a data request names, or None."""
        found = self.match(query)
        return found[0] if len(found) == 1 else None

    @staticmethod
    def details_fields(req_id: int, c: SimContract) -> list[object]:
        """``contractDetails`` without version field (server version >= 164)."""
        return [
            10,
            req_id,
            c.symbol,
            SEC_TYPE,
            "",
            0,
            "",
            EXCHANGE,
            c.currency,
            c.local_symbol,
            c.symbol,
            c.symbol,
            c.con_id,
            0.01,
            "",
            "LMT,MKT,STP",
            EXCHANGE,
            1,
            0,
            f"{c.symbol} {c.currency}",
            "",
            "",
            "",
            "",
            "",
            "UTC",
            "",
            "",
            "",
            "",
            0,
            1,
            "",
            "",
            "",
            "",
            "",
            "0.00000001",
            "0.00000001",
            "0.00000001",
        ]
