"""Settings resolved once from flags and the environment, then passed down."""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

from backfill.domain import BadInput

DEFAULT_GATEWAY = "127.0.0.1:7497"


def resolve_lake(flag: Path | None, env: Mapping[str, str] | None = None) -> Path:
    """``--lake``, else ``LAKE_ROOT``, else the current directory."""
    env = os.environ if env is None else env
    if flag is not None:
        return flag
    if env.get("LAKE_ROOT"):
        return Path(env["LAKE_ROOT"])
    return Path.cwd()


def check_lake_writable(lake: Path) -> None:
    """BadInput unless ``lake`` is (or could be created as) a folder this process can write.

    Touches nothing: a missing lake is judged by its nearest existing ancestor.
    """
    if lake.exists() and not lake.is_dir():
        raise BadInput(f"--lake {lake} is not a folder")
    existing = lake
    while not existing.exists() and existing != existing.parent:
        existing = existing.parent
    if not existing.is_dir():
        raise BadInput(f"--lake {lake}: {existing} is not a folder")
    if not os.access(existing, os.W_OK | os.X_OK):
        raise BadInput(f"--lake {lake}: {existing} is not writable")


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
        host, sep, port = text.rpartition(":")
        if not sep or not host or not port.isdigit() or not 0 < int(port) < 65536:
            raise BadInput(f"--gateway: {text!r} is not HOST:PORT or 'sim'")
        return cls(host, int(port))

    def __str__(self) -> str:
        return "sim" if self.embedded and not self.port else f"{self.host}:{self.port}"
