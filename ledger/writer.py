"""The ledger's one writer: many producers, one task that seals, group commit.

Producers call `append_task_event` / `append_project_event` from any number of tasks. A body is
checked where it is submitted: encoded to its canonical bytes once, and those bytes decoded with
the event's strict type (Structs built in Python skip msgspec's checks, and the writer must never
write a line that verify would refuse). The request then waits in a queue; the writer task takes
up to `MAX_BATCH` queued requests (a batch), checks each event against its task's state and
seals it into a line around the body bytes already checked. A batch's consecutive task events
get one `task_events` line in the project chain that links them all.

The sealed batch goes to the commit process (ledger/committer.py, ledger/commit_process.py),
which journals it (durable mode: on disk before it reports) and appends the lines to the chain
files behind the journal, while the writer seals the next batch. Once the commit process
reports a batch done, the completer task publishes the new state and wakes the batch's
producers. Buffered mode skips every fsync: a crash of the process (SIGKILL) still loses
nothing acknowledged, a crash of the machine may.

The event loop's time per event is the ledger's throughput (docs/performance.md), so the hot
path is written flat: templates instead of records (ledger/chain.py), one wake-up per producer,
no per-event objects beyond the request and the task's new state.
"""

from __future__ import annotations

import asyncio
import contextlib
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
    FORMAT_VERSION,
    GENESIS_HASH,
    PROJECT_EVENT_TYPES,
    TASK_EVENT_TYPES,
    ProjectCreated,
    ProjectRecord,
    RecoveredTornTail,
    TaskEventsLinked,
)

from .canonical import canonical
from .chain import link_json, seal, seal_links_line, seal_project_line, seal_task_line
from .committer import Committer, Job
from .errors import (
    InvalidEvent,
    InvalidLedgerId,
    LedgerDamaged,
    LedgerError,
    LedgerExists,
    LedgerLocked,
    WriterFailed,
)
from .journal import empty_journals, pending
from .lock import WriterLock
from .recovery import project_head, recover, task_tail
from .render import write_task_log
from .state import TaskState, advance
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
# A batch holds at most this many requests. With more producers waiting, several batches are
# in flight: the committer fsyncs one while the writer seals the next.
MAX_BATCH = 32
QUEUE_SIZE = 8192

log = structlog.get_logger("ledger")
_project_decoder = msgspec.json.Decoder(ProjectRecord)


def _decoders(types: tuple[type[Any], ...]) -> dict[type[Any], msgspec.json.Decoder[Any]]:
    return {t: msgspec.json.Decoder(t) for t in types}


_TASK_BODIES = _decoders(TASK_EVENT_TYPES)
# The writer's own (links) and init's (the chain's first event) are not for producers.
_PROJECT_BODIES = _decoders(
    tuple(t for t in PROJECT_EVENT_TYPES if t not in (TaskEventsLinked, ProjectCreated))
)
_TASK_TAGS: dict[type[Any], bytes] = {t: t.__struct_config__.tag.encode() for t in TASK_EVENT_TYPES}


class Appended(msgspec.Struct, frozen=True, gc=False):
    """Where an acknowledged event landed: its chain position and hash, and its project seq
    (for a task event, the seq of the `task_events` line that links it)."""

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
    """Requests taken together, and what their producers wait on: one future each on
    asyncio (made straight from the loop), an `anyio.Event` elsewhere."""

    __slots__ = ("event", "head", "number", "requests", "tasks", "waiters")

    def __init__(self, requests: list[_Request]) -> None:
        self.requests = requests
        self.waiters: list[asyncio.Future[None]] = []
        self.event: anyio.Event | None = None
        self.tasks: dict[str, TaskState] = {}
        self.head: Head | None = None
        self.number = 0

    def wake(self) -> None:
        for waiter in self.waiters:
            if not waiter.done():  # a producer cancelled meanwhile
                waiter.set_result(None)
        if self.event is not None:
            self.event.set()


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


def _running_asyncio_loop() -> asyncio.AbstractEventLoop | None:
    try:
        return asyncio.get_running_loop()
    except RuntimeError:
        return None


class Ledger:
    """An open project ledger with its writer running. Get one from `open_ledger`."""

    def __init__(
        self, paths: ProjectPaths, manifest: ProjectManifest, head: Head, mode: Mode
    ) -> None:
        self.paths = paths
        self.manifest = manifest
        self.mode: Mode = mode
        self._chain_id = manifest.chain_project_id.encode()
        self._head = head  # as of the last complete batch
        self._tasks: dict[str, TaskState] = {}  # likewise
        self._sealed_head = head  # as of the last batch sealed (ahead while it commits)
        self._sealed_tasks: dict[str, TaskState] = {}
        self._open_at = head.seq
        self._committer: Committer | None = None
        self._failed: LedgerError | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        # Producers -> writer.
        self._queued: deque[_Batch] = deque()  # the last one takes requests until it is full
        self._wake_writer = anyio.Event()
        self._writer_waits = False
        # Made only when someone is about to wait on it (most batches have no one waiting).
        self._queue_taken: anyio.Event | None = None
        self._closed = True  # until the writer runs
        # Writer -> committer -> completer.
        self._jobs = 0  # jobs submitted; a batch's number is its job's
        self._waiting: deque[_Batch] = deque()
        self._last_job = -1  # the close's checkpoint job, once submitted
        self._task_logs: set[str] = set()  # task_log.md to render on close

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
        loop = self._loop
        if loop is not None:
            waiter: asyncio.Future[None] = loop.create_future()
            batch.waiters.append(waiter)
            await waiter
        else:
            if batch.event is None:
                batch.event = anyio.Event()
            await batch.event.wait()
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
        """Return once every chain file holds everything committed so far (the committer
        writes them behind the journal); for readers of the files in this process, such as
        export."""
        await self._submit(_Request(None, None, b""))

    async def _run(self, tg: anyio.abc.TaskGroup) -> None:
        """The writer task: takes batches, seals them, hands them to the committer; on close,
        the final checkpoint."""
        while True:
            if not self._queued:
                if self._closed:
                    break
                self._wake_writer = anyio.Event()
                self._writer_waits = True
                await self._wake_writer.wait()
                continue
            batch = self._queued.popleft()
            _set(self._queue_taken)
            self._queue_taken = None
            try:
                job = self._seal(batch)
            except Exception as exc:  # a bug: its producers must not wait forever
                self._complete(batch, LedgerError(f"the ledger's writer failed: {exc!r}"))
                raise
            await self._commit(batch, job, tg)
            if self._queued:
                await anyio.lowlevel.checkpoint()  # let the completer and producers run
        committer = self._committer
        assert committer is not None
        if committer.started:
            self._last_job = self._jobs + 1
            await self._submit_job(Job(self._last_job, checkpoint=self._failed is None))

    def _seal(self, batch: _Batch) -> Job | None:
        """Check each request against its task's state and seal it into lines; the job that
        commits them (None after a failure)."""
        if self._failed is not None:
            for request in batch.requests:
                request.error = self._failed
            return None
        chain_id = self._chain_id
        ts = utc_now().encode()
        seq, head = self._sealed_head.seq, self._sealed_head.hash
        staged = batch.tasks
        sealed_tasks = self._sealed_tasks
        task_lines: dict[str, list[bytes]] = {}
        project_lines: list[bytes] = []
        links: list[bytes] = []  # of the `task_events` line at seq + 1, still open
        flush = False
        for request in batch.requests:
            task_id = request.task_id
            try:
                if task_id is None:
                    if request.body is None:
                        flush = True
                        continue
                    if links:
                        seq += 1
                        head, line = seal_links_line(links, head.encode(), chain_id, seq, ts)
                        project_lines.append(line)
                        links = []
                    head, line = seal_project_line(
                        request.data, head.encode(), chain_id, seq + 1, ts
                    )
                    seq += 1
                    project_lines.append(line)
                    request.result = Appended(seq, head, seq)
                    continue
                state = staged.get(task_id) or sealed_tasks.get(task_id)
                if state is None:
                    state = self.task_state(task_id)
                body = request.body
                after = advance(state, task_id, body)
                task_seq = state.seq + 1
                tid = task_id.encode()
                task_hash, task_line = seal_task_line(
                    request.data, after.attempt_open, after.closed, after.pointer,
                    (state.head or GENESIS_HASH).encode(), chain_id, seq + 1, task_seq, tid, ts,
                )  # fmt: skip
                links.append(link_json(tid, task_seq, task_hash, _TASK_TAGS[type(body)]))
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
            except OSError as exc:  # reading the task's chain file for its state
                request.error = LedgerError(
                    f"{exc.filename or self.paths.dir}: cannot read the "
                    f"task's chain: {exc.strerror or exc}"
                )
            except (TypeError, ValueError, AttributeError) as exc:
                # Not expected after the body's check; refuse the event, keep the writer alive.
                request.error = InvalidEvent(f"invalid event: {exc}")
        if links:
            seq += 1
            head, line = seal_links_line(links, head.encode(), chain_id, seq, ts)
            project_lines.append(line)
        batch.head = self._sealed_head = Head(seq, head)
        sealed_tasks.update(staged)
        return Job(0, task_lines, project_lines, flush=flush)

    async def _commit(self, batch: _Batch, job: Job | None, tg: anyio.abc.TaskGroup) -> None:
        """Hand the batch to the committer, or complete it now when it has nothing to write
        (every request refused, or the ledger failed)."""
        if job is None or not (job.project_lines or job.flush):
            # Every request refused: nothing of it to publish, and the sealed head may be ahead
            # of what is committed (batches still in flight).
            batch.head = None
            self._complete(batch, None)
            return
        job.number = batch.number = self._jobs + 1
        self._waiting.append(batch)
        committer = self._committer
        assert committer is not None
        if not committer.started:
            tg.start_soon(self._complete_committed)
        await self._submit_job(job)
        if committer.ended:  # the completer is gone: fail the batch here
            self._complete_done()

    async def _submit_job(self, job: Job) -> None:
        assert self._committer is not None
        self._jobs = job.number
        await self._committer.submit(job)

    async def _complete_committed(self) -> None:
        """The completer task: completes batches as the committer reports them done, until
        the close's checkpoint is (or the commit process is gone)."""
        committer = self._committer
        assert committer is not None
        while True:
            if not committer.ended:
                await anyio.wait_readable(committer.report_fd)
                committer.read_reports()
            done = self._complete_done()
            if committer.ended or (self._last_job > 0 and done >= self._last_job):
                return

    def _complete_done(self) -> int:
        """Complete every batch the committer has finished (and, once it has ended, every
        other one, with its error); returns how far it got."""
        assert self._committer is not None
        done, failed_at, journaled, error = self._committer.progress()
        if error is not None and self._failed is None and failed_at != self._last_job:
            self._failed = error
            log.error("ledger.write_failed", project_id=self.paths.project_id, error=str(error))
        ended = self._committer.ended
        waiting = self._waiting
        while waiting and (waiting[0].number <= done or (ended and error is not None)):
            batch = waiting.popleft()
            if error is None or batch.number < failed_at:
                self._complete(batch, None)
            else:
                self._complete(batch, error, committed=batch.number <= journaled)
        return done

    def _complete(
        self, batch: _Batch, error: LedgerError | None, *, committed: bool = False
    ) -> None:
        """The batch is durable (or failed): publish the new state and wake its producers.
        With `error` and `committed`, only its flush failed: its events are in the journal."""
        if error is not None:
            for request in batch.requests:
                if not committed or request.body is None:
                    request.result = None
                    request.error = request.error or error
        if (error is None or committed) and batch.head is not None:
            self._tasks.update(batch.tasks)
            self._head = batch.head
            # A task is closed at most once: closed in its batch means closed by this batch.
            self._task_logs.update(t for t, state in batch.tasks.items() if state.closed)
        if error is None:
            for request in batch.requests:
                if request.body is None and request.error is None:  # a flush
                    request.result = Appended(self._head.seq, self._head.hash, self._head.seq)
        batch.wake()

    def _close_queue(self) -> None:
        """No more requests: the writer commits what is queued, then ends."""
        self._closed = True
        self._writer_waits = False
        self._wake_writer.set()
        _set(self._queue_taken)

    async def _shut_down(self) -> None:
        """Stop the committer once it has finished what it was given, and complete what it
        finished (after a cancellation the completer may not have); refuse what never got to
        it."""
        if self._committer is not None:
            await self._committer.stop()
            self._complete_done()
        closed = LedgerError("ledger is closed")
        for batch in [*self._waiting, *self._queued]:
            self._complete(batch, closed)
        self._waiting.clear()
        self._queued.clear()

    def render_log_on_close(self, task_id: str) -> None:
        """Have `task_log.md` of a task left open rendered when this ledger closes, as a
        closed task's is: for a task someone will want to read now (a campaign's failed one)."""
        safe_id("task id", task_id)
        self._task_logs.add(task_id)

    async def _write_task_logs(self) -> None:
        """Render `task_log.md` of every task this writer closed (or was asked to render),
        once the final checkpoint has brought the chain files up to date: a closed task once in
        its life, when it is done (`runner ledger render` renders any task at any time). Not
        after a failure (the files may lack lines until the next writer's recovery), and not
        when the body raised or was cancelled (closing must not wait for it). The logs are
        derived: failing to write one is a warning."""
        tasks, self._task_logs = sorted(self._task_logs), set()
        if not tasks or self._committer is None:
            return
        if self._committer.progress().error is not None:
            return

        def write() -> None:
            for task_id in tasks:
                try:
                    write_task_log(self.paths, task_id)
                except Exception as exc:  # a full disk; a chain changed meanwhile
                    log.warning("ledger.task_log_failed", project_id=self.paths.project_id,
                                task_id=task_id, error=str(exc))  # fmt: skip

        await anyio.to_thread.run_sync(write, abandon_on_cancel=True)


def _set(event: anyio.Event | None) -> None:
    if event is not None:
        event.set()


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
    manifest = ProjectManifest(project_id, project_id, now, FORMAT_VERSION)
    write_file_atomic(paths.manifest, _pretty(manifest))
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
    try:
        with _refused(paths):
            if create and not paths.manifest.exists():
                _create(paths)
            manifest = read_manifest(paths)
            ledger, found = _recover(paths, manifest, mode, lock)
        async with _running(ledger):
            for event in found:
                await ledger.append_project_event(event)
            yield ledger
    finally:
        lock.release()


@contextlib.asynccontextmanager
async def _running(ledger: Ledger) -> AsyncIterator[None]:
    """Run the writer (and, from the first append, the completer and the commit process)
    around the body; on the way out, commit what is queued and checkpoint."""
    assert ledger._committer is not None
    body_error: Exception | None = None
    ledger._loop = _running_asyncio_loop()
    ledger._closed = False
    try:
        async with anyio.create_task_group() as tg:
            tg.start_soon(ledger._run, tg)
            try:
                yield
            except Exception as exc:  # raised again below, not wrapped in an ExceptionGroup
                body_error = exc
            finally:
                ledger._close_queue()
    finally:
        with anyio.CancelScope(shield=True):
            await ledger._shut_down()
    _, failed_at, _, error = ledger._committer.progress()
    if error is not None and failed_at == ledger._last_job:
        # Every acknowledged event is in the journal: the next writer redoes it. The appends
        # succeeded; only tidying up failed (a full disk, say).
        log.warning("ledger.checkpoint_failed", project_id=ledger.paths.project_id,
                    error=str(error))  # fmt: skip
    if body_error is not None:
        raise body_error
    await ledger._write_task_logs()


@contextlib.contextmanager
def _refused(paths: ProjectPaths) -> Iterator[None]:
    """Opening (creating, recovering) the ledger hit an I/O error: a `WriterFailed` naming the
    file. Recovery is safe to repeat: it removes nothing before its copy is on disk."""
    try:
        yield
    except OSError as exc:
        raise WriterFailed.of(exc, paths.dir) from None


def _recover(
    paths: ProjectPaths, manifest: ProjectManifest, mode: Mode, lock: WriterLock
) -> tuple[Ledger, list[RecoveredTornTail]]:
    """Read the project chain's tail; after a crash (a journal with lines) redo the journals
    first, quarantining only what was never acknowledged."""
    found: list[RecoveredTornTail] = []
    chain_id = manifest.chain_project_id
    if not is_safe_id(chain_id):
        # The writer places it in every line unescaped: it must be what a line may hold.
        raise InvalidLedgerId(f"{paths.manifest}: chain_project_id {chain_id!r} is not a safe id")
    tasks: dict[str, TaskState] = {}
    if pending(paths):
        head, tasks = recover(paths, chain_id, found)
        empty_journals(paths)
        log.warning("ledger.recovered", project_id=paths.project_id, quarantined=len(found))
    else:
        head = project_head(paths, chain_id)
    for event in found:
        log.warning("ledger.quarantined", project_id=paths.project_id, file=event.file,
                    quarantine_file=event.quarantine_file, bytes=event.bytes)  # fmt: skip
    ledger = Ledger(paths, manifest, head, mode)
    ledger._tasks.update(tasks)
    ledger._committer = Committer(paths, lock.fd, durable=mode == "durable")
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
