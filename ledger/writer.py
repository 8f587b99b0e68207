"""The ledger's one writer: many producers, one task that owns the files, group commit.

Producers call `append_task_event` / `append_project_event` from any number of tasks. A body is
checked where it is submitted: encoded to its canonical bytes once, and those bytes decoded with
the event's strict type (Structs built in Python skip msgspec's checks, and the writer must never
write a line that verify would refuse). The request then waits in a queue; the writer task takes
up to `MAX_BATCH` queued requests (a batch), checks each event against its task's state, seals
it into a line around the body bytes already checked, and commits the batch:

1. all its lines (task lines, then project lines: one `task_event` link per task event) are
   appended to the journal in one write;
2. durable mode leaves the fsync to the syncer tasks, which run it in a worker thread: one
   fsync serves every batch written before it started, however many task files they touch, and
   up to `MAX_SYNCS` run at once. The writer seals the next batch meanwhile;
3. once its fsync is done (buffered mode: at once) a batch is complete: its producers are
   resolved, and its lines go to the chain files behind the journal (no fsync; the journal can
   redo them), once 1 MiB has gathered or the writer has been idle for 10 ms.

Producers of one batch share one event: a producer costs one wake-up, not a stream message and
an event of its own. Chain files are fsynced at checkpoints, after which the journal is emptied
(ledger/journal.py); ledger/recovery.py redoes the journal after a crash. Buffered mode skips
every fsync: a crash of the process (SIGKILL) still loses nothing acknowledged, a crash of the
machine may.
"""

from __future__ import annotations

import contextlib
import os
import time
from collections import deque
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any, Literal

import anyio
import msgspec
import structlog

from protocol import is_safe_id
from protocol.ledger_events import (
    GENESIS_HASH,
    PROJECT_EVENT_TYPES,
    TASK_EVENT_TYPES,
    ProjectCreated,
    ProjectRecord,
    RecoveredTornTail,
    TaskEventLinked,
)

from .canonical import canonical
from .chain import seal, seal_link_line, seal_project_line, seal_task_line
from .errors import (
    InvalidEvent,
    InvalidLedgerId,
    LedgerDamaged,
    LedgerError,
    LedgerExists,
    LedgerLocked,
    WriterFailed,
)
from .journal import CHECKPOINT_BYTES, COMMIT, Journal, pending, write_all
from .lock import WriterLock
from .recovery import project_head, recover, task_tail
from .state import TaskState, advance, event_type
from .store import (
    ProjectManifest,
    ProjectPaths,
    SchemaVersion,
    fsync_dir,
    naming,
    read_manifest,
    safe_id,
    write_file_atomic,
)
from .verify import Head

Mode = Literal["durable", "buffered"]
FLUSH_BYTES = 1024 * 1024
FLUSH_AFTER_S = 0.01
# A batch holds at most this many requests: with more producers waiting, several batches, and
# the writer seals one while the journal's fsync for another runs (up to MAX_SYNCS at once).
# Smaller batches would overlap more of the fsync with 64 producers, but each fsync costs the
# event loop a round trip to a worker thread: measured here, that costs more than it hides
# (docs/performance.md).
MAX_BATCH = 64
MAX_SYNCS = 2
QUEUE_SIZE = 8192
OPEN_FILES = 256

log = structlog.get_logger("ledger")
_project_decoder = msgspec.json.Decoder(ProjectRecord)


def _decoders(types: tuple[type[Any], ...]) -> dict[type[Any], msgspec.json.Decoder[Any]]:
    return {t: msgspec.json.Decoder(t) for t in types}


_TASK_BODIES = _decoders(TASK_EVENT_TYPES)
_PROJECT_BODIES = _decoders(tuple(t for t in PROJECT_EVENT_TYPES if t is not TaskEventLinked))


class Appended(msgspec.Struct, frozen=True):
    """Where an acknowledged event landed: its chain position and hash, and its project seq
    (for a task event, the seq of its link)."""

    seq: int
    event_hash: str
    project_seq: int
    task_id: str | None = None


class _Request:
    """One append (or, with `body` None, a flush) and, once its batch is complete, its
    outcome."""

    __slots__ = ("body", "data", "error", "result", "task_id")

    def __init__(self, task_id: str | None, body: Any, data: bytes) -> None:
        self.task_id = task_id
        self.body = body
        self.data = data
        self.result: Appended | None = None
        self.error: LedgerError | None = None


class _Batch:
    """Requests taken together, their lines, and the event their producers wait on."""

    __slots__ = (
        "done", "flush", "head", "number", "project_lines", "requests", "task_lines", "tasks",
    )  # fmt: skip

    def __init__(self, requests: list[_Request]) -> None:
        self.requests = requests
        self.done = anyio.Event()
        self.flush = False
        self.task_lines: dict[str, list[bytes]] = {}
        self.project_lines: list[bytes] = []
        self.tasks: dict[str, TaskState] = {}
        self.head: Head | None = None
        self.number = 0


def _checked_body(
    body: Any, decoders: dict[type[Any], msgspec.json.Decoder[Any]]
) -> tuple[Any, bytes]:
    """`body` as its strict type decodes its canonical bytes, and those bytes. From here on the
    writer uses the decoded copy: its values are what the line will say, with their exact types
    (an `int` that is not a `bool`, an enum member), whatever the caller built."""
    decoder = decoders.get(type(body))
    if decoder is None:
        raise InvalidEvent(f"{type(body).__name__} is not an event one may append here")
    data = canonical(body)
    try:
        return decoder.decode(data), data
    except msgspec.DecodeError as exc:
        # Name the field as it sits in the record: `$.body.result`, not `$.result`.
        raise InvalidEvent(f"invalid event: {str(exc).replace('`$', '`$.body', 1)}") from None


def check_task_event(task_id: str, body: Any) -> None:
    """Raise `InvalidLedgerId` or `InvalidEvent` as `append_task_event` would, without a
    ledger: for callers that check their input before opening one."""
    safe_id("task id", task_id)
    _checked_body(body, _TASK_BODIES)


def utc_now() -> str:
    """RFC 3339 UTC with exactly six fraction digits (the ledger's one time format)."""
    ns = time.time_ns()
    secs, micros = divmod(ns // 1000, 1_000_000)
    return time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(secs)) + f".{micros:06d}Z"


class Ledger:
    """An open project ledger with its writer running. Get one from `open_ledger`."""

    def __init__(
        self, paths: ProjectPaths, manifest: ProjectManifest, head: Head, mode: Mode
    ) -> None:
        self.paths = paths
        self.manifest = manifest
        self.mode: Mode = mode
        self._head = head  # as of the last complete batch
        self._tasks: dict[str, TaskState] = {}  # likewise
        self._sealed_head = head  # as of the last batch sealed (ahead while an fsync runs)
        self._sealed_tasks: dict[str, TaskState] = {}
        self._open_at = head.seq
        self._fds: dict[str, int] = {}
        self._dirty: set[str] = set()
        self._pending_tasks: dict[str, list[bytes]] = {}
        self._pending_project: list[bytes] = []
        self._pending_bytes = 0
        self._new_dirs: set[Path] = set()
        self._journal: Journal | None = None
        self._project_fd = -1
        self._failed: LedgerError | None = None
        # Producers -> writer.
        self._queued: deque[_Batch] = deque()  # the last one takes requests until it is full
        self._wake_writer = anyio.Event()
        self._writer_waits = False
        # Events are made only when someone is about to wait on them (each costs microseconds,
        # and most batches have no one waiting on these three).
        self._queue_taken: anyio.Event | None = None
        self._closed = True  # until the writer runs
        # Durable mode: batches journaled and waiting for an fsync to cover them, in order.
        self._wake_syncers: anyio.Event | None = None
        self._idle_syncers = 0
        self._syncers_stop = False
        self._waiting: deque[_Batch] = deque()
        self._written = 0  # batches journaled so far (a batch's number is its place)
        self._covered = 0  # batches written before the latest fsync started
        self._syncs_running = 0
        self._synced: anyio.Event | None = None

    # --- producers ---------------------------------------------------------------------------

    async def append_task_event(self, task_id: str, body: Any) -> Appended:
        """Append a task event; returns once it is committed (durable mode: on disk)."""
        if task_id not in self._tasks:  # those are checked already
            safe_id("task id", task_id)
        return await self._submit(_Request(task_id, *_checked_body(body, _TASK_BODIES)))

    async def append_project_event(self, body: Any) -> Appended:
        return await self._submit(_Request(None, *_checked_body(body, _PROJECT_BODIES)))

    async def _submit(self, request: _Request) -> Appended:
        queued = self._queued
        while len(queued) >= QUEUE_SIZE // MAX_BATCH and not self._closed:
            if self._queue_taken is None:
                self._queue_taken = anyio.Event()
            await self._queue_taken.wait()
        if self._closed:
            raise LedgerError("ledger is closed")
        if queued and len(queued[-1].requests) < MAX_BATCH:
            batch = queued[-1]
            batch.requests.append(request)
        else:
            batch = _Batch([request])
            queued.append(batch)
        if self._writer_waits:
            self._writer_waits = False
            self._wake_writer.set()
        await batch.done.wait()
        if request.error is not None:
            raise request.error
        assert request.result is not None
        return request.result

    # --- state -------------------------------------------------------------------------------

    @property
    def head(self) -> Head:
        """The project chain's head as of the last committed batch."""
        return self._head

    def task_state(self, task_id: str) -> TaskState:
        """A task's state as of the last committed batch, read from its last line the first
        time it is asked for (O(1))."""
        state = self._tasks.get(task_id)
        if state is None:
            chain_id = self.manifest.chain_project_id
            state = task_tail(self.paths, chain_id, task_id, self._open_at)
            self._tasks[task_id] = state
        return state

    # --- the writer --------------------------------------------------------------------------

    async def flush(self) -> None:
        """Return once every chain file holds everything committed so far (the writer writes
        them behind the journal); for readers of the files in this process, such as export."""
        await self._submit(_Request(None, None, b""))

    async def _run(self) -> None:
        """The writer task: takes batches, seals them, writes them to the journal."""
        async with anyio.create_task_group() as syncers:
            if self.mode == "durable":
                for _ in range(MAX_SYNCS):
                    syncers.start_soon(self._syncer)
            try:
                while True:
                    if not self._queued:
                        if self._closed:
                            break
                        self._wake_writer = anyio.Event()
                        self._writer_waits = True
                        if self._pending_bytes:
                            # Idle: bring the chain files up to date for other readers.
                            with anyio.move_on_after(FLUSH_AFTER_S) as idle:
                                await self._wake_writer.wait()
                            if idle.cancelled_caught:
                                self._flush_or_fail()
                        else:
                            await self._wake_writer.wait()
                        continue
                    batch = self._queued.popleft()
                    _set(self._queue_taken)
                    self._queue_taken = None
                    self._seal(batch)
                    # A batch is written whole or not started: cancelling the writer
                    # mid-batch would leave what a crash leaves.
                    with anyio.CancelScope(shield=True):
                        self._write(batch)
                        if self._journal is not None and self._journal.size >= CHECKPOINT_BYTES:
                            await self._drain()
                            if self._failed is None:
                                try:
                                    await self._checkpoint()
                                except OSError as exc:
                                    self._fail(exc, self.paths.dir)
                    if self._queued:
                        await anyio.lowlevel.checkpoint()  # let the fsync for it start
            finally:
                with anyio.CancelScope(shield=True):
                    await self._drain()
                self._syncers_stop = True
                _set(self._wake_syncers)

    def _seal(self, batch: _Batch) -> None:
        """Check each request against its task's state and seal it into lines."""
        if self._failed is not None:
            for request in batch.requests:
                request.error = self._failed
            return
        chain_id = self.manifest.chain_project_id
        ts = utc_now()
        seq, head = self._sealed_head.seq, self._sealed_head.hash
        staged = batch.tasks
        task_lines = batch.task_lines
        project_lines = batch.project_lines
        for request in batch.requests:
            task_id = request.task_id
            try:
                if task_id is None:
                    if request.body is None:
                        batch.flush = True
                        continue
                    head, line = seal_project_line(
                        request.data, prev_event_hash=head, project_id=chain_id, seq=seq + 1, ts=ts
                    )
                    request.result = Appended(seq + 1, head, seq + 1)
                else:
                    state = staged.get(task_id) or self._sealed_tasks.get(task_id)
                    if state is None:
                        state = self.task_state(task_id)
                    after = advance(state, task_id, request.body)
                    task_seq = state.seq + 1
                    task_hash, task_line = seal_task_line(
                        request.data, attempt_open=after.attempt_open, closed=after.closed,
                        pointer=after.pointer, prev_event_hash=state.head or GENESIS_HASH,
                        project_id=chain_id, project_seq=seq + 1, seq=task_seq, task_id=task_id,
                        ts=ts,
                    )  # fmt: skip
                    head, line = seal_link_line(
                        task_id, task_seq, task_hash, event_type(request.body),
                        prev_event_hash=head, project_id=chain_id, seq=seq + 1, ts=ts,
                    )  # fmt: skip
                    staged[task_id] = TaskState(
                        task_seq, task_hash, after.pointer, after.attempt_open, after.closed
                    )
                    lines = task_lines.get(task_id)
                    if lines is None:
                        task_lines[task_id] = [task_line]
                    else:
                        lines.append(task_line)
                    request.result = Appended(task_seq, task_hash, seq + 1, task_id)
            except LedgerError as exc:
                request.error = exc
                continue
            except (TypeError, ValueError, AttributeError) as exc:
                # Not expected after the body's check; refuse the event, keep the writer alive.
                request.error = InvalidEvent(f"invalid event: {exc}")
                continue
            seq += 1
            project_lines.append(line)
        batch.head = Head(seq, head)
        self._sealed_head = batch.head
        self._sealed_tasks.update(staged)

    def _write(self, batch: _Batch) -> None:
        """Journal the batch; complete it now (buffered mode, or nothing to write) or once an
        fsync that started after its write has returned."""
        if batch.project_lines and self._failed is None:
            assert self._journal is not None
            lines = [line for group in batch.task_lines.values() for line in group]
            try:
                self._journal.append(b"".join([*lines, *batch.project_lines, COMMIT]))
            except OSError as exc:
                self._fail(exc, self._journal.path)
        if self.mode == "buffered" or not (batch.project_lines or batch.flush):
            self._complete(batch)
            return
        # A flush, or a batch after a failure, too: each completes after the ones before it.
        self._written += 1
        batch.number = self._written
        self._waiting.append(batch)
        if self._idle_syncers:
            _set(self._wake_syncers)
            self._wake_syncers = None

    async def _syncer(self) -> None:
        """One of `MAX_SYNCS` tasks (durable mode) that fsync the journal for the batches
        written while the writer goes on: several, so that a batch waits for one fsync, not for
        the one before it as well."""
        while True:
            if self._covered < self._written:
                await self._sync()
            elif self._syncers_stop:
                return
            else:
                self._idle_syncers += 1
                if self._wake_syncers is None:
                    self._wake_syncers = anyio.Event()
                try:
                    await self._wake_syncers.wait()
                finally:
                    self._idle_syncers -= 1

    async def _sync(self) -> None:
        """fsync the journal, then complete every batch written before the fsync started.
        Shielded whole: a batch is either complete or still waiting, never half done."""
        self._syncs_running += 1
        try:
            with anyio.CancelScope(shield=True):
                upto = self._covered = self._written
                if self._failed is None:
                    assert self._journal is not None
                    try:
                        await anyio.to_thread.run_sync(self._journal.sync)
                    except OSError as exc:
                        self._fail(exc, self._journal.path)
                while self._waiting and self._waiting[0].number <= upto:
                    self._complete(self._waiting.popleft())
        finally:
            self._syncs_running -= 1
            _set(self._synced)
            self._synced = None

    async def _drain(self) -> None:
        """Return once every batch written so far is complete (syncing here if no syncer is
        at it, as when the syncers were cancelled)."""
        while self._waiting:
            if self._syncs_running:
                if self._synced is None:
                    self._synced = anyio.Event()
                await self._synced.wait()
            else:
                await self._sync()

    def _complete(self, batch: _Batch) -> None:
        """The batch is durable (or failed): hand its lines to the chain files, publish the
        new state and wake its producers."""
        try:
            if self._failed is not None:
                for request in batch.requests:
                    request.result = None
                    request.error = request.error or self._failed
                return
            if batch.project_lines:
                pending = self._pending_tasks
                size = 0
                for task_id, group in batch.task_lines.items():
                    lines = pending.get(task_id)
                    if lines is None:
                        pending[task_id] = group
                    else:
                        lines.extend(group)
                    size += sum(map(len, group))
                self._pending_project.extend(batch.project_lines)
                self._pending_bytes += size + sum(map(len, batch.project_lines))
                self._tasks.update(batch.tasks)
                assert batch.head is not None
                self._head = batch.head
            if batch.flush or self._pending_bytes >= FLUSH_BYTES:
                try:
                    self._flush_chains()
                except OSError as exc:
                    self._fail(exc, self.paths.dir)
                    for request in batch.requests:
                        request.result = None
                        request.error = self._failed
                    return
            if batch.flush:
                for request in batch.requests:
                    if request.body is None:
                        request.result = Appended(self._head.seq, self._head.hash, self._head.seq)
        finally:
            batch.done.set()

    def _fail(self, exc: OSError, path: Path) -> None:
        """An I/O error (a full disk, say): from now on every append is refused with an error
        naming the file. Whatever was acknowledged is in the journal, which the next writer
        redoes; what the failed write left half done was never acknowledged."""
        if self._failed is None:
            self._failed = WriterFailed.of(exc, path)
            log.error(
                "ledger.write_failed",
                project_id=self.paths.project_id,
                file=str(exc.filename or path),
                error=exc.strerror or str(exc),
            )

    def _flush_chains(self) -> None:
        """Append the pending lines to the chain files (an `OSError` names the file)."""
        # Task files before the project file, as a crash image must show (links after events).
        if not self._pending_bytes:
            return
        for task_id, lines in self._pending_tasks.items():
            with naming(self.paths.task_events(task_id)):
                write_all(self._task_fd(task_id), b"".join(lines))
            self._dirty.add(task_id)
        with naming(self.paths.events):
            write_all(self._project_fd, b"".join(self._pending_project))
        self._pending_tasks.clear()
        self._pending_project.clear()
        self._pending_bytes = 0

    def _flush_or_fail(self) -> None:
        try:
            self._flush_chains()
        except OSError as exc:
            self._fail(exc, self.paths.dir)

    async def _checkpoint(self) -> None:
        """Make the chain files durable, then empty the journal."""
        assert self._journal is not None
        self._flush_chains()
        durable = self.mode == "durable"
        if durable:
            fds = [self._fds[t] for t in self._dirty if t in self._fds]
            await _fsync_all([*fds, self._project_fd])
            for directory in self._new_dirs:
                fsync_dir(directory)
            if self._new_dirs:
                fsync_dir(self.paths.tasks)
        self._dirty.clear()
        self._new_dirs.clear()
        self._journal.reset(durable)

    def _task_fd(self, task_id: str) -> int:
        fd = self._fds.pop(task_id, None)
        if fd is None:
            if len(self._fds) >= OPEN_FILES:
                evicted, old = next(iter(self._fds.items()))
                del self._fds[evicted]
                if evicted in self._dirty and self.mode == "durable":
                    os.fsync(old)  # its lines stay durable once the journal is emptied
                self._dirty.discard(evicted)
                os.close(old)
            path = self.paths.task_events(task_id)
            if not path.parent.exists():
                (path.parent / "artifacts").mkdir(parents=True)
                self._new_dirs.add(path.parent)
            fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
        self._fds[task_id] = fd  # most recently used last
        return fd

    def _close_queue(self) -> None:
        """No more requests: the writer commits what is queued, then ends."""
        self._closed = True
        self._writer_waits = False
        self._wake_writer.set()
        _set(self._queue_taken)

    def _close_files(self) -> None:
        for fd in self._fds.values():
            os.close(fd)
        self._fds.clear()
        if self._project_fd >= 0:
            os.close(self._project_fd)
            self._project_fd = -1
        if self._journal is not None:
            self._journal.close()


def _set(event: anyio.Event | None) -> None:
    if event is not None:
        event.set()


async def _fsync_all(fds: list[int]) -> None:
    """fsync several files at once: each fsync waits on the disk, so they overlap in threads."""
    if len(fds) == 1:
        await anyio.to_thread.run_sync(os.fsync, fds[0])
        return
    async with anyio.create_task_group() as tg:
        for fd in fds:
            tg.start_soon(anyio.to_thread.run_sync, os.fsync, fd)


def init_project(root: str | Path, project_id: str) -> ProjectPaths:
    """Create an empty project (manifest and a `project_created` genesis event)."""
    paths = ProjectPaths.of(root, project_id)
    paths.dir.mkdir(parents=True, exist_ok=True)
    lock = WriterLock(paths.lock)
    if not lock.try_acquire():
        raise LedgerLocked(paths.dir, 0)
    try:
        with _refused(paths):
            _create(paths)
    finally:
        lock.release()
    return paths


def _create(paths: ProjectPaths) -> None:
    """Write a new project's files; the caller holds the lock. The manifest comes last: a
    project without one does not exist yet."""
    project_id = paths.project_id
    if paths.manifest.exists():
        raise LedgerExists(paths.dir)
    paths.tasks.mkdir(parents=True, exist_ok=True)
    paths.manifest.parent.mkdir(parents=True, exist_ok=True)
    now = utc_now()
    _, line = seal(
        ProjectRecord(project_id=project_id, seq=0, ts=now, prev_event_hash=GENESIS_HASH,
                      body=ProjectCreated()),
        _project_decoder,
    )  # fmt: skip
    write_file_atomic(paths.events, line)
    write_file_atomic(paths.schema_version, _pretty(SchemaVersion()))
    write_file_atomic(paths.manifest, _pretty(ProjectManifest(project_id, project_id, now)))
    fsync_dir(paths.root)


def _pretty(obj: Any) -> bytes:
    return msgspec.json.format(msgspec.json.encode(obj), indent=2) + b"\n"


@contextlib.asynccontextmanager
async def open_ledger(
    root: str | Path,
    project_id: str,
    *,
    mode: Mode = "durable",
    lock_timeout: float = 0.0,
    create: bool = False,
) -> AsyncIterator[Ledger]:
    """Lock the project, recover it if its last writer died, and run its writer.

    Open is O(1) in ledger size after a clean shutdown (the project chain's last line; task
    tails are read when first used) and O(number of tasks) after a crash.
    """
    paths = ProjectPaths.of(root, project_id)
    if create:
        paths.dir.mkdir(parents=True, exist_ok=True)
    else:
        read_manifest(paths)  # LedgerNotFound before anything is created
    lock = WriterLock(paths.lock)
    await lock.acquire(lock_timeout)
    ledger: Ledger | None = None
    body_error: Exception | None = None
    try:
        with _refused(paths):
            if create and not paths.manifest.exists():
                _create(paths)
            manifest = read_manifest(paths)
            ledger, found = _recover(paths, manifest, mode)
        async with anyio.create_task_group() as tg:
            ledger._closed = False
            tg.start_soon(ledger._run)
            try:
                for event in found:
                    await ledger.append_project_event(event)
                yield ledger
            except Exception as exc:  # raised again below, not wrapped in an ExceptionGroup
                body_error = exc
            finally:
                ledger._close_queue()
        if ledger._failed is None:
            try:
                await ledger._checkpoint()
            except OSError as exc:
                # Every acknowledged event is in the journal: the next writer redoes it. The
                # appends succeeded; only tidying up failed (a full disk, say).
                log.warning(
                    "ledger.checkpoint_failed",
                    project_id=paths.project_id,
                    file=str(exc.filename or paths.dir),
                    error=exc.strerror or str(exc),
                )
        if body_error is not None:
            raise body_error
    finally:
        if ledger is not None:
            ledger._close_files()
        lock.release()


@contextlib.contextmanager
def _refused(paths: ProjectPaths) -> Iterator[None]:
    """Opening (creating, recovering) the ledger hit an I/O error: a `WriterFailed` naming the
    file. Recovery is safe to repeat: it removes nothing before its copy is on disk."""
    try:
        yield
    except OSError as exc:
        raise WriterFailed.of(exc, paths.dir) from None


def _recover(
    paths: ProjectPaths, manifest: ProjectManifest, mode: Mode
) -> tuple[Ledger, list[RecoveredTornTail]]:
    """Read the project chain's tail; after a crash (a non-empty journal) redo the journal
    first, quarantining only what was never acknowledged."""
    found: list[RecoveredTornTail] = []
    chain_id = manifest.chain_project_id
    if not is_safe_id(chain_id):
        # The writer places it in every line unescaped: it must be what a line may hold.
        raise InvalidLedgerId(f"{paths.manifest}: chain_project_id {chain_id!r} is not a safe id")
    tasks: dict[str, TaskState] = {}
    if pending(paths.journal):
        head, tasks = recover(paths, chain_id, found)
        journal = Journal(paths.journal)
        journal.reset(durable=True)
        journal.close()
        log.warning("ledger.recovered", project_id=paths.project_id, quarantined=len(found))
    else:
        head = project_head(paths, chain_id)
    for event in found:
        log.warning("ledger.quarantined", project_id=paths.project_id, file=event.file,
                    quarantine_file=event.quarantine_file, bytes=event.bytes)  # fmt: skip
    ledger = Ledger(paths, manifest, head, mode)
    ledger._tasks.update(tasks)
    ledger._journal = Journal(paths.journal)
    ledger._project_fd = os.open(paths.events, os.O_WRONLY | os.O_APPEND)
    return ledger, found


__all__ = [
    "Appended",
    "Ledger",
    "LedgerDamaged",
    "Mode",
    "check_task_event",
    "init_project",
    "open_ledger",
]
