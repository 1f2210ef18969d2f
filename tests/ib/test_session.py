"""The IB session against the simulator: real ib_insync over a real socket."""

from __future__ import annotations

import asyncio
import socket
import time
from datetime import date, datetime, timezone

import pytest

from backfill.domain import Symbol, Window
from backfill.ib.session import (
    ClientIdInUse,
    Disconnected,
    DurationTooLong,
    GatewayUnreachable,
    IBError,
    IBSession,
    PacingViolation,
    RequestTimeout,
    UnknownSymbol,
)
from backfill.sim import FaultConfig, PacingConfig
from tests.oracle import expected_bars

pytestmark = pytest.mark.ib  # exercises the IB client: run under both (.ci/run)

BTC = Symbol("BTC", "USD")
JULY_1 = date(2025, 7, 1)


def run(coro):
    return asyncio.run(coro)


async def until(condition, what: str, timeout_s: float = 5.0) -> None:
    """Poll ``condition`` on the running loop (so the session reads meanwhile) until true."""
    deadline = time.monotonic() + timeout_s
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"not within {timeout_s:g}s: {what}")
        await asyncio.sleep(0.01)


def upstream_lost(session: IBSession) -> bool:
    return session.upstream_lost_since is not None


async def connected(gateway, client_id: int = 1, timeout_s: float = 5.0) -> IBSession:
    session = IBSession(gateway.host, gateway.port, client_id, timeout_s=timeout_s)
    await session.connect()
    return session


def rows(result) -> list[tuple]:
    cols = ["ts", "open", "high", "low", "close", "volume", "wap", "bar_count"]
    return list(zip(*(result.bars.column(c).to_pylist() for c in cols), strict=True))


def test_one_day_is_exactly_the_simulators_bars_stamped_by_end(sim):
    async def go():
        session = await connected(sim)
        try:
            return await session.fetch_window(BTC, Window.single(JULY_1))
        finally:
            session.disconnect()

    result = run(go())
    assert not result.no_data
    assert 1300 < result.bars.num_rows <= 1440
    assert rows(result) == expected_bars(sim.market, BTC, JULY_1, JULY_1)
    ts = result.bars.column("ts").to_pylist()
    assert ts[0] >= datetime(2025, 7, 1, 0, 0, tzinfo=timezone.utc)
    assert ts[-1] < datetime(2025, 7, 2, tzinfo=timezone.utc)
    assert set(result.bars.column("symbol").to_pylist()) == {"BTC-USD"}
    assert set(result.bars.column("what_to_show").to_pylist()) == {"AGGTRADES"}
    assert sim.requests()[-1].duration == "86400 S"
    assert sim.requests()[-1].end == "20250701 23:59:00 UTC"


def test_multi_day_window_is_sent_in_days_and_equals_the_days(sim):
    async def go():
        session = await connected(sim)
        try:
            return await session.fetch_window(BTC, Window(JULY_1, date(2025, 7, 3)))
        finally:
            session.disconnect()

    result = run(go())
    assert rows(result) == expected_bars(sim.market, BTC, JULY_1, date(2025, 7, 3))
    assert sim.requests()[-1].duration == "3 D"


def test_days_before_listing_are_ibs_explicit_no_data(sim):
    async def go():
        session = await connected(sim)
        try:
            sol = Symbol("SOL", "USD")
            head = await session.earliest_bar(sol)
            before = await session.fetch_window(sol, Window.single(date(2020, 1, 5)))
            return head, before
        finally:
            session.disconnect()

    head, before = run(go())
    assert head == sim.market.first_bar("SOL")
    assert before.no_data and before.bars.num_rows == 0


def test_unknown_symbol_is_typed_and_names_the_symbol(sim):
    async def go():
        session = await connected(sim)
        try:
            await session.qualify(Symbol("NOPE", "USD"))
        finally:
            session.disconnect()

    with pytest.raises(UnknownSymbol, match="NOPE-USD"):
        run(go())


def test_client_id_in_use_is_reported_fast(sim):
    async def go():
        first = await connected(sim, client_id=5)
        try:
            started = time.monotonic()
            with pytest.raises(ClientIdInUse):
                await connected(sim, client_id=5, timeout_s=10.0)
            return time.monotonic() - started
        finally:
            first.disconnect()

    assert run(go()) < 3.0


def test_unreachable_gateway_is_typed():
    async def go():
        await IBSession("127.0.0.1", 1, 1, timeout_s=2.0).connect()

    with pytest.raises(GatewayUnreachable):
        run(go())


def test_a_port_that_never_speaks_the_api_is_named_in_the_error():
    # Something listens (a wrong port, or the API disabled) but no handshake ever comes.
    with socket.create_server(("127.0.0.1", 0)) as silent:
        port = silent.getsockname()[1]

        async def go():
            await IBSession("127.0.0.1", port, 1, timeout_s=0.5).connect()

        with pytest.raises(GatewayUnreachable, match=f"no API handshake from 127.0.0.1:{port}"):
            run(go())


def test_hung_request_times_out_and_is_cancelled(sim):
    sim.set_faults(FaultConfig(hang_share=1.0))

    def cancels() -> list:
        return [r for r in sim.requests() if r.kind == "cancel"]

    async def go():
        session = await connected(sim)
        try:
            with pytest.raises(RequestTimeout):
                await session.fetch_window(BTC, Window.single(JULY_1), timeout_s=0.5)
            await until(cancels, "the gateway hears the request cancelled")
        finally:
            session.disconnect()

    run(go())
    [hung] = [r for r in sim.requests() if r.kind == "historical"]
    assert [c.req_id for c in cancels()] == [hung.req_id]


def test_transient_error_is_a_retryable_ib_error(sim):
    sim.set_faults(FaultConfig(error_share=1.0))

    async def go():
        session = await connected(sim)
        try:
            await session.fetch_window(BTC, Window.single(JULY_1))
        finally:
            session.disconnect()

    with pytest.raises(IBError) as caught:
        run(go())
    assert caught.value.code == 162 and caught.value.retryable


def test_pacing_violation_is_typed(make_sim):
    gateway = make_sim(
        pacing=PacingConfig(contract_window_s=5.0, contract_max=2, soft_rate=None, max_rate=None)
    )

    async def go():
        session = await connected(gateway)
        try:
            for i in range(3):
                await session.fetch_window(BTC, Window.single(date(2025, 7, 1 + i)))
        finally:
            session.disconnect()

    with pytest.raises(PacingViolation):
        run(go())


def test_duration_over_the_gateway_maximum_is_typed(make_sim):
    gateway = make_sim(max_duration_days=2)

    async def go():
        session = await connected(gateway)
        try:
            await session.fetch_window(BTC, Window(JULY_1, date(2025, 7, 5)))
        finally:
            session.disconnect()

    with pytest.raises(DurationTooLong):
        run(go())


def test_a_refusal_321_ends_its_request_at_once_under_either_client(sim):
    # ib_async takes 321 for a warning and would leave the request open until its timeout.
    async def go():
        session = await connected(sim, timeout_s=10.0)
        try:
            began = time.monotonic()
            with pytest.raises(DurationTooLong, match="IB error 321"):
                await session.ask(BTC, datetime(2025, 7, 2, tzinfo=timezone.utc), "1 M")
            return time.monotonic() - began
        finally:
            session.disconnect()

    assert run(go()) < 5.0
    assert [r.error_code for r in sim.requests() if r.kind == "historical"] == [321]


def test_dropped_connection_is_typed(sim):
    sim.set_faults(FaultConfig(drop_after=1))

    async def go():
        session = await connected(sim)
        try:
            await session.fetch_window(BTC, Window.single(JULY_1))
            await session.fetch_window(BTC, Window.single(date(2025, 7, 2)))
        finally:
            session.disconnect()

    with pytest.raises(Disconnected):
        run(go())


def test_ib_connectivity_lost_and_restored_is_tracked_and_requests_hang_meanwhile(sim):
    # The gateway's own link to IB (1100 lost, 1102 restored): the session must see it.
    async def go():
        session = await connected(sim)
        try:
            await session.qualify(BTC)
            assert not upstream_lost(session)
            before = time.monotonic()
            await asyncio.to_thread(sim.lose_upstream)
            await until(lambda: upstream_lost(session), "the session hears 1100")
            assert session.upstream_lost_after(before)
            with pytest.raises(RequestTimeout):
                await session.fetch_window(BTC, Window.single(JULY_1), timeout_s=0.5)
            await asyncio.to_thread(sim.restore_upstream)
            await until(lambda: not upstream_lost(session), "the session hears 1102")
            assert not session.upstream_lost_after(time.monotonic())
            return await session.fetch_window(BTC, Window.single(JULY_1))
        finally:
            session.disconnect()

    result = run(go())
    assert rows(result) == expected_bars(sim.market, BTC, JULY_1, JULY_1)
    hung = [r for r in sim.requests() if r.kind == "historical" and r.outcome == "hung"]
    assert len(hung) == 1 and hung[0].detail == "upstream lost"
    # ib_insync re-asks the account summary on 1102: answered, not refused.
    assert not [r for r in sim.requests() if r.kind == "unsupported"]


def test_a_client_connecting_while_ib_is_unreachable_is_told_at_once(sim):
    sim.lose_upstream()

    async def go():
        session = await connected(sim)
        try:
            await until(lambda: upstream_lost(session), "the session hears 1100", timeout_s=2.0)
        finally:
            session.disconnect()

    run(go())


def test_the_window_ib_says_it_served_comes_back_with_the_bars(sim):
    async def go():
        session = await connected(sim)
        try:
            result = await session.fetch_window(BTC, Window(JULY_1, date(2025, 7, 2)))
            return result, session.login_zone
        finally:
            session.disconnect()

    result, zone = run(go())
    assert zone.name == "UTC" and zone.zone is not None
    assert result.served_start == datetime(2025, 6, 30, 23, 59, tzinfo=timezone.utc)
    assert result.served_end == datetime(2025, 7, 2, 23, 59, tzinfo=timezone.utc)
    assert result.answered_at > 0
