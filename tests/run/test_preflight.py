"""The gateway check before a run: symbols qualified overlapping, unknown ones named."""

from __future__ import annotations

import sys
import time
from datetime import datetime

import pytest

from backfill.domain import UTC, BadInput, Symbol
from backfill.ib import preflight as checks
from backfill.settings import RunSettings
from backfill.sim import FaultConfig, embedded

pytestmark = pytest.mark.ib  # exercises the IB client: run under both (.ci/run)

SETTINGS = RunSettings()
BTC = Symbol("BTC", "USD")


def preflight(host, port, client_id, symbols):
    checks.check_gateway(
        host,
        port,
        client_id,
        symbols,
        client_id_tries=SETTINGS.client_id_tries,
        timeout_s=SETTINGS.connect_timeout_s,
    )


def test_a_long_symbol_list_is_checked_within_the_message_rate(make_sim):
    known = [f"C{n:02d}" for n in range(60)]
    gateway = make_sim(symbols=tuple(known))
    preflight(gateway.host, gateway.port, 900, [Symbol(b, "USD") for b in known])
    asked = [r for r in gateway.requests() if r.kind == "contract_details"]
    assert len(asked) == 60 and all(r.outcome == "ok" for r in asked)
    assert not [r for r in gateway.requests() if r.error_code == 100], "over 50 messages/s"


def test_every_unknown_symbol_is_named_in_order(sim):
    symbols = [Symbol("NOPE", "USD"), Symbol("BTC", "USD"), Symbol("ZZZ", "USD")]
    with pytest.raises(BadInput, match="unknown symbols NOPE-USD, ZZZ-USD"):
        preflight(sim.host, sim.port, 900, symbols)


def test_an_embedded_gateway_that_never_says_ready_is_given_up_on(monkeypatch):
    monkeypatch.setattr(embedded, "EMBEDDED_START_TIMEOUT_S", 0.5)
    silent = embedded.EmbeddedGateway()
    silent.args = [sys.executable, "-c", "import time; time.sleep(30)"]
    started = time.monotonic()
    with pytest.raises(RuntimeError, match="did not start"), silent:
        pass
    assert time.monotonic() - started < 5


def test_edge_learning_waits_no_longer_than_the_request_timeout(make_sim):
    """A gateway that never answers a learning request holds up the run's start by the
    request timeout asked for (``--request-timeout``), not the connection's 10 s."""
    gateway = make_sim(faults=FaultConfig(hang_share=1.0, seed=1))
    anchors = (datetime(2025, 7, 12, 12, tzinfo=UTC), datetime(2025, 7, 1, 12, tzinfo=UTC))
    settings = RunSettings(request_timeout_s=0.5)
    found = checks.check_gateway(
        gateway.host,
        gateway.port,
        900,
        [BTC],
        client_id_tries=SETTINGS.client_id_tries,
        timeout_s=settings.connect_timeout_s,
        edges_for=checks.EdgeProbe(BTC, anchors),
        edges_timeout_s=settings.learning_timeout_s,
    )
    assert found.edges is not None and not found.edges.rule.known
    # An anchor each; the first with the pair sent beside its survey.
    first, _pair, second = [r for r in gateway.requests() if r.kind == "historical"]
    [cancel, *_] = [r for r in gateway.requests() if r.kind == "cancel"]
    assert cancel.req_id == first.req_id
    # Given up on (cancelled, the next anchor asked) after about 0.5 s, not 10.
    assert cancel.received - first.received < 3.0
    assert second.received - first.received < 3.0


def test_the_edge_pair_goes_out_with_the_survey(make_sim):
    """The run's start waits for the learning: its second request (the pair a survey with
    every minute served picks) is sent with the survey, not after its answer."""
    gateway = make_sim(faults=FaultConfig(latency_ms=(200.0, 200.0), seed=1))
    anchors = (datetime(2025, 7, 3, 12, tzinfo=UTC),)  # 11:31 and 11:41 have bars
    found = checks.check_gateway(
        gateway.host,
        gateway.port,
        900,
        [BTC],
        client_id_tries=SETTINGS.client_id_tries,
        timeout_s=SETTINGS.connect_timeout_s,
        edges_for=checks.EdgeProbe(BTC, anchors),
    )
    assert found.edges is not None and found.edges.rule.known and found.edges.requests == 2
    survey, pair = [r for r in gateway.requests() if r.kind == "historical"]
    assert (survey.duration, pair.duration) == ("1800 S", "600 S")
    assert survey.answered is not None and pair.received < survey.answered
