"""The gateway's window-edge rule for a run: remembered in the lake, else learned.

Learning costs two small requests against the first symbol (see ``backfill.ib.edges``);
the lake remembers the answer for ``FINDING_MAX_AGE`` per gateway address. The embedded
simulator (a new port each run) is asked every time and not remembered.
"""

from __future__ import annotations

import dataclasses
import time as _time
from dataclasses import dataclass
from datetime import date, datetime, time, timedelta
from typing import TYPE_CHECKING

from rich.console import Console

from backfill.domain import UTC
from backfill.edges import RULES, UNKNOWN, EdgeRule
from backfill.findings import apply_findings
from backfill.ib.edges import EdgeFinding, learn_gateway_edges
from backfill.ib.preflight import EdgeProbe, Preflight
from backfill.ib.session import IBSessionError, NoPermission
from backfill.lake.gateway import gateway_facts_path, read_finding, read_findings, write_finding
from backfill.run.sendlog import load_recent_sends, save_recent_sends

if TYPE_CHECKING:
    from backfill.plan import Plan
    from backfill.run.launch import RunRequest

KEY = "window_edges"


@dataclass(frozen=True)
class GatewayEdges:
    rule: EdgeRule
    source: str  # "learned" or "remembered"
    checked_at: datetime
    finding: EdgeFinding | None = None
    note: str = ""


def probe_anchors(first: date, last: date, today: date) -> list[datetime]:
    """Past noons to look for bars at: the range's last ended day, then its first."""
    days = [min(last, today - timedelta(days=1)), first]
    out: list[datetime] = []
    for day in days:
        when = datetime.combine(day, time(12), UTC)
        if day < today and when not in out:
            out.append(when)
    return out


def _remembered(request: RunRequest, host: str, port: int, now: datetime) -> GatewayEdges | None:
    if not request.gateway.embedded and request.lake.is_dir():
        found = read_finding(request.lake, host, port, KEY, now,
                             request.settings.finding_max_age)
        if found is not None and found.get("value") in RULES:
            return GatewayEdges(EdgeRule.parse(found["value"]), "remembered",
                                datetime.fromisoformat(found["checked_at"]))
    return None


def edges_to_learn(
    request: RunRequest, host: str, port: int, the_plan: Plan, today: date,
) -> EdgeProbe | None:
    """What the preflight connection learns the rule from, alongside the heads: the first
    symbol with days to fetch; None when the lake remembers the rule or nothing is asked."""
    if _remembered(request, host, port, datetime.now(UTC)) is not None:
        return None
    anchors = probe_anchors(request.first, request.last, today)
    job = next((j for j in the_plan.symbols if j.days_missing), None)
    if job is None or not anchors:
        return None
    return EdgeProbe(job.symbol, tuple(anchors))


def gateway_edges(
    request: RunRequest, host: str, port: int, the_plan: Plan, today: date,
    learned: tuple[EdgeProbe, Preflight] | None = None,
) -> GatewayEdges:
    """The rule to send windows by; reads the lake, writes nothing (see ``remember_edges``).

    ``learned``: what the preflight connection found for its probe's symbol, used for that
    symbol instead of asking again (the heads may have moved the plan to another symbol).
    """
    now = datetime.now(UTC)
    remembered = _remembered(request, host, port, now)
    if remembered is not None:
        return remembered
    anchors = probe_anchors(request.first, request.last, today)
    note = "no past minute to ask about"
    settings = request.settings
    for job in the_plan.symbols:
        if not job.days_missing or not anchors:
            continue
        try:
            if learned is not None and learned[0].symbol == job.symbol \
                    and learned[0].anchors == tuple(anchors):
                if learned[1].edges_error is not None:
                    raise learned[1].edges_error
                finding = learned[1].edges
                assert finding is not None
            else:
                finding = learn_gateway_edges(
                    host, port, settings.client_id_base + settings.workers, job.symbol,
                    anchors, timeout_s=settings.connect_timeout_s,
                    request_timeout_s=settings.learning_timeout_s,
                )
        except NoPermission:
            note = f"no permission for {job.symbol}"
            continue  # its worker reports it; another symbol may show the rule
        except IBSessionError as exc:
            note = str(exc)
            break
        if finding.rule.known:
            return GatewayEdges(finding.rule, "learned", now, finding)
        note = f"no two bars 10 minutes apart for {job.symbol}"
        return GatewayEdges(UNKNOWN, "learned", now, finding, note)
    return GatewayEdges(UNKNOWN, "learned", now, None, note)


def remember_edges(
    request: RunRequest, host: str, port: int, edges: GatewayEdges, console: Console,
) -> None:
    """Record a learned rule in the lake, hand the probe's sends on to the symbol's worker
    (IB's per-contract rule remembers them), and say which rule the run uses."""
    finding = edges.finding
    where = ""
    if finding is not None:
        if edges.rule.known and not request.gateway.embedded:
            path = write_finding(request.lake, host, port, KEY, edges.rule.text,
                                 finding.evidence, edges.checked_at)
            where = f", remembered in {path}"
        symbol = finding.evidence.get("symbol")
        if symbol and finding.sent_at:
            now = datetime.now(UTC).timestamp()
            recent = load_recent_sends(request.lake, symbol, now)
            recent += [(f"{symbol}|edges|{n}", now - at) for n, at in enumerate(finding.sent_at)]
            save_recent_sends(request.lake, symbol, recent, now)
    if edges.source == "remembered":
        how = (f"remembered from {gateway_facts_path(request.lake, host, port)}, "
               f"checked {edges.checked_at:%Y-%m-%d %H:%M} UTC")
    elif finding is not None:
        how = f"learned from the gateway: {finding.requests} requests, {finding.seconds:.2f}s"
    else:
        how = "not learned"
    if not edges.rule.known:
        how += (f" ({edges.note}); windows are asked one minute longer, in seconds, so that "
                "any rule covers them")
    console.print(f"Window edges {edges.rule}: {how}{where}", markup=False, highlight=False)
    if finding is not None and finding.sent_at:
        # The learning requests spent part of the session's --rate budget: let it refill
        # before the workers start their burst.
        wait = len(finding.sent_at) / request.settings.rate - (_time.time() - finding.sent_at[0])
        if wait > 0:
            _time.sleep(wait)


def edges_sends(edges: GatewayEdges | None, now_mono: float, now_wall: float) -> tuple[float, ...]:
    """The learning requests' send times on the monotonic clock (for IB's session rule)."""
    if edges is None or edges.finding is None:
        return ()
    return tuple(now_mono - (now_wall - at) for at in edges.finding.sent_at)


def apply_gateway_findings(request: RunRequest, now: datetime, console: Console) -> RunRequest:
    """The request with ``backfill probe``'s fresh findings for its gateway applied (see
    ``backfill.findings``), after a first line saying what they change or that they are
    stale. The embedded simulator (a new port each run) has none."""
    if request.gateway.embedded or not request.lake.is_dir():
        return request
    settings = request.settings
    findings = read_findings(request.lake, request.gateway.host, request.gateway.port, now,
                             settings.finding_max_age)
    applied = apply_findings(settings, findings, command="run")
    if applied.line:
        console.print(applied.line, markup=False, highlight=False, soft_wrap=True)
    return dataclasses.replace(request, settings=applied.settings)
