"""``backfill probe``: measure what a gateway does where IB's documentation is silent.

About 20 requests for one symbol, spaced within IB's strictest rules (no identical request,
at most 5 per contract in 2 s, far under 60 in 10 minutes). Each finding keeps its evidence:
the requests, the bars served, the window IB's header says it served.
"""

from __future__ import annotations

import asyncio
import statistics
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime, time, timedelta
from typing import Any

from backfill.domain import UTC, Symbol
from backfill.ib import client as ib_client
from backfill.ib.edges import learn_edges
from backfill.ib.session import (
    Answer,
    DurationTooLong,
    IBSession,
    IBSessionError,
    NoPermission,
    RequestTimeout,
    connect_free_id,
)

KEYS = (
    "window_edges",
    "day_duration",
    "max_window_days",
    "latency_s",
    "future_end",
    "aggtrades",
    "header_format",
    "header_clock",
)
WINDOW_DAYS_TRIED = (1, 2, 3, 5, 7, 10)
IN_FLIGHT_TRIED = (1, 2, 4)


@dataclass(frozen=True)
class ProbeSettings:
    pause_s: float = 0.45  # between requests: 5 per contract in 2 s, with a margin
    batch_gap_s: float = 2.2  # before a batch sent at once (IB's 2 s contract window)
    timeout_s: float = 30.0  # a request unanswered this long is taken as refused


@dataclass
class ProbeReport:
    symbol: Symbol
    checked_at: datetime
    findings: dict[str, Any] = field(default_factory=dict)
    evidence: dict[str, list[dict[str, Any]]] = field(default_factory=dict)
    unanswered: dict[str, str] = field(default_factory=dict)  # key -> why
    requests: int = 0

    def to_json(self, gateway: str) -> dict[str, Any]:
        doc: dict[str, Any] = {key: self.findings.get(key) for key in KEYS}
        doc.update(
            gateway=gateway,
            symbol=str(self.symbol),
            checked_at=self.checked_at.isoformat(),
            requests=self.requests,
            unanswered=self.unanswered,
            evidence=self.evidence,
        )
        doc.update(client=ib_client.NAME, client_version=ib_client.VERSION)
        return doc


def _iso(when: datetime | None) -> str | None:
    return when.isoformat() if when else None


def _record(end: datetime, duration: str, answer: Answer | None, error: str = "") -> dict:
    entry: dict[str, Any] = {"end": end.isoformat(), "duration": duration}
    if answer is not None:
        entry.update(
            bars=len(answer.starts),
            no_data=answer.no_data,
            first_bar=_iso(answer.starts[0] if answer.starts else None),
            last_bar=_iso(answer.starts[-1] if answer.starts else None),
            served=[_iso(answer.served.start), _iso(answer.served.end)] if answer.served else None,
            latency_s=round(answer.latency_s, 4),
        )
    if error:
        entry["error"] = error
    return entry


async def probe(
    session: IBSession,
    symbol: Symbol,
    now: datetime,
    settings: ProbeSettings,
    progress: Callable[[str], None] = lambda _: None,
) -> ProbeReport:
    """Every finding of ``KEYS`` it can get; what it cannot is in ``unanswered``."""
    report = ProbeReport(symbol, now)
    today = datetime.combine(now.date(), time(), UTC)

    async def ask(key: str, end: datetime, duration: str) -> Answer | None:
        await asyncio.sleep(settings.pause_s if report.requests else 0.0)
        report.requests += 1
        try:
            answer = await session.ask(symbol, end, duration, timeout_s=settings.timeout_s)
        except IBSessionError as exc:
            report.evidence.setdefault(key, []).append(_record(end, duration, None, str(exc)))
            raise
        report.evidence.setdefault(key, []).append(_record(end, duration, answer))
        return answer

    # Window edges, and with them whether the account may read AGGTRADES history at all.
    progress("window edges (2 requests)")
    anchors = [
        today - timedelta(days=1) + timedelta(hours=12),
        today - timedelta(days=2) + timedelta(hours=12),
    ]
    try:
        found = await learn_edges(session, symbol, anchors, pause_s=settings.pause_s)
    except NoPermission as exc:
        report.findings["aggtrades"] = str(exc)
        for key in KEYS:
            if key != "aggtrades":
                report.unanswered[key] = f"no permission: {exc}"
        report.requests += 1
        return report
    report.requests += found.requests
    report.evidence["window_edges"] = [found.evidence]
    # The same answers' headers: how this gateway writes the window it served, and how
    # the findings below read it.
    session.header_clock = found.clock
    report.evidence["header_format"] = [found.evidence.get("header", {})]
    if found.clock.format:
        report.findings["header_format"] = found.clock.format
        report.findings["header_clock"] = found.clock.reading
    else:
        report.unanswered["header_format"] = report.unanswered["header_clock"] = (
            "no answer with a header"
        )
    if found.rule.known:
        report.findings["window_edges"] = found.rule.text
        report.findings["aggtrades"] = "permitted"
    else:
        report.unanswered["window_edges"] = "no two bars 10 minutes apart were served"
        report.unanswered["aggtrades"] = "no bars were served"

    # "N D": calendar days, or sessions of IB's calendar (the header says which it served).
    progress('"2 D" and "7 D"')
    wednesday = today - timedelta(days=(today.weekday() - 2) % 7 or 7)
    end = wednesday + timedelta(days=1) - timedelta(minutes=1)
    verdicts: list[bool] = []
    for days in (2, 7):
        try:
            answer = await ask("day_duration", end, f"{days} D")
        except (DurationTooLong, RequestTimeout) as exc:
            if verdicts:
                break  # "7 D" is too long for this gateway: "2 D" has told
            report.unanswered["day_duration"] = f'"{days} D": {exc}'
            break
        except IBSessionError as exc:
            report.unanswered["day_duration"] = f'"{days} D": {exc}'
            break
        if answer is None or answer.served is None:
            report.unanswered["day_duration"] = f'"{days} D": no readable served window'
            break
        verdicts.append(answer.served.start == end - timedelta(days=days))
    if verdicts and "day_duration" not in report.unanswered:
        report.findings["day_duration"] = "calendar" if all(verdicts) else "sessions"

    # The longest window answered for 1-minute bars, stopping at the first refusal.
    progress("longest window: " + ", ".join(map(str, WINDOW_DAYS_TRIED)) + " days")
    longest = 0
    end = today - timedelta(days=3) - timedelta(minutes=1)
    for days in WINDOW_DAYS_TRIED:
        duration = "86400 S" if days == 1 else f"{days} D"
        try:
            answer = await ask("max_window_days", end, duration)
        except (DurationTooLong, RequestTimeout):
            break
        except IBSessionError as exc:
            report.unanswered["max_window_days"] = f"{duration}: {exc}"
            break
        if answer is None or not answer.starts:
            break
        longest = days
    if longest:
        report.findings["max_window_days"] = longest
    else:
        report.unanswered.setdefault("max_window_days", "not even one day was answered")

    # Latency of a full day with 1, 2 and 4 requests in flight (distinct days: none
    # identical), each batch after IB's per-contract window.
    progress("latency with 1, 2 and 4 in flight")
    medians: dict[str, float] = {}
    day = today - timedelta(days=20)
    try:
        for n in IN_FLIGHT_TRIED:
            await asyncio.sleep(settings.batch_gap_s)
            rounds = 2 if n == 1 else 1
            latencies: list[float] = []
            for _ in range(rounds):
                ends = [day - timedelta(days=k) - timedelta(minutes=1) for k in range(n)]
                day -= timedelta(days=n)
                answers = await asyncio.gather(*(ask("latency_s", e, "86400 S") for e in ends))
                latencies += [a.latency_s for a in answers if a is not None]
            medians[str(n)] = round(statistics.median(latencies), 4)
        report.findings["latency_s"] = medians
    except IBSessionError as exc:
        report.unanswered["latency_s"] = str(exc)

    # A window ending in the future: bars up to now, and the minute still forming or not.
    progress("a window ending in the future")
    end = now.replace(second=0, microsecond=0) + timedelta(minutes=10)
    try:
        answer = await ask("future_end", end, "1800 S")
    except IBSessionError as exc:
        report.unanswered["future_end"] = str(exc)
    else:
        if answer is None or not answer.starts:
            report.unanswered["future_end"] = "no bars served"
        else:
            last = answer.starts[-1]
            report.findings["future_end"] = {
                "last_bar": last.isoformat(),
                "partial_last_bar": (last + timedelta(minutes=1)).timestamp() > answer.answered_at,
            }
    return report


def run_probe(
    host: str,
    port: int,
    client_id: int,
    symbol: Symbol,
    settings: ProbeSettings,
    *,
    connect_timeout_s: float = 10.0,
    progress: Callable[[str], None] = lambda _: None,
) -> ProbeReport:
    """Connect (the next free clientId if taken), qualify, probe, disconnect.

    Raises ``UnknownSymbol`` and ``IBSessionError`` from connecting (the caller's bad input).
    """

    async def go() -> ProbeReport:
        session = await connect_free_id(
            host, port, client_id, tries=16, timeout_s=connect_timeout_s
        )
        try:
            await session.qualify(symbol)
            return await probe(session, symbol, datetime.now(UTC), settings, progress)
        finally:
            session.disconnect()

    return asyncio.run(go())
