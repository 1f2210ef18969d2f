"""The dashboard, plain lines, NDJSON, run log and summary, driven by one scripted run."""

from __future__ import annotations

import io
import json
import re
from datetime import date, datetime, timezone
from pathlib import Path

import pytest
from rich.console import Console

from backfill.run import events as ev
from backfill.run.dashboard import (
    Dashboard,
    JsonRenderer,
    LiveDashboard,
    PlainRenderer,
    SymbolTable,
    describe,
    make_renderer,
    rerun_hint,
    summary_table,
)
from backfill.run.events import Status
from backfill.run.runlog import RunLog, new_run_id, run_log_path
from backfill.run.state import RunState

T0 = datetime(2025, 11, 25, 12, 0, 0, tzinfo=timezone.utc).timestamp()
SYMBOLS = ("BTC-USD", "ETH-USD", "SOL-USD")
BAR_CHARS = set("━╸╺")


class FakeClock:
    """Seconds since the epoch, moved by hand."""

    def __init__(self, now: float = T0) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


def d(day: int) -> date:
    return date(2025, 7, day)


def scripted_events() -> list[ev.Event]:
    """BTC fetches 3 of 4 days with a gap, ETH times out, trips 162 and fails, SOL waits."""
    return [
        *(ev.WorkerQueued(s, days_total=4, at=T0) for s in SYMBOLS),
        ev.WorkerStarted("BTC-USD", client_id=11, days_total=4, pid=100, at=T0 + 1),
        ev.WorkerStarted("ETH-USD", client_id=12, days_total=4, pid=101, at=T0 + 1),
        ev.RequestDone("BTC-USD", window="2025-07-01", outcome="bars", latency_s=0.2, at=T0 + 2),
        ev.DayFetched("BTC-USD", day=d(1), rows=1437, latency_s=0.2, at=T0 + 2),
        ev.GapFound(
            "BTC-USD",
            day=d(1),
            missing_minutes=3,
            ranges=(("2025-07-01T00:10", "2025-07-01T00:12"),),
            at=T0 + 2,
        ),
        ev.Paced("BTC-USD", wait_s=1.5, at=T0 + 3),
        ev.RequestDone("BTC-USD", window="2025-07-02", outcome="bars", latency_s=0.4, at=T0 + 4),
        ev.DayFetched("BTC-USD", day=d(2), rows=1440, latency_s=0.4, at=T0 + 4),
        ev.RequestDone("ETH-USD", window="2025-07-01", outcome="timeout", latency_s=5.0, at=T0 + 7),
        ev.Retry("ETH-USD", reason="timeout", attempt=1, delay_s=2.0, day=d(1), at=T0 + 7),
        ev.RequestDone("ETH-USD", window="2025-07-01", outcome="pacing", latency_s=0.1, at=T0 + 9),
        ev.PacingViolation("ETH-USD", backoff_s=30.0, at=T0 + 9),
        ev.DayFailed("ETH-USD", day=d(1), reason="timeout: no answer in 5s", at=T0 + 10),
        ev.WorkerFailed("ETH-USD", reason="gateway [disconnected]", days_failed=4, at=T0 + 11),
        ev.RequestDone("BTC-USD", window="2025-07-03", outcome="bars", latency_s=0.3, at=T0 + 12),
        ev.DayFetched("BTC-USD", day=d(3), rows=1440, latency_s=0.3, at=T0 + 12),
        # Days and rows count once written (a flush every minute writes what it holds).
        ev.PartWritten(
            "BTC-USD",
            month="2025-07",
            rows=4317,
            path="part-2025-07.parquet",
            days=3,
            rows_added=4317,
            at=T0 + 12,
        ),
    ]


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


@pytest.fixture
def state(clock: FakeClock) -> RunState:
    """The scripted run, 14 s in: 12 requests planned at a 0.7 req/s budget."""
    run = RunState(SYMBOLS, requests_total=12, rate_budget=0.7, clock=clock)
    for event in scripted_events():
        run.apply(event)
    clock.now = T0 + 14
    return run


def render(renderable: object) -> str:
    console = Console(record=True, width=140, force_terminal=True, file=io.StringIO())
    console.print(renderable)
    return console.export_text()


def row(text: str, symbol: str) -> list[str]:
    """The cells of ``symbol``'s row as words, progress bar glyphs left out."""
    (line,) = [ln for ln in text.splitlines() if ln.split()[:1] == [symbol]]
    return [word for word in line.split() if not set(word) <= BAR_CHARS]


# -- state ------------------------------------------------------------------------------


def test_state_folds_the_scripted_run(state: RunState) -> None:
    btc, eth, sol = (state.symbol(s) for s in SYMBOLS)
    assert (btc.status, btc.client_id, btc.days_done, btc.rows) == (Status.FETCHING, 11, 3, 4317)
    assert (btc.gaps, btc.missing_minutes, btc.current_day) == (1, 3, d(3))
    assert btc.last_latency_s == 0.3
    assert btc.avg_latency_s == pytest.approx(0.252)  # 0.2, then 0.2 weight on 0.4 and 0.3
    assert (eth.status, eth.retries, eth.days_failed, eth.failed_days) == (
        Status.FAILED,
        1,
        4,
        (d(1),),
    )
    assert eth.failed_reason == "gateway [disconnected]"
    assert (sol.status, sol.client_id, sol.days_total) == (Status.QUEUED, None, 4)


def test_snapshot_rate_eta_and_counts(state: RunState) -> None:
    snap = state.snapshot()
    # Window (4 s, 14 s]: the requests at 7, 9 and 12 s.
    assert snap.rate == pytest.approx(0.3)
    assert (snap.requests_done, snap.requests_answered, snap.requests_total) == (5, 3, 12)
    # 9 windows left at the observed 0.3 req/s, which is under the budget.
    assert snap.eta_s == pytest.approx(30.0)
    assert (snap.violations, snap.errors, snap.elapsed_s) == (1, 2, 14.0)


def test_eta_never_beats_the_budget(state: RunState) -> None:
    state.apply(ev.BudgetChanged("", at=T0 + 14, rate=0.2))
    assert state.snapshot().eta_s == pytest.approx(45.0)  # 9 left at 0.2 req/s


def test_eta_before_any_request_is_the_plan_estimate(clock: FakeClock) -> None:
    run = RunState(["BTC-USD"], requests_total=14, rate_budget=0.7, clock=clock)
    assert run.snapshot().eta_s == pytest.approx(20.0)
    assert run.snapshot().rate == 0.0


def test_rate_window_slides_and_tolerates_out_of_order_events(clock: FakeClock) -> None:
    run = RunState(["BTC-USD"], requests_total=100, rate_budget=1.0, clock=clock)
    for at in (T0 + 20, T0 + 12, T0 + 25, T0 + 15):
        run.apply(ev.RequestDone("BTC-USD", window="w", outcome="bars", latency_s=0.1, at=at))
    assert run.rate(now=T0 + 25) == pytest.approx(0.2)  # 20 and 25 are in (15, 25]
    assert run.rate(now=T0 + 31) == pytest.approx(0.1)  # only 25 left in (21, 31]
    assert run.rate(now=T0 + 40) == 0.0


def test_first_seconds_are_not_read_as_a_flood(clock: FakeClock) -> None:
    run = RunState(["BTC-USD"], requests_total=100, rate_budget=1.0, clock=clock)
    for _ in range(2):
        run.apply(ev.RequestDone("BTC-USD", window="w", outcome="bars", latency_s=0.1, at=T0))
    assert run.rate(now=T0 + 0.1) == pytest.approx(2.0)  # over one second, not 0.1 s
    assert run.rate(now=T0 + 4) == pytest.approx(0.5)  # over the 4 s elapsed


def test_finished_worker_is_not_reopened_by_late_activity(clock: FakeClock) -> None:
    run = RunState(["BTC-USD"], requests_total=1, rate_budget=1.0, clock=clock)
    run.apply(ev.WorkerFinished("BTC-USD", days_fetched=1, rows=10, at=T0))
    run.apply(ev.Paced("BTC-USD", wait_s=1.0, at=T0 + 1))
    assert run.symbol("BTC-USD").status is Status.DONE


def test_finished_with_failed_days_is_failed_and_keeps_the_day_reason(clock: FakeClock) -> None:
    run = RunState(["BTC-USD"], requests_total=2, rate_budget=1.0, clock=clock)
    run.apply(ev.DayFailed("BTC-USD", day=d(2), reason="error 162: HMDS query", at=T0))
    run.apply(ev.StatusChanged("BTC-USD", status=Status.FAILED, at=T0))  # as the worker does
    run.apply(ev.WorkerFinished("BTC-USD", days_fetched=1, rows=1440, days_failed=1, at=T0))
    btc = run.symbol("BTC-USD")
    assert (btc.status, btc.failed_reason, btc.needs_rerun) == (
        Status.FAILED,
        "error 162: HMDS query",
        True,
    )


def test_restart_counts_done_days_from_what_the_lake_lacks(clock: FakeClock) -> None:
    run = RunState(["BTC-USD"], requests_total=10, rate_budget=1.0, clock=clock)
    run.apply(ev.WorkerQueued("BTC-USD", days_total=10, at=T0))
    run.apply(ev.WorkerStarted("BTC-USD", client_id=11, days_total=10, at=T0))
    for day in (1, 2, 3, 4):
        run.apply(ev.DayFetched("BTC-USD", day=d(day), rows=1440, latency_s=0.1, at=T0))
    run.apply(ev.DayFailed("BTC-USD", day=d(5), reason="timeout", at=T0))
    # Crashed after flushing three days: the restarted worker is given the other seven.
    run.apply(ev.WorkerStarted("BTC-USD", client_id=13, days_total=7, at=T0 + 5))
    btc = run.symbol("BTC-USD")
    assert (btc.days_total, btc.days_done, btc.days_failed, btc.client_id, btc.starts) == (
        10,
        3,
        0,
        13,
        2,
    )
    assert btc.status is Status.CONNECTING


def test_events_for_an_unplanned_symbol_get_a_row(clock: FakeClock) -> None:
    run = RunState([], requests_total=1, rate_budget=1.0, clock=clock)
    run.apply(ev.WorkerStarted("XRP-USD", client_id=20, days_total=1, at=T0))
    assert [s.symbol for s in run.snapshot().symbols] == ["XRP-USD"]


# -- the live view ----------------------------------------------------------------------


def test_rows_show_status_client_progress_counts_and_reason(state: RunState) -> None:
    text = render(Dashboard(state))
    header = row(text, "Symbol")
    assert header == [
        "Symbol",
        "Status",
        "Client",
        "Progress",
        "Days",
        "Rows",
        "Day",
        "Latency",
        "Retries",
        "Gap",
        "days",
        "Failed",
    ]
    assert row(text, "BTC-USD") == [
        "BTC-USD",
        "fetching",
        "11",
        "75%",
        "3/4",
        "4,317",
        "2025-07-03",
        "0.25s",
        "0",
        "1",  # one day with minutes without a bar
        "0",
    ]
    assert row(text, "ETH-USD") == [
        "ETH-USD",
        "failed",
        "12",
        "0%",
        "0/4",
        "0",
        "-",
        "4.02s",
        "1",
        "0",
        "4",
    ]
    # IB text with brackets is shown, not eaten as markup, on a line of its own
    assert "ETH-USD: gateway [disconnected]" in text.splitlines()
    sol = ["SOL-USD", "queued", "-", "0%", "0/4", "0", "-", "-", "0", "0", "0"]
    assert row(text, "SOL-USD") == sol


def test_a_stalled_worker_shows_on_its_row_and_in_the_footer(state: RunState) -> None:
    state.apply(
        ev.StatusChanged(
            "BTC-USD", status=Status.STALLED, at=T0 + 15, detail="no word from its worker for 60s"
        )
    )
    text = render(Dashboard(state))
    assert row(text, "BTC-USD")[1] == "stalled"
    assert "1 queued · 1 failed · 1 stalled" in text, text


def test_footer_shows_rate_against_budget_requests_time_and_trouble(state: RunState) -> None:
    text = render(Dashboard(state))
    assert "rate 0.30/0.70 req/s" in text
    assert "requests 5/12" in text
    assert "elapsed 0:00:14" in text
    assert "ETA 0:00:30" in text
    assert "violations 1" in text
    assert "errors 2" in text
    assert "1 queued · 1 fetching · 1 failed" in text


def test_budget_change_shows_in_the_footer(state: RunState) -> None:
    rows = len(state.snapshot().symbols)
    state.apply(ev.BudgetChanged("", at=T0 + 14, rate=0.2, reason="stepped down"))
    text = render(Dashboard(state))
    assert "rate 0.30/0.20 req/s" in text
    assert "ETA 0:00:45" in text
    assert len(state.snapshot().symbols) == rows  # run-wide: no row for it
    assert describe(ev.BudgetChanged("", rate=0.2, reason="stepped down")) == (
        "budget 0.2 req/s (stepped down)"
    )


def test_footer_shows_why_the_budget_moved_and_latency_of_the_last_minute(
    state: RunState, clock
) -> None:
    text = render(Dashboard(state))
    # Answers at 2, 4 and 12 s took 0.2, 0.4 and 0.3 s; timeouts and 162s are not answers.
    assert "latency p50 0.30s p95 0.39s (last minute)" in text
    assert "budget -" in text
    reason = "latency p50 0.62s > 0.35s (base 0.10s): stepped down"
    state.apply(ev.BudgetChanged("", at=T0 + 14, rate=0.49, reason=reason))
    assert f"budget {reason}" in render(Dashboard(state))
    clock.now = T0 + 63  # the answer at 2 s is more than a minute old
    assert "latency p50 0.35s p95 0.40s (last minute)" in render(Dashboard(state))
    clock.now = T0 + 80
    assert "latency p50 - p95 - (last minute)" in render(Dashboard(state))


def test_long_table_keeps_urgent_rows_and_counts_the_rest(state: RunState) -> None:
    text = render(SymbolTable(state.snapshot().symbols, max_rows=2))
    assert row(text, "BTC-USD")[1] == "fetching"
    assert row(text, "ETH-USD")[1] == "failed"
    assert "SOL-USD" not in text
    assert "… and 1 more: 1 queued" in text


def test_dashboard_fits_the_screen_height(clock: FakeClock) -> None:
    names = [f"S{i:02d}-USD" for i in range(30)]
    run = RunState(names, requests_total=30, rate_budget=1.0, clock=clock)
    console = Console(record=True, width=140, height=20, force_terminal=True, file=io.StringIO())
    console.print(Dashboard(run))
    text = console.export_text()
    assert len(text.splitlines()) <= 20
    assert "… and 17 more: 17 queued" in text  # 20 lines - 4 footer - 3 table chrome = 13
    assert "requests 0/30" in text


def test_live_dashboard_leaves_the_last_frame(clock: FakeClock) -> None:
    run = RunState(["BTC-USD"], requests_total=1, rate_budget=0.7, clock=clock)
    console = Console(record=True, width=140, force_terminal=True, file=io.StringIO())
    with LiveDashboard(run, console) as live:
        for event in (
            ev.WorkerStarted("BTC-USD", client_id=11, days_total=1, at=T0),
            ev.RequestDone("BTC-USD", window="2025-07-01", outcome="bars", latency_s=0.2, at=T0),
            ev.DayFetched("BTC-USD", day=d(1), rows=1440, latency_s=0.2, at=T0),
            ev.PartWritten(
                "BTC-USD", month="2025-07", rows=1440, path="p", days=1, rows_added=1440, at=T0
            ),
            ev.WorkerFinished("BTC-USD", days_fetched=1, rows=1440, at=T0),
        ):
            run.apply(event)
            live.on_event(event)
    last = console.export_text().split("Symbol")[-1]
    assert row(last, "BTC-USD")[:6] == ["BTC-USD", "done", "11", "100%", "1/1", "1,440"]
    assert "requests 1/1" in last


# -- plain lines and NDJSON -------------------------------------------------------------


def test_plain_renderer_prints_a_line_per_event_but_answered_requests() -> None:
    out = io.StringIO()
    renderer = PlainRenderer(Console(file=out, width=80), verbose=True)
    for event in scripted_events():
        renderer.on_event(event)
    lines = out.getvalue().splitlines()
    told_by_day_lines = [
        e
        for e in scripted_events()
        if isinstance(e, ev.RequestDone) and e.outcome in ("bars", "no_data")
    ]
    assert len(lines) == len(scripted_events()) - len(told_by_day_lines)
    assert not [line for line in lines if ": bars in" in line]
    assert "12:00:07 ETH-USD request 2025-07-01: timeout in 5.00s" in lines
    assert lines[0] == "12:00:00 BTC-USD queued, 4 days"
    assert lines[3] == "12:00:01 BTC-USD started with clientId 11, 4 days"
    assert "12:00:02 BTC-USD day 2025-07-01 fetched 1437 rows in 0.20s" in lines
    assert "12:00:02 BTC-USD day 2025-07-01 gap: 3 min missing (00:10..00:12)" in lines
    assert "12:00:07 ETH-USD retry #1 day 2025-07-01 in 2.0s: timeout" in lines
    assert "12:00:09 ETH-USD pacing violation (162), backing off 30s" in lines
    assert "12:00:11 ETH-USD failed: gateway [disconnected] (4 days failed)" in lines


def test_json_renderer_writes_events_as_ndjson() -> None:
    out = io.StringIO()
    with JsonRenderer(out) as renderer:
        for event in scripted_events():
            renderer.on_event(event)
    parsed = [json.loads(line) for line in out.getvalue().splitlines()]
    assert parsed == [event.to_dict() for event in scripted_events()]
    assert parsed[-4]["event"] == "failed"


def test_make_renderer_chooses_by_output(state: RunState) -> None:
    pipe = Console(file=io.StringIO())
    tty = Console(file=io.StringIO(), force_terminal=True)
    assert isinstance(make_renderer(pipe, state), PlainRenderer)
    assert isinstance(make_renderer(tty, state), LiveDashboard)
    as_json = make_renderer(tty, state, json=True)
    assert isinstance(as_json, JsonRenderer)
    as_json.on_event(ev.Paced("BTC-USD", wait_s=1.0, at=T0))
    assert json.loads(tty.file.getvalue())["event"] == "paced"  # type: ignore[attr-defined]


# -- run log ----------------------------------------------------------------------------


def test_run_id_is_sortable_utc_time_and_a_token() -> None:
    when = datetime(2025, 11, 25, 13, 5, 1, tzinfo=timezone.utc)
    assert new_run_id(when, token="3fa9") == "20251125T130501Z-3fa9"
    assert re.fullmatch(r"\d{8}T\d{6}Z-[0-9a-f]{4}", new_run_id())


def test_run_log_has_one_json_object_per_event(tmp_path: Path) -> None:
    with RunLog(tmp_path, run_id="20251125T130501Z-3fa9") as log:
        assert log.path == tmp_path / "_runs" / "20251125T130501Z-3fa9.jsonl"
        assert log.path.exists()  # created on start, before any event
        for event in scripted_events()[:5]:
            log.on_event(event)
        # Flushed per line: a reader sees every event while the run goes on.
        assert len(log.path.read_text().splitlines()) == 5
        for event in scripted_events()[5:]:
            log.on_event(event)
    lines = run_log_path(tmp_path, "20251125T130501Z-3fa9").read_text().splitlines()
    assert [json.loads(line) for line in lines] == [e.to_dict() for e in scripted_events()]
    with pytest.raises(ValueError, match="closed"):
        log.on_event(scripted_events()[0])


# -- summary ----------------------------------------------------------------------------


def test_summary_table_names_failures(state: RunState) -> None:
    text = render(summary_table(state))
    assert "Run summary" in text
    btc = [c.strip() for c in next(ln for ln in text.splitlines() if "BTC-USD" in ln).split("│")]
    eth = [c.strip() for c in next(ln for ln in text.splitlines() if "ETH-USD" in ln).split("│")]
    assert btc[1:9] == ["BTC-USD", "fetching (unfinished)", "3/4", "4,317", "1", "3", "0", "0"]
    assert eth[1:9] == ["ETH-USD", "failed", "0/4", "0", "0", "0", "1", "4"]
    assert "ETH-USD: gateway [disconnected]" in text.splitlines()


def test_rerun_hint_names_what_to_rerun(state: RunState) -> None:
    hint = rerun_hint(state, ["backfill", "run", "--symbols", "BTC-USD,ETH-USD,SOL-USD"])
    assert hint is not None
    assert "ETH-USD (4 days failed: gateway [disconnected])" in hint
    assert "BTC-USD (unfinished)" in hint and "SOL-USD (unfinished)" in hint
    assert hint.endswith("\n  backfill run --symbols BTC-USD,ETH-USD,SOL-USD")


def test_no_rerun_hint_when_everything_finished(clock: FakeClock) -> None:
    run = RunState(["BTC-USD", "ETH-USD"], requests_total=2, rate_budget=1.0, clock=clock)
    for symbol in ("BTC-USD", "ETH-USD"):
        run.apply(ev.WorkerFinished(symbol, days_fetched=1, rows=1440, at=T0))
    assert rerun_hint(run, ["backfill", "run"]) is None
    assert "failed" not in render(summary_table(run))


def test_a_gap_line_names_minutes_by_their_end_time() -> None:
    one, span = ("2025-07-01T01:21:00+00:00",) * 2, ("2025-07-01T02:00", "2025-07-01T02:04")
    gap = ev.GapFound("BTC-USD", day=date(2025, 7, 1), missing_minutes=6, ranges=(one, span))
    assert describe(gap) == "BTC-USD day 2025-07-01 gap: 6 min missing (01:21, 02:00..02:04)"


# -- issue 19: fits 100-120 columns, rows fetched, the in-flight cap, quiet plain lines ----


def busy_run(clock: FakeClock) -> RunState:
    """Ten years of days, millions of rows, long notes: the widest cells a run shows."""
    names = ("BTC-USD", "MATIC-USD", "DOGE-USD", "SOL-USD")
    run = RunState(names, requests_total=14612, rate_budget=0.7, clock=clock)
    for i, name in enumerate(names):
        run.apply(ev.WorkerStarted(name, client_id=100 + i, days_total=3653, at=T0))
    for k in range(40):
        run.apply(
            ev.RequestDone("BTC-USD", window="w", outcome="bars", latency_s=12.345, at=T0 + k)
        )
        run.apply(ev.DayFetched("BTC-USD", day=d(1), rows=1440, latency_s=12.345, at=T0 + k))
    run.apply(
        ev.PartWritten(
            "BTC-USD",
            month="2025-07",
            rows=1,
            path="p",
            days=3600,
            rows_added=5_183_999,
            at=T0 + 40,
        )
    )
    for _ in range(1234):
        run.apply(ev.GapFound("BTC-USD", day=d(1), missing_minutes=10, at=T0 + 40))
    run.apply(ev.StatusChanged("MATIC-USD", status=Status.CONNECTING, at=T0 + 40))
    run.apply(
        ev.Retry(
            "SOL-USD",
            reason="timeout: no answer in 30s",
            attempt=3,
            delay_s=12.5,
            day=d(2),
            at=T0 + 40,
        )
    )
    for _ in range(1000):
        run.apply(
            ev.DayFailed(
                "DOGE-USD", day=d(3), reason="162: HMDS query returned no data", at=T0 + 40
            )
        )
    run.apply(
        ev.WorkerFailed(
            "DOGE-USD", reason="162: HMDS query returned no data", days_failed=1000, at=T0 + 41
        )
    )
    clock.now = T0 + 50
    return run


@pytest.mark.parametrize("width", [100, 120])
def test_the_dashboard_fits_100_to_120_columns_whole(clock: FakeClock, width: int) -> None:
    run = busy_run(clock)
    console = Console(record=True, width=width, height=40, force_terminal=True, file=io.StringIO())
    console.print(Dashboard(run))
    text = console.export_text()
    assert "…" not in text, text
    assert all(len(line) <= width for line in text.splitlines())
    assert row(text, "BTC-USD") == [
        "BTC-USD",
        "fetching",
        "100",
        "98%",
        "3600/3653",
        "5.2M",
        "2025-07-01",
        "12.35s",
        "0",
        "1234",
        "0",
    ]
    assert row(text, "MATIC-USD")[:2] == ["MATIC-USD", "connecting"]
    assert row(text, "DOGE-USD")[-1] == "1000"
    assert "SOL-USD: timeout: no answer in 30s #3, in 12.5s" in text
    assert "DOGE-USD: 162: HMDS query returned no data" in text


def test_rows_climb_with_the_days_before_a_part_is_written(clock: FakeClock) -> None:
    run = RunState(["BTC-USD"], requests_total=2, rate_budget=0.7, clock=clock)
    run.apply(ev.WorkerStarted("BTC-USD", client_id=11, days_total=2, at=T0))
    run.apply(ev.DayFetched("BTC-USD", day=d(1), rows=1437, latency_s=0.2, at=T0))
    assert row(render(Dashboard(run)), "BTC-USD")[3:6] == ["50%", "1/2", "1,437"]
    summary = render(summary_table(run))
    headers = " ".join(line for line in summary.splitlines() if "┃" in line)
    assert "Rows" in headers and "written" in headers, summary


def test_a_short_wait_on_the_in_flight_cap_is_fetching_not_paced(clock: FakeClock) -> None:
    run = RunState(["BTC-USD"], requests_total=9, rate_budget=0.7, clock=clock)
    run.apply(ev.WorkerStarted("BTC-USD", client_id=11, days_total=9, at=T0))
    run.apply(ev.StatusChanged("BTC-USD", status=Status.PACED, detail="in-flight cap", at=T0))
    clock.now = T0 + 0.5
    text = render(Dashboard(run))
    assert row(text, "BTC-USD")[1] == "fetching" and "in-flight cap" not in text
    assert "1 fetching" in text
    clock.now = T0 + 30  # the cap has held it back for a meaningful time: say so
    text = render(Dashboard(run))
    assert row(text, "BTC-USD")[1] == "paced" and "BTC-USD: in-flight cap" in text
    assert "1 paced" in text
    run.apply(ev.StatusChanged("BTC-USD", status=Status.PACED, detail="rate wait 1.0s", at=T0 + 30))
    assert row(render(Dashboard(run)), "BTC-USD")[1] == "paced", "other pacing at once"


def test_plain_lines_tell_days_parts_and_failures_unless_verbose() -> None:
    out = io.StringIO()
    renderer = PlainRenderer(Console(file=out, width=80))
    for event in scripted_events():
        renderer.on_event(event)
    lines = [line[9:] for line in out.getvalue().splitlines()]
    assert lines == [
        "BTC-USD started with clientId 11, 4 days",
        "ETH-USD started with clientId 12, 4 days",
        "BTC-USD day 2025-07-01 fetched 1437 rows in 0.20s",
        "BTC-USD day 2025-07-02 fetched 1440 rows in 0.40s",
        "ETH-USD pacing violation (162), backing off 30s",
        "ETH-USD day 2025-07-01 failed: timeout: no answer in 5s",
        "ETH-USD failed: gateway [disconnected] (4 days failed)",
        "BTC-USD day 2025-07-03 fetched 1440 rows in 0.30s",
        "BTC-USD wrote 2025-07: 4317 rows to part-2025-07.parquet",
    ]


def test_the_summary_is_whole_at_100_columns(clock: FakeClock) -> None:
    console = Console(record=True, width=100, file=io.StringIO())
    console.print(summary_table(busy_run(clock)))
    text = console.export_text()
    assert "…" not in text, text
    btc = [c.strip() for c in next(ln for ln in text.splitlines() if "BTC-USD" in ln).split("│")]
    assert btc[1:9] == [
        "BTC-USD",
        "fetching (unfinished)",
        "3600/3653",
        "5,183,999",
        "1234",
        "12,340",
        "0",
        "0",
    ]
    assert "DOGE-USD: 162: HMDS query returned no data" in text
