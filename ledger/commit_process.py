"""The ledger's commit process: every file write of an open ledger, outside the interpreter
whose event loop seals the lines.

Started by `ledger.committer.Committer` as ``python -I -S commit_process.py CONFIG`` (standard
library only, so that it starts in milliseconds and imports nothing of the caller's). It reads
jobs from a pipe and works in two threads:

- the *journal thread* takes every complete job waiting in the pipe (a group), appends their
  lines to the journal in one ``writev`` (durable mode opens it ``O_DSYNC``: the call returns
  once the lines are on disk, which is the commit), reports the group done, and hands its
  lines to the chains thread. When the journal has passed the checkpoint size, it renames it
  to the old journal and goes on in a new one (fsyncing the directory first, so that the new
  journal is found after a crash before it acknowledges anything).
- the *chains thread* appends committed lines to the chain files (task files before the
  project file) once 1 MiB has gathered, on a flush, or after 10 ms without new lines; for a
  rotated journal it writes every line the old journal holds, fsyncs the chain files and
  deletes the old journal; for the close's checkpoint it does the same and empties the
  journal.

A job with the flush or checkpoint flag is reported done only once the chains thread has done
it, and ends its group. Reports go back on a second pipe. An I/O error is reported once, with
the file, the reason and the last job whose lines are in the journal: the journal write of a
group failed (that group and every later job failed, nothing after it is written), or the
chains thread failed (the next group is not journaled, and fails; a flush or checkpoint whose
own work failed fails, though its batch's lines are in the journal).

The process holds the writer lock (it inherits the descriptor) for as long as it runs, so no
other writer can start while it still has lines to write; it ends when its input pipe closes
(its writer closed the ledger, or died) after finishing the complete jobs it has, and at
once when its parent dies (``PR_SET_PDEATHSIG``); it ignores SIGINT, SIGTERM and SIGHUP, which
a terminal or a service manager sends the whole process group: they are for the writer.

Why a process and not a thread: the journal's commit latency is the ledger's throughput with
many producers (each waits for its batch), and a thread would need the GIL back from a busy
event loop after every write (measured: a third of a millisecond per commit). Here the GIL is
its own.

Wire format, all integers little-endian. A job: ``<Q number><B flags><I tasks><I project>``,
then per task ``<H id bytes><I data bytes>`` followed by the id and the data, then the
project lines (`project` bytes). Flags: 1 flush, 2 checkpoint. The journal gets, per job with
lines, the task data in order, the project lines and the commit line. A report:
``<B kind><Q done><Q failed_at>``; kind ``F`` is followed by ``<I n>`` and n bytes of JSON
``{"path": ..., "reason": ..., "journaled": <the last job in the journal>}``.
"""

from __future__ import annotations

import contextlib
import json
import os
import struct
import sys
import threading
from collections import deque
from collections.abc import Iterator
from pathlib import Path
from typing import Any

JOB = struct.Struct("<QBII")
TASK = struct.Struct("<HI")
REPORT = struct.Struct("<BQQ")
LENGTH = struct.Struct("<I")
FLUSH, CHECKPOINT = 1, 2
DONE, FAILED = ord("D"), ord("F")
COMMIT = b'{"commit":true}\n'
FLUSH_BYTES = 1024 * 1024
FLUSH_AFTER_S = 0.01
OPEN_FILES = 256
READ_BYTES = 1 << 20
PR_SET_PDEATHSIG = 1


class Job:
    __slots__ = ("flags", "number", "project", "tasks")

    def __init__(self, number: int, flags: int, tasks: list[tuple[str, bytes]], project: bytes):
        self.number = number
        self.flags = flags
        self.tasks = tasks
        self.project = project


class Failure(Exception):
    def __init__(self, path: str, reason: str) -> None:
        super().__init__(path, reason)
        self.path = path
        self.reason = reason


@contextlib.contextmanager
def naming(path: Path | str) -> Iterator[None]:
    """An `OSError` inside becomes a `Failure` naming `path` (or the file the error names)."""
    try:
        yield
    except OSError as exc:
        raise Failure(str(exc.filename or path), exc.strerror or str(exc)) from None


def write_all(fd: int, parts: list[bytes]) -> None:
    """`writev` of `parts`, whole (a regular file takes it in one call; this loops if not)."""
    total = sum(map(len, parts))
    written = os.writev(fd, parts) if len(parts) <= 1024 else os.write(fd, b"".join(parts))
    if written < total:
        rest = memoryview(b"".join(parts))[written:]
        while rest:
            rest = rest[os.write(fd, rest) :]


class Handed:
    """What the journal thread hands the chains thread: committed lines, and requests."""

    __slots__ = ("barrier", "checkpoint", "old_journal", "project", "tasks")

    def __init__(self) -> None:
        self.tasks: list[tuple[str, bytes]] = []
        self.project: list[bytes] = []
        self.barrier: threading.Event | None = None
        self.checkpoint = False
        self.old_journal: Path | None = None


class CommitProcess:
    def __init__(self, config: dict[str, Any]) -> None:
        self.source: int = config["in_fd"]
        self.sink: int = config["out_fd"]
        self.durable: bool = config["durable"]
        self.dir = Path(config["dir"])
        self.journal_path = Path(config["journal"])
        self.old_journal_path = Path(config["old_journal"])
        self.events_path = Path(config["events"])
        self.tasks_dir = Path(config["tasks"])
        self.checkpoint_bytes: int = config["checkpoint_bytes"]
        created = not self.journal_path.exists()
        self.journal_fd = self._open_journal()
        self.journal_size = os.fstat(self.journal_fd).st_size
        if created:  # its name must be found after a crash before it acknowledges anything
            with naming(self.dir):
                fsync_dir(self.dir)
        with naming(self.events_path):
            self.project_fd = os.open(self.events_path, os.O_WRONLY | os.O_APPEND)
        self.buffer = bytearray()
        self.parsed: deque[Job] = deque()
        self.lock = threading.Lock()
        self.has_lines = threading.Condition(self.lock)
        self.handed: deque[Handed] = deque()
        self.handed_bytes = 0
        self.given = 0  # hand-overs so far, to tell an idle pause from a busy one
        self.urgent = False
        self.chains_asleep = False  # waiting with nothing to write, for as long as it takes
        self.input_done = False
        self.rotated = False
        self.failure: Failure | None = None
        # The chains thread's own.
        self.fds: dict[str, int] = {}
        self.dirty: set[str] = set()
        self.new_dirs: set[Path] = set()
        self.pending: dict[str, list[bytes]] = {}
        self.pending_project: list[bytes] = []
        self.pending_bytes = 0

    def _open_journal(self) -> int:
        flags = os.O_WRONLY | os.O_CREAT | os.O_APPEND | (os.O_DSYNC if self.durable else 0)
        with naming(self.journal_path):
            return os.open(self.journal_path, flags, 0o644)

    def fail(self, exc: BaseException) -> None:
        if not isinstance(exc, Failure):  # a bug: say so rather than leave the writer waiting
            exc = Failure(str(self.dir), f"the commit process failed: {exc!r}")
        with self.lock:
            if self.failure is None:
                self.failure = exc

    # --- the journal thread ---------------------------------------------------------------------

    def run(self) -> None:
        chains = threading.Thread(target=self.chains_main, name="chains", daemon=True)
        chains.start()
        journaled = 0  # the last job whose lines are in the journal
        reported_failure = False
        while True:
            jobs = self.read_jobs()
            if not jobs:
                break
            ok = self.failure is None
            if ok:
                try:
                    self.append(jobs)
                    journaled = jobs[-1].number
                except BaseException as exc:
                    self.fail(exc)
                    ok = False
            if ok:
                handed = self.hand_over(jobs)
                if handed.barrier is not None:  # the group's last job
                    handed.barrier.wait()
                    ok = self.failure is None
            # A failure of the chains thread while this group was journaled fails only the
            # next group (not journaled), or this one's flush or checkpoint (its last job).
            failure = self.failure
            if ok or reported_failure or failure is None:
                self.report(REPORT.pack(DONE, jobs[-1].number, 0))
            else:
                reported_failure = True
                detail = json.dumps(
                    {"path": failure.path, "reason": failure.reason, "journaled": journaled}
                ).encode()
                failed_at = jobs[-1].number if journaled == jobs[-1].number else jobs[0].number
                self.report(REPORT.pack(FAILED, jobs[-1].number, failed_at)
                            + LENGTH.pack(len(detail)) + detail)  # fmt: skip
            if ok and not self.rotated and self.journal_size >= self.checkpoint_bytes:
                try:
                    self.rotate()
                except BaseException as exc:
                    self.fail(exc)
        with self.lock:
            self.input_done = True
            self.has_lines.notify()
        chains.join()

    def report(self, data: bytes) -> None:
        with contextlib.suppress(BrokenPipeError):  # the writer is gone: nobody to tell
            view = memoryview(data)
            while view:
                view = view[os.write(self.sink, view) :]

    def read_jobs(self) -> list[Job]:
        """The complete jobs waiting in the pipe, up to and including the first flush or
        checkpoint (so that a failed one is its group's last); at least one, none at the
        end."""
        while not self.parsed:
            chunk = os.read(self.source, READ_BYTES)
            if not chunk:
                return []  # a job cut short by the writer's death was never acknowledged
            self.buffer += chunk
            self.parsed.extend(self.parse())
        jobs = []
        while self.parsed:
            job = self.parsed.popleft()
            jobs.append(job)
            if job.flags:
                break
        return jobs

    def parse(self) -> list[Job]:
        jobs = []
        buf = self.buffer
        at = 0
        while len(buf) - at >= JOB.size:
            number, flags, tasks, project = JOB.unpack_from(buf, at)
            pos = at + JOB.size
            entries = []
            for _ in range(tasks):
                if len(buf) - pos < TASK.size:
                    break
                id_len, data_len = TASK.unpack_from(buf, pos)
                pos += TASK.size
                if len(buf) - pos < id_len + data_len:
                    break
                task_id = bytes(buf[pos : pos + id_len]).decode()
                pos += id_len
                entries.append((task_id, bytes(buf[pos : pos + data_len])))
                pos += data_len
            if len(entries) < tasks or len(buf) - pos < project:
                break
            jobs.append(Job(number, flags, entries, bytes(buf[pos : pos + project])))
            at = pos + project
        del buf[:at]
        return jobs

    def append(self, jobs: list[Job]) -> None:
        parts: list[bytes] = []
        for job in jobs:
            if job.project:
                parts.extend(data for _, data in job.tasks)
                parts.append(job.project)
                parts.append(COMMIT)
        if parts:
            with naming(self.journal_path):
                write_all(self.journal_fd, parts)
            self.journal_size += sum(map(len, parts))

    def hand_over(self, jobs: list[Job]) -> Handed:
        handed = Handed()
        size = 0
        for job in jobs:
            handed.tasks.extend(job.tasks)
            size += sum(len(data) for _, data in job.tasks)
            if job.project:
                handed.project.append(job.project)
                size += len(job.project)
            if job.flags:
                handed.barrier = threading.Event()
                handed.checkpoint = handed.checkpoint or bool(job.flags & CHECKPOINT)
        self._give(handed, size, urgent=handed.barrier is not None)
        return handed

    def _give(self, handed: Handed, size: int, urgent: bool) -> None:
        """Queue `handed` for the chains thread, waking it only when it has work to do now
        (a wake-up per commit would cost a context switch per commit)."""
        with self.lock:
            self.handed.append(handed)
            self.handed_bytes += size
            self.given += 1
            self.urgent = self.urgent or urgent
            if urgent or self.handed_bytes >= FLUSH_BYTES or self.chains_asleep:
                self.has_lines.notify()

    def rotate(self) -> None:
        with naming(self.journal_path):
            self.journal_path.replace(self.old_journal_path)
            os.close(self.journal_fd)
            self.journal_fd = -1
        self.journal_fd = self._open_journal()
        self.journal_size = 0
        with naming(self.dir):
            fsync_dir(self.dir)
        self.rotated = True
        handed = Handed()
        handed.old_journal = self.old_journal_path
        self._give(handed, 0, urgent=True)

    # --- the chains thread ----------------------------------------------------------------------

    def chains_main(self) -> None:
        while True:
            with self.lock:
                idle = False
                while not (self.input_done or self.urgent or self.handed_bytes >= FLUSH_BYTES):
                    if not self.handed and not self.pending_bytes:
                        self.chains_asleep = True
                        self.has_lines.wait()
                        self.chains_asleep = False
                        continue
                    # Lines are waiting: after 10 ms without a new hand-over, write them, to
                    # bring the chain files up to date for readers in the writer's process.
                    given = self.given
                    self.has_lines.wait(FLUSH_AFTER_S)
                    if self.given == given:
                        idle = True
                        break
                handed = list(self.handed)
                self.handed.clear()
                self.handed_bytes = 0
                self.urgent = False
                done = self.input_done and not handed
                failed = self.failure is not None
            if not failed:
                try:
                    for item in handed:
                        self.take(item)
                    if idle or done or self.pending_bytes >= FLUSH_BYTES:
                        self.flush_chains()
                except BaseException as exc:
                    self.fail(exc)
            for item in handed:
                if item.barrier is not None:
                    item.barrier.set()
            if done:
                return

    def take(self, handed: Handed) -> None:
        pending = self.pending
        for task_id, data in handed.tasks:
            lines = pending.get(task_id)
            if lines is None:
                pending[task_id] = [data]
            else:
                lines.append(data)
            self.pending_bytes += len(data)
        self.pending_project.extend(handed.project)
        self.pending_bytes += sum(map(len, handed.project))
        if handed.old_journal is not None:
            # Every line the old journal holds was handed over before this request.
            self.make_durable()
            with naming(handed.old_journal):
                handed.old_journal.unlink()
            self.rotated = False
        elif handed.checkpoint:
            self.make_durable()
            with naming(self.journal_path):  # the journal thread waits at this barrier
                os.ftruncate(self.journal_fd, 0)
                if self.durable:
                    os.fsync(self.journal_fd)
            self.journal_size = 0
        elif handed.barrier is not None:
            self.flush_chains()

    def flush_chains(self) -> None:
        # Task files before the project file, as a crash image must show (links after events).
        for task_id, lines in self.pending.items():
            path = self.task_events(task_id)
            with naming(path):
                write_all(self.task_fd(task_id, path), lines)
            self.dirty.add(task_id)
        if self.pending_project:
            with naming(self.events_path):
                write_all(self.project_fd, self.pending_project)
        self.pending.clear()
        self.pending_project.clear()
        self.pending_bytes = 0

    def make_durable(self) -> None:
        """Write the pending lines and fsync every chain file written since the last time."""
        self.flush_chains()
        if self.durable:
            for task_id in self.dirty:
                fd = self.fds.get(task_id)
                if fd is not None:
                    with naming(self.task_events(task_id)):
                        os.fsync(fd)
            with naming(self.events_path):
                os.fsync(self.project_fd)
            for directory in self.new_dirs:
                with naming(directory):
                    fsync_dir(directory)
            if self.new_dirs:
                with naming(self.tasks_dir):
                    fsync_dir(self.tasks_dir)
        self.dirty.clear()
        self.new_dirs.clear()

    def task_events(self, task_id: str) -> Path:
        # The layout of `ledger.store.ProjectPaths.task_events`.
        return self.tasks_dir / task_id / "events.jsonl"

    def task_fd(self, task_id: str, path: Path) -> int:
        fd = self.fds.pop(task_id, None)
        if fd is None:
            if len(self.fds) >= OPEN_FILES:
                evicted, old = next(iter(self.fds.items()))
                del self.fds[evicted]
                if evicted in self.dirty and self.durable:
                    with naming(self.task_events(evicted)):
                        os.fsync(old)  # its lines stay durable once the journal is emptied
                self.dirty.discard(evicted)
                os.close(old)
            if not path.parent.exists():
                (path.parent / "artifacts").mkdir(parents=True)
                self.new_dirs.add(path.parent)
            fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
        self.fds[task_id] = fd  # most recently used last
        return fd


def fsync_dir(directory: Path) -> None:
    """Make a directory's entries durable (ledger.store re-exports this one)."""
    fd = os.open(directory, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def die_with_parent(parent: int) -> None:
    """SIGKILL this process when its parent dies (Linux): a dead writer's lock is free at once."""
    if not sys.platform.startswith("linux"):
        return
    import ctypes
    import signal

    with contextlib.suppress(OSError, AttributeError):
        ctypes.CDLL(None, use_errno=True).prctl(PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0)
    if os.getppid() != parent:  # it died before the call
        os._exit(1)


def main() -> None:
    import signal

    # Signals to the whole process group (Ctrl-C, a service manager's SIGTERM) are for the
    # writer, which may still record what it was doing when it stops (`runner campaign` records
    # the interrupted attempts); this process ends when the writer closes the pipe or dies.
    for sig in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP):
        signal.signal(sig, signal.SIG_IGN)
    config = json.loads(sys.argv[1])
    die_with_parent(config["parent"])
    try:
        process = CommitProcess(config)
    except Failure as exc:
        detail = json.dumps({"path": exc.path, "reason": exc.reason, "journaled": 0}).encode()
        os.write(config["out_fd"], REPORT.pack(FAILED, 0, 1) + LENGTH.pack(len(detail)) + detail)
        return
    process.run()


if __name__ == "__main__":
    main()
