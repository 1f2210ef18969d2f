"""The rule a run sends windows by when learning gets no answer (issue 19 item 2): never the
rule the lake remembers, which may no longer fit, but the one that fits any rule."""

from __future__ import annotations

from datetime import date, datetime, timezone
from pathlib import Path

from backfill.domain import Symbol, Window
from backfill.edges import UNKNOWN, request_for
from backfill.ib.edges import EdgeFinding
from backfill.ib.preflight import Preflight
from backfill.ib.session import RequestTimeout
from backfill.lake.gateway import write_finding
from backfill.run.gateway_edges import edges_to_learn, gateway_edges, untrusted_days
from backfill.run.launch import RunRequest, plan_run
from backfill.settings import GatewayAddress, RunSettings

BTC = Symbol("BTC", "USD")
TODAY = date(2025, 8, 1)


def request_for_lake(lake: Path) -> RunRequest:
    return RunRequest(
        lake,
        (BTC,),
        date(2025, 7, 1),
        date(2025, 7, 14),
        GatewayAddress.parse("127.0.0.1:4002"),
        RunSettings(window_days=7),
    )


def learned_nothing(lake: Path, found: Preflight):
    write_finding(lake, "127.0.0.1", 4002, "window_edges", "[)", {}, datetime.now(timezone.utc))
    write_finding(lake, "127.0.0.1", 4002, "header_clock", "utc", {}, datetime.now(timezone.utc))
    request = request_for_lake(lake)
    the_plan = plan_run(request, TODAY)
    probe = edges_to_learn(request, "127.0.0.1", 4002, the_plan, TODAY)
    assert probe is not None  # learned every run, remembered or not
    return request, gateway_edges(request, "127.0.0.1", 4002, the_plan, TODAY, (probe, found))


def test_learning_that_got_no_answer_asks_in_the_way_that_fits_any_rule(tmp_path: Path):
    lake = tmp_path / "lake"
    lake.mkdir()
    unanswered = Preflight({}, None, RequestTimeout("no answer"))
    request, edges = learned_nothing(lake, unanswered)
    assert edges.rule == UNKNOWN and edges.remembered[0] == "[)"
    assert not edges.clock.trusted
    # Seconds, a minute longer, one day a request: taken as served whatever the rule.
    clipped = untrusted_days(request, edges)
    assert clipped.settings.window_days == 1
    day = Window(date(2025, 7, 1), date(2025, 7, 1))
    assert request_for(day, edges.rule, in_seconds=True).duration == "86460 S"


def test_no_two_bars_to_learn_from_is_the_same(tmp_path: Path):
    lake = tmp_path / "lake"
    lake.mkdir()
    thin = Preflight({}, EdgeFinding(UNKNOWN, 2, 0.1, {"symbol": "BTC-USD"}), None)
    _, edges = learned_nothing(lake, thin)
    assert edges.rule == UNKNOWN and not edges.clock.trusted
