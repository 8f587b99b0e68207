"""The ledger's one writer: many producers, one task that owns the files, group commit.

Producers call `append_task_event` / `append_project_event` from any number of tasks. Each
request goes through a memory stream to the writer task, which takes everything queued (a
batch), checks each event against its task's state, seals it into a line, and commits the batch:

1. all its lines (task lines, then project lines: one `task_event` link per task event) are
   appended to the journal, which durable mode fsyncs: one fsync per batch, however many task
   files the batch touches;
2. the waiting producers are resolved;
3. the lines are appended to their chain files behind the journal (no fsync; the journal can
   redo them), once 1 MiB has gathered or the writer has been idle for 10 ms.

Chain files are fsynced at checkpoints, after which the journal is emptied (ledger/journal.py);
ledger/recovery.py redoes the journal after a crash. Buffered mode skips every fsync: a crash of
the process (SIGKILL) still loses nothing acknowledged, a crash of the machine may.
"""

from __future__ import annotations

import contextlib
import os
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import anyio
import msgspec
import structlog
from anyio.streams.memory import MemoryObjectReceiveStream, MemoryObjectSendStream

from protocol.ledger_events import (
    GENESIS_HASH,
    PROJECT_EVENT_TYPES,
    TASK_EVENT_TYPES,
    ProjectCreated,
    ProjectRecord,
    RecoveredTornTail,
    TaskEvent,
    TaskEventLinked,
    TaskRecord,
)

from .canonical import canonical
from .chain import seal
from .errors import (
    EventRejected,
    InvalidEvent,
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
    read_manifest,
    safe_id,
    write_file_atomic,
)
from .verify import Head

Mode = Literal["durable", "buffered"]
FLUSH_BYTES = 1024 * 1024
FLUSH_AFTER_S = 0.01
_FLUSH = object()  # a request body: bring the chain files up to date
MAX_BATCH = 4096
QUEUE_SIZE = 8192
OPEN_FILES = 256

log = structlog.get_logger("ledger")
_project_decoder = msgspec.json.Decoder(ProjectRecord)
_task_decoder = msgspec.json.Decoder(TaskRecord)


class Appended(msgspec.Struct, frozen=True):
    """Where an acknowledged event landed: its chain position and hash, and its project seq
    (for a task event, the seq of its link)."""

    seq: int
    event_hash: str
    project_seq: int
    task_id: str | None = None


@dataclass(eq=False)
class _Request:
    task_id: str | None
    body: Any
    done: anyio.Event = field(default_factory=anyio.Event)
    result: Appended | None = None
    error: LedgerError | None = None


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
        self._head = head
        self._tasks: dict[str, TaskState] = {}
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
        self._send: MemoryObjectSendStream[_Request] | None = None

    # --- producers ---------------------------------------------------------------------------

    async def append_task_event(self, task_id: str, body: Any) -> Appended:
        """Append a task event; returns once it is committed (durable mode: on disk)."""
        safe_id("task id", task_id)
        if not isinstance(body, TASK_EVENT_TYPES):
            raise InvalidEvent(f"{type(body).__name__} is not a task event")
        return await self._submit(_Request(task_id, body))

    async def append_project_event(self, body: Any) -> Appended:
        if not isinstance(body, PROJECT_EVENT_TYPES) or isinstance(body, TaskEventLinked):
            raise InvalidEvent(f"{type(body).__name__} is not a project event one may append")
        return await self._submit(_Request(None, body))

    async def _submit(self, request: _Request) -> Appended:
        if self._send is None:
            raise LedgerError("ledger is closed")
        try:
            self._send.send_nowait(request)  # the wait below is the checkpoint
        except anyio.WouldBlock:
            await self._send.send(request)
        await request.done.wait()
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
        """A task's state, read from its last line the first time it is asked for (O(1))."""
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
        await self._submit(_Request(None, _FLUSH))

    async def _run(self, receive: MemoryObjectReceiveStream[_Request]) -> None:
        async with receive:
            while True:
                try:
                    if self._pending_bytes:
                        # Idle: bring the chain files up to date for other readers.
                        with anyio.move_on_after(FLUSH_AFTER_S) as idle:
                            first = await receive.receive()
                        if idle.cancelled_caught:
                            self._flush_chains()
                            continue
                    else:
                        first = await receive.receive()
                except anyio.EndOfStream:
                    return
                batch = [first]
                while len(batch) < MAX_BATCH:
                    try:
                        batch.append(receive.receive_nowait())
                    except (anyio.WouldBlock, anyio.EndOfStream):
                        break
                try:
                    # A batch is committed whole or not started: cancelling the writer
                    # mid-batch would leave what a crash leaves.
                    with anyio.CancelScope(shield=True):
                        await self._commit(batch)
                finally:
                    for request in batch:
                        request.done.set()
                if self._journal is not None and self._journal.size >= CHECKPOINT_BYTES:
                    with anyio.CancelScope(shield=True):
                        await self._checkpoint()

    async def _commit(self, batch: list[_Request]) -> None:
        if self._failed is not None:
            for request in batch:
                request.error = self._failed
            return
        flushes = [request for request in batch if request.body is _FLUSH]
        if flushes:
            batch = [request for request in batch if request.body is not _FLUSH]
        chain_id = self.manifest.chain_project_id
        ts = utc_now()
        seq, head = self._head.seq, self._head.hash
        staged: dict[str, TaskState] = {}
        task_lines: dict[str, list[bytes]] = {}
        project_lines: list[bytes] = []
        accepted: list[_Request] = []
        for request in batch:
            try:
                if request.task_id is None:
                    record, line = seal(
                        ProjectRecord(project_id=chain_id, seq=seq + 1, ts=ts,
                                      prev_event_hash=head, body=request.body),
                        _project_decoder,
                    )  # fmt: skip
                    request.result = Appended(record.seq, record.event_hash, record.seq)
                else:
                    task_id = request.task_id
                    state = staged.get(task_id) or self.task_state(task_id)
                    try:
                        after = advance(state, task_id, request.body)
                    except EventRejected:
                        _check_body(request.body)  # an invalid event says so first
                        raise
                    task_record, task_line = seal(
                        TaskRecord(
                            project_id=chain_id, task_id=task_id, seq=state.seq + 1, ts=ts,
                            prev_event_hash=state.head or GENESIS_HASH, project_seq=seq + 1,
                            pointer=after.pointer, attempt_open=after.attempt_open,
                            closed=after.closed, body=request.body,
                        ),
                        _task_decoder,
                    )  # fmt: skip
                    link = TaskEventLinked(
                        task_id, task_record.seq, task_record.event_hash, event_type(request.body)
                    )
                    record, line = seal(
                        ProjectRecord(project_id=chain_id, seq=seq + 1, ts=ts,
                                      prev_event_hash=head, body=link),
                        None,  # built from the checked task record alone
                    )  # fmt: skip
                    staged[task_id] = TaskState(
                        task_record.seq, task_record.event_hash, after.pointer,
                        after.attempt_open, after.closed,
                    )  # fmt: skip
                    task_lines.setdefault(task_id, []).append(task_line)
                    request.result = Appended(
                        task_record.seq, task_record.event_hash, record.seq, task_id
                    )
            except LedgerError as exc:
                request.error = exc
                request.result = None
                continue
            except (TypeError, ValueError, AttributeError) as exc:
                # A body built with wrong field types: refuse it, keep the writer alive.
                request.error = InvalidEvent(f"invalid event: {exc}")
                request.result = None
                continue
            seq, head = record.seq, record.event_hash
            project_lines.append(line)
            accepted.append(request)
        try:
            if project_lines:
                await self._write(task_lines, project_lines)
            if flushes:
                self._flush_chains()
        except OSError as exc:
            self._failed = WriterFailed(f"writing the ledger failed: {exc}; reopen to recover")
            log.error("ledger.write_failed", project_id=self.paths.project_id, error=str(exc))
            for request in accepted + flushes:
                request.error = self._failed
            return
        if project_lines:
            self._tasks.update(staged)
            self._head = Head(seq, head)
        for request in flushes:
            request.result = Appended(seq, head, seq)

    async def _write(self, task_lines: dict[str, list[bytes]], project_lines: list[bytes]) -> None:
        assert self._journal is not None
        lines = [line for group in task_lines.values() for line in group]
        self._journal.append(b"".join([*lines, *project_lines, COMMIT]))
        if self.mode == "durable":
            await anyio.to_thread.run_sync(self._journal.sync)
        # The chain files are written behind the journal, in fewer and larger writes: when
        # enough has gathered, when the writer is idle, before a checkpoint, on `flush`.
        pending = self._pending_tasks
        for task_id, group in task_lines.items():
            pending.setdefault(task_id, []).extend(group)
        self._pending_project.extend(project_lines)
        self._pending_bytes += sum(map(len, lines)) + sum(map(len, project_lines))
        if self._pending_bytes >= FLUSH_BYTES:
            self._flush_chains()

    def _flush_chains(self) -> None:
        # Task files before the project file, as a crash image must show (links after events).
        for task_id, lines in self._pending_tasks.items():
            write_all(self._task_fd(task_id), b"".join(lines))
            self._dirty.add(task_id)
        write_all(self._project_fd, b"".join(self._pending_project))
        self._pending_tasks.clear()
        self._pending_project.clear()
        self._pending_bytes = 0

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
        if self._send is not None:
            self._send.close()
            self._send = None

    def _close_files(self) -> None:
        for fd in self._fds.values():
            os.close(fd)
        self._fds.clear()
        if self._project_fd >= 0:
            os.close(self._project_fd)
            self._project_fd = -1
        if self._journal is not None:
            self._journal.close()


_task_body_decoder = msgspec.json.Decoder(TaskEvent)


def _check_body(body: Any) -> None:
    try:
        _task_body_decoder.decode(canonical(body))
    except msgspec.DecodeError as exc:
        raise InvalidEvent(f"invalid event: {exc}") from None


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
        if create and not paths.manifest.exists():
            _create(paths)
        manifest = read_manifest(paths)
        ledger, found = _recover(paths, manifest, mode)
        async with anyio.create_task_group() as tg:
            send, receive = anyio.create_memory_object_stream[_Request](QUEUE_SIZE)
            ledger._send = send
            tg.start_soon(ledger._run, receive)
            try:
                for event in found:
                    await ledger.append_project_event(event)
                yield ledger
            except Exception as exc:  # raised again below, not wrapped in an ExceptionGroup
                body_error = exc
            finally:
                ledger._close_queue()
        if ledger._failed is None:
            await ledger._checkpoint()
        if body_error is not None:
            raise body_error
    finally:
        if ledger is not None:
            ledger._close_files()
        lock.release()


def _recover(
    paths: ProjectPaths, manifest: ProjectManifest, mode: Mode
) -> tuple[Ledger, list[RecoveredTornTail]]:
    """Read the project chain's tail; after a crash (a non-empty journal) redo the journal
    first, quarantining only what was never acknowledged."""
    found: list[RecoveredTornTail] = []
    chain_id = manifest.chain_project_id
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


__all__ = ["Appended", "Ledger", "LedgerDamaged", "Mode", "init_project", "open_ledger"]
