"""First of the workers' forkserver preloads: the server runs as nice as its workers will.

Its imports (ib_insync, pyarrow) then yield the CPU to the run's own start-up, which is on
the path to the first request; the workers it forks start at that niceness.
"""

from __future__ import annotations

import os

from backfill.run.processes import NICENESS_ENV, become_nicer, current_niceness

_now = current_niceness()
if _now is not None:
    become_nicer(_now + int(os.environ.get(NICENESS_ENV, "0") or 0))
