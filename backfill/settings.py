"""Settings resolved once from flags and the environment, then passed down."""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlsplit

from backfill.domain import BadInput

DEFAULT_GATEWAY = "127.0.0.1:7497"
# IB client ids are signed 32-bit; ib_insync sends 2^31-1 (its "unset" value) as an empty
# field, which a gateway cannot read, so the top value is unusable.
MIN_CLIENT_ID = 1
MAX_CLIENT_ID = 2**31 - 2
# The lake's own folders a run writes besides the data (run logs; run locks and sends).
RUN_FOLDERS = ("_runs", "_locks")


def resolve_lake(flag: Path | None, env: Mapping[str, str] | None = None) -> Path:
    """``--lake``, else ``LAKE_ROOT``, else the current directory."""
    env = os.environ if env is None else env
    if flag is not None:
        return flag
    if env.get("LAKE_ROOT"):
        return Path(env["LAKE_ROOT"])
    return Path.cwd()


def display_path(path: Path) -> str:
    """``path`` printable whatever its bytes (an undecodable byte shows as ``\\xff``)."""
    return os.fsencode(path).decode("utf-8", "backslashreplace")


def check_lake_writable(lake: Path) -> None:
    """BadInput unless ``lake`` is (or could be created as) a folder this process can write,
    with a name every part of the stack can spell, and its run folders writable too.

    Touches nothing: a missing lake is judged by its nearest existing ancestor.
    """
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


def check_client_ids(base: int, workers: int) -> None:
    """BadInput unless every client id a run may use (``base`` .. ``base + workers``, the
    last for the gateway check) is one IB can take."""
    if not MIN_CLIENT_ID <= base <= MAX_CLIENT_ID - workers:
        raise BadInput(
            f"--client-id-base must be from {MIN_CLIENT_ID} to {MAX_CLIENT_ID - workers} with "
            f"{workers} worker{'s' if workers != 1 else ''} (IB client ids are 32-bit, and "
            f"ids up to BASE+{workers} are used), not {base}"
        )


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
        if not host or not port or parts.path or parts.query or parts.fragment \
                or parts.username or (text.count(":") > 1 and not text.startswith("[")):
            raise problem
        return cls(host, port)

    def __str__(self) -> str:
        if self.embedded and not self.port:
            return "sim"
        return f"[{self.host}]:{self.port}" if ":" in self.host else f"{self.host}:{self.port}"
