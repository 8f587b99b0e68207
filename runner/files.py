"""Durable file writes for the runner's outputs (queue, scoreboard, packs, reports).

A reader must never see a torn JSON file, even if the runner is killed mid-write: write to a
temporary file in the same directory, fsync it, rename it over the target, fsync the directory.
"""

from __future__ import annotations

import contextlib
import functools
import os
import stat
import tempfile
from pathlib import Path


@functools.cache
def _umask() -> int:
    """The process's umask, read without changing it where Linux tells (`os.umask` can only
    set it, and setting it is process-wide). Read once: the runner never changes it, and
    every new evidence file would otherwise read /proc again."""
    with contextlib.suppress(OSError, ValueError):
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("Umask:"):
                return int(line.split()[1], 8)
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


def write_atomic(
    path: str | Path, data: bytes, *, mode: int | None = None, durable: bool = True
) -> Path:
    """Replace `path` with `data` atomically and durably; creates parent directories.

    The file gets `mode`, or else the permission bits of the file it replaces, or else those
    a plain `open` would give it (0o666 less the umask): the temporary file `mkstemp` makes
    is 0o600, which would leave the queue or a report unreadable to the people and tools that
    share the directory. The bits are set before the rename, so the file never appears with
    others. `durable=False` skips the fsyncs: still never torn for readers or after a kill,
    but a power loss may lose the write; for data whose loss is detected anyway
    (content-addressed blobs, verified by hash before use).
    """
    target = Path(path)
    target.parent.mkdir(parents=True, exist_ok=True)
    if mode is None:
        try:
            mode = stat.S_IMODE(target.stat().st_mode)
        except OSError:
            mode = 0o666 & ~_umask()
    fd, tmp_name = tempfile.mkstemp(prefix=f".{target.name}.", suffix=".tmp", dir=target.parent)
    try:
        with os.fdopen(fd, "wb") as tmp:
            tmp.write(data)
            tmp.flush()
            os.fchmod(tmp.fileno(), mode)
            if durable:
                os.fsync(tmp.fileno())
        Path(tmp_name).replace(target)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            Path(tmp_name).unlink()
        raise
    if durable:
        fsync_dir(target.parent)
    return target


def fsync_dir(directory: str | Path) -> None:
    """Make a rename or a new file in `directory` durable."""
    fd = os.open(directory, os.O_RDONLY | getattr(os, "O_DIRECTORY", 0))
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
