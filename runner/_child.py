"""Starting a step's first process and waiting for it, with no thread per child.

asyncio's subprocess support on Python 3.11 waits for each child in a thread of its own
(``ThreadedChildWatcher``): a thread start per step, which cost more than the rest of the
supervisor's bookkeeping together (measured in bench/supervisor.py). Linux gives a better
handle: ``pidfd_open`` returns a file descriptor that becomes readable when the process exits,
so the event loop waits for it like for any pipe (`anyio.wait_readable`) and the runner then
reaps the child with ``waitpid`` on its pid. Kernels without pidfd (before 5.3) fall back to
polling ``waitpid(WNOHANG)`` every 10 ms.

The process is started with `subprocess.Popen` (fork and exec happen synchronously, as they do
inside asyncio too), in its own session, with the runner's own pipes.
"""

from __future__ import annotations

import contextlib
import os
import subprocess
from collections.abc import Mapping, Sequence
from pathlib import Path

import anyio
import anyio.lowlevel

_FALLBACK_POLL_SEC = 0.01


class Child:
    """A started process: its pid, its exit code once reaped, and a way to wait for it."""

    def __init__(self, popen: subprocess.Popen[bytes]) -> None:
        self._popen = popen
        self.pid = popen.pid
        self.returncode: int | None = None
        try:
            self._pidfd: int | None = os.pidfd_open(popen.pid)
        except (OSError, AttributeError):
            self._pidfd = None

    @classmethod
    def start(
        cls,
        argv: Sequence[str],
        *,
        cwd: Path | None,
        env: Mapping[bytes, bytes],
        stdin: int,
        stdout: int,
        stderr: int,
    ) -> Child:
        """Start `argv` in a new session; raises OSError or ValueError when it cannot start."""
        popen = subprocess.Popen(
            list(argv),
            stdin=stdin,
            stdout=stdout,
            stderr=stderr,
            cwd=cwd,
            env=env,
            start_new_session=True,
            close_fds=True,
        )
        return cls(popen)

    def poll(self) -> int | None:
        """Reap the process if it has exited (never blocks)."""
        if self.returncode is None:
            try:
                pid, status = os.waitpid(self.pid, os.WNOHANG)
            except ChildProcessError:  # reaped elsewhere: nothing more to learn
                pid, status = self.pid, 0
            if pid == self.pid:
                self.returncode = os.waitstatus_to_exitcode(status)
                self._popen.returncode = self.returncode  # so Popen never warns or re-waits
                self._close_pidfd()
        return self.returncode

    async def wait(self) -> int:
        while self.poll() is None:
            if self._pidfd is not None:
                try:
                    await anyio.wait_readable(self._pidfd)
                except anyio.ClosedResourceError:
                    # `poll()` from the kill loop reaped it meanwhile and closed the pidfd
                    # (telling the loop first): the exit code is known, the loop ends.
                    continue
            else:
                await anyio.sleep(_FALLBACK_POLL_SEC)
        assert self.returncode is not None
        return self.returncode

    def _close_pidfd(self) -> None:
        if self._pidfd is not None:
            anyio.notify_closing(self._pidfd)
            with contextlib.suppress(OSError):
                os.close(self._pidfd)
            self._pidfd = None


async def feed(fd: int, data: bytes) -> None:
    """Write `data` to the non-blocking pipe `fd`, then close it; a reader that went away
    (EPIPE) just ends the feed."""
    view = memoryview(data)
    try:
        while view:
            try:
                view = view[os.write(fd, view) :]
            except BlockingIOError:
                await anyio.wait_writable(fd)
            else:
                await anyio.lowlevel.checkpoint()
    except OSError:
        pass  # the child closed its stdin: its business
    finally:
        anyio.notify_closing(fd)
        os.close(fd)
