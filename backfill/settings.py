"""Settings resolved once from flags and the environment, then passed down whole.

Every default and every IB limit the code relies on is defined here, once: ``IBRules``
(IB's documented pacing limits) and ``RunSettings`` (how a run paces, retries and plans).
The CLI builds one ``RunSettings`` and hands it to ``plan``, the orchestrator and the
workers; nothing below the CLI has defaults of its own for these.
"""

from __future__ import annotations

import math
import os
import sys
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import timedelta
from pathlib import Path
from typing import TYPE_CHECKING, Any
from urllib.parse import urlsplit

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover - Python 3.10
    import tomli as tomllib

from backfill.congestion import CongestionConfig
from backfill.domain import BadInput

if TYPE_CHECKING:
    from backfill.lake.objpath import ObjectPath

DEFAULT_GATEWAY = "127.0.0.1:7497"
# Without --workers: one worker per symbol, at most this many (one gateway serves only so
# many API clients well).
DEFAULT_MAX_WORKERS = 8
# IB client ids are signed 32-bit; ib_insync sends 2^31-1 (its "unset" value) as an empty
# field, which a gateway cannot read, so the top value is unusable.
MIN_CLIENT_ID = 1
MAX_CLIENT_ID = 2**31 - 2
# The lake's own folders a run writes besides the data (run logs; run locks and sends).
RUN_FOLDERS = ("_runs", "_locks")


@dataclass(frozen=True)
class IBRules:
    """IB's pacing limits for historical data (see ib-notes): scaled only for a simulator
    that scales its own (the hidden ``--ib-*`` flags of ``run``)."""

    identical_s: float = 15.0  # no identical request within 15 s
    contract_max: int = 5  # at most 5 requests for one contract ...
    contract_window_s: float = 2.0  # ... in any 2 s
    session_max: int = 60  # at most 60 requests in any 10 minutes (strict mode keeps it)
    session_window_s: float = 600.0
    max_open: int = 50  # at most 50 historical requests open at once per session

    @property
    def session_rate(self) -> float:
        """The session rule as a sustained rate (requests/s; a first burst is faster)."""
        return self.session_max / self.session_window_s


@dataclass(frozen=True)
class RunSettings:
    """How a run paces, retries and plans: one value, from the CLI down to every worker."""

    rate: float = 0.7  # requests/s across all workers (``--rate``), what IB users call safe
    # ``--rate auto``: start at ``rate`` and find the fastest pace the gateway serves
    # without its latency inflating, never above ``max_rate`` (``--max-rate``).
    rate_auto: bool = False
    max_rate: float = 10.0
    # Requests open at once across all workers (``--max-in-flight-total``); None: rate ×
    # the measured base latency with headroom (Little's law), at most IB's ``max_open``.
    max_in_flight_total: int | None = None
    workers: int = DEFAULT_MAX_WORKERS  # worker processes at once (``--workers``)
    max_in_flight: int = 4  # requests one worker keeps open (``--max-in-flight``)
    window_days: int = 1  # whole days per request (``--window-days``)
    strict_pacing: bool = False  # also keep IB's session rule across workers
    request_timeout_s: float = 30.0  # an unanswered request is cancelled, then retried
    # How long one outage (no answer since the connection was lost) is ridden out before a
    # worker gives up: IB Gateway restarts daily and takes a minute or two.
    reconnect_for_s: float = 600.0
    # While another session holds the account's market data (10197), one request goes out
    # this often (or every reconnect_for_s / 20 if less) to see whether it has gone.
    blocked_retry_s: float = 30.0
    client_id_base: int = 100  # worker N connects with clientId base + N
    client_id_tries: int = 16  # taken ids (326) a worker skips before it gives up
    connect_timeout_s: float = 10.0
    max_restarts: int = 3  # times a crashed worker is restarted before its symbol fails
    restart_backoff_s: float = 1.0
    max_attempts: int = 6  # per request, not counting pacing refusals and IB outages
    retry_base_s: float = 0.5
    retry_cap_s: float = 30.0
    # After a 162: half the global rate for 20 s, then back to full in four 10 s steps.
    rate_hold_s: float = 20.0
    rate_climb_every_s: float = 10.0
    # IB times its rules on arrival: network and gateway jitter of tens of ms can squeeze
    # six sends spaced just over 2 s into 2 s, so every limit keeps this much slack. Measured
    # (scripts/bench_run.py, 8 workers on 2 cores, workers niced): the tightest six arrivals
    # came 2.03 s apart for sends 2.05 s apart.
    pacing_margin_s: float = 0.05
    # Workers run this much nicer than the run: a gateway on the same host, busy with their
    # requests, gets the CPU first when they encode parts, so it never reads their sends
    # late and bunched (which IB would count against the per-contract rule).
    worker_niceness: int = 5
    flush_interval_s: float = 60.0  # a worker writes what it holds at least this often
    # A day asked sooner than this after it ended is kept as partial and asked again by a
    # later run: IB may not have settled the last minutes' bars yet.
    settle_s: float = 300.0
    latency_s: float = 0.3  # the gateway latency ``plan`` assumes (``--latency-ms``)
    # Once a run has nothing else to do, how long it waits for a symbol another run is
    # fetching before judging that symbol by the lake.
    wait_for_other_run_s: float = 3600.0
    keep_runs: int = 100  # run logs kept in <lake>/_runs/, this run's included
    # A worker silent this long while it has work is shown stalled and its share of the rate
    # goes to the others; silent ``stall_restart_after_s`` it is killed and restarted. A
    # waiting worker is not silent: it sends a heartbeat (``run.stall``). 0 turns either off.
    stall_after_s: float = 60.0
    stall_restart_after_s: float = 300.0
    # A symbol's head timestamp recorded in the lake (``lake.heads``) is asked again after
    # this many days, by a run whose range starts before it: IB may add earlier history.
    head_max_age_days: float = 30.0
    # What ``backfill probe`` recorded about a gateway is used this long, then ignored
    # ("stale, run backfill probe again"): IB Gateway updates itself now and then.
    finding_max_age_days: float = 7.0
    # ``--rate auto``: the gateway's base latency as ``backfill probe`` measured it (1 in
    # flight), the controller's first base-latency estimate until its own answers replace it.
    base_latency_hint_s: float | None = None
    ib: IBRules = field(default_factory=IBRules)

    def check(self) -> None:
        """Refuse settings no run could honour (BadInput: exit 2, one line)."""
        if not (self.rate > 0 and math.isfinite(self.rate)):
            raise BadInput(f"--rate must be a number of requests/s above 0, not {self.rate}")
        if self.workers < 1:
            raise BadInput(f"--workers must be at least 1, not {self.workers}")
        if not 1 <= self.max_in_flight <= self.ib.max_open:
            raise BadInput(
                f"--max-in-flight must be from 1 to {self.ib.max_open} (IB's open requests), "
                f"not {self.max_in_flight}"
            )
        if not (self.max_rate > 0 and math.isfinite(self.max_rate)):
            raise BadInput(
                f"--max-rate must be a number of requests/s above 0, not {self.max_rate}"
            )
        total = self.max_in_flight_total
        if total is not None and not 1 <= total <= self.ib.max_open:
            raise BadInput(
                f"--max-in-flight-total must be from 1 to {self.ib.max_open} "
                f"(IB's open requests), not {total}"
            )
        if self.window_days < 1:
            raise BadInput(f"--window-days must be at least 1, not {self.window_days}")
        if not (self.latency_s >= 0 and math.isfinite(self.latency_s)):
            raise BadInput(f"--latency-ms must be 0 or more, not {self.latency_s * 1000}")
        if self.keep_runs < 1:
            raise BadInput(f"--keep-runs must be at least 1 (this run's log), not {self.keep_runs}")
        if not (self.stall_after_s >= 0 and self.stall_restart_after_s >= 0):
            raise BadInput("--stall-after and --stall-restart-after must be 0 (off) or more")
        if (
            self.stall_after_s
            and self.stall_restart_after_s
            and self.stall_restart_after_s < self.stall_after_s
        ):
            raise BadInput(
                f"--stall-restart-after ({self.stall_restart_after_s:g}) must be at "
                f"least --stall-after ({self.stall_after_s:g})"
            )
        check_client_ids(self.client_id_base, self.workers)

    @property
    def paced_rate(self) -> float:
        """The rate a run sustains: ``rate``, capped by IB's session rule in strict mode."""
        return min(self.rate, self.ib.session_rate) if self.strict_pacing else self.rate

    def congestion(self) -> CongestionConfig:
        """The global rate controller's settings: fixed ``rate``, or ``auto`` from it."""
        return CongestionConfig(
            rate=min(self.rate, self.max_rate) if self.rate_auto else self.rate,
            auto=self.rate_auto,
            max_rate=self.max_rate,
            hold_s=self.rate_hold_s,
            climb_every_s=self.rate_climb_every_s,
            max_in_flight=self.max_in_flight_total or self.ib.max_open,
            min_in_flight=min(4, self.max_in_flight_total or self.ib.max_open),
            base_hint_s=self.base_latency_hint_s if self.rate_auto else None,
        )

    @property
    def learning_timeout_s(self) -> float:
        """How long a request that learns the gateway's edge rule waits: the user's
        ``--request-timeout``, but no longer than a connection may take. Two small requests
        (a 30 and a 10 minute window) that a healthy gateway answers in a second; a hung one
        holds up the run's start by this much."""
        return min(self.request_timeout_s, self.connect_timeout_s)

    @property
    def finding_max_age(self) -> timedelta:
        return timedelta(days=self.finding_max_age_days)

    @property
    def worker_in_flight(self) -> int:
        """Requests one worker keeps open: all workers together stay within IB's open limit."""
        return max(1, min(self.max_in_flight, self.ib.max_open // self.workers))

    @property
    def contract_gap_s(self) -> float:
        """The shortest average gap between one worker's requests under IB's per-contract
        rule, with the workers' margin: one worker alone never goes faster than this."""
        return (self.ib.contract_window_s + self.pacing_margin_s) / self.ib.contract_max


def parse_rate(text: str) -> tuple[float, bool]:
    """``--rate``: requests/s, or ``auto`` (start at the default and find the pace); the
    rate and whether it is ``auto`` (BadInput otherwise)."""
    text = text.strip()
    if text.lower() == "auto":
        return RunSettings.rate, True
    try:
        rate = float(text)
    except ValueError:
        rate = math.nan
    if not (rate > 0 and math.isfinite(rate)):
        raise BadInput(f"--rate must be a number of requests/s above 0 or 'auto', not {text!r}")
    return rate, False


def default_workers(n_symbols: int) -> int:
    """``--workers`` when not given: one per symbol, at most ``DEFAULT_MAX_WORKERS``."""
    return max(1, min(n_symbols, DEFAULT_MAX_WORKERS))


def resolve_lake(flag: Path | None, env: Mapping[str, str] | None = None) -> Path:
    """``--lake``, else ``LAKE_ROOT``, else the current directory. An ``s3://bucket/prefix``
    lake is an ``ObjectPath``, checked usable here (BadInput if not) before anything is asked
    of a gateway or written."""
    env = os.environ if env is None else env
    if flag is not None:
        return lake_root(flag)
    if env.get("LAKE_ROOT"):
        return lake_root(env["LAKE_ROOT"])
    return Path.cwd()


def lake_root(raw: str | os.PathLike[str]) -> Path:
    """A lake root from what the user gave: a folder, or an object store lake (opened and
    listed once, so a missing extra, bucket, credential or endpoint is one line, exit 2)."""
    from backfill.lake.objpath import open_lake

    # Typed Path for the commands (cli.py); an s3:// lake is an ObjectPath answering
    # Path's questions (lake/objpath.py).
    return open_lake(raw)  # type: ignore[return-value]


CONFIG_FILE = "backfill.toml"


def find_config_file(
    cwd: Path, lake_flag: Path | None, env: Mapping[str, str] | None = None
) -> Path | ObjectConfigFile | None:
    """The one ``backfill.toml`` a command reads: the folder of an explicit ``--lake``'s,
    else the current folder's, else ``LAKE_ROOT``'s; None when none has one. A lake named
    on the command line carries its own settings: they beat whatever folder one is in. An
    ``s3://`` lake's file is ``<lake>/backfill.toml`` in the store, fetched by one GET (an
    ``ObjectConfigFile``; missing is none)."""
    env = os.environ if env is None else env
    if lake_flag is not None and (found := _lake_config(lake_flag, "--lake")) is not None:
        return found
    here = cwd / CONFIG_FILE
    if here.is_file():
        return here
    if lake_flag is None and env.get("LAKE_ROOT"):
        return _lake_config(Path(env["LAKE_ROOT"]), "LAKE_ROOT")
    return None


def _lake_config(lake: Path, named_by: str) -> Path | ObjectConfigFile | None:
    text = os.fspath(lake)
    if text.startswith("s3:/"):  # a typer Path option folds s3://b/p into s3:/b/p
        return _object_config("s3://" + text[4:].lstrip("/"), named_by)
    return lake / CONFIG_FILE if (lake / CONFIG_FILE).is_file() else None


@dataclass(frozen=True)
class ObjectConfigFile:
    """An ``s3://`` lake's ``backfill.toml`` and the bytes the one GET that found it read."""

    path: ObjectPath  # ``<lake>/backfill.toml``
    raw: bytes = field(repr=False)

    @property
    def parent(self) -> ObjectPath:
        return self.path.parent

    def __str__(self) -> str:
        return str(self.path)


def _object_config(url: str, named_by: str) -> ObjectConfigFile | None:
    """``<url>/backfill.toml`` from the store, None if there is none; a store that cannot be
    used is BadInput (one line, no secret), as the command itself would say."""
    from backfill.lake.objpath import ObjectPath
    from backfill.lake.storage import LakeLocation, MissingExtra, StorageError, StoreUnavailable

    try:
        path = ObjectPath.root(LakeLocation.parse(url)) / CONFIG_FILE
        try:
            # A ranged GET of the last CONFIG_MAX_BYTES + 1 bytes: the whole of any file
            # this may read, and the size of one too big, in one request.
            raw, size = path.read_tail(CONFIG_MAX_BYTES + 1)
        except StoreUnavailable:
            raise
        except StorageError:  # an empty object has no suffix range (416): read it whole
            raw = path.read_bytes()
            size = len(raw)
    except FileNotFoundError:
        return None
    except ValueError as exc:
        raise BadInput(f"{named_by} {exc}") from None
    except MissingExtra as exc:
        raise BadInput(str(exc)) from None
    except StorageError as exc:
        raise BadInput(f"{named_by} {url}: {exc}") from None
    if size > CONFIG_MAX_BYTES:
        raise BadInput(f"{path}: {size} bytes, more than {CONFIG_MAX_BYTES}")
    return ObjectConfigFile(path, raw)


def read_config_file(path: Path | ObjectConfigFile) -> dict[str, Any]:
    """The settings a ``backfill.toml`` holds (BadInput if it cannot be read or parsed)."""
    from backfill.lake.safe_json import BadJson, read_regular_file

    if isinstance(path, ObjectConfigFile):
        raw: bytes | None = path.raw
    else:
        try:
            # A lake's file is input too: a FIFO or /dev/zero in its place is refused.
            raw = read_regular_file(path, CONFIG_MAX_BYTES)
        except BadJson as exc:
            raise BadInput(f"{path}: {exc}") from None
    if raw is None:
        raise BadInput(f"{path}: No such file or directory")
    try:
        settings: dict[str, Any] = tomllib.loads(raw.decode("utf-8"))  # tomli: Any on 3.10
        return settings
    except (tomllib.TOMLDecodeError, UnicodeDecodeError) as exc:
        raise BadInput(f"{path}: not valid TOML: {str(exc)[:200]}") from None
    except RecursionError:  # tomllib parses nested arrays recursively
        raise BadInput(f"{path}: not valid TOML: nested too deep") from None


CONFIG_MAX_BYTES = 1 << 20


def check_client_ids(base: int, workers: int) -> None:
    """BadInput unless every client id a run may use (``base`` .. ``base + workers``, the
    last for the gateway check) is one IB can take."""
    if not MIN_CLIENT_ID <= base <= MAX_CLIENT_ID - workers:
        raise BadInput(
            f"--client-id-base must be from {MIN_CLIENT_ID} to {MAX_CLIENT_ID - workers} with "
            f"{workers} worker{'s' if workers != 1 else ''} (IB client ids are 32-bit, and "
            f"ids up to BASE+{workers} are used), not {base}"
        )


def display_path(path: Path) -> str:
    """``path`` printable whatever its bytes (an undecodable byte shows as ``\\xff``)."""
    return os.fsencode(path).decode("utf-8", "backslashreplace")


def check_lake_writable(lake: Path) -> None:
    """BadInput unless ``lake`` is (or could be created as) a folder this process can write,
    with a name every part of the stack can spell, and its run folders writable too.

    Touches nothing: a missing lake is judged by its nearest existing ancestor. An object
    store lake was checked when it was opened (``lake_root``).
    """
    if not isinstance(lake, Path):
        return
    try:
        os.fsencode(lake).decode("utf-8")
    except UnicodeDecodeError:
        # Parquet paths and the run log are UTF-8: a worker would fail on it, not the start.
        raise BadInput(f"--lake {display_path(lake)} is not valid UTF-8") from None
    if lake.exists() and not lake.is_dir():
        raise BadInput(f"--lake {lake} is not a folder")
    existing = lake
    while not existing.exists() and existing != existing.parent:
        existing = existing.parent
    if not existing.is_dir():
        raise BadInput(f"--lake {lake}: {existing} is not a folder")
    if not os.access(existing, os.W_OK | os.X_OK):
        raise BadInput(f"--lake {lake}: {existing} is not writable")
    for name in RUN_FOLDERS:
        folder = lake / name
        if folder.exists() and not folder.is_dir():
            raise BadInput(f"--lake {lake}: {folder} is not a folder")
        # os.access also answers for root: a read-only filesystem stops root too.
        if folder.is_dir() and not os.access(folder, os.W_OK | os.X_OK):
            raise BadInput(f"--lake {lake}: {folder} is not writable")


@dataclass(frozen=True)
class GatewayAddress:
    """Where the IB Gateway listens; ``sim`` means start the embedded simulator."""

    host: str
    port: int
    embedded: bool = False

    @classmethod
    def parse(cls, text: str) -> GatewayAddress:
        text = text.strip()
        if text == "sim":
            return cls("127.0.0.1", 0, embedded=True)
        problem = BadInput(f"--gateway: {text!r} is not HOST:PORT, [IPv6]:PORT or 'sim'")
        try:
            # The URL parser knows IPv6 literals in brackets ([::1]:4002).
            parts = urlsplit(f"//{text}")
            host, port = parts.hostname, parts.port
        except ValueError:
            raise problem from None
        if (
            not host
            or not port
            or parts.path
            or parts.query
            or parts.fragment
            or parts.username
            or (text.count(":") > 1 and not text.startswith("["))
        ):
            raise problem
        return cls(host, port)

    def __str__(self) -> str:
        if self.embedded and not self.port:
            return "sim"
        return f"[{self.host}]:{self.port}" if ":" in self.host else f"{self.host}:{self.port}"
