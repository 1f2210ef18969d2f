"""The IB client library, chosen in this one place: ``ib_async`` when installed, else
``ib_insync``; ``BACKFILL_IB_CLIENT=ib_async|ib_insync`` names one (``ib/choice.py``).

``ib_async`` is the maintained fork of ``ib_insync`` (same module layout, same names). The
two cannot share an environment: ``ib_async``'s ``aeventkit`` and ``ib_insync``'s
``eventkit`` both install the ``eventkit`` package. ``ib_insync`` cannot be imported on
Python 3.14 (its ``eventkit`` calls ``asyncio.get_event_loop()`` at import).

Everything else imports the client's names from here (``backfill/ib/`` and the tests).
"""

from __future__ import annotations

import importlib
from importlib import metadata
from typing import TYPE_CHECKING

from backfill.ib.choice import chosen

NAME = chosen()
_lib = importlib.import_module(NAME)
_wrapper = importlib.import_module(f"{NAME}.wrapper")

if TYPE_CHECKING:
    # The checker sees ib_insync's own annotations (it ships py.typed); ib_async is its fork
    # with the same names and signatures. Where ib_insync is not installed (Python 3.14)
    # these are Any and the uses below go unchecked.
    from ib_insync import IB, BarDataList, Contract, MarketOrder
    from ib_insync.wrapper import RequestError
else:
    IB = _lib.IB
    BarDataList = _lib.BarDataList
    Contract = _lib.Contract
    MarketOrder = _lib.MarketOrder  # the tests' order, which the simulator refuses
    RequestError = _wrapper.RequestError
try:
    VERSION = metadata.version(NAME)
except metadata.PackageNotFoundError:  # imported from a source tree, not installed
    VERSION = str(getattr(_lib, "__version__", "unknown"))


# IB's refusal of a request as invalid ("Error validating request"). ib_insync ends the
# request with it; ib_async takes it for a warning (an order modify's 321 leaves the order
# live) and leaves the request open until its timeout.
REFUSED = 321


def new_ib() -> IB:
    """An ``IB()`` that behaves the same under either client: a 321 for an open request
    ends it at once as a refusal (a ``RequestError`` when ``RaiseRequestErrors``)."""
    ib = IB()
    wrapper = ib.wrapper

    def end_refused(req_id: int, code: int, text: str, contract: object) -> None:
        # Under ib_insync the request has ended already: it is no longer in _futures.
        if code == REFUSED and req_id in wrapper._futures:
            if ib.RaiseRequestErrors:
                wrapper._endReq(req_id, RequestError(req_id, code, text), success=False)
            else:
                wrapper._endReq(req_id)

    ib.errorEvent += end_refused
    return ib


def describe() -> str:
    """``ib_async 2.1.0``: the client in use, for run logs and reports."""
    return f"{NAME} {VERSION}"
