"""A step's output: straight into its evidence file, or through a pipe the runner reads.

An evidence file (a `Path` sink) is opened by the runner and handed to the child as its stdout
or stderr: the child's writes land in the file as they happen, and the runner never copies a
byte. The runner keeps the file open to see the child's activity (`look`: the file's size and
modification time, read with one ``fstat`` at each poll, which is how silence is measured) and
reads the last `tail_bytes` back when the step is over. Giving the child a pipe instead and
copying it to the file cost two pipes, two reader tasks, and for a flood a read and a write of
every 64 KiB chunk in the runner.

The file is opened with ``O_APPEND``: every write of the tree lands at the end, whatever a
process does with its file offset. What the runner gives up by not owning the reading end: a
process that escaped the tree (see `runner._proctree`, known limit) can keep writing to the
file after the step is over, where a pipe would have been closed under it; and a full disk is
seen by the child (its writes fail), not reported by the runner.

Anything else goes through a pipe that the runner makes and reads itself (no asyncio subprocess
transport owns it): no sink at all (output discarded, tail kept) and an open fd we do not own
(``runner exec`` passing output through to its own stdout, a pipe or a terminal whose reader
sets the pace). The pipe is read in chunks of at most 64 KiB as they arrive, never as lines (a
1 GiB line without a newline must not grow the runner), and only a bounded tail is kept; writes
to a sink that can block go through ``anyio.to_thread`` so a slow reader never stalls the
monitor. Only the owner of a pipe's read end can stop reading and close it, which is what ends
a step whose output is held open by a process outside its tree. Bytes are bytes either way:
invalid UTF-8 is stored as it came.
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

_FILE_FLAGS = os.O_RDWR | os.O_CREAT | os.O_TRUNC | os.O_APPEND | os.O_CLOEXEC


class OutputCapture:
    """One output stream of a step: its sink, how many bytes it carried, its last bytes."""

    def __init__(self, sink: Sink, tail_bytes: int) -> None:
        self._sink = sink
        self._tail_limit = tail_bytes
        self._tail = bytearray()
        self._fd: int | None = None  # the sink: an evidence file or an fd we do not own
        self._owned = False
        self._read_fd: int | None = None
        self._write_fd: int | None = None
        self._blocking_sink = False
        self._seen: tuple[int, int] = (0, 0)
        self.direct = isinstance(sink, Path)
        self.bytes = 0
        self.last_byte: int | None = None
        self.error: str | None = None

    def open(self) -> int:
        """Open the sink and return the fd to give the child as this stream.

        Raises OSError (the step is then not started; `close` still has to be called).
        """
        if isinstance(self._sink, Path):
            try:
                self._fd = os.open(self._sink, _FILE_FLAGS, 0o644)
            except FileNotFoundError:  # the directory is made only when it is missing
                self._sink.parent.mkdir(parents=True, exist_ok=True)
                self._fd = os.open(self._sink, _FILE_FLAGS, 0o644)
            self._owned = True
            st = os.fstat(self._fd)
            if stat.S_ISREG(st.st_mode):
                self._seen = (st.st_size, st.st_mtime_ns)  # creating it is not output
                return self._fd
            # A path naming a device or a FIFO: its size and time say nothing, so it is fed
            # through a pipe like any other sink.
            self.direct = False
            self._blocking_sink = True
        elif isinstance(self._sink, int):
            self._fd = self._sink
            self._blocking_sink = not stat.S_ISREG(os.fstat(self._fd).st_mode)
        self._read_fd, self._write_fd = os.pipe2(os.O_CLOEXEC)
        os.set_blocking(self._read_fd, False)
        return self._write_fd

    def child_started(self) -> None:
        """Close the runner's copy of the pipe's write end: the child holds its own, and the
        pump sees end of file when the last writer is gone."""
        if self._write_fd is not None:
            os.close(self._write_fd)
            self._write_fd = None

    def look(self) -> int | None:
        """An evidence file's modification time (ns since the epoch) if its size or time
        changed since the previous look, else None: the child wrote to it in between."""
        if self._fd is None or not self.direct:
            return None
        try:
            st = os.fstat(self._fd)
        except OSError:
            return None
        seen = (st.st_size, st.st_mtime_ns)
        if seen == self._seen:
            return None
        self._seen = seen
        return st.st_mtime_ns

    def close(self) -> None:
        """Stop capturing: an evidence file's size and tail are read back and the file is
        closed; a pipe's read end is closed (a writer still holding it gets SIGPIPE)."""
        self.child_started()
        self._close_read()
        if self.direct and self._fd is not None:
            self._read_back(self._fd)
        if self._owned and self._fd is not None:
            os.close(self._fd)
        self._fd = None

    def _read_back(self, fd: int) -> None:
        try:
            size = os.fstat(fd).st_size
            want = min(size, max(self._tail_limit, 1))
            data = os.pread(fd, want, size - want) if want else b""
        except OSError as exc:
            self.error = f"cannot read output back: {exc.strerror or exc}"
            return
        self.bytes = size
        self.last_byte = data[-1] if data else None
        self._keep(data)

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
                    # A reader that went away (``runner exec ... | head``): pass the broken
                    # pipe on, as a shell pipeline would.
                    self.error = "the reader of the output went away"
                    self._close_read()
                    return
                except OSError as exc:
                    # Keep draining (a child blocked on a full pipe would look hung), but stop
                    # writing and say why.
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
