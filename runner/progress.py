"""The progress directory on disk: queue, scoreboard, trends, summary, frozen snapshots.

The kernel decides; this module reads and writes. Every write is atomic (`write_atomic`: temp
file, fsync, rename), and the queue is guarded by an exclusive lock (`queue_lock`, an advisory
``flock`` on ``<queue>.lock``) so that two runner processes cannot both read the queue, change
it and write it back, losing one update. The lock is released by the kernel when the process
dies, so a crash never leaves a stale lock behind. POSIX only (``fcntl``).

When several files change together the queue is written last: it is the commit point. A crash
before it leaves the queue as it was, and running the command again redoes the work.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import fcntl
import os
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import TypeVar

import anyio
import msgspec

from kernel import scoreboard, triage
from protocol import (
    BoundarySnapshot,
    LastSelected,
    PlanSnapshot,
    ProtocolError,
    Scoreboard,
    TaskQueue,
    Trends,
    decode,
    encode_pretty,
)
from runner.files import write_atomic
from runner.log import get_logger

T = TypeVar("T")
log = get_logger(__name__)

QUEUE_FILE = "task_queue.json"
SCOREBOARD_FILE = "scoreboard.json"
TRENDS_FILE = "trends.json"
SUMMARY_FILE = "summary.md"
PLAN_FILE = "plan_snapshot.json"
BOUNDARY_FILE = "boundary_snapshot.json"


class ProgressError(Exception):
    """Base of the errors this module raises about progress files."""


class QueueLocked(ProgressError):
    """Another process holds the queue lock; `holder` is its pid as it wrote it (if known)."""

    def __init__(self, path: Path, holder: str, waited: float) -> None:
        self.path = path
        self.holder = holder
        self.waited = waited
        who = f"process {holder}" if holder else "another process"
        super().__init__(
            f"{path}: the queue is locked by {who} (waited {waited:.1f}s); try again when it "
            "has finished"
        )


class SnapshotFrozen(ProgressError):
    """A negotiation that would replace a frozen snapshot with different content."""

    def __init__(self, path: Path, recorded: str, new: str) -> None:
        self.path = path
        self.recorded = recorded
        self.new = new
        super().__init__(
            f"{path}: already frozen (sha256 {recorded[:12]}); the requirements now give "
            f"{new[:12]}. Pass --refreeze to replace the frozen snapshot on purpose"
        )


def utc_now() -> str:
    """RFC 3339 UTC time, to the second: the kernel's `now`."""
    return dt.datetime.now(dt.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


@contextlib.contextmanager
def queue_lock(queue_path: str | Path, *, timeout: float = 10.0) -> Iterator[None]:
    """Hold the exclusive lock of `queue_path` for the block (waiting up to `timeout` s)."""
    path = Path(queue_path)
    lock = path.with_name(path.name + ".lock")
    lock.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(lock, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        start = time.monotonic()
        while True:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except BlockingIOError:
                waited = time.monotonic() - start
                if waited >= timeout:
                    holder = os.pread(fd, 32, 0).decode("ascii", "replace").strip()
                    raise QueueLocked(path, holder, waited) from None
                time.sleep(0.05)
        os.ftruncate(fd, 0)
        os.pwrite(fd, f"{os.getpid()}\n".encode(), 0)
        log.debug("queue.locked", path=str(path))
        try:
            yield
        finally:
            os.ftruncate(fd, 0)
            fcntl.flock(fd, fcntl.LOCK_UN)
    finally:
        os.close(fd)


def read_bytes(path: str | Path) -> bytes:
    """A file's bytes, or a `ProtocolError` naming it."""
    try:
        return Path(path).read_bytes()
    except OSError as exc:
        raise ProtocolError(f"cannot read file: {exc.strerror or exc}", source=str(path)) from None


def load(path: str | Path, type_: type[T], default: T | None = None) -> T:
    """Decode `path` as `type_`; a missing file gives `default` when one is given."""
    p = Path(path)
    if default is not None and not p.exists():
        return default
    return decode(read_bytes(p), type_, source=str(p))


def load_queue(path: str | Path, *, missing_ok: bool = False) -> TaskQueue:
    """The queue at `path`, decoded and checked (duplicate keys, unknown deps, cycles)."""
    p = Path(path)
    if missing_ok and not p.exists():
        return TaskQueue()
    return triage.check(load(p, TaskQueue), source=str(p))


def save_queue(path: str | Path, queue: TaskQueue) -> Path:
    return write_atomic(path, encode_pretty(queue))


class Progress(msgspec.Struct, frozen=True):
    """The files of one progress directory."""

    root: Path

    @property
    def scoreboard(self) -> Path:
        return self.root / SCOREBOARD_FILE

    @property
    def trends(self) -> Path:
        return self.root / TRENDS_FILE

    @property
    def summary(self) -> Path:
        return self.root / SUMMARY_FILE

    @property
    def plan(self) -> Path:
        return self.root / PLAN_FILE

    @property
    def boundary(self) -> Path:
        return self.root / BOUNDARY_FILE

    def load_scoreboard(self) -> Scoreboard:
        return load(self.scoreboard, Scoreboard, Scoreboard())

    def load_trends(self) -> Trends:
        return load(self.trends, Trends, Trends())

    def load_boundary(self) -> BoundarySnapshot | None:
        return load(self.boundary, BoundarySnapshot) if self.boundary.exists() else None

    def load_plan(self) -> PlanSnapshot | None:
        return load(self.plan, PlanSnapshot) if self.plan.exists() else None

    def updated(
        self,
        queue: TaskQueue,
        *,
        now: str,
        selected: LastSelected | None = None,
        trend: bool = True,
    ) -> dict[Path, bytes]:
        """The scoreboard, trends and summary for `queue`, as bytes to write (without a new
        trend point when `trend` is False: a point per finished cycle, not per change)."""
        board = scoreboard.score(queue, now=now, previous=self.load_scoreboard(), selected=selected)
        trends = self.load_trends()
        if trend:
            trends = scoreboard.append_trend(
                trends, board, selected=selected.key if selected else None
            )
        summary = scoreboard.summary_markdown(queue, board, trends)
        return {
            self.scoreboard: encode_pretty(board),
            self.trends: encode_pretty(trends),
            self.summary: summary.encode("utf-8"),
        }


def write_all(files: dict[Path, bytes]) -> list[Path]:
    """Write each file atomically, in the order given (put the commit point last)."""
    return [write_atomic(path, data) for path, data in files.items()]


class QueueKeeper:
    """The one owner of the queue and its scoreboard while a campaign runs.

    Every change is a pure kernel function of the queue, applied under one lock in this
    process (the caller holds `queue_lock` against other processes), then written: scoreboard,
    trends and summary first, the queue last (the commit point). Concurrent cycles therefore
    never lose each other's updates, and a reader never sees torn JSON.
    """

    def __init__(self, queue_path: Path, progress: Progress, queue: TaskQueue) -> None:
        self.queue_path = queue_path
        self.progress = progress
        self._queue = queue
        self._lock = anyio.Lock()

    @property
    def queue(self) -> TaskQueue:
        return self._queue

    async def apply(
        self,
        change: Callable[[TaskQueue], TaskQueue],
        *,
        selected: LastSelected | None = None,
        trend: bool = False,
    ) -> TaskQueue:
        async with self._lock:
            queue = triage.check(change(self._queue), source=str(self.queue_path))
            files = self.progress.updated(queue, now=utc_now(), selected=selected, trend=trend)
            files[self.queue_path] = encode_pretty(queue)
            await anyio.to_thread.run_sync(write_all, files)
            self._queue = queue
            return queue
