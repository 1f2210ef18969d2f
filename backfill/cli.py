"""The ``backfill`` command line: parse, call the core, render, exit. No logic lives here."""

from __future__ import annotations

import functools
import math
import os
import re
import sys
import types
import typing
from collections.abc import Callable
from datetime import date, datetime, timezone
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer

from backfill import __version__
from backfill.aggregate.timeframes import parse_timeframes
from backfill.cli_exit import EXIT_BAD_INPUT, EXIT_FAILED, EXIT_INTERRUPTED, EXIT_OK, fail_bad_input
from backfill.domain import (
    BadInput,
    Symbol,
    check_range,
    parse_day,
    parse_symbols,
    read_symbols_file,
)
from backfill.settings import (
    DEFAULT_GATEWAY,
    GatewayAddress,
    IBRules,
    ObjectConfigFile,
    RunSettings,
    default_workers,
    find_config_file,
    parse_rate,
    read_config_file,
    resolve_lake,
)

try:  # typer >= 0.23 vendors click; earlier versions depend on it
    from typer._click.exceptions import UsageError
except ImportError:  # pragma: no cover
    # The checker reads the installed typer; this other click's class has another type.
    from click.exceptions import UsageError  # type: ignore[assignment]
from typer.core import TyperCommand, TyperGroup

if TYPE_CHECKING:  # the installed typer's (0.2x) own click and coercion, as it types them
    from typer._click.core import Context
    from typer._coercion import RuntimeParam, TypeDescriptor
    from typer.core import _TyperParameter

# typer (0.2x) coerces every option's value through a pydantic TypeAdapter, built when the
# option is first parsed: pydantic's import and a dozen adapters are 0.15-0.25 s of a 0.5 s
# `plan`. The plain values the commands take (a str; a Path; an int or a float written as
# plain digits; no bounds, no path checks) are coerced here as pydantic would; anything else
# (a bound, an enum, "1e3", a bad value) goes to typer's own coercion, built only then, so
# its rules and messages stay typer's.
_PLAIN_INT = re.compile(r"-?(?:0|[1-9][0-9]{0,17})")
_PLAIN_FLOAT = re.compile(r"-?(?:0|[1-9][0-9]{0,17})(?:\.[0-9]{1,17})?")
_PATH_DEFAULTS = {
    "exists": False,
    "file_okay": True,
    "dir_okay": True,
    "writable": False,
    "readable": True,
    "resolve_path": False,
    "allow_dash": False,
    "path_type": None,
}


class _PlainCoercion:
    """typer's runtime coercion of one option, without pydantic for a plain value."""

    def __init__(
        self, descriptor: TypeDescriptor, build: Callable[[TypeDescriptor], RuntimeParam]
    ) -> None:
        self.descriptor, self.build = descriptor, build
        self.typers: RuntimeParam | None = None
        info = descriptor.parameter_info
        kind = descriptor.annotation
        plain = descriptor.file_annotation is None and getattr(info, "parser", "?") is None
        plain = plain and getattr(info, "clamp", True) is False
        # A number's bounds: a value inside them is typer's answer too; one outside goes to
        # typer, whose message it is.
        self.low, self.high = getattr(info, "min", "?"), getattr(info, "max", "?")
        if kind not in (int, float):
            plain = plain and self.low is None and self.high is None
        if kind is Path:
            plain = plain and all(
                getattr(info, name, "?") == default for name, default in _PATH_DEFAULTS.items()
            )
        self.kind = kind if plain and kind in (str, int, float, Path) else None

    def _within(self, value: Any) -> bool:
        if self.kind not in (int, float):
            return True
        return (self.low is None or value >= self.low) and (self.high is None or value <= self.high)

    def coerce(self, value: Any, param: _TyperParameter, ctx: Context) -> Any:
        if value is None:  # as typer's: nothing given, nothing to coerce
            return () if param.multiple or param.nargs == -1 else None
        if self.kind is not None and not (param.multiple or param.nargs != 1):
            if type(value) is self.kind and self._within(value):
                return value
            if type(value) is str:
                if self.kind is Path and value and "\0" not in value:
                    return Path(value)
                if self.kind is int and _PLAIN_INT.fullmatch(value) and self._within(int(value)):
                    return int(value)
                if (
                    self.kind is float
                    and _PLAIN_FLOAT.fullmatch(value)
                    and self._within(float(value))
                ):
                    return float(value)
        if self.typers is None:
            self.typers = self.build(self.descriptor)
        return self.typers.coerce(value, param=param, ctx=ctx)


def _coerce_without_pydantic() -> None:
    import typer.core as typer_core

    build = getattr(typer_core, "build_runtime_param", None)
    if build is not None:  # else another typer: its own coercion throughout

        def plain_first(descriptor: TypeDescriptor) -> RuntimeParam:
            # typer types the answer as its RuntimeParam (an ABC) but calls only ``coerce``
            # on it (typer/core.py, get_runtime_param), which _PlainCoercion has.
            return _PlainCoercion(descriptor, build)  # type: ignore[return-value]

        typer_core.build_runtime_param = plain_first


_coerce_without_pydantic()

# Every default below is read from here: they are defined once, in backfill/settings.py.
_RUN = RunSettings()
_IB = IBRules()


class _FlagsTakeNoValue(TyperGroup):
    """``backfill`` and its commands, with help that shows a flag as taking no value.

    Typer's help panels (0.2x, its own click) print every option's type, a flag's as
    ``<bool>`` (``--json <bool>``), as if it took a value; click skips flags. An option's
    metavar replaces its type there, so flags get an empty one: here, for every command
    at once (their ``--help`` included), since typer builds the options itself."""

    def get_params(self, ctx: Context) -> list[Any]:
        return _without_flag_metavar(super().get_params(ctx))

    def get_command(self, ctx: Context, cmd_name: str) -> Any:
        command = super().get_command(ctx, cmd_name)
        if command is not None:
            _without_flag_metavar(command.get_params(ctx))  # the options help will show
        return command


def _without_flag_metavar(params: list[Any]) -> list[Any]:
    for param in params:
        is_flag = getattr(param, "is_flag", False) and not getattr(param, "count", False)
        if is_flag and param.metavar is None:
            param.metavar = ""
    return params


app = typer.Typer(
    cls=_FlagsTakeNoValue,
    add_completion=False,
    no_args_is_help=True,
    rich_markup_mode="markdown",
    pretty_exceptions_enable=False,
    help="Backfill 1-minute crypto bars from Interactive Brokers into a Parquet lake.",
)


# Options shared by plan, run and verify: the same name means the same thing everywhere.
LakeOpt = Annotated[
    Path | None,
    typer.Option(
        "--lake",
        help="Lake root folder. Default: $LAKE_ROOT, else the current directory.",
        show_default=False,
    ),
]
SymbolsOpt = Annotated[
    str | None,
    typer.Option("--symbols", help="Comma-separated symbols, e.g. BTC-USD,ETH-USD."),
]
SymbolsFileOpt = Annotated[
    Path | None,
    typer.Option("--symbols-file", help="File with one symbol a line (# starts a comment)."),
]
FromOpt = Annotated[
    str | None, typer.Option("--from", help="First UTC day, YYYY-MM-DD (inclusive).")
]
ToOpt = Annotated[str | None, typer.Option("--to", help="Last UTC day, YYYY-MM-DD (inclusive).")]
UntilOpt = Annotated[
    str | None,
    typer.Option("--to", help="Last UTC day, YYYY-MM-DD (inclusive). Default: today (UTC)."),
]
StrictOpt = Annotated[
    bool,
    typer.Option(
        "--strict-pacing",
        help="Also keep IB's 60-requests-in-10-minutes rule "
        "across all workers (documented for small bars; slow: 0.1 req/s sustained).",
    ),
]
GatewayOpt = Annotated[
    str,
    typer.Option(
        "--gateway", help="IB Gateway/TWS as HOST:PORT, or 'sim' to start the embedded simulator."
    ),
]
ClientIdBaseOpt = Annotated[
    int,
    typer.Option(
        "--client-id-base",
        help="Worker N connects with clientId BASE+N; a taken id moves to the next free one.",
    ),
]
JsonOpt = Annotated[bool, typer.Option("--json", help="Machine-readable JSON output.")]
AggregateTfOpt = Annotated[
    str | None,
    typer.Option(
        "--aggregate",
        help="After the run, build these timeframes (e.g. M5,H1,D1) "
        "for the symbols and days of the run, as `backfill aggregate` does.",
    ),
]
RefetchOpt = Annotated[
    bool,
    typer.Option(
        "--refetch",
        help="Ask every day of the range again, even days recorded "
        "complete (repairs bars a wrong window-edge rule lost: verify's "
        "edge_minute_missing). The store merges: a refetch that fails loses nothing.",
    ),
]
PlanTfOpt = Annotated[
    str | None,
    typer.Option(
        "--tf",
        help="Also show the aggregate parts of these timeframes (e.g. "
        "M5,H1,D1) that are missing or stale.",
    ),
]
RateOpt = Annotated[
    str,
    typer.Option(
        "--rate",
        help="Requests per second across all workers (0.7 is IB-safe), "
        "or 'auto': start at 0.7 and find the fastest pace the gateway serves "
        "without its answers slowing, at most --max-rate.",
    ),
]
MaxRateOpt = Annotated[
    float,
    typer.Option("--max-rate", help="With --rate auto: never above this many requests/s."),
]
MaxInFlightTotalOpt = Annotated[
    int | None,
    typer.Option(
        "--max-in-flight-total",
        min=1,
        show_default=False,
        help="Requests open at once across all workers. Default: the rate times "
        "the gateway's p95 latency with headroom, at most IB's 50.",
    ),
]
WorkersOpt = Annotated[
    int | None,
    typer.Option(
        "--workers",
        help="Worker processes at once. Default: one per symbol, at "
        "most 8 (one gateway serves only so many clients).",
        show_default=False,
    ),
]
WindowDaysOpt = Annotated[
    int,
    typer.Option(
        "--window-days",
        help="Whole days per request; a gateway that refuses the duration makes workers halve it.",
    ),
]
MaxInFlightOpt = Annotated[
    int,
    typer.Option(
        "--max-in-flight",
        help="Requests one worker keeps open at once (pipelining; "
        "all workers together stay within IB's 50).",
    ),
]


def _show_version(value: bool) -> None:
    if value:
        typer.echo(f"backfill {__version__}")
        raise typer.Exit()


@app.callback()
def _root(
    version: Annotated[
        bool,
        typer.Option(
            "--version", callback=_show_version, is_eager=True, help="Print the version and exit."
        ),
    ] = False,
) -> None:
    """Backfill 1-minute crypto bars from Interactive Brokers into a Parquet lake."""


# Commands whose options a backfill.toml may set: its keys are their option names. Every
# command that reads or writes a lake reads the file the same way.
CONFIG_COMMANDS = ("run", "plan", "verify", "aggregate", "levels", "probe")


def with_config_file(command: Callable[..., None]) -> Callable[..., None]:
    """Options not given on the command line come from ``backfill.toml`` (an explicit
    ``--lake``'s, else the current folder's, else ``LAKE_ROOT``'s: ``find_config_file``),
    then from their defaults. ``LAKE_ROOT`` beats the file; the file used is named on
    stderr in one line."""
    hints = typing.get_type_hints(command, include_extras=True)

    @functools.wraps(command)
    def layered(ctx: typer.Context, **options: Any) -> None:
        try:
            options.update(_config_file_options(ctx, options, hints))
        except BadInput as exc:
            fail_bad_input(str(exc))
        command(ctx, **options)

    return layered


def _config_file_options(
    ctx: typer.Context, options: dict[str, Any], hints: dict[str, Any]
) -> dict[str, Any]:
    given = {
        name
        for name in options
        if getattr(ctx.get_parameter_source(name), "name", "") == "COMMANDLINE"
    }
    path = find_config_file(Path.cwd(), options["lake"] if "lake" in given else None)
    if path is None:
        return {}
    names = {
        p.opts[0][2:]: p.name
        for p in ctx.command.params
        if p.name and p.opts and p.opts[0].startswith("--")
    }
    group = ctx.parent.command if ctx.parent is not None else None
    known = {
        opt[2:]
        for name in CONFIG_COMMANDS
        for p in getattr(group, "commands", {})[name].params
        for opt in p.opts
        if opt.startswith("--")
    }
    found: dict[str, Any] = {}
    # A symbol selection on the command line replaces the file's, whichever way each gives it.
    chosen = bool({"symbols", "symbols_file"} & given)
    for key, value in read_config_file(path).items():
        if key not in known:
            raise BadInput(
                f"{path}: unknown setting {key!r} (use the option names of "
                f"{' and '.join(CONFIG_COMMANDS)}, e.g. max-in-flight)"
            )
        if key == "refetch":  # a one-off remedy: in a daily job's file it would refetch daily
            raise BadInput(
                f"{path}: refetch is not a setting; give --refetch on the command "
                "line for the run that repairs"
            )
        if key == "lake" and path.parent.resolve() != Path.cwd().resolve():
            raise BadInput(f"{path}: a lake's own backfill.toml cannot name another lake")
        name = names.get(key)
        if name is None or name in given or (chosen and name in ("symbols", "symbols_file")):
            continue  # another command's setting, or given on the command line
        if key == "lake" and resolve_lake(None) != Path.cwd():
            continue  # LAKE_ROOT is set: the environment beats the file
        found[name] = _config_value(path, key, value, hints[name])
    typer.echo(f"backfill: settings from {path}", err=True)
    return found


def _config_value(path: Path | ObjectConfigFile, key: str, value: Any, hint: Any) -> Any:
    """``value`` as the option ``key`` takes it (of type ``hint``), or BadInput."""
    kind, info = typing.get_args(hint)[:2]
    if typing.get_origin(kind) in (typing.Union, types.UnionType):  # X | None
        kind = next(a for a in typing.get_args(kind) if a is not type(None))
    if key == "rate" and type(value) in (int, float):  # rate = 2.5, or rate = "auto"
        value = str(value)
    if key == "rate" and isinstance(value, str):
        try:
            parse_rate(value)
        except BadInput:
            raise BadInput(f"{path}: rate = {value!r}: expected a number or 'auto'") from None
    if kind is str and type(value) is date:  # TOML's own dates, e.g. from = 2024-01-01
        value = value.isoformat()
    if key == "symbols" and isinstance(value, list) and all(isinstance(v, str) for v in value):
        value = ",".join(value)
    ok = {
        bool: isinstance(value, bool),
        int: isinstance(value, int) and not isinstance(value, bool),
        float: isinstance(value, (int, float)) and not isinstance(value, bool),
        str: isinstance(value, str),
        Path: isinstance(value, str),
    }[kind]
    if ok and kind is float and not math.isfinite(value):
        ok = False  # nan passes every ``min`` (a comparison with nan is false), inf too
    if not ok:
        what = {
            bool: "true or false",
            int: "a whole number",
            float: "a finite number",
            str: "a string",
            Path: "a path (a string)",
        }[kind]
        raise BadInput(f"{path}: {key} = {value!r}: expected {what}")
    if kind is Path and value.startswith("s3://"):
        return value  # an object store lake: not a folder below the file's
    if kind is Path and Path(value).is_absolute():
        return Path(value)  # a local file, whichever lake's file names it
    if kind is Path:
        # Relative to the file's folder (an s3:// lake's file: an object beside it).
        return path.parent / value
    if kind in (int, float):
        value = kind(value)
        if info.min is not None and value < info.min:
            raise BadInput(f"{path}: {key} must be at least {info.min}, not {value}")
    return value


@app.command()
@with_config_file
def run(
    ctx: typer.Context,
    symbols: SymbolsOpt = None,
    symbols_file: SymbolsFileOpt = None,
    from_: FromOpt = None,
    to: UntilOpt = None,
    lake: LakeOpt = None,
    gateway: GatewayOpt = DEFAULT_GATEWAY,
    workers: WorkersOpt = None,
    client_id_base: ClientIdBaseOpt = _RUN.client_id_base,
    rate: RateOpt = str(_RUN.rate),
    max_rate: MaxRateOpt = _RUN.max_rate,
    window_days: WindowDaysOpt = _RUN.window_days,
    max_in_flight: MaxInFlightOpt = _RUN.max_in_flight,
    max_in_flight_total: MaxInFlightTotalOpt = None,
    request_timeout: Annotated[
        float,
        typer.Option(
            "--request-timeout",
            min=1.0,
            help="Seconds before an unanswered request is cancelled, retried.",
        ),
    ] = _RUN.request_timeout_s,
    strict_pacing: StrictOpt = False,
    reconnect_for: Annotated[
        float,
        typer.Option(
            "--reconnect-for",
            min=1.0,
            help="Seconds a worker keeps reconnecting to a gateway that went "
            "away (IB Gateway restarts daily) before its symbol fails.",
        ),
    ] = _RUN.reconnect_for_s,
    json: JsonOpt = False,
    verbose: Annotated[
        bool,
        typer.Option(
            "--verbose",
            help="Without a terminal: a line for every event "
            "(requests, retries, pacing waits, gaps, status moves), not only "
            "a line per day fetched, per part written and per failure.",
        ),
    ] = False,
    ib_identical_s: Annotated[
        float,
        typer.Option(
            "--ib-identical-s",
            hidden=True,
            help="IB's identical-request interval (scaled gateways).",
        ),
    ] = _IB.identical_s,
    ib_contract_max: Annotated[
        int,
        typer.Option(
            "--ib-contract-max", hidden=True, help="IB's most requests per contract per window."
        ),
    ] = _IB.contract_max,
    ib_contract_window_s: Annotated[
        float,
        typer.Option(
            "--ib-contract-window-s", hidden=True, help="IB's per-contract window in seconds."
        ),
    ] = _IB.contract_window_s,
    ib_session_max: Annotated[
        int,
        typer.Option(
            "--ib-session-max",
            hidden=True,
            min=1,
            help="IB's most requests per session window (strict mode).",
        ),
    ] = _IB.session_max,
    ib_session_window_s: Annotated[
        float,
        typer.Option(
            "--ib-session-window-s",
            hidden=True,
            help="IB's session window in seconds (strict mode).",
        ),
    ] = _IB.session_window_s,
    auto_start: Annotated[
        float | None,
        typer.Option(
            "--auto-start-rate",
            hidden=True,
            min=0.01,
            help="Where --rate auto starts (scaled gateways).",
        ),
    ] = None,
    max_attempts: Annotated[
        int,
        typer.Option(
            "--max-attempts",
            min=1,
            help="Times a request is sent before its days are reported failed "
            "(pacing refusals and IB outages are not counted against it).",
        ),
    ] = _RUN.max_attempts,
    max_restarts: Annotated[
        int,
        typer.Option(
            "--max-restarts",
            min=0,
            help="Times a crashed worker is restarted before its symbol fails.",
        ),
    ] = _RUN.max_restarts,
    worker_niceness: Annotated[
        int,
        typer.Option(
            "--worker-niceness",
            min=0,
            max=19,
            help="How much nicer than the run its workers run, so that a gateway on the same "
            "host gets the CPU first while they write parts (0: as the run).",
        ),
    ] = _RUN.worker_niceness,
    keep_runs: Annotated[
        int,
        typer.Option(
            "--keep-runs",
            help="Run logs kept in `<lake>/_runs/`: the newest N, this run's "
            "included; older ones are deleted at the start of each run.",
        ),
    ] = _RUN.keep_runs,
    stall_after: Annotated[
        float,
        typer.Option(
            "--stall-after",
            min=0.0,
            help="Seconds a worker may send nothing while it has work before "
            "it is shown stalled and its share of the rate goes to the "
            "others (a waiting worker sends heartbeats); 0: never.",
        ),
    ] = _RUN.stall_after_s,
    stall_restart_after: Annotated[
        float,
        typer.Option(
            "--stall-restart-after",
            min=0.0,
            help="Seconds of such silence before the worker is killed and "
            "restarted like a crashed one (resumes from the lake); 0: never.",
        ),
    ] = _RUN.stall_restart_after_s,
    wait_for_other_run: Annotated[
        float,
        typer.Option(
            "--wait-for-other-run",
            min=0.0,
            help="A symbol another backfill run is fetching is waited for "
            "and taken over if that run stops early; once this run has "
            "nothing else to do, it waits at most this many seconds, then "
            "judges the symbol by the lake (days missing: exit 1).",
        ),
    ] = _RUN.wait_for_other_run_s,
    aggregate_tf: AggregateTfOpt = None,
    levels_after: Annotated[
        bool,
        typer.Option(
            "--levels",
            help="After the run, build the levels and B&R events (us_equity_open, "
            "default settings) for the symbols and days of the run, as `backfill levels` does.",
        ),
    ] = False,
    refetch: RefetchOpt = False,
    unsafe_single_writer: Annotated[
        bool,
        typer.Option(
            "--unsafe-single-writer",
            help="On an s3:// lake whose store ignores conditional writes (If-Match, "
            "If-None-Match), run anyway: safe only if no other writer uses the lake.",
        ),
    ] = False,
) -> None:
    """Fetch the missing days of each symbol into the lake, with a live dashboard.

    One worker process per symbol under one global request rate. Safe to stop (Ctrl-C) and
    rerun at any time: only what is missing is fetched. Exit 0 all done, 1 something failed
    after retries (rerun resumes), 2 bad input (nothing written), 130 interrupted.

    Examples: `backfill run --gateway sim --symbols BTC-USD,ETH-USD --from 2025-07-01
    --to 2025-07-31 --rate 10 --lake ./lake` (embedded simulator);
    `backfill run --symbols-file symbols.txt --from 2020-01-01 --lake /data/lake`
    (IB Gateway on 127.0.0.1:7497, IB-safe 0.7 req/s, up to today).
    """
    try:
        from rich.console import Console

        from backfill.run.processes import start_worker_server

        symbol_list = resolve_symbols(symbols, symbols_file)
        first, last = resolve_range(from_, to)
        after_run = None if aggregate_tf is None else parse_timeframes(aggregate_tf)
        address = GatewayAddress.parse(gateway)
        rate_value, rate_auto = parse_rate(rate)
        if rate_auto and auto_start is not None:
            rate_value = auto_start
        settings = RunSettings(
            rate=rate_value,
            rate_auto=rate_auto,
            max_rate=max_rate,
            max_in_flight_total=max_in_flight_total,
            workers=default_workers(len(symbol_list)) if workers is None else workers,
            max_in_flight=max_in_flight,
            window_days=window_days,
            strict_pacing=strict_pacing,
            request_timeout_s=request_timeout,
            reconnect_for_s=reconnect_for,
            client_id_base=client_id_base,
            max_restarts=max_restarts,
            worker_niceness=worker_niceness,
            keep_runs=keep_runs,
            max_attempts=max_attempts,
            stall_after_s=stall_after,
            stall_restart_after_s=stall_restart_after,
            wait_for_other_run_s=wait_for_other_run,
            ib=IBRules(
                identical_s=ib_identical_s,
                contract_max=ib_contract_max,
                contract_window_s=ib_contract_window_s,
                session_max=ib_session_max,
                session_window_s=ib_session_window_s,
            ),
        )
        settings.check()
        # The workers' server imports ib_insync and pyarrow while this process does too.
        start_worker_server(settings.worker_niceness)
        from backfill.run.launch import RunRequest, execute_run

        request = RunRequest(
            lake=resolve_lake(lake),
            symbols=tuple(symbol_list),
            first=first,
            last=last,
            gateway=address,
            settings=settings,
            json=json,
            command=("backfill", *sys.argv[1:]),
            verbose=verbose,
            refetch_since=datetime.now(timezone.utc) if refetch else None,
            unsafe_single_writer=unsafe_single_writer,
        )
        code = execute_run(request, Console(), Console(stderr=True))
    except BadInput as exc:
        fail_bad_input(str(exc))
    except KeyboardInterrupt:
        # Ctrl-C before the workers' stop handling is in place: nothing was written yet.
        typer.echo("backfill: interrupted", err=True)
        raise typer.Exit(EXIT_INTERRUPTED) from None
    if after_run and code in (EXIT_OK, EXIT_FAILED):
        code = max(code, aggregate_after_run(request, after_run))
    if levels_after and code in (EXIT_OK, EXIT_FAILED):
        code = max(code, levels_after_run(request))
    raise typer.Exit(code)


def aggregate_after_run(request: Any, timeframes: tuple[Any, ...]) -> int:
    """``run --aggregate``: build the timeframes for the run's symbols and days."""
    import json as jsonlib

    from backfill.aggregate import view
    from backfill.aggregate.build import AggregateRequest, aggregate_lake

    wanted = AggregateRequest(
        lake=request.lake,
        timeframes=timeframes,
        symbols=tuple(request.symbols),
        first=request.first,
        last=request.last,
    )
    try:
        result = aggregate_lake(wanted, now=datetime.now(timezone.utc))
        if request.json:  # one more NDJSON line after the run's events
            typer.echo(jsonlib.dumps({"event": "aggregate", **view.to_json(wanted, result)}))
        else:
            for line in view.summary_lines(result):
                typer.echo(line)
    except BadInput as exc:  # e.g. a symbol that got no M1 data at all
        typer.echo(f"backfill: aggregate: {exc}", err=True)
        return EXIT_FAILED
    except KeyboardInterrupt:
        return EXIT_INTERRUPTED
    return EXIT_OK if result.ok else EXIT_FAILED


def resolve_symbols(symbols: str | None, symbols_file: Path | None) -> list[Symbol]:
    """Symbols from --symbols and/or --symbols-file (one a line, # comments)."""
    found: list[Symbol] = []
    if symbols_file is not None:
        text = read_symbols_text(symbols_file)
        try:
            found += read_symbols_file(text)
        except BadInput as exc:
            raise BadInput(f"--symbols-file {symbols_file}: {exc}") from None
    if symbols:
        found += [s for s in parse_symbols(symbols) if s not in found]
    if not found:
        raise BadInput("give --symbols or --symbols-file")
    return found


def format_symbols(symbols: list[Symbol], limit: int = 5) -> str:
    """``BTC-USD, ETH-USD, +998 more``: a list that fits on a line."""
    more = f", +{len(symbols) - limit} more" if len(symbols) > limit else ""
    return ", ".join(map(str, symbols[:limit])) + more


SYMBOLS_FILE_MAX_BYTES = 1 << 20  # 100,000 symbols; /dev/zero is refused, not read


def read_symbols_text(path: Path) -> str:
    """A symbols file's text: a regular file (a FIFO or a device is refused without
    blocking) of at most ``SYMBOLS_FILE_MAX_BYTES``, UTF-8; else BadInput."""
    from backfill.lake.safe_json import BadJson, read_regular_file

    try:
        raw = read_regular_file(path, SYMBOLS_FILE_MAX_BYTES)
    except BadJson as exc:
        raise BadInput(f"--symbols-file {path}: {exc}") from None
    if raw is None:
        raise BadInput(f"--symbols-file {path}: No such file or directory")
    try:
        # utf-8-sig: a byte-order mark (Windows editors write one) is not a symbol.
        return raw.decode("utf-8-sig")
    except UnicodeDecodeError:
        raise BadInput(f"--symbols-file {path}: not a text file") from None


def resolve_range(first: str | None, last: str | None) -> tuple[date, date]:
    """``--from`` (required) and ``--to`` (default: today, UTC) as days."""
    if first is None:
        raise BadInput("give --from (the first UTC day, YYYY-MM-DD)")
    first_day = parse_day(first, "--from")
    last_day = datetime.now(timezone.utc).date() if last is None else parse_day(last, "--to")
    check_range(first_day, last_day)
    return first_day, last_day


def resolve_scope(
    symbols: str | None, symbols_file: Path | None, first: str | None, last: str | None
) -> tuple[list[Symbol] | None, date | None, date | None]:
    """verify's and aggregate's optional scope: None where not given (the whole lake)."""
    symbol_list = resolve_symbols(symbols, symbols_file) if symbols or symbols_file else None
    first_day = None if first is None else parse_day(first, "--from")
    last_day = None if last is None else parse_day(last, "--to")
    return symbol_list, first_day, last_day


@app.command()
@with_config_file
def plan(
    ctx: typer.Context,
    symbols: SymbolsOpt = None,
    symbols_file: SymbolsFileOpt = None,
    from_: FromOpt = None,
    to: UntilOpt = None,
    lake: LakeOpt = None,
    rate: RateOpt = str(_RUN.rate),
    max_rate: MaxRateOpt = _RUN.max_rate,
    window_days: WindowDaysOpt = _RUN.window_days,
    workers: WorkersOpt = None,
    max_in_flight: MaxInFlightOpt = _RUN.max_in_flight,
    latency_ms: Annotated[
        float,
        typer.Option(
            "--latency-ms",
            help="Expected gateway latency per request. Not "
            "given: the base latency backfill probe measured for --gateway "
            "(within 7 days), else this default.",
        ),
    ] = _RUN.latency_s * 1000,
    head: Annotated[
        bool,
        typer.Option(
            "--head",
            help="Ask the gateway for each symbol's earliest bar "
            "and clip the range to it (the only time plan talks to IB).",
        ),
    ] = False,
    gateway: GatewayOpt = DEFAULT_GATEWAY,
    client_id_base: ClientIdBaseOpt = _RUN.client_id_base,
    strict_pacing: StrictOpt = False,
    json: JsonOpt = False,
    tf: PlanTfOpt = None,
    levels_status: Annotated[
        bool,
        typer.Option(
            "--levels", help="Also show the levels parts (us_equity_open) not built or stale."
        ),
    ] = False,
    refetch: RefetchOpt = False,
) -> None:
    """Show what is missing in the lake, how many requests that is and how long it takes.

    Reads only Parquet footers and the heads runs recorded (`<lake>/_gateway/heads.json`: days
    before a symbol's first bar are not missing); --head asks the gateway for them afresh.
    What it read of the footers is kept in `<lake>/_cache/coverage.json` and used while a
    part's inode, size and times are unchanged (delete it any time: it is only a shortcut).
    --json prints one document: {first, last, today, window_days, rate, workers,
    max_in_flight, latency_ms, totals: {symbols, days_total, days_done, days_missing,
    days_before_listing, months_complete, months_total, requests, eta_seconds}, symbols:
    [{symbol, first, last, days_total, days_done, days_missing, days_no_data,
    days_before_listing, head, missing_ranges: [[from, to], ...], months_complete,
    months_total, requests, eta_seconds}]} (days are YYYY-MM-DD, UTC, ranges inclusive;
    head: the recorded first bar's day, null if none), with heads_from (where the heads
    came from) when any is known, and symbols_from: "lake" when no symbols were given and
    the lake's were planned (from its first day without --from);
    with --tf also aggregates: [{symbol, timeframe, missing: [YYYY-MM, ...], stale: [...]}];
    with --levels also levels: [{symbol, profile, missing: [YYYY-MM, ...], stale: [...]}];
    with backfill probe's findings for --gateway in the lake, gateway_findings: {path,
    checked_at, used: [finding, ...], stale: [finding, ...]} (the text's first line says it).
    """
    import json as jsonlib

    from backfill import plan as planning
    from backfill.durations import counted
    from backfill.lake.coverage_index import read_day_marks
    from backfill.plan_view import plan_lines, plan_table

    try:
        root = resolve_lake(lake)
        if root.exists() and not root.is_dir():
            raise BadInput(f"--lake {root} is not a folder")
        from_lake, first_from_lake = False, False
        if symbols is None and symbols_file is None and root.is_dir():
            # A bare `backfill plan` in a lake: the symbols it holds, from its first day.
            from backfill.lake.coverage_index import held_scope

            held, held_first = held_scope(root)
            if held:
                symbols, from_lake = ",".join(map(str, held)), True
                if from_ is None and held_first is not None:
                    from_, first_from_lake = held_first.isoformat(), True
        symbol_list = resolve_symbols(symbols, symbols_file)
        first, last = resolve_range(from_, to)
        timeframes = None if tf is None else parse_timeframes(tf)
        rate_value, rate_auto = parse_rate(rate)
        measured = None
        if rate_auto:
            # Imported here: the run log's events are 19 dataclasses (0.02 s) plan needs not.
            from backfill.run.runlog import measured_rate

            # What earlier runs on this lake held; a first run's ETA assumes the start rate.
            measured = measured_rate(root) if root.is_dir() else None
            rate_value = min(max_rate, measured.rate) if measured else rate_value
        settings = RunSettings(
            rate=rate_value,
            rate_auto=rate_auto,
            max_rate=max_rate,
            workers=default_workers(len(symbol_list)) if workers is None else workers,
            max_in_flight=max_in_flight,
            window_days=window_days,
            strict_pacing=strict_pacing,
            latency_s=latency_ms / 1000,
            client_id_base=client_id_base,
        )
        settings.check()
        # What `backfill probe` recorded about --gateway: its longest window, its base
        # latency for the ETA (unless --latency-ms was given), as `run` would use them.
        findings, applied = _plan_findings(ctx, root, gateway, settings, latency_ms)
        settings = applied.settings
        # Days before a head a run recorded in the lake are before listing, not missing.
        from backfill.lake.heads import heads_path, listing_days, read_heads

        listing = listing_days(read_heads(root))
        heads_from = f"recorded in {heads_path(root)}" if listing else None
        if head:
            from backfill.ib.preflight import earliest_days
            from backfill.sim.embedded import serving

            with serving(GatewayAddress.parse(gateway)) as (host, port):
                listing |= earliest_days(
                    host,
                    port,
                    settings.client_id_base,
                    symbol_list,
                    client_id_tries=settings.client_id_tries,
                    timeout_s=settings.connect_timeout_s,
                )
            heads_from = f"asked at {gateway} now"
        today = datetime.now(timezone.utc).date()
        # A missing lake is an empty one: everything is missing, nothing is created.
        if refetch:  # what `run --refetch` would ask: nothing recorded counts yet
            from backfill.lake.fetched import read_fetched_days

            now = datetime.now(timezone.utc)
            coverage: dict[Symbol, Any] = {
                s: planning.refetch_coverage(days, now, now)
                for s, days in read_fetched_days(root, symbol_list, first, min(last, today)).items()
            }
        else:
            coverage = read_day_marks(root, symbol_list, first, min(last, today))
        result = planning.plan(
            symbol_list, first, last, coverage, today=today, settings=settings, listing=listing
        )
    except BadInput as exc:
        fail_bad_input(str(exc))
    stale = None
    if timeframes is not None:
        from backfill.aggregate.build import aggregate_status
        from backfill.aggregate.view import status_json, status_lines

        stale = (
            aggregate_status(root, symbol_list, timeframes, first, last, datetime.now(timezone.utc))
            if root.is_dir()
            else ()
        )
    levels_stale = None
    if levels_status:
        from backfill.levels.build import levels_status as status_of
        from backfill.levels.profiles import PROFILES

        levels_stale = (
            status_of(root, symbol_list, (PROFILES["us_equity_open"],), first, last)
            if root.is_dir()
            else []
        )
    if json:
        document = result.to_dict()
        if levels_stale is not None:
            from backfill.levels.view import status_json as levels_json

            document["levels"] = levels_json(levels_stale)
        if findings is not None:
            document["gateway_findings"] = applied.to_json(findings)
        if rate_auto:
            document["rate_auto"] = {"measured_by_run": measured.run_id if measured else None}
        if from_lake:
            document["symbols_from"] = "lake"
        if heads_from is not None:
            document["heads_from"] = heads_from
        if stale is not None:
            document["aggregates"] = status_json(stale)
        typer.echo(jsonlib.dumps(document, indent=2))
        return
    if from_lake:
        typer.echo(
            f"No --symbols: the {counted(len(symbol_list), 'symbol')} the lake holds "
            f"({format_symbols(symbol_list)})"
            + (f", from the first day it holds, {first}" if first_from_lake else "")
        )
    if applied.line:
        typer.echo(applied.line)
    if rate_auto:
        typer.echo(
            f"--rate auto: {settings.rate:.2f} req/s, what run {measured.run_id} held"
            if measured
            else f"--rate auto: no earlier auto run on this lake, "
            f"{settings.rate:g} req/s (where it starts)"
        )
    if heads_from is not None and result.days_before_listing:
        typer.echo(
            f"Days before a symbol's head (its first bar) are left out as before "
            f"listing; the heads were {heads_from}"
        )
    console = _terminal_console()
    if console is not None:
        console.print(plan_table(result))
    else:
        for line in plan_lines(result):
            typer.echo(line)
    if stale is not None:
        for line in status_lines(stale, [t.name for t in timeframes or ()], root):
            typer.echo(line)
    if levels_stale is not None:
        from backfill.levels.view import status_lines as levels_lines

        for line in levels_lines(levels_stale, ["us_equity_open"]):
            typer.echo(line)


def _terminal_console() -> Any:
    """Rich's Console if stdout is a terminal as Rich judges it, else None: without importing
    Rich (0.03 s) when stdout is no TTY and nothing Rich reads (FORCE_COLOR, TTY_COMPATIBLE)
    says to treat it as one."""
    try:
        tty = sys.stdout.isatty()
    except (AttributeError, ValueError):  # no isatty, or closed: Rich says no terminal too
        tty = False
    if not tty and "FORCE_COLOR" not in os.environ and "TTY_COMPATIBLE" not in os.environ:
        return None
    from rich.console import Console

    console = Console()
    return console if console.is_terminal else None


def _plan_findings(
    ctx: typer.Context,
    root: Path,
    gateway: str,
    settings: RunSettings,
    latency_ms: float,
) -> tuple[Any, Any]:
    """The probe's findings for ``plan --gateway`` and what they change (both None-safe)."""
    from backfill.findings import apply_findings
    from backfill.lake.gateway import read_findings

    address = GatewayAddress.parse(gateway)
    findings = None
    if not address.embedded and root.is_dir():
        findings = read_findings(
            root, address.host, address.port, datetime.now(timezone.utc), settings.finding_max_age
        )
    # Given: on the command line, or (a value other than the default) by backfill.toml.
    given = (
        getattr(ctx.get_parameter_source("latency_ms"), "name", "") == "COMMANDLINE"
        or latency_ms != _RUN.latency_s * 1000
    )
    return findings, apply_findings(settings, findings, command="plan", latency_given=given)


@app.command()
@with_config_file
def verify(
    ctx: typer.Context,
    lake: LakeOpt = None,
    symbols: SymbolsOpt = None,
    symbols_file: SymbolsFileOpt = None,
    from_: FromOpt = None,
    to: ToOpt = None,
    gaps: Annotated[
        bool,
        typer.Option(
            "--gaps",
            help="One warning per day with minutes without a bar, "
            "naming every range (and every range of each error). Default: one "
            "per symbol, with per-day counts; a finding names its first 5 ranges.",
        ),
    ] = False,
    json: JsonOpt = False,
    daily_days: Annotated[
        int,
        typer.Option(
            "--daily-gap-days",
            min=1,
            help="A minute of the day missing on nearly every day is an error (a bar lost to the "
            "request's window edges, or a daily gap at the source) once a symbol has at "
            "least this many whole days to judge by.",
        ),
    ] = 7,
    daily_share: Annotated[
        float,
        typer.Option(
            "--daily-gap-share",
            min=0.0,
            max=1.0,
            help="... missing on at least this share of those days.",
        ),
    ] = 0.9,
    daily_full: Annotated[
        float,
        typer.Option(
            "--daily-gap-full",
            min=0.0,
            max=1.0,
            help="... counting only days holding at least this share of 1,440 bars.",
        ),
    ] = 0.95,
) -> None:
    """Check the lake: schema, order, duplicates, prices, partitions, coverage, gaps, stray files.

    Default: every symbol in the lake, each over the span of its coverage, judged as run
    asks it: days before a symbol's head in `<lake>/_gateway/heads.json` (before listing)
    and after today are not missing. Exit 0 no error (warnings included, such as an empty
    lake), 1 an error was found, 2 bad input.

    --json prints one document (version 2): {version, lake, from, to, findings: [{severity,
    kind, symbol, path, day, detail, minutes: [[first, last], ...], ranges_total,
    minutes_total, truncated}], ok, errors, warnings, parts, symbols: [{symbol, from, to,
    parts, days, days_complete, days_partial, days_missing, days_no_data,
    days_before_listing, head, rows, gaps, gap_minutes, gap_days, errors, warnings}]}.
    `minutes` are runs of bar-end minutes, at most the first 5 unless --gaps: `truncated` is
    true when fewer than `ranges_total` are listed. A symbol's `gap` warning (day null)
    also has `days`: [{day, gap_minutes, gaps}]. More in docs/verify.md.
    """
    from backfill.lake.minute_check import MinuteCheckThresholds
    from backfill.lake.verify import Tally, verify_stream

    try:
        symbol_list, first, last = resolve_scope(symbols, symbols_file, from_, to)
        root = resolve_lake(lake)
        stream = verify_stream(
            root,
            symbol_list,
            first,
            last,
            gaps,
            MinuteCheckThresholds(daily_days, daily_full, daily_share),
        )
    except BadInput as exc:
        fail_bad_input(str(exc))
    tally = Tally(root, first, last)
    if json:
        from backfill.lake.verify_view import write_json

        write_json(stream, tally, sys.stdout)
    else:
        from rich.console import Console

        from backfill.lake.verify_view import write_lines, write_terminal

        console = Console()
        if console.is_terminal:
            write_terminal(stream, tally, console, gaps)
        else:
            write_lines(stream, tally, sys.stdout, gaps)
    sys.stdout.flush()
    raise typer.Exit(EXIT_OK if tally.ok else EXIT_FAILED)


@app.command()
@with_config_file
def aggregate(
    ctx: typer.Context,
    symbols: SymbolsOpt = None,
    symbols_file: SymbolsFileOpt = None,
    from_: FromOpt = None,
    to: ToOpt = None,
    lake: LakeOpt = None,
    tf: Annotated[
        str,
        typer.Option(
            "--tf", help="Timeframes to build, comma-separated, from M5,M15,M30,H1,H4,D1."
        ),
    ] = "M5,M15,M30,H1,H4,D1",
    include_partial: Annotated[
        bool,
        typer.Option(
            "--include-partial",
            help="Also write buckets whose M1 days are "
            "not all recorded whole, with complete=false.",
        ),
    ] = False,
    json: JsonOpt = False,
) -> None:
    """Build higher timeframes (M5 to D1) from the M1 lake; only what changed is rebuilt.

    A bucket is (end - w, end] on a grid anchored at 00:00 UTC, stamped with its end (as M1
    bars are); the D1 bar of day D is stamped D+1 00:00. By default only complete buckets are
    written: every lake day their minutes belong to was recorded whole. Default: every symbol
    in the lake, every M1 day; --from/--to pick the M1 days whose months are rebuilt.
    Exit 0 done, 1 something failed (rerun), 2 bad input (nothing written), 130 interrupted.
    --json prints one document, documented in backfill/aggregate/view.py and docs/aggregate.md.
    """
    import json as jsonlib

    from rich.console import Console

    from backfill.aggregate import view
    from backfill.aggregate.build import AggregateRequest, aggregate_lake, check_request
    from backfill.aggregate.timeframes import parse_timeframes

    try:
        root, timeframes = resolve_lake(lake), parse_timeframes(tf)
        symbol_list, first, last = resolve_scope(symbols, symbols_file, from_, to)
        request = AggregateRequest(
            lake=root,
            timeframes=timeframes,
            symbols=None if symbol_list is None else tuple(symbol_list),
            first=first,
            last=last,
            include_partial=include_partial,
        )
        check_request(request)
    except BadInput as exc:
        fail_bad_input(str(exc))
    now = datetime.now(timezone.utc)
    console = Console()
    try:
        if json:
            result = aggregate_lake(request, now=now)
            typer.echo(jsonlib.dumps(view.to_json(request, result), indent=2))
        elif console.is_terminal:
            with view.ProgressView(Console(stderr=True)) as progress:
                result = aggregate_lake(request, now=now, on_event=progress.on_event)
            for line in view.summary_lines(result):
                console.print(line, markup=False)
        else:
            result = aggregate_lake(request, now=now, on_event=view.line_printer(typer.echo))
            for line in view.summary_lines(result):
                typer.echo(line)
    except KeyboardInterrupt:
        # Every part is replaced whole or not at all: nothing is half-written.
        typer.echo("backfill: interrupted; rerun to finish", err=True)
        raise typer.Exit(EXIT_INTERRUPTED) from None
    raise typer.Exit(EXIT_OK if result.ok else EXIT_FAILED)


@app.command()
@with_config_file
def levels(
    ctx: typer.Context,
    lake: LakeOpt = None,
    symbols: SymbolsOpt = None,
    symbols_file: SymbolsFileOpt = None,
    from_: Annotated[
        str | None,
        typer.Option("--from", help="First session date, YYYY-MM-DD (its month is built whole)."),
    ] = None,
    to: Annotated[
        str | None,
        typer.Option("--to", help="Last session date, YYYY-MM-DD (its month is built whole)."),
    ] = None,
    profiles: Annotated[
        str,
        typer.Option(
            "--profiles",
            help="Comma-separated: us_equity_open (New York 09:30 open), asia_open "
            "(Tokyo 09:00), daily_open_utc (00:00 UTC). Windows in docs/levels.md.",
        ),
    ] = "us_equity_open",
    include_partial: Annotated[
        bool,
        typer.Option(
            "--include-partial",
            help="Also write rows whose windows touch an M1 day not "
            "recorded whole, with complete=false.",
        ),
    ] = False,
    events: Annotated[
        bool,
        typer.Option(
            "--events/--no-events", help="Also build the Break & Retest events (br_events)."
        ),
    ] = True,
    tolerance: Annotated[
        str,
        typer.Option(
            "--tolerance",
            help="How close a retest must come to the level: bps:N (N/10,000 of "
            "the level), abs:X (X in price), consumer (0.5 PD, 0.3 PM, 0.2 OR in price).",
        ),
    ] = "bps:5",
    max_retest_bars: Annotated[
        int,
        typer.Option(
            "--max-retest-bars",
            min=1,
            max=10_000,
            help="A break not retested within this many "
            "bars (or minutes, see --retest-unit) ends as invalidated_time.",
        ),
    ] = 15,
    retest_unit: Annotated[
        str,
        typer.Option(
            "--retest-unit",
            help="bars (rows after the break) or minutes (since the break bar's end).",
        ),
    ] = "bars",
    signal_bar: Annotated[
        str,
        typer.Option(
            "--signal-bar",
            help="next: the bar after the retest is the signal; same: the retest bar itself.",
        ),
    ] = "next",
    scan: Annotated[
        str | None,
        typer.Option(
            "--scan",
            help="HH:MM-HH:MM, bar labels (starts) in the profile's zone, both "
            "inclusive, where events are looked for. Default: the profile's (09:30-11:30 New "
            "York, 09:00-11:00 Tokyo, 00:00-02:00 UTC).",
        ),
    ] = None,
    json: JsonOpt = False,
) -> None:
    """Build daily levels (PDH PDL PDC PMH PML ORH ORL) and Break & Retest events from the M1
    lake, with no lookahead; only what changed is rebuilt.

    Writes `<lake>/levels/...` and `<lake>/br_events/...` (docs/levels-guide.md). A
    level may be used from `available_from_utc`, the end of its window. By default only rows
    whose windows' M1 days are all recorded whole are written. Default: every symbol in the
    lake, every session its M1 days feed. Exit 0 done, 1 something failed (rerun), 2 bad
    input (nothing written), 130 interrupted. --json prints one document, documented in
    backfill/levels/view.py.
    """
    import json as jsonlib

    from backfill.levels import view
    from backfill.levels.build import LevelsRequest, check_request, levels_lake
    from backfill.levels.events import EventParams
    from backfill.levels.profiles import parse_profiles, parse_scan
    from backfill.levels.tolerance import parse_tolerance

    try:
        if retest_unit not in ("bars", "minutes"):
            raise BadInput(f"--retest-unit {retest_unit!r}: expected bars or minutes")
        if signal_bar not in ("next", "same"):
            raise BadInput(f"--signal-bar {signal_bar!r}: expected next or same")
        params = EventParams(
            parse_tolerance(tolerance),
            max_retest_bars,
            retest_unit,
            signal_bar,
            None if scan is None else parse_scan(scan),
        )
        chosen = parse_profiles(profiles)
        root = resolve_lake(lake)
        symbol_list, first, last = resolve_scope(symbols, symbols_file, from_, to)
        request = LevelsRequest(
            lake=root,
            profiles=chosen,
            symbols=None if symbol_list is None else tuple(symbol_list),
            first=first,
            last=last,
            include_partial=include_partial,
            events=events,
            params=params,
        )
        check_request(request)
    except BadInput as exc:
        fail_bad_input(str(exc))
    try:
        if json:
            result = levels_lake(request)
            typer.echo(jsonlib.dumps(view.to_json(request, result), indent=2))
        else:
            result = levels_lake(request, on_event=view.line_printer(typer.echo))
            for line in view.summary_lines(result):
                typer.echo(line)
    except KeyboardInterrupt:
        # Every part is replaced whole or not at all: nothing is half-written.
        typer.echo("backfill: interrupted; rerun to finish", err=True)
        raise typer.Exit(EXIT_INTERRUPTED) from None
    raise typer.Exit(EXIT_OK if result.ok else EXIT_FAILED)


def levels_after_run(request: Any) -> int:
    """``run --levels``: build the default profile's levels and events for the run's symbols
    and days."""
    import json as jsonlib

    from backfill.levels import view
    from backfill.levels.build import LevelsRequest, levels_lake

    wanted = LevelsRequest(
        lake=request.lake, symbols=tuple(request.symbols), first=request.first, last=request.last
    )
    try:
        result = levels_lake(wanted)
        if request.json:  # one more NDJSON line after the run's events
            typer.echo(jsonlib.dumps({"event": "levels", **view.to_json(wanted, result)}))
        else:
            for line in view.summary_lines(result):
                typer.echo(line)
    except BadInput as exc:
        typer.echo(f"backfill: levels: {exc}", err=True)
        return EXIT_FAILED
    except KeyboardInterrupt:
        return EXIT_INTERRUPTED
    return EXIT_OK if result.ok else EXIT_FAILED


@app.command()
@with_config_file
def probe(
    ctx: typer.Context,
    gateway: Annotated[
        str | None,
        typer.Option(
            "--gateway",
            help="The real IB Gateway/TWS to measure, as HOST:PORT (required, on "
            "the command line or in backfill.toml).",
            show_default=False,
        ),
    ] = None,
    symbol: Annotated[str, typer.Option("--symbol", help="The symbol asked about.")] = "BTC-USD",
    lake: LakeOpt = None,
    client_id: Annotated[
        int,
        typer.Option(
            "--client-id", min=1, help="clientId of the probe; a taken id moves to the next."
        ),
    ] = 99,
    request_timeout: Annotated[
        float,
        typer.Option(
            "--request-timeout",
            min=0.1,
            help="Seconds a request may go unanswered before it "
            "counts as refused (real gateways answer some too-long windows by never answering).",
        ),
    ] = 30.0,
    pause_s: Annotated[
        float,
        typer.Option(
            "--pause-s", hidden=True, help="Seconds between requests (5 per contract in 2 s)."
        ),
    ] = 0.45,
    batch_gap_s: Annotated[
        float,
        typer.Option(
            "--batch-gap-s", hidden=True, help="Seconds before a batch of requests sent at once."
        ),
    ] = 2.2,
    json: JsonOpt = False,
) -> None:
    """Measure what this gateway does where IB's documentation is silent (about 20 requests).

    Finds window_edges ([) (] [] ()), day_duration (calendar or sessions, from "2 D" and
    "7 D"), max_window_days (the longest of 1, 2, 3, 5, 7, 10 days answered), latency_s
    (median of a full day with 1, 2 and 4 in flight), future_end (a window ending in the
    future: its last bar, and whether that bar was still forming), aggtrades (permitted,
    or IB's error) and header_format/header_clock (how the served window is written, and
    how its zone-less times read), each with its evidence, and records them in the lake
    (`_gateway/<host>-<port>.json`) for run and plan. --json prints one document with those
    keys plus gateway, symbol, checked_at, requests, unanswered and evidence. Exit 0 every
    check answered, 1 one was not (named), 2 bad input.
    """
    import json as jsonlib

    from backfill.findings import finding_text
    from backfill.ib.probe import KEYS, ProbeSettings, run_probe
    from backfill.ib.served import ZoneDatabaseMissing
    from backfill.ib.session import IBSessionError
    from backfill.lake.gateway import write_finding
    from backfill.settings import GatewayAddress

    try:
        if gateway is None:
            raise BadInput("give --gateway HOST:PORT (the gateway to measure)")
        address = GatewayAddress.parse(gateway)
        if address.embedded:
            raise BadInput("--gateway: probe measures a real gateway: give HOST:PORT")
        asked = Symbol.parse(symbol)
        root = resolve_lake(lake)
    except BadInput as exc:
        fail_bad_input(str(exc))

    def progress(step: str) -> None:
        if not json:
            typer.echo(f"probe: {step}", err=True)

    try:
        report = run_probe(
            address.host,
            address.port,
            client_id,
            asked,
            ProbeSettings(pause_s, batch_gap_s, request_timeout),
            progress=progress,
        )
    except (IBSessionError, ZoneDatabaseMissing) as exc:
        fail_bad_input(f"gateway {address}: {exc}")
    recorded, unrecorded = None, None
    try:
        for key in KEYS:
            if key in report.findings:
                recorded = write_finding(
                    root,
                    address.host,
                    address.port,
                    key,
                    report.findings[key],
                    {"symbol": str(asked), "requests": report.evidence.get(key, [])},
                    report.checked_at,
                    source="backfill probe",
                )
    except OSError as exc:
        unrecorded = f"cannot record the findings in {root}: {exc.strerror or exc}"
    if json:
        typer.echo(jsonlib.dumps(report.to_json(str(address)), indent=2))
    else:
        for key in KEYS:
            value = (
                finding_text(key, report.findings[key])
                if key in report.findings
                else f"not answered: {report.unanswered.get(key, '')}"
            )
            typer.echo(f"{key:16} {value}")
        if recorded is not None and unrecorded is None:
            typer.echo(
                f"Recorded in {recorded}: run and plan --gateway {address} use them "
                f"for {_RUN.finding_max_age_days:g} days."
            )
    if unrecorded is not None:  # measured, but no run will use it: not a success
        typer.echo(f"backfill: error: {unrecorded}", err=True)
    raise typer.Exit(EXIT_FAILED if report.unanswered or unrecorded else EXIT_OK)


class _OneLineUsageErrors(TyperCommand):
    """A command whose bad flags get the project's answer: one line on stderr, exit 2."""

    def parse_args(self, ctx: Context, args: list[str]) -> list[str]:
        try:
            return super().parse_args(ctx, args)
        except UsageError as exc:
            message = " ".join(exc.format_message().split())
            typer.echo(f"backfill: error: {message}", err=True)
            raise typer.Exit(EXIT_BAD_INPUT) from None


# `backfill gateway`: its options and body are in backfill/cli_gateway.py.
from backfill.cli_gateway import gateway  # noqa: E402 (registered here: listed last)

app.command(cls=_OneLineUsageErrors)(gateway)


def main() -> None:
    try:
        app()
    except BadInput as exc:  # raised by the core before anything is written
        typer.echo(f"backfill: error: {exc}", err=True)
        sys.exit(EXIT_BAD_INPUT)
