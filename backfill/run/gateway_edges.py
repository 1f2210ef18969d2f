"""The gateway's window-edge rule and header clock for a run: learned every run.

Learning costs two small requests against the first symbol (see ``backfill.ib.edges``),
overlapped with the heads on the preflight connection. A rule remembered in the lake (by an
earlier run or ``backfill probe``) is never trusted instead: a gateway updated within the
week, another gateway behind the same address or an edited file would make every window
drop its 00:00 (or 23:59) bar and record the day complete. It is named when it no longer
fits. When learning gets no answer the run asks in the rule-independent way (seconds, one
minute longer) with the header untrusted: slower, never a bar lost. The embedded simulator
(a new port each run) is not remembered.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from dataclasses import dataclass
from datetime import date, datetime, time, timedelta
from typing import TYPE_CHECKING

from backfill.domain import UTC, BadInput
from backfill.edges import RULES, UNKNOWN, EdgeRule
from backfill.ib.edges import EdgeFinding, learn_gateway_edges
from backfill.ib.preflight import EdgeProbe, Preflight
from backfill.ib.served import FORMATS, UNTRUSTED, HeaderClock, ZoneDatabaseMissing
from backfill.ib.session import IBSessionError, NoPermission
from backfill.lake.gateway import gateway_facts_path, read_finding, write_finding
from backfill.run.request import RunRequest
from backfill.run.sendlog import load_recent_sends, save_recent_sends

if TYPE_CHECKING:
    from backfill.plan import Plan

KEY = "window_edges"
CLOCK_KEY, FORMAT_KEY = "header_clock", "header_format"


@dataclass(frozen=True)
class GatewayEdges:
    rule: EdgeRule
    source: str  # "learned" (this run's requests) or "not learned"
    checked_at: datetime
    finding: EdgeFinding | None = None
    note: str = ""
    # What the lake remembered (information only): the rule and when it was checked.
    remembered: tuple[str, datetime] | None = None
    remembered_format: str | None = None  # the header format recorded (information only)

    @property
    def clock(self) -> HeaderClock:
        """How the served-window header reads; untrusted unless this run learned it."""
        return self.finding.clock if self.finding is not None else UNTRUSTED


def probe_anchors(first: date, last: date, today: date) -> list[datetime]:
    """Past noons to look for bars at: the range's last ended day, then its first."""
    days = [min(last, today - timedelta(days=1)), first]
    out: list[datetime] = []
    for day in days:
        when = datetime.combine(day, time(12), UTC)
        if day < today and when not in out:
            out.append(when)
    return out


def _remembered(
    request: RunRequest,
    host: str,
    port: int,
    now: datetime,
    key: str = KEY,
) -> tuple[str, datetime] | None:
    """The finding ``key`` the lake remembers for the address, fresh (information: never
    used instead of learning it)."""
    if not request.gateway.embedded and request.lake.is_dir():
        found = read_finding(request.lake, host, port, key, now, request.settings.finding_max_age)
        valid = RULES if key == KEY else FORMATS
        if found is not None and found.get("value") in valid:
            return found["value"], datetime.fromisoformat(found["checked_at"])
    return None


def edges_to_learn(
    request: RunRequest,
    host: str,
    port: int,
    the_plan: Plan,
    today: date,
) -> EdgeProbe | None:
    """What the preflight connection learns the rule from, alongside the heads: the first
    symbol with days to fetch; None when nothing is asked."""
    anchors = probe_anchors(request.first, request.last, today)
    job = next((j for j in the_plan.symbols if j.days_missing), None)
    if job is None or not anchors:
        return None
    return EdgeProbe(job.symbol, tuple(anchors))


def gateway_edges(
    request: RunRequest,
    host: str,
    port: int,
    the_plan: Plan,
    today: date,
    learned: tuple[EdgeProbe, Preflight] | None = None,
) -> GatewayEdges:
    """The rule to send windows by; reads the lake, writes nothing (see ``remember_edges``).

    ``learned``: what the preflight connection found for its probe's symbol, used for that
    symbol instead of asking again (the heads may have moved the plan to another symbol).
    """
    now = datetime.now(UTC)
    remembered = _remembered(request, host, port, now)
    recorded = _remembered(request, host, port, now, FORMAT_KEY)
    form = recorded[0] if recorded else None
    anchors = probe_anchors(request.first, request.last, today)
    note = "no past minute to ask about"
    settings = request.settings
    for job in the_plan.symbols:
        if not job.days_missing or not anchors:
            continue
        try:
            if (
                learned is not None
                and learned[0].symbol == job.symbol
                and learned[0].anchors == tuple(anchors)
            ):
                if learned[1].edges_error is not None:
                    raise learned[1].edges_error
                finding = learned[1].edges
                assert finding is not None
            else:
                finding = learn_gateway_edges(
                    host,
                    port,
                    settings.client_id_base + settings.workers,
                    job.symbol,
                    anchors,
                    timeout_s=settings.connect_timeout_s,
                    request_timeout_s=settings.learning_timeout_s,
                )
        except ZoneDatabaseMissing as exc:
            raise BadInput(str(exc)) from None
        except NoPermission:
            note = f"no permission for {job.symbol}"
            continue  # its worker reports it; another symbol may show the rule
        except IBSessionError as exc:
            note = str(exc)
            break
        if finding.rule.known:
            return GatewayEdges(
                finding.rule, "learned", now, finding, remembered=remembered, remembered_format=form
            )
        note = f"no two bars 10 minutes apart for {job.symbol}"
        return GatewayEdges(UNKNOWN, "learned", now, finding, note, remembered, form)
    return GatewayEdges(UNKNOWN, "not learned", now, None, note, remembered, form)


def remember_edges(
    request: RunRequest,
    host: str,
    port: int,
    edges: GatewayEdges,
    say: Callable[[str], None],
) -> None:
    """Record a learned rule in the lake, hand the probe's sends on to the symbol's worker
    (IB's per-contract rule remembers them), and say which rule the run uses. The learning
    requests' share of the ``--rate`` budget is left to ``refill_at``: waited for by the
    launcher just before the workers start, not here."""
    finding = edges.finding
    where = ""
    if finding is not None:
        clock, paths = finding.clock, []
        if not request.gateway.embedded and clock.format:  # a header was seen
            evidence = finding.evidence.get("header", {})
            paths.append(
                write_finding(
                    request.lake, host, port, CLOCK_KEY, clock.reading, evidence, edges.checked_at
                )
            )
            paths.append(
                write_finding(
                    request.lake, host, port, FORMAT_KEY, clock.format, evidence, edges.checked_at
                )
            )
        if not request.gateway.embedded and edges.rule.known:
            paths.append(
                write_finding(
                    request.lake,
                    host,
                    port,
                    KEY,
                    edges.rule.text,
                    finding.evidence,
                    edges.checked_at,
                )
            )
        if paths:
            where = f", remembered in {paths[-1]}"
        symbol = finding.evidence.get("symbol")
        if symbol and finding.sent_at:
            now = datetime.now(UTC).timestamp()
            recent = load_recent_sends(request.lake, symbol, now)
            recent += [(f"{symbol}|edges|{n}", now - at) for n, at in enumerate(finding.sent_at)]
            save_recent_sends(request.lake, symbol, recent, now)
    if finding is not None:
        how = f"learned from the gateway: {finding.requests} requests, {finding.seconds:.2f}s"
    else:
        how = "not learned"
    if not edges.rule.known:
        how += (
            f" ({edges.note}); windows are asked one minute longer, in seconds, so that "
            "any rule covers them"
        )
    if edges.remembered is not None and edges.remembered[0] != str(edges.rule):
        rule, checked = edges.remembered
        how += (
            f"; {gateway_facts_path(request.lake, host, port)} remembered {rule}, checked "
            f"{checked:%Y-%m-%d %H:%M} UTC: no longer used"
        )
    say(f"Window edges {edges.rule}: {how}{where}")
    said = clock_line(edges.clock, request.settings.window_days)
    if edges.remembered_format and edges.remembered_format != edges.clock.format:
        said += (
            f"; {gateway_facts_path(request.lake, host, port)} recorded "
            f"{edges.remembered_format}: no longer used"
        )
    say(said)


def refill_at(edges: GatewayEdges | None, rate: float) -> float:
    """When (wall clock) the ``--rate`` budget the learning requests spent has refilled:
    the workers' first burst waits for it (0.0: nothing to wait for)."""
    if edges is None or edges.finding is None or not edges.finding.sent_at:
        return 0.0
    sent = edges.finding.sent_at
    return sent[0] + len(sent) / rate


def clock_line(clock: HeaderClock, window_days: int) -> str:
    """The first line that says how the served-window header reads, and what it costs."""
    seen = f" ({clock.format})" if clock.format else ""
    if clock.reading == "written":
        return f"Served-window header{seen}: read as written, it matches the asked windows"
    if clock.reading in ("utc", "login"):
        zone = "UTC" if clock.reading == "utc" else "the login zone"
        return (
            f"Served-window header{seen}: zone-less, read in {zone}, where it matches "
            "the asked windows"
        )
    clipped = f"; --window-days {window_days} clipped to 1" if window_days > 1 else ""
    why = clock.note or "not learned"
    return (
        f"Served-window header{seen} untrusted: {why}. Windows are asked a day at a "
        f"time in seconds (86400 S or 86460 S), taken as served{clipped}"
    )


def untrusted_days(request: RunRequest, edges: GatewayEdges | None) -> RunRequest:
    """The request with one-day windows when the header is untrusted (seconds windows are
    taken as served; IB has not said it accepts more than ``86400 S``)."""
    if edges is None or edges.clock.trusted or request.settings.window_days <= 1:
        return request
    return dataclasses.replace(
        request, settings=dataclasses.replace(request.settings, window_days=1)
    )


def edges_sends(edges: GatewayEdges | None, now_mono: float, now_wall: float) -> tuple[float, ...]:
    """The learning requests' send times on the monotonic clock (for IB's session rule)."""
    if edges is None or edges.finding is None:
        return ()
    return tuple(now_mono - (now_wall - at) for at in edges.finding.sent_at)
