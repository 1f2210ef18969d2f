"""Where worker processes come from: a forkserver that imported the worker code once.

Light on purpose (no ib_insync, no pyarrow): ``backfill run`` starts the server before it
imports anything heavy itself, so the server's imports overlap the parent's.
"""

from __future__ import annotations

import multiprocessing as mp
from multiprocessing import forkserver

# Imported once by the server; every worker forks with them loaded and warmed up.
PRELOAD = ["backfill.run.worker", "backfill.run.warmup"]


def worker_context() -> mp.context.BaseContext:
    """Workers fork from a server process that imported them once: a fast start without
    forking the orchestrator itself (its dashboard thread makes a plain fork unsafe)."""
    if "forkserver" not in mp.get_all_start_methods():
        return mp.get_context("spawn")
    ctx = mp.get_context("forkserver")
    ctx.set_forkserver_preload(PRELOAD)
    return ctx


def start_worker_server() -> None:
    """Start the workers' forkserver now, so its imports overlap the parent's work."""
    if worker_context().get_start_method() == "forkserver":
        forkserver.ensure_running()
