"""The writer lock: one process at a time per project.

`flock` on ``<project>/.lock``; a second writer fails with `LedgerLocked` after waiting up to a
timeout (`GRACE_S` when none is given). The kernel drops the lock when its holder dies, even
by SIGKILL, and the writer's commit process holds it with it (it inherits the descriptor).
"""

from __future__ import annotations

import fcntl
import os
import time
from pathlib import Path

import anyio

from .errors import LedgerLocked

POLL_S = 0.02
# Without a timeout a writer still waits this long: a writer that has just died may hold the
# lock a few milliseconds more, through its commit process (ledger/commit_process.py), which
# dies with it but not in the same instant.
GRACE_S = 0.5


class WriterLock:
    """An exclusive lock on a project directory, held from `acquire` until `release`."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._fd = -1

    async def acquire(self, timeout_s: float = 0.0) -> None:
        start = time.monotonic()
        deadline = start + (timeout_s if timeout_s > 0 else GRACE_S)
        while not self.try_acquire():
            now = time.monotonic()
            if now >= deadline:
                raise LedgerLocked(self.path.parent, round(now - start, 1))
            await anyio.sleep(POLL_S)

    @property
    def fd(self) -> int:
        """The locked descriptor: a process that inherits it holds the lock too."""
        return self._fd

    def try_acquire(self) -> bool:
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(fd)
            return False
        self._fd = fd
        return True

    def release(self) -> None:
        """Close the descriptor, without LOCK_UN: a lock belongs to the open file, which a
        commit process may share (it inherits the descriptor) and may still be writing
        under; the lock ends when the last descriptor of it is closed."""
        if self._fd >= 0:
            os.close(self._fd)
            self._fd = -1
