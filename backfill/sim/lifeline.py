"""A lifeline to a parent process: the simulator child ends when its parent dies.

Polled rather than Linux's PR_SET_PDEATHSIG: that signal fires when the parent's *thread*
that started the child exits, which would stop a gateway whose parent lives on, and it
exists on Linux only. A poll of a few times a second works on every POSIX system and
catches every way a parent dies, SIGKILL included.
"""

from __future__ import annotations

import os
from dataclasses import dataclass

POLL_S = 0.2


def lifeline_args(pid: int | None = None) -> list[str]:
    """Flags that make ``backfill gateway`` end with process ``pid`` (default: this one)."""
    return ["--parent-pid", str(os.getpid() if pid is None else pid)]


def _start_ticks(pid: int) -> int | None:
    """When a process started (Linux /proc), to tell it from a later one given its pid."""
    try:
        with open(f"/proc/{pid}/stat", "rb") as handle:
            fields = handle.read().rsplit(b")", 1)[1].split()
    except OSError:
        return None
    # A zombie is dead already, whoever has yet to reap it.
    return None if fields[0] == b"Z" else int(fields[19])


def _exists(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # someone else's process: it exists
        return True
    return True


@dataclass(frozen=True)
class Lifeline:
    """Process ``pid`` as seen when the lifeline was made; ``alive`` says if it still is."""

    pid: int
    was_parent: bool
    start_ticks: int | None

    @classmethod
    def to(cls, pid: int) -> Lifeline:
        """A lifeline to ``pid``; ValueError if there is no such process now."""
        if pid <= 0 or not _exists(pid):
            raise ValueError(f"no process with id {pid}")
        return cls(pid, os.getppid() == pid, _start_ticks(pid))

    def alive(self) -> bool:
        if self.was_parent and os.getppid() != self.pid:
            return False  # orphaned: re-parented to init or a subreaper
        if not _exists(self.pid):
            return False
        if self.start_ticks is not None:
            return _start_ticks(self.pid) == self.start_ticks
        return True
