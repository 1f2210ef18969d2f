"""Pure pieces behind the operator's edges: widths, the rerun command, addresses, ids, logs."""

from __future__ import annotations

import io
import json
import os
from datetime import date
from pathlib import Path

import pytest
from rich.console import Console

from backfill.domain import BadInput
from backfill.run import events as ev
from backfill.run.dashboard import Dashboard, rerun_command, summary_table
from backfill.run.runlog import RunLog, prune_run_logs
from backfill.run.state import RunState
from backfill.settings import MAX_CLIENT_ID, GatewayAddress, check_client_ids

SYMBOLS = ["BTC-USD", "ETH-USD", "AVAX-USD", "DOGE-USD"]


def narrow_run() -> RunState:
    state = RunState(SYMBOLS, requests_total=8, rate_budget=1.0)
    for s in SYMBOLS:
        state.apply(ev.WorkerQueued(s, days_total=2))
    state.apply(ev.WorkerStarted("BTC-USD", client_id=100, days_total=2))
    state.apply(ev.DayFetched("BTC-USD", day=date(2025, 7, 1), rows=1440, latency_s=0.2))
    state.apply(
        ev.WorkerFailed("ETH-USD", reason="gave up connecting: a long reason " * 3, days_failed=2)
    )
    return state


@pytest.mark.parametrize("width", [70, 60])
def test_the_summary_never_cuts_a_symbol(width):
    console = Console(file=io.StringIO(), width=width, color_system=None)
    console.print(summary_table(narrow_run()))
    text = console.file.getvalue()
    assert "…" not in "".join(line.split("│")[1] for line in text.splitlines() if "│" in line)
    for symbol in SYMBOLS:
        assert symbol in text, text


def test_the_live_table_never_cuts_a_symbol_at_70_columns():
    console = Console(file=io.StringIO(), width=70, height=30, color_system=None)
    console.print(Dashboard(narrow_run()))
    text = console.file.getvalue()
    for symbol in SYMBOLS:
        assert symbol in text, text


def test_the_rerun_command_spells_out_a_lake_that_came_from_elsewhere(tmp_path):
    argv = ("run", "--symbols", "BTC-USD", "--from", "2025-07-01")
    assert rerun_command(argv, Path("rel/lake")) == (
        "backfill",
        *argv,
        "--lake",
        str(Path("rel/lake").absolute()),
    )
    given = (*argv, "--lake", "./lake")
    assert rerun_command(given, tmp_path) == ("backfill", *given)
    assert rerun_command((*argv, "--lake=x"), tmp_path) == ("backfill", *argv, "--lake=x")


@pytest.mark.parametrize(
    "text,host,port",
    [
        ("[::1]:4002", "::1", 4002),
        ("[fe80::1]:7497", "fe80::1", 7497),
        ("127.0.0.1:4002", "127.0.0.1", 4002),
        ("gateway.local:7496", "gateway.local", 7496),
    ],
)
def test_gateway_addresses(text, host, port):
    address = GatewayAddress.parse(text)
    assert (address.host, address.port) == (host, port)
    assert str(address) == text


@pytest.mark.parametrize(
    "text",
    [
        "::1:4002",
        "[::1]",
        "host",
        "host:0",
        "host:65536",
        "host:x",
        "[::1]:",
        "user@host:1",
        "host:1/path",
        ":4002",
    ],
)
def test_bad_gateway_addresses(text):
    with pytest.raises(BadInput, match="--gateway"):
        GatewayAddress.parse(text)


def test_client_ids_fit_ibs_32_bits_and_avoid_its_unset_value():
    assert MAX_CLIENT_ID == 2**31 - 2
    check_client_ids(1, 8)
    check_client_ids(MAX_CLIENT_ID - 8, 8)
    for base, workers in [(MAX_CLIENT_ID - 7, 8), (2**31 - 1, 0), (0, 1), (2**40, 1)]:
        with pytest.raises(BadInput, match="--client-id-base"):
            check_client_ids(base, workers)


def test_pruning_keeps_the_newest_run_logs_and_nothing_else(tmp_path):
    names = [f"2025010{d}T000000Z-ab{d}0.jsonl" for d in range(1, 6)]
    for name in names:
        (tmp_path / name).write_text("")
    (tmp_path / "mine.jsonl").write_text("")
    gone = prune_run_logs(tmp_path, 2)
    assert [p.name for p in gone] == names[:3]
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted([*names[3:], "mine.jsonl"])


def test_a_run_log_write_that_fails_leaves_whole_lines_and_says_why(tmp_path):
    log = RunLog(tmp_path, run_id="20251125T130501Z-3fa9")
    log.on_event(ev.WorkerQueued("BTC-USD", days_total=1))
    # /dev/full fails every write with ENOSPC: swap it in under the open log.
    with open("/dev/full", "wb") as full:
        os.dup2(full.fileno(), log._sink._fd)  # type: ignore[attr-defined]
    log.on_event(ev.WorkerQueued("ETH-USD", days_total=1))
    assert "No space left on device" in log.failure
    log.on_event(ev.WorkerQueued("SOL-USD", days_total=1))  # ignored, no raise
    log.close()
    lines = log.path.read_text().splitlines()
    assert [json.loads(x)["symbol"] for x in lines] == ["BTC-USD"]


def test_days_and_rows_count_when_written_and_once_across_a_restart():
    state = RunState(["ETH-USD"], requests_total=4, rate_budget=1.0)
    state.apply(ev.WorkerQueued("ETH-USD", days_total=4))
    state.apply(ev.WorkerStarted("ETH-USD", client_id=100, days_total=4))
    for day in (1, 2, 3):
        state.apply(ev.DayFetched("ETH-USD", day=date(2025, 7, day), rows=1000, latency_s=0.1))
    assert (state.symbol("ETH-USD").days_done, state.symbol("ETH-USD").rows) == (0, 0)
    state.apply(
        ev.PartWritten("ETH-USD", month="2025-07", rows=2000, path="p", days=2, rows_added=2000)
    )
    # Killed holding day 3 unwritten; the restart is given the two days the lake lacks.
    state.apply(ev.WorkerStarted("ETH-USD", client_id=100, days_total=2))
    for day in (3, 4):
        state.apply(ev.DayFetched("ETH-USD", day=date(2025, 7, day), rows=1000, latency_s=0.1))
    state.apply(
        ev.PartWritten("ETH-USD", month="2025-07", rows=4000, path="p", days=2, rows_added=2000)
    )
    state.apply(ev.WorkerFinished("ETH-USD", days_fetched=2, rows=2000, days_written=2))
    eth = state.symbol("ETH-USD")
    assert (eth.days_done, eth.rows, eth.status) == (4, 4000, ev.Status.DONE)
