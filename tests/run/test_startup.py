"""Start-up as one value (issue 22 item 5): everything a run learns before its workers start,
from one connection, with nothing written until it returns."""

from __future__ import annotations

import contextlib
from datetime import date, datetime, timedelta
from pathlib import Path

import pytest

from backfill.domain import UTC, BadInput, Symbol
from backfill.run.request import RunRequest
from backfill.run.startup import record, start_up
from backfill.settings import GatewayAddress, RunSettings

BTC, ETH = Symbol("BTC", "USD"), Symbol("ETH", "USD")


def request(lake: Path, gateway: str, first: date, last: date) -> RunRequest:
    return RunRequest(
        lake, (BTC, ETH), first, last, GatewayAddress.parse(gateway), RunSettings(rate=20.0)
    )


def test_start_up_learns_everything_on_one_connection_and_writes_nothing(make_sim, tmp_path):
    sim = make_sim()
    lake = tmp_path / "lake"
    now = datetime(2025, 8, 1, 12, tzinfo=UTC)
    said: list[str] = []
    with contextlib.ExitStack() as stack:
        startup = start_up(
            request(lake, f"{sim.host}:{sim.port}", date(2025, 7, 1), date(2025, 7, 3)),
            stack,
            said.append,
            now=now,
        )
    assert not lake.exists() and said == []  # no lake made, no line said: record() does
    assert startup.contracts_ok and startup.today == date(2025, 8, 1)
    assert set(startup.answers) == {BTC, ETH}  # the heads, asked now
    assert all(h.asked_at == now for h in startup.answers.values())
    assert startup.edge_rule == str(startup.edges.rule) and startup.edges.source == "learned"
    assert startup.header_clock == startup.edges.clock.reading
    assert len(startup.learning_sent) == 2  # the edge rule's two requests, for the pacing
    assert startup.refill_at - startup.learning_sent[0] == pytest.approx(2 / 20.0)
    assert startup.plan.requests == 6  # 2 symbols x 3 days
    # One connection: every start-up question came over one client id.
    assert len({r.client_id for r in sim.requests()}) == 1
    lake.mkdir()
    record(startup, said.append)
    assert (lake / "_gateway" / "heads.json").is_file()
    assert said[0].startswith("Window edges") and said[1].startswith("Served-window header")


def test_nothing_to_fetch_asks_the_gateway_nothing(tmp_path):
    # Days after today are never planned: nothing to ask, so the (absent) gateway is not.
    today = date.today()
    ahead = request(
        tmp_path / "lake", "127.0.0.1:1", today + timedelta(days=2), today + timedelta(days=3)
    )
    with contextlib.ExitStack() as stack:
        startup = start_up(ahead, stack, print)
    assert startup.plan.requests == 0 and startup.edges is None and not startup.contracts_ok
    assert startup.learning_sent == () and startup.refill_at == 0.0


def test_an_unknown_symbol_is_bad_input_before_anything_is_written(make_sim, tmp_path):
    sim = make_sim()
    lake = tmp_path / "lake"
    asked = RunRequest(
        lake,
        (Symbol("NOPE", "USD"),),
        date(2025, 7, 1),
        date(2025, 7, 1),
        GatewayAddress.parse(f"{sim.host}:{sim.port}"),
        RunSettings(),
    )
    with contextlib.ExitStack() as stack, pytest.raises(BadInput, match="unknown symbol"):
        start_up(asked, stack, print, now=datetime(2025, 8, 1, tzinfo=UTC))
    assert not lake.exists()
