"""Where worker processes come from: a forkserver that imported the worker code once.

Light on purpose (no ib_insync, no pyarrow): ``backfill run`` starts the server before it
imports anything heavy itself, so the server's imports overlap the parent's.
"""

from __future__ import annotations

import contextlib
import multiprocessing as mp
import os
import signal
import threading
from multiprocessing import forkserver, resource_tracker

from backfill.ib.choice import chosen

# Imported once by the server; every worker forks with them loaded and warmed up. The first
# makes the server as nice as its workers will be, so that its imports yield the CPU to the
# run's own start-up, which waits on nothing else.
PRELOAD = ["backfill.run.niced", "backfill.run.worker", "backfill.run.warmup"]
NICENESS_ENV = "BACKFILL_WORKER_NICENESS"  # how much nicer the server runs (set for it alone)


def worker_context() -> mp.context.SpawnContext | mp.context.ForkServerContext:
    """Workers fork from a server process that imported them once: a fast start without
    forking the orchestrator itself (its dashboard thread makes a plain fork unsafe)."""
    if "forkserver" not in mp.get_all_start_methods():
        return mp.get_context("spawn")
    ctx = mp.get_context("forkserver")
    ctx.set_forkserver_preload(PRELOAD)
    return ctx


def start_worker_server(niceness: int = 0) -> None:
    """Start the workers' forkserver now, so its imports overlap the parent's work; it runs
    ``niceness`` nicer than this process (its workers are to run so anyway).

    Raises BadInput first if no IB client can be used (the server would import it).
    """
    chosen()
    if worker_context().get_start_method() != "forkserver":
        return
    before = os.environ.get(NICENESS_ENV)
    os.environ[NICENESS_ENV] = str(max(0, niceness))
    try:
        _ensure_server()
    finally:
        if before is None:
            os.environ.pop(NICENESS_ENV, None)
        else:
            os.environ[NICENESS_ENV] = before


def _ensure_server() -> None:
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


def current_niceness() -> int | None:
    """This process's niceness (None where the OS has none)."""
    return os.nice(0) if hasattr(os, "nice") else None


def become_nicer(target: int | None) -> None:
    """Raise this process's niceness to ``target`` (never lower it: that needs privileges).

    A nicer process is a wish, never a failure: an OS that refuses is left as it is.
    """
    now = current_niceness()
    if target is None or now is None or target <= now:
        return
    with contextlib.suppress(OSError):
        os.nice(target - now)


def unblock_interrupts() -> None:
    """In a worker, once its own SIGINT handler is set: let Ctrl-C in (see above)."""
    signal.pthread_sigmask(signal.SIG_UNBLOCK, {signal.SIGINT})
