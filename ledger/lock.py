"""The writer lock: one process at a time per project.

`flock` on ``<project>/.lock``; a second writer fails with `LedgerLocked` at once or after
waiting up to a timeout. The kernel drops the lock when its holder dies, even by SIGKILL.
"""

from __future__ import annotations

import fcntl
import os
import time
from pathlib import Path

import anyio

from .errors import LedgerLocked

POLL_S = 0.02


class WriterLock:
    """An exclusive lock on a project directory, held from `acquire` until `release`."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._fd = -1

    async def acquire(self, timeout_s: float = 0.0) -> None:
        deadline = time.monotonic() + timeout_s
        while not self.try_acquire():
            if time.monotonic() >= deadline:
                raise LedgerLocked(self.path.parent, timeout_s)
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
        if self._fd >= 0:
            fcntl.flock(self._fd, fcntl.LOCK_UN)
            os.close(self._fd)
            self._fd = -1
