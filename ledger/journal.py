"""The writer's journal: a redo log that makes one disk write per batch enough.

A batch's lines (task lines, then project lines, then the line `COMMIT`) are appended to
``.journal.jsonl`` in one write which, in durable mode, returns once they are on disk: that
write is the commit. Only then are the lines appended to their chain files, without fsync, and
the producers told. When the journal has grown past `CHECKPOINT_BYTES` it is renamed to
``.journal.old.jsonl`` and a new one started; once the chain files hold every line of the old
journal and are fsynced (a checkpoint), the old journal is deleted. On close the chain files
are fsynced and the journal emptied. So:

- no journal with lines means every chain file is complete (a clean shutdown);
- after a crash, every acknowledged line is in the old journal or the journal (in that
  order), and any chain file may lack a suffix of their lines for it (or end in a torn piece
  of one): recovery re-appends them (ledger/recovery.py);
- a batch without its `COMMIT` line at the end of the journal (a write cut short, which can
  end on a line boundary) was never acknowledged and never reached a chain file.
"""

from __future__ import annotations

import os
from pathlib import Path

from .store import ProjectPaths, fsync_dir

CHECKPOINT_BYTES = 16 * 1024 * 1024


def empty_journals(paths: ProjectPaths) -> None:
    """After recovery: every chain file holds the journals' lines, durably; empty them."""
    fd = os.open(paths.journal, os.O_WRONLY | os.O_CREAT, 0o644)
    try:
        os.ftruncate(fd, 0)
        os.fsync(fd)
    finally:
        os.close(fd)
    paths.old_journal.unlink(missing_ok=True)
    fsync_dir(paths.dir)


def pending(paths: ProjectPaths) -> bool:
    """Whether a journal holds lines, i.e. its writer did not shut down cleanly."""
    return any(_size(path) for path in (paths.old_journal, paths.journal))


def _size(path: Path) -> int:
    try:
        return path.stat().st_size
    except FileNotFoundError:
        return 0
