"""The writer lock: one process at a time per project, and a clean/dirty mark.

`flock` on ``<project>/.lock``. The lock file also says whether the last writer shut down
cleanly: a writer writes ``dirty`` (fsynced) when it starts and ``clean`` after its last fsync.
A ``dirty`` mark on open means a writer died, so crash recovery checks every chain's tail;
verify, meanwhile, treats unacknowledged tails as pending recovery rather than damage.
"""

from __future__ import annotations

import fcntl
import os
import time
from pathlib import Path

import anyio

from .errors import LedgerLocked

CLEAN = b"clean\n"
DIRTY = b"dirty\n"
POLL_S = 0.02


def is_dirty(lock_path: Path) -> bool:
    try:
        return lock_path.read_bytes() != CLEAN
    except FileNotFoundError:
        return False


class WriterLock:
    """An exclusive lock on a project directory, held from `acquire` until `release`."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._fd = -1

    async def acquire(self, timeout_s: float = 0.0) -> None:
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
        deadline = time.monotonic() + timeout_s
        while True:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except BlockingIOError:
                if time.monotonic() >= deadline:
                    os.close(fd)
                    raise LedgerLocked(self.path.parent, timeout_s) from None
                await anyio.sleep(POLL_S)
        self._fd = fd

    def mark(self, state: bytes) -> None:
        """Write the clean/dirty mark and make it durable."""
        os.ftruncate(self._fd, 0)
        os.pwrite(self._fd, state, 0)
        os.fsync(self._fd)

    def release(self) -> None:
        if self._fd >= 0:
            fcntl.flock(self._fd, fcntl.LOCK_UN)
            os.close(self._fd)
            self._fd = -1
