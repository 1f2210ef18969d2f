"""Which IB client library is used (``ib/choice.py``, ``ib/client.py``)."""

from __future__ import annotations

import importlib.util
import os
import subprocess
import sys
from pathlib import Path

try:
    import tomllib
except ImportError:  # Python 3.10
    import tomli as tomllib

import pytest
from packaging.requirements import Requirement

from backfill.domain import BadInput
from backfill.ib import client
from backfill.ib.choice import CLIENTS, ENV_VAR, choose

BOTH = frozenset(CLIENTS)


def test_ib_async_is_preferred_and_either_is_taken_alone() -> None:
    assert choose("", BOTH) == "ib_async"
    assert choose("", frozenset({"ib_insync"})) == "ib_insync"
    assert choose("", frozenset({"ib_async"})) == "ib_async"


def test_the_environment_variable_names_one_that_must_be_installed() -> None:
    assert choose("ib_insync", BOTH) == "ib_insync"
    assert choose(" ib_async ", BOTH) == "ib_async"
    with pytest.raises(BadInput, match=f"{ENV_VAR}=ib_insync: ib_insync is not installed"):
        choose("ib_insync", frozenset({"ib_async"}))
    with pytest.raises(BadInput, match=f"{ENV_VAR}=ib-async: expected one of ib_async"):
        choose("ib-async", BOTH)
    with pytest.raises(BadInput, match="pip install ib_async"):
        choose("", frozenset())


def test_the_client_in_use_is_the_one_installed_here() -> None:
    installed = [n for n in CLIENTS if importlib.util.find_spec(n) is not None]
    assert (os.environ.get(ENV_VAR) or installed[0]) == client.NAME
    assert client.describe() == f"{client.NAME} {client.VERSION}"
    assert client.VERSION[0].isdigit()


@pytest.mark.ib
@pytest.mark.parametrize("wanted", ["nope", "missing"])
def test_a_client_that_cannot_be_used_is_one_line_and_exit_2(tmp_path, wanted) -> None:
    if wanted == "missing":  # the client this environment does not hold
        wanted = next(n for n in CLIENTS if importlib.util.find_spec(n) is None)
    lake = tmp_path / "lake"
    done = subprocess.run(
        [
            sys.executable,
            "-m",
            "backfill",
            "run",
            "--gateway",
            "sim",
            "--symbols",
            "BTC-USD",
            "--from",
            "2025-07-01",
            "--to",
            "2025-07-01",
            "--lake",
            str(lake),
        ],
        capture_output=True,
        text=True,
        timeout=60,
        stdin=subprocess.DEVNULL,
        env={**os.environ, ENV_VAR: wanted},
    )
    assert done.returncode == 2
    assert done.stderr.splitlines() == [done.stderr.strip()]
    assert done.stderr.startswith(f"backfill: error: {ENV_VAR}={wanted}: ")
    assert not lake.exists()


def test_python_3_14_installs_ib_async_and_earlier_pythons_ib_insync() -> None:
    pyproject = Path(__file__).parents[2] / "pyproject.toml"
    deps = [Requirement(d) for d in tomllib.loads(pyproject.read_text())["project"]["dependencies"]]

    def clients(python: str) -> set[str]:
        return {
            d.name
            for d in deps
            if d.name in CLIENTS
            and (d.marker is None or d.marker.evaluate({"python_version": python}))
        }

    assert clients("3.10") == clients("3.13") == {"ib_insync"}
    assert clients("3.14") == clients("3.15") == {"ib_async"}
