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
