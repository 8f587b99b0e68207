"""The writer's journal: a redo log that makes one fsync per batch enough.

A batch's lines (task lines, then project lines, then the line `COMMIT`) are appended to
``.journal.jsonl`` in one write and, in durable mode, fsynced: that single fsync is the commit.
Only then are the lines appended to their chain files, without fsync, and the producers told.
The chain files are fsynced at a
checkpoint (when the journal has grown past `CHECKPOINT_BYTES`, and on close), after which the
journal is emptied. So:

- an empty journal means every chain file is complete (a clean shutdown);
- after a crash, every acknowledged line is in the journal, and any chain file may lack a
  suffix of the journal's lines for it (or end in a torn piece of one): recovery re-appends
  them (ledger/recovery.py);
- a batch without its `COMMIT` line at the end of the journal (a write cut short, which can
  end on a line boundary) was never acknowledged and never reached a chain file.
"""

from __future__ import annotations

import os
from pathlib import Path

CHECKPOINT_BYTES = 16 * 1024 * 1024
COMMIT = b'{"commit":true}\n'


def _write_all(fd: int, data: bytes) -> None:
    view = memoryview(data)
    while view:
        view = view[os.write(fd, view) :]


class Journal:
    def __init__(self, path: Path) -> None:
        self.path = path
        self._fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_APPEND, 0o644)
        self.size = os.fstat(self._fd).st_size

    def append(self, data: bytes) -> None:
        _write_all(self._fd, data)
        self.size += len(data)

    def sync(self) -> None:
        os.fsync(self._fd)

    def reset(self, durable: bool) -> None:
        """Empty the journal (every chain file is complete and, if `durable`, fsynced)."""
        os.ftruncate(self._fd, 0)
        if durable:
            os.fsync(self._fd)
        self.size = 0

    def close(self) -> None:
        if self._fd >= 0:
            os.close(self._fd)
            self._fd = -1


def pending(path: Path) -> bool:
    """Whether a journal holds lines, i.e. its writer did not shut down cleanly."""
    try:
        return path.stat().st_size > 0
    except FileNotFoundError:
        return False


write_all = _write_all
