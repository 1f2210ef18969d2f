"""The worker in-process (its own event loop) against the simulator: its event contract."""

from __future__ import annotations

import threading
import time
from collections import Counter
from collections.abc import Callable
from datetime import date, datetime, timedelta, timezone
from pathlib import Path

import pytest

from backfill.domain import Symbol, days_between, group_windows
from backfill.lake.paths import symbol_dir
from backfill.run import events as ev
from backfill.run.worker import LocalControls, WorkerConfig, run_worker
from backfill.settings import IBRules, RunSettings
from backfill.sim import FaultConfig
from tests.lake.helpers import read_coverage
from tests.oracle import expected_bars, lake_rows

ETH = Symbol("ETH", "USD")


# The simulator's FAST_PACING: IB's limits divided by ten.
FAST_IB = IBRules(identical_s=1.5, contract_window_s=0.2)


def config(gateway, lake: Path, days: list[date], **settings) -> WorkerConfig:
    """A worker for ``days`` of ETH, with the run's ``settings`` given as keywords."""
    run_settings = RunSettings(ib=FAST_IB, **settings)
    return WorkerConfig(
        lake=lake,
        symbol=ETH,
        windows=tuple(group_windows(days, run_settings.window_days)),
        host=gateway.host,
        port=gateway.port,
        client_id=7,
        settings=run_settings,
    )


def when_days_fetched(n: int, action: Callable[[], object]) -> Callable[[ev.Event], None]:
    """An event sink that runs ``action`` once, as the ``n``-th day fetched is told."""
    fetched = 0

    def sink(event: ev.Event) -> None:
        nonlocal fetched
        if isinstance(event, ev.DayFetched):
            fetched += 1
            if fetched == n:
                action()

    return sink


def test_events_tell_the_whole_story_of_a_month_boundary(sim, tmp_path):
    days = days_between(date(2025, 7, 30), date(2025, 8, 2))
    events: list[ev.Event] = []
    outcome = run_worker(config(sim, tmp_path, days), events.append, LocalControls(50.0))
    assert outcome.days_fetched == 4 and not outcome.days_failed and not outcome.failure
    kinds = [type(e) for e in events]
    assert kinds[0] is ev.WorkerStarted and kinds[-1] is ev.WorkerFinished
    assert sorted(e.day for e in events if isinstance(e, ev.DayFetched)) == days
    assert Counter(e.outcome for e in events if isinstance(e, ev.RequestDone)) == {"bars": 4}
    assert sorted(e.month for e in events if isinstance(e, ev.PartWritten)) == [
        "2025-07",
        "2025-08",
    ]
    rows = sum(e.rows for e in events if isinstance(e, ev.DayFetched))
    assert rows == outcome.rows == len(expected_bars(sim.market, ETH, days[0], days[-1]))
    assert lake_rows(tmp_path, ETH) == expected_bars(sim.market, ETH, days[0], days[-1])


def test_retries_are_events_with_their_reason(sim, tmp_path):
    sim.set_faults(FaultConfig(error_share=0.5, seed=2))
    days = days_between(date(2025, 7, 1), date(2025, 7, 8))
    events: list[ev.Event] = []
    outcome = run_worker(
        config(sim, tmp_path, days, retry_base_s=0.05), events.append, LocalControls(50.0)
    )
    assert outcome.days_fetched == 8 and not outcome.days_failed
    retries = [e for e in events if isinstance(e, ev.Retry)]
    assert retries and all("162" in e.reason and e.attempt >= 1 for e in retries)
    errors = sum(1 for e in events if isinstance(e, ev.RequestDone) and e.outcome == "error")
    assert errors == len(retries)


def test_a_stop_request_ends_the_worker_without_failing_days(sim, tmp_path):
    controls = LocalControls(2.0)
    events: list[ev.Event] = []

    def stop_after_three_days(event: ev.Event) -> None:
        events.append(event)
        if sum(isinstance(e, ev.DayFetched) for e in events) == 3:
            controls.stop = True

    days = days_between(date(2025, 7, 1), date(2025, 7, 31))
    outcome = run_worker(config(sim, tmp_path, days), stop_after_three_days, controls)
    assert outcome.interrupted and not outcome.days_failed
    assert 3 <= outcome.days_fetched < 31
    stopped = [
        e for e in events if isinstance(e, ev.StatusChanged) and e.status is ev.Status.STOPPED
    ]
    left = 31 - outcome.days_fetched
    assert stopped and f"{left} day{'s' * (left != 1)} left" in stopped[-1].detail
    assert len({r[0].date() for r in lake_rows(tmp_path, ETH)}) == outcome.days_fetched


def test_pause_all_holds_back_every_request(sim, tmp_path):
    # Another worker's 162: the orchestrator sets pause-all; this worker sends nothing until.
    controls = LocalControls(50.0, pause_until=time.time() + 1.0)
    run_worker(config(sim, tmp_path, [date(2025, 7, 1)]), lambda e: None, controls)
    first = min(r.received for r in sim.requests() if r.kind == "historical")
    assert first >= controls.pause_until


def test_many_disconnects_over_a_long_run_do_not_fail_it(make_sim, tmp_path):
    # Every connection is dropped after 3 answers: a month takes ten reconnects, each
    # outage short. Only an outage that lasts, not their number, may fail a worker.
    gateway = make_sim(faults=FaultConfig(drop_after=3))
    days = days_between(date(2025, 7, 1), date(2025, 7, 31))
    events: list[ev.Event] = []
    outcome = run_worker(
        config(gateway, tmp_path, days, retry_base_s=0.02), events.append, LocalControls(50.0)
    )
    assert not outcome.failure and outcome.days_fetched == 31
    assert sum(isinstance(e, ev.Retry) and e.reason == "disconnected" for e in events) >= 9
    assert lake_rows(tmp_path, ETH) == expected_bars(gateway.market, ETH, days[0], days[-1])


def test_a_gateway_gone_for_good_fails_the_worker_after_the_reconnect_window(make_sim, tmp_path):
    gateway = make_sim()
    days = days_between(date(2025, 7, 1), date(2025, 7, 10))
    started = time.monotonic()
    outcome = run_worker(
        config(gateway, tmp_path, days, retry_base_s=0.2, reconnect_for_s=2.0),
        when_days_fetched(2, gateway.stop),
        LocalControls(50.0),
    )
    assert "giving up" in outcome.failure
    assert time.monotonic() - started < 30
    assert 2 <= outcome.days_fetched < 10
    assert len(outcome.days_failed) == 10 - outcome.days_fetched  # reported, not dropped
    # What was fetched before the gateway went away is in the lake.
    assert len({row[0].date() for row in lake_rows(tmp_path, ETH)}) == outcome.days_fetched


def test_ib_connectivity_loss_holds_requests_and_costs_no_attempts(sim, tmp_path):
    # IB's nightly reset: the gateway stays connected but says 1100, then 1102 two seconds
    # later. With a single attempt per day and a 1 s timeout, any request lost to the outage
    # would fail its day unless the worker excuses it and holds the rest.
    days = days_between(date(2025, 7, 1), date(2025, 7, 12))
    outage: list[float] = []
    events: list[ev.Event] = []

    def lose_upstream_after_three_days(event: ev.Event) -> None:
        events.append(event)
        fetched = sum(isinstance(e, ev.DayFetched) for e in events)
        if fetched == 3 and not outage:
            outage.append(time.time())
            sim.lose_upstream()
            restore = threading.Timer(
                2.0, lambda: (outage.append(time.time()), sim.restore_upstream())
            )
            restore.start()

    outcome = run_worker(
        config(sim, tmp_path, days, max_attempts=1, request_timeout_s=1.0, max_in_flight=2),
        lose_upstream_after_three_days,
        LocalControls(10.0),
    )
    assert not outcome.failure and not outcome.days_failed
    assert outcome.days_fetched == 12
    assert lake_rows(tmp_path, ETH) == expected_bars(sim.market, ETH, days[0], days[-1])
    lost, restored = outage
    during = [r for r in sim.requests() if r.kind == "historical" and lost < r.received < restored]
    # Only what was already on the wire when the 1100 arrived: then the worker held back.
    assert len(during) <= 2
    assert any(isinstance(e, ev.StatusChanged) and "1100" in e.detail for e in events)


def test_a_stop_is_heard_while_every_request_hangs(sim, tmp_path):
    sim.set_faults(FaultConfig(hang_share=1.0))
    controls = LocalControls(50.0)
    threading.Timer(1.0, lambda: setattr(controls, "stop", True)).start()
    started = time.monotonic()
    outcome = run_worker(
        config(
            sim, tmp_path, days_between(date(2025, 7, 1), date(2025, 7, 8)), request_timeout_s=30.0
        ),
        lambda e: None,
        controls,
    )
    # One second, then at most the two-second grace for requests in flight: not 30 s.
    assert time.monotonic() - started < 6.0
    assert outcome.interrupted and not outcome.days_failed and not outcome.failure


def test_a_stop_while_reconnecting_is_an_interruption_not_a_failure(make_sim, tmp_path):
    gateway = make_sim()
    controls = LocalControls(50.0)
    events: list[ev.Event] = []

    def stop_the_gateway_then_the_worker(event: ev.Event) -> None:
        events.append(event)
        if sum(isinstance(e, ev.DayFetched) for e in events) == 2 and isinstance(
            event, ev.DayFetched
        ):
            gateway.stop()
            threading.Timer(1.0, lambda: setattr(controls, "stop", True)).start()

    outcome = run_worker(
        config(gateway, tmp_path, days_between(date(2025, 7, 1), date(2025, 7, 10))),
        stop_the_gateway_then_the_worker,
        controls,
    )
    assert outcome.interrupted and not outcome.failure and not outcome.days_failed
    assert not [e for e in events if isinstance(e, (ev.DayFailed, ev.WorkerFailed))]
    final = [e for e in events if isinstance(e, ev.StatusChanged)][-1]
    assert final.status is ev.Status.STOPPED


def test_a_dying_event_sink_never_leaves_a_day_recorded_without_its_bars(sim, tmp_path):
    # The parent vanished (BrokenPipe) just as a 2-day window was being taken in: whatever
    # the worker flushes on its way out must hold each recorded day's bars.
    days = [date(2025, 7, 1), date(2025, 7, 2)]

    def parent_gone() -> None:
        raise BrokenPipeError("the orchestrator is gone")

    with pytest.raises(BrokenPipeError):
        run_worker(
            config(sim, tmp_path, days, window_days=2),
            when_days_fetched(2, parent_gone),
            LocalControls(50.0),
        )
    coverage = read_coverage(tmp_path, [ETH], days[0], days[-1])[ETH]
    assert coverage, "the window was taken in before the sink failed"
    for day, record in coverage.items():
        assert record.rows == len(expected_bars(sim.market, ETH, day, day)) > 0, day


def test_a_day_asked_right_after_it_ended_stays_partial(sim, tmp_path):
    # A settle time longer than the time since yesterday ended stands for a run at 00:01.
    yesterday = datetime.now(timezone.utc).date() - timedelta(days=1)
    outcome = run_worker(
        config(sim, tmp_path, [yesterday], settle_s=2 * 86_400), lambda e: None, LocalControls(50.0)
    )
    assert outcome.days_fetched == 1
    record = read_coverage(tmp_path, [ETH], yesterday, yesterday)[ETH][yesterday]
    assert not record.complete and record.rows > 0


def test_ib_connectivity_lost_for_good_fails_every_day_left_none_forgotten(sim, tmp_path):
    days = days_between(date(2025, 7, 1), date(2025, 7, 10))

    def hang_then_lose_upstream() -> None:
        # Requests hang from now; IB's 1100 follows while they are out, for good.
        sim.set_faults(FaultConfig(hang_share=1.0))
        threading.Timer(0.3, sim.lose_upstream).start()

    outcome = run_worker(
        config(sim, tmp_path, days, reconnect_for_s=1.0, max_in_flight=4),
        when_days_fetched(2, hang_then_lose_upstream),
        LocalControls(50.0),
    )
    assert "1100" in outcome.failure
    # Requests out when the worker gave up are failed with the rest, not lost track of.
    assert outcome.days_fetched + len(outcome.days_failed) == len(days)
    assert outcome.days_fetched >= 2


def test_a_lake_it_cannot_write_fails_the_worker_with_the_reason(sim, tmp_path):
    # A file where the symbol's folder must go: every part write fails with an OSError.
    in_the_way = symbol_dir(tmp_path, ETH)
    in_the_way.parent.mkdir(parents=True)
    in_the_way.write_text("not a folder")
    outcome = run_worker(
        config(sim, tmp_path, [date(2025, 7, 1), date(2025, 7, 2)]),
        lambda e: None,
        LocalControls(50.0),
    )
    assert outcome.failure.startswith("cannot write the lake:")
    assert in_the_way.read_text() == "not a folder"


def test_a_day_whose_every_attempt_timed_out_is_failed_and_never_recorded(sim, tmp_path):
    # The first day is answered; from then on every request hangs until its timeout. A day
    # the gateway never answered must stay missing in the lake (the next run asks again),
    # not be written as an empty, complete day beside the one that was fetched.
    days = days_between(date(2025, 7, 1), date(2025, 7, 3))
    events: list[ev.Event] = []
    hang_from_now = when_days_fetched(1, lambda: sim.set_faults(FaultConfig(hang_share=1.0)))

    def sink(event: ev.Event) -> None:
        events.append(event)
        hang_from_now(event)

    outcome = run_worker(
        config(
            sim,
            tmp_path,
            days,
            max_in_flight=1,
            max_attempts=2,
            request_timeout_s=0.3,
            retry_base_s=0.05,
        ),
        sink,
        LocalControls(50.0),
    )
    assert outcome.days_fetched == 1 and outcome.days_failed == tuple(days[1:])
    failed = [e for e in events if isinstance(e, ev.DayFailed)]
    assert sorted(e.day for e in failed) == days[1:]
    assert all(e.reason.startswith("timeout") for e in failed)
    timeouts = Counter(
        e.window for e in events if isinstance(e, ev.RequestDone) and e.outcome == "timeout"
    )
    assert sorted(timeouts.values()) == [2, 2], "each hung day had all its attempts"
    coverage = read_coverage(tmp_path, [ETH], days[0], days[-1])[ETH]
    assert list(coverage) == [days[0]], "only the day answered is recorded"
    assert lake_rows(tmp_path, ETH) == expected_bars(sim.market, ETH, days[0], days[0])
    assert not any(isinstance(e, ev.DayFetched) and e.day in days[1:] for e in events)


def test_no_send_waits_for_a_months_write(sim, tmp_path, monkeypatch):
    # July is done after two days; while its part is being written (held here until the
    # worker has told three more days fetched), the worker goes on asking for August.
    import backfill.run.worker as worker_module

    real_write = worker_module.write_batch
    sent_while_writing: list[bool] = []
    events: list[ev.Event] = []
    fetched = threading.Condition()

    def sink(event: ev.Event) -> None:
        with fetched:
            events.append(event)
            fetched.notify_all()

    def days_fetched() -> int:
        return sum(isinstance(e, ev.DayFetched) for e in events)

    def slow_write(lake, symbol, bars, days, **kwargs):
        if days[0].month == 7:
            with fetched:
                before = days_fetched()
                came = fetched.wait_for(lambda: days_fetched() >= before + 3, timeout=5.0)
            sent_while_writing.append(came)
        return real_write(lake, symbol, bars, days, **kwargs)

    monkeypatch.setattr(worker_module, "write_batch", slow_write)
    days = days_between(date(2025, 7, 30), date(2025, 8, 10))
    outcome = run_worker(config(sim, tmp_path, days), sink, LocalControls(5.0))
    assert sent_while_writing == [True], "the sends stopped while July was written"
    assert outcome.days_fetched == len(days) and not outcome.days_failed and not outcome.failure
    assert sorted(e.month for e in events if isinstance(e, ev.PartWritten)) == [
        "2025-07",
        "2025-08",
    ]
    assert lake_rows(tmp_path, ETH) == expected_bars(sim.market, ETH, days[0], days[-1])


def test_a_stop_during_a_months_write_waits_for_it_and_tells_it(sim, tmp_path, monkeypatch):
    # Ctrl-C arrives while July's part is being written: the worker ends only once the part
    # is written whole, and says so, before it says it stopped.
    import backfill.run.worker as worker_module

    real_write = worker_module.write_batch
    controls = LocalControls(5.0)
    events: list[ev.Event] = []

    said_stopped = threading.Event()

    def sink(event: ev.Event) -> None:
        events.append(event)
        if isinstance(event, ev.StatusChanged) and event.status is ev.Status.STOPPED:
            said_stopped.set()

    def write_through_a_stop(lake, symbol, bars, days, **kwargs):
        if days[0].month == 7:
            controls.stop = True
            said_stopped.wait(1.0)  # a worker that did not wait for the write says so now
        return real_write(lake, symbol, bars, days, **kwargs)

    monkeypatch.setattr(worker_module, "write_batch", write_through_a_stop)
    days = days_between(date(2025, 7, 30), date(2025, 8, 10))
    outcome = run_worker(config(sim, tmp_path, days), sink, controls)
    assert outcome.interrupted and not outcome.days_failed
    kinds = [(type(e), getattr(e, "month", None)) for e in events]
    assert (ev.PartWritten, "2025-07") in kinds, "July's write was not waited for"
    assert kinds.index((ev.PartWritten, "2025-07")) < next(
        i
        for i, e in enumerate(events)
        if isinstance(e, ev.StatusChanged) and e.status is ev.Status.STOPPED
    )
    july = [d for d in days if d.month == 7]
    assert {r[0].date() for r in lake_rows(tmp_path, ETH)} >= set(july)


def test_a_months_write_that_fails_off_the_loop_fails_its_days_with_the_reason(
    sim, tmp_path, monkeypatch
):
    import backfill.run.worker as worker_module

    real_write = worker_module.write_batch

    def july_disk_full(lake, symbol, bars, days, **kwargs):
        if days[0].month == 7:
            raise OSError("disk full")
        return real_write(lake, symbol, bars, days, **kwargs)

    monkeypatch.setattr(worker_module, "write_batch", july_disk_full)
    days = days_between(date(2025, 7, 30), date(2025, 8, 10))
    events: list[ev.Event] = []
    outcome = run_worker(config(sim, tmp_path, days), events.append, LocalControls(5.0))
    assert outcome.failure == "cannot write the lake: disk full"
    july = [d for d in days if d.month == 7]
    assert set(july) <= set(outcome.days_failed)
    reasons = {e.day: e.reason for e in events if isinstance(e, ev.DayFailed)}
    assert all(reasons[d] == "cannot write the lake: disk full" for d in july)
    assert not any(r[0].month == 7 for r in lake_rows(tmp_path, ETH))
