"""Pumping a child's output to its evidence file without holding it in memory.

Output is read in chunks of at most 64 KiB as it arrives, never as lines (a 1 GiB line without a
newline must not grow the runner), written straight to the sink, and only a bounded tail is
kept for parsing. Bytes are bytes: invalid UTF-8 is stored as it came.

The runner makes the pipes itself (no asyncio subprocess transport owns them):
a process that escaped the tree can hold a pipe's write end open forever, and only the owner of
the read end can decide to stop reading and close it.

Writes to a regular file go to the page cache and return in microseconds, so they are made
directly from the event loop; a hop to a worker thread per chunk would cost more than the write.
Writes to anything else (the runner's own stdout for ``runner exec`` pass-through: a pipe or a
terminal that can block for as long as its reader pleases) go through ``anyio.to_thread`` so a
slow reader never stalls the monitor.
"""

from __future__ import annotations

import os
import stat
import time
from collections.abc import Callable
from pathlib import Path

import anyio
import anyio.lowlevel

CHUNK_BYTES = 64 * 1024

Sink = Path | int | None
"""Where a stream goes: a file (created, parents too), an open fd we do not own, or nowhere."""


class OutputCapture:
    """One output stream of a step: its sink, how many bytes it carried, its last bytes."""

    def __init__(self, sink: Sink, tail_bytes: int) -> None:
        self._sink = sink
        self._tail_limit = tail_bytes
        self._tail = bytearray()
        self._fd: int | None = None
        self._owned = False
        self._read_fd: int | None = None
        self._blocking_sink = False
        self.bytes = 0
        self.last_byte: int | None = None
        self.error: str | None = None

    def open(self) -> None:
        """Open the sink; raises OSError (the step is then not started)."""
        if isinstance(self._sink, Path):
            self._sink.parent.mkdir(parents=True, exist_ok=True)
            self._fd = os.open(
                self._sink, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_CLOEXEC, 0o644
            )
            self._owned = True
        elif isinstance(self._sink, int):
            self._fd = self._sink
            self._blocking_sink = not stat.S_ISREG(os.fstat(self._fd).st_mode)

    def pipe(self) -> int:
        """A fresh pipe for the child: returns the write end, which the caller passes to the
        child and then closes with `child_started`."""
        read_fd, write_fd = os.pipe2(os.O_CLOEXEC)
        os.set_blocking(read_fd, False)
        self._read_fd = read_fd
        return write_fd

    def close(self) -> None:
        """Close the read end (a writer still holding the pipe gets SIGPIPE) and the sink."""
        self._close_read()
        if self._owned and self._fd is not None:
            os.close(self._fd)
        self._fd = None

    def _close_read(self) -> None:
        if self._read_fd is not None:
            anyio.notify_closing(self._read_fd)
            os.close(self._read_fd)
            self._read_fd = None

    @property
    def tail(self) -> bytes:
        return bytes(self._tail)

    async def pump(self, on_data: Callable[[float], None]) -> None:
        """Copy the pipe to the sink until end of file; `on_data(monotonic)` per chunk."""
        while (fd := self._read_fd) is not None:
            try:
                chunk = os.read(fd, CHUNK_BYTES)
            except BlockingIOError:
                try:
                    await anyio.wait_readable(fd)
                except anyio.ClosedResourceError:
                    return
                continue
            if not chunk:
                return
            on_data(time.monotonic())
            self.bytes += len(chunk)
            self.last_byte = chunk[-1]
            self._keep(chunk)
            if self._fd is not None and self.error is None:
                try:
                    if self._blocking_sink:
                        await anyio.to_thread.run_sync(_write_all, self._fd, chunk)
                    else:
                        _write_all(self._fd, chunk)
                except BrokenPipeError:
                    if not self._owned:
                        # Pass-through to a reader that went away (``runner exec ... | head``):
                        # pass the broken pipe on, as a shell pipeline would.
                        self.error = "the reader of the pass-through output went away"
                        self._close_read()
                        return
                    self.error = "cannot write output: broken pipe"
                except OSError as exc:
                    # Keep draining (a child blocked on a full pipe would look hung), but stop
                    # writing and say why: a full disk loses evidence.
                    self.error = f"cannot write output: {exc.strerror or exc}"
            # A flood keeps the pipe readable forever: let the monitor run between chunks.
            await anyio.lowlevel.checkpoint()

    def _keep(self, chunk: bytes) -> None:
        if self._tail_limit <= 0:
            return
        if len(chunk) >= self._tail_limit:
            self._tail[:] = chunk[-self._tail_limit :]
            return
        self._tail += chunk
        excess = len(self._tail) - self._tail_limit
        if excess > 0:
            del self._tail[:excess]


def _write_all(fd: int, data: bytes) -> None:
    view = memoryview(data)
    while view:
        written = os.write(fd, view)
        view = view[written:]
