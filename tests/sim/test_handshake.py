"""Malformed client input gets IB's 320, never a traceback (issue 10, bug 6)."""

from __future__ import annotations

import asyncio
import signal
import subprocess
import sys

import pytest

from backfill.ib.client import new_ib
from backfill.sim.flags import exposure_warning
from tests.sim.cli_helpers import start_gateway
from tests.sim.helpers import DAY_END, crypto

pytestmark = pytest.mark.ib  # exercises the IB client: run under both (.ci/run)

BAD_IDS = [2**31 - 1, 2**32, -(2**31) - 1]  # 2**31-1 goes out as an empty field


def refused_codes(host: str, port: int, client_id: int) -> list[int]:
    """Connect with ``client_id``; the error codes seen before the connect gave up."""
    ib = new_ib()
    codes: list[int] = []
    ib.errorEvent += lambda req_id, code, text, contract: codes.append(code)
    with pytest.raises((asyncio.TimeoutError, TimeoutError, ConnectionError)):
        ib.connect(host, port, clientId=client_id, timeout=0.5)
    assert not ib.isConnected()
    return codes


@pytest.mark.parametrize("client_id", BAD_IDS)
def test_client_id_outside_32_bits_gets_320(sim, client_id: int) -> None:
    assert refused_codes(sim.host, sim.port, client_id) == [320]
    record = sim.requests()[-1]
    assert (record.kind, record.outcome, record.error_code) == ("connect", "error", 320)


def test_gateway_process_logs_no_traceback_for_a_bad_client_id() -> None:
    proc, port = start_gateway()
    try:
        for client_id in BAD_IDS:
            assert refused_codes("127.0.0.1", port, client_id) == [320]
        ib = new_ib()  # and the gateway still serves a good client
        ib.connect("127.0.0.1", port, clientId=2**31 - 2, timeout=5)
        assert ib.reqHistoricalData(crypto(), DAY_END, "3600 S", "1 min", "AGGTRADES", False, 2)
        ib.disconnect()
    finally:
        proc.send_signal(signal.SIGTERM)
        _out, err = proc.communicate(timeout=10)
    assert proc.returncode == 0
    assert err == ""


def test_unreadable_message_gets_320_and_the_connection_goes_on(sim, connect) -> None:
    ib = connect(sim)
    errors: list[tuple[int, int]] = []
    ib.errorEvent += lambda req_id, code, text, contract: errors.append((req_id, code))
    ib.client.send("x", 1)  # a message id TWS cannot read
    ib.client.send(20, "not-a-req-id")  # a historical request cut short, id unreadable
    for _ in range(300):
        if len(errors) == 2:
            break
        ib.sleep(0.01)
    assert errors == [(-1, 320), (-1, 320)]
    assert ib.isConnected()
    assert ib.reqHistoricalData(crypto(), DAY_END, "3600 S", "1 min", "AGGTRADES", False, 2)
    assert [r.error_code for r in sim.requests() if r.kind == "unreadable"] == [320, 320]


@pytest.mark.parametrize(
    ("host", "warned"),
    [
        ("127.0.0.1", False),
        ("::1", False),
        ("localhost", False),
        ("0.0.0.0", True),
        ("::", True),
        ("192.168.1.5", True),
        ("gateway.example", True),
    ],
)
def test_exposure_warning(host: str, warned: bool) -> None:
    assert (exposure_warning(host) is not None) == warned


def test_gateway_on_a_network_address_warns_on_start() -> None:
    # 192.0.2.1 is a documentation address: the warning comes first, then binding fails, so
    # the test never listens beyond loopback.
    result = subprocess.run(
        [sys.executable, "-m", "backfill", "gateway", "--host", "192.0.2.1", "--port", "0"],
        capture_output=True,
        text=True,
        timeout=20,
    )
    lines = result.stderr.splitlines()
    assert lines[0].startswith(
        "backfill: warning: the simulator listens on 192.0.2.1 with no authentication"
    )
    assert result.returncode == 1
    quiet = start_gateway()[0]
    quiet.send_signal(signal.SIGTERM)
    assert quiet.communicate(timeout=10)[1] == ""
