"""The writer's side of the commit process (ledger/commit_process.py, which has the why).

The writer task seals batches on the event loop and submits each as a `Job`: its lines for
the journal and the chain files, and whether it is a flush or the close's checkpoint. The
`Committer` frames jobs onto a pipe to the commit process (started with the first job, so a
ledger opened only to read its state starts none), and reads back how far the process got
(`progress`) whenever `report_fd` is readable.

Nothing here waits for the disk: a submit blocks only while the pipe is full (up to 1 MiB of
jobs ahead of the disk), and then on the event loop (`anyio.wait_writable`).
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import subprocess
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import NamedTuple

import anyio

from .commit_process import CHECKPOINT, FAILED, FLUSH, JOB, LENGTH, REPORT, TASK
from .errors import LedgerError, WriterFailed
from .journal import CHECKPOINT_BYTES
from .store import ProjectPaths

SCRIPT = Path(__file__).with_name("commit_process.py")
PIPE_BYTES = 1024 * 1024
_F_SETPIPE_SZ = 1031  # Linux; elsewhere the pipe keeps its default size


@dataclass(slots=True)
class Job:
    """One batch (or a flush or checkpoint request) in the order the writer sealed it.

    `task_lines` and `project_lines` are the batch's lines; the journal gets them in that
    order, then the commit line.
    """

    number: int
    task_lines: dict[str, list[bytes]] = field(default_factory=dict)
    project_lines: list[bytes] = field(default_factory=list)
    flush: bool = False
    checkpoint: bool = False

    def frame(self) -> list[bytes]:
        project = b"".join(self.project_lines)
        flags = (FLUSH if self.flush else 0) | (CHECKPOINT if self.checkpoint else 0)
        parts = [JOB.pack(self.number, flags, len(self.task_lines), len(project))]
        for task_id, lines in self.task_lines.items():
            name = task_id.encode()
            data = lines[0] if len(lines) == 1 else b"".join(lines)
            parts += (TASK.pack(len(name), len(data)), name, data)
        parts.append(project)
        return parts


class Progress(NamedTuple):
    """How far the commit process got: jobs up to `done` are finished. If `error`, every job
    from `failed_at` on failed, but the lines of jobs up to `journaled` are in the journal
    (that is at most `failed_at`: a flush or checkpoint whose own work failed)."""

    done: int
    failed_at: int
    journaled: int
    error: LedgerError | None


class Committer:
    """Submits jobs to the commit process and tracks what it reports."""

    def __init__(self, paths: ProjectPaths, lock_fd: int, durable: bool) -> None:
        self.paths = paths
        self.durable = durable
        self._lock_fd = lock_fd
        self._process: subprocess.Popen[bytes] | None = None
        self._jobs = -1  # the pipe's write end
        self._reports = -1  # the report pipe's read end
        self._unread = bytearray()
        self.submitted = 0
        self._done = 0
        self._failed_at = 0
        self._journaled = 0
        self._error: LedgerError | None = None
        self._ended = False
        self._stopping = False

    @property
    def started(self) -> bool:
        """A job has been submitted (the process was started, or failed to start)."""
        return self.submitted > 0

    @property
    def ended(self) -> bool:
        """The process has closed its report pipe (it ended, or died)."""
        return self._ended

    @property
    def report_fd(self) -> int:
        """Readable whenever `read_reports` may have news."""
        return self._reports

    def _start(self) -> None:
        jobs_read, self._jobs = os.pipe()
        self._reports, reports_write = os.pipe()
        with contextlib.suppress(OSError):
            fcntl.fcntl(self._jobs, _F_SETPIPE_SZ, PIPE_BYTES)
        paths = self.paths
        config = {
            "parent": os.getpid(),
            "in_fd": jobs_read,
            "out_fd": reports_write,
            "durable": self.durable,
            "dir": str(paths.dir),
            "journal": str(paths.journal),
            "old_journal": str(paths.old_journal),
            "events": str(paths.events),
            "tasks": str(paths.tasks),
            "checkpoint_bytes": CHECKPOINT_BYTES,
        }
        try:
            # It inherits the writer lock's descriptor: the lock stays held while it runs.
            self._process = subprocess.Popen(
                [sys.executable, "-I", "-S", str(SCRIPT), json.dumps(config)],
                pass_fds=(jobs_read, reports_write, self._lock_fd),
                stdin=subprocess.DEVNULL,
                stdout=subprocess.DEVNULL,
            )
        except OSError:
            os.close(self._jobs)
            os.close(self._reports)
            raise
        finally:
            os.close(jobs_read)
            os.close(reports_write)
        os.set_blocking(self._jobs, False)
        os.set_blocking(self._reports, False)

    async def submit(self, job: Job) -> None:
        """Send `job` whole; shielded, since a job cut short would garble every later one."""
        self.submitted = job.number
        if self._ended:
            return
        if self._process is None:
            try:
                self._start()
            except OSError as exc:
                self._ended = True
                self._failed_at = job.number
                self._journaled = job.number - 1
                self._error = WriterFailed.of(exc, self.paths.dir)
                return
        parts = job.frame()
        if len(parts) > 1000:  # past IOV_MAX
            parts = [b"".join(parts)]
        with anyio.CancelScope(shield=True):
            try:
                written = os.writev(self._jobs, parts)
            except BlockingIOError:
                written = 0
            except BrokenPipeError:
                return  # the process is gone; `read_reports` says so
            total = sum(map(len, parts))
            if written == total:
                return
            rest = memoryview(b"".join(parts))[written:]
            while rest:
                await anyio.wait_writable(self._jobs)
                try:
                    rest = rest[os.write(self._jobs, rest) :]
                except BlockingIOError:
                    continue
                except BrokenPipeError:
                    return

    def read_reports(self) -> None:
        """Take in whatever the process has reported (without waiting)."""
        try:
            while chunk := os.read(self._reports, 65536):
                self._unread += chunk
            self._ended = True
        except BlockingIOError:
            pass
        buf = self._unread
        at = 0
        while len(buf) - at >= REPORT.size:
            kind, done, failed_at = REPORT.unpack_from(buf, at)
            end = at + REPORT.size
            if kind == FAILED:
                if len(buf) - end < LENGTH.size:
                    break
                (size,) = LENGTH.unpack_from(buf, end)
                if len(buf) - end - LENGTH.size < size:
                    break
                detail = json.loads(bytes(buf[end + LENGTH.size : end + LENGTH.size + size]))
                end += LENGTH.size + size
                if self._error is None:
                    self._failed_at = failed_at
                    self._journaled = detail["journaled"]
                    self._error = WriterFailed(detail["path"], detail["reason"])
            self._done = max(self._done, done)
            at = end
        del buf[:at]
        if self._ended and self._error is None and not self._stopping:
            # Gone before its pipe was closed: every job it did not report fails, and so
            # does every later one.
            code = self._process.poll() if self._process is not None else None
            self._failed_at = self._done + 1
            self._journaled = self._done
            self._error = WriterFailed(
                self.paths.dir, f"the ledger's commit process ended (exit status {code})"
            )

    def progress(self) -> Progress:
        return Progress(self._done, self._failed_at, self._journaled, self._error)

    async def stop(self) -> None:
        """Close the pipe: the process finishes the whole jobs it has, then ends. Waited for
        on the event loop and shielded: a slow disk holds up this close, not the loop."""
        if self._process is None:
            return
        self._stopping = True
        os.close(self._jobs)
        with anyio.CancelScope(shield=True):
            while not self._ended:
                await anyio.wait_readable(self._reports)
                self.read_reports()
            # Its report pipe closed when it exited, or is exiting.
            await anyio.to_thread.run_sync(self._process.wait)
        os.close(self._reports)
