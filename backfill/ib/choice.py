"""Which IB client library to use, decided without importing it (``ib/client.py`` imports
it): ``ib_async`` when installed, else ``ib_insync``; ``BACKFILL_IB_CLIENT`` names one."""

from __future__ import annotations

import importlib.util
import os

from backfill.domain import BadInput

CLIENTS = ("ib_async", "ib_insync")  # in order of preference
ENV_VAR = "BACKFILL_IB_CLIENT"


def choose(wanted: str, installed: frozenset[str]) -> str:
    """The client to use: ``wanted`` (the environment variable's value, "" if unset) or the
    first of ``CLIENTS`` installed. Raises BadInput (one line) when there is none."""
    wanted = wanted.strip()
    if wanted:
        if wanted not in CLIENTS:
            raise BadInput(f"{ENV_VAR}={wanted}: expected one of {', '.join(CLIENTS)}")
        if wanted not in installed:
            raise BadInput(f"{ENV_VAR}={wanted}: {wanted} is not installed (pip install {wanted})")
        return wanted
    for name in CLIENTS:
        if name in installed:
            return name
    raise BadInput("no IB client library installed: pip install ib_async")


def chosen() -> str:
    """The client this process uses (BadInput if none can be)."""
    # find_spec does not import: importing ib_insync on Python 3.14 raises at once.
    installed = frozenset(n for n in CLIENTS if importlib.util.find_spec(n) is not None)
    return choose(os.environ.get(ENV_VAR, ""), installed)
