"""``backfill gateway``: the embedded IB Gateway simulator's command line.

Its options (one per simulated behaviour) read as a block here; ``backfill.cli`` registers
the command on its app, after the others.
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Annotated

import typer

from backfill.cli_exit import EXIT_FAILED, fail_bad_input
from backfill.domain import BadInput
from backfill.sim.behaviour import DayDuration, HeaderFormat, Overload, TooLong, WindowEdges
from backfill.sim.flags import GatewayFlags, MsRange, exposure_warning

# Where it listens, what it serves, and for whom.
HostOpt = Annotated[str, typer.Option("--host", help="Address to listen on.")]
PortOpt = Annotated[
    int, typer.Option("--port", min=0, max=65535, help="TCP port; 0 picks a free one.")
]
SeedOpt = Annotated[int, typer.Option("--seed", help="Seed of bars and faults.")]
LatencyMsOpt = Annotated[
    MsRange,
    typer.Option(
        "--latency-ms",
        parser=MsRange.parse,
        metavar="MIN-MAX",
        help="Answer latency in ms, uniform within MIN-MAX (or one N).",
    ),
]
NoPacingOpt = Annotated[bool, typer.Option("--no-pacing", help="Disable every limit.")]
StrictPacingOpt = Annotated[
    bool, typer.Option("--strict-pacing", help="60 requests/10 min for every bar size.")
]
LogOpt = Annotated[
    Path | None, typer.Option("--log", help="Append the request log here (JSON lines).")
]
SymbolsOpt = Annotated[
    str | None, typer.Option("--symbols", help="Base assets quoted in USD, e.g. BTC,ETH.")
]

# IB's limits, and faults.
SoftRateOpt = Annotated[
    float, typer.Option("--soft-rate", min=0.0, help="Req/s above which answers slow (0 = off).")
]
MaxRateOpt = Annotated[
    float, typer.Option("--max-rate", min=0.0, help="Req/s over 10 s above which: 162 (0 = off).")
]
IdenticalWindowOpt = Annotated[
    float,
    typer.Option("--identical-window", min=0.0, help="Seconds an identical request is paced."),
]
ContractWindowOpt = Annotated[
    float, typer.Option("--contract-window", min=0.0, help="Seconds of the 6-per-contract rule.")
]
MaxOpenOpt = Annotated[
    int, typer.Option("--max-open", min=1, help="Open historical requests allowed.")
]
HangShareOpt = Annotated[
    float, typer.Option("--hang-share", min=0.0, max=1.0, help="Share of requests never answered.")
]
ErrorShareOpt = Annotated[
    float,
    typer.Option("--error-share", min=0.0, max=1.0, help="Share answered with a transient 162."),
]
DropAfterOpt = Annotated[
    int | None,
    typer.Option("--drop-after", min=0, help="Drop a connection after N data requests."),
]
DropShareOpt = Annotated[
    float,
    typer.Option(
        "--drop-share", min=0.0, max=1.0, help="Share of requests that drop the connection."
    ),
]
MaxDurationDaysOpt = Annotated[
    float,
    typer.Option("--max-duration-days", min=0.0, help="Longest 1-min request, in days (> 0)."),
]
NoTradeShareOpt = Annotated[
    float,
    typer.Option(
        "--no-trade-share", min=0.0, max=1.0, help="Share of minutes without a bar (< 1)."
    ),
]

# Whoever starts the gateway as a child.
ParentPidOpt = Annotated[
    int | None,
    typer.Option(
        "--parent-pid",
        min=1,
        help="Exit when this process ends (a lifeline for "
        "whoever starts the gateway as a child; checked 5 times a second).",
    ),
]

# Where real IB's behaviour is undocumented: one switch per plausible answer.
WindowEdgesOpt = Annotated[
    WindowEdges,
    typer.Option(
        "--window-edges",
        help="Bar starts served for end-duration..end, in "
        "interval notation ('()': 1,439 minutes in 86400 S).",
    ),
]
TimezoneOpt = Annotated[
    str,
    typer.Option(
        "--timezone",
        help="The login time zone (IANA name): header and "
        "formatDate=1 times, zone-less end times; named in the handshake.",
    ),
]
DayDurationOpt = Annotated[
    DayDuration,
    typer.Option(
        "--day-duration",
        help="'N D' as N*24 h, or as N sessions of a calendar "
        "with a weekly break (the header says which window was served).",
    ),
]
SessionBreakOpt = Annotated[
    str,
    typer.Option(
        "--session-break",
        help="Weekdays without a session under "
        "--day-duration sessions, e.g. sat,sun; 'none' for none.",
    ),
]
TooLongOpt = Annotated[
    TooLong,
    typer.Option(
        "--too-long",
        help="A request over --max-duration-days: 162 'Time length "
        "exceed max.', or never answered.",
    ),
]
NoPermissionOpt = Annotated[
    str | None,
    typer.Option(
        "--no-permission",
        help="Base assets answered 162 'No market data permissions', e.g. BTC,ETH.",
    ),
]
CompetingSessionAfterOpt = Annotated[
    int | None,
    typer.Option(
        "--competing-session-after",
        min=0,
        help="Data requests served before a competing session blocks the rest (162 or 10197).",
    ),
]
CompetingSessionForOpt = Annotated[
    float | None,
    typer.Option(
        "--competing-session-for",
        min=0.0,
        help="Seconds the competing session lasts. Default: for good.",
        show_default=False,
    ),
]
CompetingSessionCodeOpt = Annotated[
    int,
    typer.Option(
        "--competing-session-code",
        help="162 (connected from a different IP address) or 10197 (competing live session).",
    ),
]
FarmDownAfterOpt = Annotated[
    int | None,
    typer.Option(
        "--farm-down-after",
        min=0,
        help="Data requests served before 2105 'HMDS "
        "data farm connection is broken': later ones are held until 2106.",
    ),
]
FarmDownForOpt = Annotated[
    float,
    typer.Option("--farm-down-for", min=0.0, help="Seconds from 2105 to 2106 (--farm-down-after)."),
]
PartialLastBarOpt = Annotated[
    bool,
    typer.Option(
        "--partial-last-bar",
        help="A window reaching into the future also gets the bar of the minute still forming.",
    ),
]
CancelAnswerOpt = Annotated[
    int,
    typer.Option(
        "--cancel-answer",
        help="A cancelled open request gets 162 'query "
        "cancelled' or 366 'No historical data query found'.",
    ),
]
OverloadOpt = Annotated[
    Overload,
    typer.Option(
        "--overload",
        help="Past --soft-rate answers slow; 'disconnect' also drops "
        "a client that adds to a sustained overload.",
    ),
]
OverloadQueueOpt = Annotated[
    int,
    typer.Option(
        "--overload-queue",
        min=1,
        help="Requests waiting on the soft "
        "throttle at which one more is an overload (--overload disconnect).",
    ),
]
OverloadAfterOpt = Annotated[
    float,
    typer.Option(
        "--overload-after",
        min=0.0,
        help="Seconds of slowed answers after "
        "which one more is an overload (--overload disconnect).",
    ),
]
HeaderFormatOpt = Annotated[
    HeaderFormat,
    typer.Option(
        "--header-format",
        help="How the served window's start/end are written: "
        "login '20250714  08:59:54' (login zone), named '20250714 08:59:54 "
        "America/New_York', utc-dash '20250714-12:59:54', dashed '2025-07-14 "
        "08:59:54.0 America/New_York', utc-bare '20250714 12:59:54' (UTC), "
        "epoch. formatDate=1 bar times name the zone unless login.",
    ),
]
HeaderShiftSOpt = Annotated[
    int,
    typer.Option(
        "--header-shift-s",
        help="Move both header times by this many seconds (a lying header; bars unaffected).",
    ),
]


def gateway(
    host: HostOpt = "127.0.0.1",
    port: PortOpt = 7497,
    seed: SeedOpt = 0,
    # typer hands the default to MsRange.parse, as it does a given value.
    latency_ms: LatencyMsOpt = "0",  # type: ignore[assignment]
    no_pacing: NoPacingOpt = False,
    strict_pacing: StrictPacingOpt = False,
    log: LogOpt = None,
    symbols: SymbolsOpt = None,
    soft_rate: SoftRateOpt = 1.0,
    max_rate: MaxRateOpt = 5.0,
    identical_window: IdenticalWindowOpt = 15.0,
    contract_window: ContractWindowOpt = 2.0,
    max_open: MaxOpenOpt = 50,
    hang_share: HangShareOpt = 0.0,
    error_share: ErrorShareOpt = 0.0,
    drop_after: DropAfterOpt = None,
    drop_share: DropShareOpt = 0.0,
    max_duration_days: MaxDurationDaysOpt = 10.0,
    no_trade_share: NoTradeShareOpt = 0.02,
    parent_pid: ParentPidOpt = None,
    window_edges: WindowEdgesOpt = WindowEdges.CLOSED_OPEN,
    timezone_: TimezoneOpt = "UTC",
    day_duration: DayDurationOpt = DayDuration.CALENDAR,
    session_break: SessionBreakOpt = "sat",
    too_long: TooLongOpt = TooLong.ERROR,
    no_permission: NoPermissionOpt = None,
    competing_session_after: CompetingSessionAfterOpt = None,
    competing_session_for: CompetingSessionForOpt = None,
    competing_session_code: CompetingSessionCodeOpt = 162,
    farm_down_after: FarmDownAfterOpt = None,
    farm_down_for: FarmDownForOpt = 60.0,
    partial_last_bar: PartialLastBarOpt = False,
    cancel_answer: CancelAnswerOpt = 162,
    overload: OverloadOpt = Overload.SLOW,
    overload_queue: OverloadQueueOpt = 10,
    overload_after: OverloadAfterOpt = 20.0,
    header_format: HeaderFormatOpt = HeaderFormat.NAMED,
    header_shift_s: HeaderShiftSOpt = 0,
) -> None:
    """Run the embedded IB Gateway simulator in the foreground until Ctrl-C or SIGTERM."""
    from backfill.sim.gateway import run_forever
    from backfill.sim.lifeline import Lifeline

    try:
        config = GatewayFlags(
            host=host,
            port=port,
            seed=seed,
            latency_ms=latency_ms,
            no_pacing=no_pacing,
            strict_pacing=strict_pacing,
            log=log,
            symbols=symbols,
            soft_rate=soft_rate,
            max_rate=max_rate,
            identical_window=identical_window,
            contract_window=contract_window,
            max_open=max_open,
            hang_share=hang_share,
            error_share=error_share,
            drop_after=drop_after,
            drop_share=drop_share,
            max_duration_days=max_duration_days,
            no_trade_share=no_trade_share,
            window_edges=window_edges,
            timezone=timezone_,
            day_duration=day_duration,
            session_break=session_break,
            too_long=too_long,
            no_permission=no_permission,
            competing_session_after=competing_session_after,
            competing_session_for=competing_session_for,
            competing_session_code=competing_session_code,
            farm_down_after=farm_down_after,
            farm_down_for=farm_down_for,
            partial_last_bar=partial_last_bar,
            cancel_answer=cancel_answer,
            overload=overload,
            overload_queue=overload_queue,
            overload_after=overload_after,
            header_format=header_format,
            header_shift_s=header_shift_s,
        ).to_config()
        lifeline = None if parent_pid is None else Lifeline.to(parent_pid)
    except BadInput as exc:
        fail_bad_input(str(exc))
    except ValueError as exc:
        fail_bad_input(f"--parent-pid: {exc}")

    warning = exposure_warning(config.host)
    if warning is not None:
        typer.echo(f"backfill: warning: {warning}", err=True)

    def announce(bound_host: str, bound_port: int) -> None:
        # The orchestrator parses this exact line to learn the port.
        typer.echo(f"gateway listening on {bound_host}:{bound_port}")
        sys.stdout.flush()

    try:
        run_forever(config, announce, lifeline)
    except OSError as exc:  # e.g. the port is taken
        typer.echo(f"backfill: error: cannot listen on {host}:{port}: {exc}", err=True)
        raise typer.Exit(EXIT_FAILED) from None
