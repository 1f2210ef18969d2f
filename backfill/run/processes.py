"""Where worker processes come from: a forkserver that imported the worker code once.

Light on purpose (no ib_insync, no pyarrow): ``backfill run`` starts the server before it
imports anything heavy itself, so the server's imports overlap the parent's.
"""

from __future__ import annotations

import multiprocessing as mp
import signal
import threading
from multiprocessing import forkserver, resource_tracker

from backfill.ib.choice import chosen

# Imported once by the server; every worker forks with them loaded and warmed up.
PRELOAD = ["backfill.run.worker", "backfill.run.warmup"]


def worker_context() -> mp.context.SpawnContext | mp.context.ForkServerContext:
    """Workers fork from a server process that imported them once: a fast start without
    forking the orchestrator itself (its dashboard thread makes a plain fork unsafe)."""
    if "forkserver" not in mp.get_all_start_methods():
        return mp.get_context("spawn")
    ctx = mp.get_context("forkserver")
    ctx.set_forkserver_preload(PRELOAD)
    return ctx


def start_worker_server() -> None:
    """Start the workers' forkserver now, so its imports overlap the parent's work.

    Raises BadInput first if no IB client can be used (the server would import it).
    """
    chosen()
    if worker_context().get_start_method() != "forkserver":
        return
    if threading.current_thread() is not threading.main_thread():
        forkserver.ensure_running()
        return
    # The server imports for a while before it ignores Ctrl-C itself; a Ctrl-C meanwhile
    # would print its KeyboardInterrupt traceback. Started with SIGINT blocked, it holds
    # it blocked through its imports (then ignores it); workers unblock it once they handle
    # it (``unblock_interrupts``). Here a Ctrl-C is only held back, then delivered.
    resource_tracker.ensure_running()  # first: it unblocks SIGINT when it is done
    signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGINT})
    try:
        forkserver.ensure_running()
    finally:
        signal.pthread_sigmask(signal.SIG_UNBLOCK, {signal.SIGINT})


def unblock_interrupts() -> None:
    """In a worker, once its own SIGINT handler is set: let Ctrl-C in (see above)."""
    signal.pthread_sigmask(signal.SIG_UNBLOCK, {signal.SIGINT})
