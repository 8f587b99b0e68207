"""The supervisor: run step subprocesses under runtime, silence and memory limits.

Every step runs in its own session (``start_new_session``) with its output written straight
into its evidence files or read from pipes (`runner._stream`), and a monitor that wakes at the
poll interval (default 0.25 s) and at the exact runtime and silence deadlines. When the step's
first process exits, a limit is breached or the step is cancelled, every process of its tree
(`runner._proctree`: group members, descendants, and grandchildren that escaped with
``setsid``) gets SIGTERM (and SIGCONT, so a stopped process can act on it), then after the kill
grace period SIGKILL; the step ends only when none of them exists any more and every zombie has
been reaped.

Memory is the sum of RSS over the tree's running processes, read at each poll (one small read
per process). RSS counts a page shared by several processes once per process, so the sum is an
upper bound; the true footprint is the sum of PSS, which divides shared pages among the sharers
but costs a page-table walk per process to read. So RSS decides cheaply that a tree is under
its limit, and only when the RSS sum is over it is the PSS sum read to decide the breach: a
forked tree sharing a large copy-on-write heap is not killed for memory it does not use.
`peak_memory_bytes` reports the largest RSS sum seen (the cheap, conservative figure).

A step never raises for what its process did: a command that cannot be started is an outcome
(`spawn_failed`), as is a limit breach or a crash. `Supervisor.cancel` ends every running and
waiting step as `cancelled` and still returns their outcomes; cancelling the task that awaits a
step (an outer cancel scope) also kills its whole tree, in a shielded ``finally``, and then lets
the cancellation propagate.
"""

from __future__ import annotations

import contextlib
import os
import secrets
import signal
import subprocess
import time
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Annotated

import anyio
import msgspec

from protocol import EndReason, StepOutcome

from . import _proctree
from ._child import Child, feed
from ._stream import OutputCapture, Sink
from .log import get_logger

DEFAULT_POLL_INTERVAL_SEC = 0.25
DEFAULT_KILL_GRACE_SEC = 2.0
DEFAULT_TAIL_BYTES = 64 * 1024
# Kill bookkeeping: how often to look again while waiting for a signalled tree to go.
_TERM_POLL_SEC = 0.02
_KILL_POLL_SEC = 0.01
# How far a file's modification time may lag the wall clock (the kernel stamps it from a
# clock that advances once per tick: 4 ms at 250 Hz, 10 ms at 100 Hz).
_MTIME_TICK_SEC = 0.01
# After SIGKILL a process can only linger in uninterruptible sleep; give up after this long.
_KILL_GIVE_UP_SEC = 5.0

PositiveFloat = Annotated[float, msgspec.Meta(gt=0)]
PositiveInt = Annotated[int, msgspec.Meta(gt=0)]
NonNegFloat = Annotated[float, msgspec.Meta(ge=0)]

log = get_logger("runner.supervisor")


class SupervisorError(Exception):
    """Base of the supervisor's and the shim adapter's errors (bad set-up, not step outcomes)."""


class UnsupportedPlatform(SupervisorError):
    def __init__(self, platform: str) -> None:
        self.platform = platform
        super().__init__(
            f"the supervisor needs Linux /proc (process tree tracking, subreaper); "
            f"this is {platform}"
        )


class Limits(msgspec.Struct, frozen=True, forbid_unknown_fields=True, kw_only=True):
    """Limits on one step's whole process tree; None means unlimited."""

    max_runtime_sec: PositiveFloat | None = None
    max_silence_sec: PositiveFloat | None = None
    max_memory_mb: PositiveInt | None = None
    poll_interval_sec: PositiveFloat = DEFAULT_POLL_INTERVAL_SEC
    kill_grace_sec: NonNegFloat = DEFAULT_KILL_GRACE_SEC

    def __post_init__(self) -> None:
        for name in ("max_runtime_sec", "max_silence_sec", "max_memory_mb", "poll_interval_sec"):
            value = getattr(self, name)
            if value is not None and value <= 0:
                raise ValueError(f"{name} must be positive, got {value}")
        if self.kill_grace_sec < 0:
            raise ValueError(f"kill_grace_sec must not be negative, got {self.kill_grace_sec}")

    @property
    def max_memory_bytes(self) -> int | None:
        return None if self.max_memory_mb is None else self.max_memory_mb * 1024 * 1024


@dataclass(frozen=True, kw_only=True)
class StepSpec:
    """What to run and under which limits.

    `argv` is never a shell string. `env` replaces the inherited environment when given. The
    child gets `stdin` bytes on a pipe (then end of file), or ``/dev/null`` when None. `stdout`
    and `stderr` are evidence files (created with their parents, replaced if they exist, and
    given to the child to write into), an fd to pass output through to, or None to discard;
    either way the last `tail_bytes` are returned for parsing.
    """

    argv: Sequence[str]
    cwd: Path | None = None
    env: Mapping[str, str] | None = None
    stdin: bytes | None = None
    stdout: Sink = None
    stderr: Sink = None
    limits: Limits = field(default_factory=Limits)
    tail_bytes: int = DEFAULT_TAIL_BYTES
    label: str = ""


@dataclass(frozen=True)
class StepRun:
    """A finished step: the outcome plus the output tails kept for parsing."""

    outcome: StepOutcome
    stdout_tail: bytes = b""
    stderr_tail: bytes = b""
    stdout_last_byte: int | None = None
    signalled: int = 0
    survivors: tuple[int, ...] = ()
    spawn_errno: int | None = None


class StopRequest:
    """Shared by the steps of one supervisor: once set, each ends as `cancelled`.

    A second request (`force`) skips the kill grace period.
    """

    def __init__(self) -> None:
        self.event = anyio.Event()
        self.force = False
        self.detail = ""
        self._wakes: set[anyio.Event] = set()

    def set(self, detail: str = "") -> None:
        if self.event.is_set():
            self.force = True
            return
        self.detail = detail
        self.event.set()
        for wake in self._wakes:
            wake.set()

    def watch(self, wake: anyio.Event) -> None:
        """Set `wake` when the stop is requested (cheaper than a task per step waiting)."""
        self._wakes.add(wake)

    def unwatch(self, wake: anyio.Event) -> None:
        self._wakes.discard(wake)

    @property
    def requested(self) -> bool:
        return self.event.is_set()


def utc_now() -> str:
    """RFC 3339 UTC with milliseconds, the protocol's timestamp form."""
    return datetime.now(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


async def run_step(spec: StepSpec, *, stop: StopRequest | None = None) -> StepRun:
    """Run one step to its end and return its outcome; see the module docstring."""
    if not _proctree.supported():
        raise UnsupportedPlatform(os.uname().sysname if hasattr(os, "uname") else "unknown")
    started_at, t0 = utc_now(), time.monotonic()
    label = spec.label or (spec.argv[0] if spec.argv else "")
    if stop is not None and stop.requested:
        return _not_started(EndReason.CANCELLED, started_at, t0, stop.detail or "cancelled")
    if not spec.argv:
        return _not_started(EndReason.SPAWN_FAILED, started_at, t0, "empty argv")
    out = OutputCapture(spec.stdout, spec.tail_bytes)
    err = OutputCapture(spec.stderr, spec.tail_bytes)
    try:
        # Opened on the event loop: a create costs tens of microseconds, less than a hop to a
        # worker thread (see docs/performance.md).
        child_out, child_err = out.open(), err.open()
    except OSError as exc:
        out.close()
        err.close()
        where = f" {exc.filename}" if exc.filename else ""
        return _not_started(
            EndReason.SPAWN_FAILED,
            started_at,
            t0,
            f"cannot open output{where}: {exc.strerror or exc}",
        )
    except BaseException:  # interrupted while the files were being created
        out.close()
        err.close()
        raise

    _proctree.become_subreaper()
    token = secrets.token_hex(8)
    # The inherited environment is copied as bytes: no decoding and re-encoding per variable.
    env: dict[bytes, bytes] = (
        {**os.environb}
        if spec.env is None
        else {os.fsencode(k): os.fsencode(v) for k, v in spec.env.items()}
    )
    env[_proctree.TOKEN_ENV.encode()] = token.encode()
    stdin_read = stdin_write = -1
    if spec.stdin is not None:
        stdin_read, stdin_write = os.pipe2(os.O_CLOEXEC)
        os.set_blocking(stdin_write, False)
    since = _proctree.last_pid()
    try:
        process = Child.start(
            spec.argv,
            cwd=spec.cwd,
            env=env,
            stdin=stdin_read if spec.stdin is not None else subprocess.DEVNULL,
            stdout=child_out,
            stderr=child_err,
        )
    except (OSError, ValueError) as exc:  # ValueError: a NUL byte in argv or env
        out.close()
        err.close()
        _close_all([stdin_write])
        return _not_started(
            EndReason.SPAWN_FAILED,
            started_at,
            t0,
            f"cannot start {spec.argv[0]!r}: {getattr(exc, 'strerror', None) or exc}",
            errno=getattr(exc, "errno", None),
        )
    finally:
        out.child_started()
        err.child_started()
        _close_all([stdin_read])

    tree = _proctree.ProcessTree(process.pid, token=token, since_pid=since)
    step = _Step(spec, process, tree, out=out, err=err, stop=stop, label=label, t0=t0)
    step.stdin_fd = stdin_write
    log.debug("step.started", step=label, pid=process.pid, argv0=spec.argv[0])
    try:
        await step.run()
    finally:
        with anyio.CancelScope(shield=True):
            await step.finish()
    return step.result(started_at)


class Supervisor:
    """Runs steps at most `max_parallel_steps` at a time, in task groups owned by the caller.

    Create it inside the event loop. ``await supervisor.run(spec)`` waits for a free slot and
    runs the step; `cancel` ends every running and waiting step as `cancelled` (a second call
    skips the kill grace period).
    """

    def __init__(self, max_parallel_steps: int = 1) -> None:
        if max_parallel_steps < 1:
            raise ValueError(f"max_parallel_steps must be at least 1, got {max_parallel_steps}")
        self.max_parallel_steps = max_parallel_steps
        self._limiter = anyio.CapacityLimiter(max_parallel_steps)
        self._stop = StopRequest()

    async def run(self, spec: StepSpec) -> StepRun:
        async with self._limiter:
            return await run_step(spec, stop=self._stop)

    async def run_all(self, specs: Iterable[StepSpec]) -> list[StepRun]:
        """Run `specs` in parallel (up to the limit); outcomes in the order given."""
        items = list(specs)
        results: list[StepRun | None] = [None] * len(items)

        async def one(i: int, spec: StepSpec) -> None:
            results[i] = await self.run(spec)

        async with anyio.create_task_group() as tg:
            for i, spec in enumerate(items):
                tg.start_soon(one, i, spec)
        return [r for r in results if r is not None]

    def cancel(self, detail: str = "cancelled") -> None:
        self._stop.set(detail)

    @property
    def cancelled(self) -> bool:
        return self._stop.requested


class _Step:
    """One running step: its monitor, its pumps and its cleanup."""

    def __init__(
        self,
        spec: StepSpec,
        process: Child,
        tree: _proctree.ProcessTree,
        *,
        out: OutputCapture,
        err: OutputCapture,
        stop: StopRequest | None,
        label: str,
        t0: float,
    ) -> None:
        self.spec = spec
        self.limits = spec.limits
        self.process = process
        self.tree = tree
        self.out = out
        self.err = err
        self.stop = stop
        self.label = label
        self.t0 = t0
        self.last_output = t0
        self.wake = anyio.Event()
        self.exited = False
        self.reason: EndReason | None = None
        self.notes: list[str] = []
        self.peak_rss = 0
        self.signalled: set[int] = set()
        self.survivors: tuple[int, ...] = ()
        self.ended_at = ""
        self.t_end = 0.0
        self.finished = False
        self.terminated = False
        self.piped = [c for c in (out, err) if not c.direct]
        self.files = [c for c in (out, err) if c.direct]
        self.looked = t0
        self.pumps_left = len(self.piped)
        self.pumps_done = anyio.Event()
        if not self.piped:
            self.pumps_done.set()
        self.stdin_fd = -1
        self.fed = True

    def _on_data(self, now: float) -> None:
        self.last_output = now

    def _look(self, now: float) -> None:
        """See whether the child wrote to its evidence files since the previous look.

        A file that changed was written between the previous look and now; its modification
        time says when, on the wall clock, to the filesystem's timestamp granularity (a clock
        tick on ext4, xfs, btrfs and tmpfs). That time, made a little later by the coarse
        clock's tick and kept within (previous look, now], counts as the last output: silence
        is never found early, and late by at most one poll interval on a filesystem with
        coarse timestamps or after a step of the wall clock.
        """
        wall = time.time()
        for capture in self.files:
            mtime_ns = capture.look()
            if mtime_ns is not None:
                ago = wall - mtime_ns / 1e9 - _MTIME_TICK_SEC
                self.last_output = max(self.last_output, min(now, max(self.looked, now - ago)))
        self.looked = now

    async def run(self) -> None:
        if self.stop is not None:
            self.stop.watch(self.wake)
        async with anyio.create_task_group() as tg:
            tg.start_soon(self._wait_exit)
            for capture in self.piped:
                tg.start_soon(self._pump, capture)
            if self.spec.stdin is not None and self.stdin_fd >= 0:
                fd, self.stdin_fd = self.stdin_fd, -1
                self.fed = False
                tg.start_soon(self._feed, fd, self.spec.stdin)
            self.reason = await self._monitor()
            await self._terminate()
            if not self.pumps_done.is_set():
                with anyio.move_on_after(max(self.limits.kill_grace_sec, 0.1)):
                    await self.pumps_done.wait()
            if not self.pumps_done.is_set():
                self.notes.append("output pipe held open by a process outside the tree")
                log.warning("step.output_held_open", step=self.label, pid=self.process.pid)
            if not (self.exited and self.pumps_done.is_set() and self.fed):
                # Only when a task is left: anyio formats the current task's repr on cancel,
                # a few percent of a trivial step's cost (py-spy).
                tg.cancel_scope.cancel()

    async def _feed(self, fd: int, data: bytes) -> None:
        await feed(fd, data)
        self.fed = True

    async def _wait_exit(self) -> None:
        await self.process.wait()
        self.tree.root_reaped = True
        self.exited = True
        self.wake.set()

    async def _pump(self, capture: OutputCapture) -> None:
        await capture.pump(self._on_data)
        self.pumps_left -= 1
        if self.pumps_left == 0:
            self.pumps_done.set()

    async def _monitor(self) -> EndReason:
        """Wait for the exit, a stop or a breach. The tree is measured at each poll tick (the
        first one poll interval after the start: a step that ends sooner costs no /proc scan);
        the runtime and silence deadlines wake the monitor exactly when they fall."""
        lim = self.limits
        limit_bytes = lim.max_memory_bytes
        next_poll = self.t0 + lim.poll_interval_sec
        while True:
            if self.exited:
                return EndReason.COMPLETED
            if self.stop is not None and self.stop.requested:
                self.notes.append(self.stop.detail or "cancelled")
                return EndReason.CANCELLED
            now = time.monotonic()
            if now >= next_poll:
                next_poll = now + lim.poll_interval_sec
                if self.files:
                    self._look(now)
                self.tree.refresh()
                rss = self.tree.rss_bytes()
                self.peak_rss = max(self.peak_rss, rss)
                if limit_bytes is not None and rss > limit_bytes:
                    pss = self.tree.pss_bytes()
                    if pss > limit_bytes:
                        self.notes.append(
                            f"tree memory {pss} bytes (PSS) over the limit of "
                            f"{lim.max_memory_mb} MiB"
                        )
                        return EndReason.MEMORY_LIMIT
            deadlines = self._deadlines()
            if self.files and self.looked < now and any(at <= now for at, _, _ in deadlines):
                self._look(now)  # silence is due only if the files did not change either
                deadlines = self._deadlines()
            for at, reason, note in deadlines:
                if at <= now:
                    self.notes.append(note)
                    return reason
            timeout = min([next_poll - now] + [at - now for at, _, _ in deadlines])
            with anyio.move_on_after(timeout):
                await self.wake.wait()

    def _deadlines(self) -> list[tuple[float, EndReason, str]]:
        """(monotonic deadline, breach, note) for the runtime and silence limits that are set."""
        lim = self.limits
        return [
            (start + limit, reason, f"{words} {limit:g} s")
            for limit, start, reason, words in (
                (lim.max_runtime_sec, self.t0, EndReason.RUNTIME_LIMIT, "ran longer than"),
                (lim.max_silence_sec, self.last_output, EndReason.SILENCE_LIMIT, "no output for"),
            )
            if limit is not None
        ]

    def _left(self) -> bool:
        # poll(), not returncode: when the step is cancelled, the task that waits for the
        # root is gone, and an unreaped root would count as a survivor until give-up.
        if self.process.poll() is not None:
            self.tree.root_reaped = True
        while True:
            reaped = self.tree.reaped
            self.tree.refresh()
            left = self.tree.settle()
            # A member reaped just now may have left children, ours since its death: look
            # again before saying nothing is left (an escapee's children are found this way).
            if self.tree.reaped == reaped:
                return bool(left) or self.tree.group_alive(left)

    def _signal_new(self, sig: int) -> None:
        for pid in self.tree.running():
            if pid not in self.signalled:
                self.signalled.add(pid)
                _send(pid, sig)

    async def _terminate(self) -> None:
        """End every process of the tree: SIGTERM, grace, SIGKILL; wait until all are reaped."""
        self.tree.ending = self.tree.killing = True
        try:
            await self._kill_tree()
        finally:
            self.tree.killing = False
        self.terminated = True

    async def _kill_tree(self) -> None:
        if not self._left():
            return
        # Leftovers of a step that completed are routine; a breach is news.
        emit = log.debug if self.reason is EndReason.COMPLETED else log.info
        emit(
            "step.killing",
            step=self.label,
            reason=str(self.reason),
            processes=len(self.tree.running()),
        )
        self._signal_new(signal.SIGTERM)
        self.tree.signal_group(signal.SIGTERM)
        self.tree.signal_group(signal.SIGCONT)
        for pid in self.signalled:
            _send(pid, signal.SIGCONT)
        deadline = time.monotonic() + self.limits.kill_grace_sec
        while time.monotonic() < deadline and not (self.stop and self.stop.force):
            await anyio.sleep(_TERM_POLL_SEC)
            if not self._left():
                return
            self._signal_new(signal.SIGTERM)
        give_up = time.monotonic() + _KILL_GIVE_UP_SEC
        while True:
            self.tree.signal_group(signal.SIGKILL)
            for pid in self.tree.running():
                self.signalled.add(pid)
                _send(pid, signal.SIGKILL)
            await anyio.sleep(_KILL_POLL_SEC)
            if not self._left():
                return
            if time.monotonic() >= give_up:
                self.survivors = tuple(s.pid for s in self.tree.alive())
                self.notes.append(f"processes survived SIGKILL: {list(self.survivors)}")
                log.error("step.kill_incomplete", step=self.label, pids=list(self.survivors))
                return

    async def finish(self) -> None:
        """Shielded cleanup: whatever happened, no process of the tree is left running."""
        if self.finished:
            return
        if self.stop is not None:
            self.stop.unwatch(self.wake)
        if self.reason is None:
            self.reason = EndReason.CANCELLED
            self.notes.append("cancelled by the caller")
        if not self.terminated:
            await self._terminate()
        if self.tree.escapees:
            pids = sorted(self.tree.escapees)
            self.notes.append(
                f"killed {len(pids)} process(es) that had escaped a step's tree (own session, "
                f"no step token): {pids}"
            )
            log.warning("step.escapees_killed", step=self.label, pids=pids)
        self.tree.release()
        with anyio.move_on_after(_KILL_GIVE_UP_SEC):
            await self.process.wait()
        _close_all([self.stdin_fd])
        self.out.close()
        self.err.close()
        for capture in (self.out, self.err):
            if capture.error:
                self.notes.append(capture.error)
        self.t_end = time.monotonic()
        self.ended_at = utc_now()
        self.finished = True

    def result(self, started_at: str) -> StepRun:
        reason = self.reason or EndReason.CANCELLED
        outcome = StepOutcome(
            reason=reason,
            exit_code=self.process.returncode,
            started_at=started_at,
            ended_at=self.ended_at,
            duration_ms=max(0, round((self.t_end - self.t0) * 1000)),
            peak_memory_bytes=self.peak_rss,
            stdout_bytes=self.out.bytes,
            stderr_bytes=self.err.bytes,
            pid=self.process.pid,
            detail="; ".join(self.notes),
        )
        log.debug(
            "step.finished",
            step=self.label,
            reason=str(reason),
            exit_code=outcome.exit_code,
            duration_ms=outcome.duration_ms,
            peak_memory_bytes=outcome.peak_memory_bytes,
        )
        return StepRun(
            outcome=outcome,
            stdout_tail=self.out.tail,
            stderr_tail=self.err.tail,
            stdout_last_byte=self.out.last_byte,
            signalled=len(self.signalled),
            survivors=self.survivors,
        )


def _send(pid: int, sig: int) -> None:
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.kill(pid, sig)


def _close_all(fds: Iterable[int]) -> None:
    for fd in fds:
        if fd >= 0:
            with contextlib.suppress(OSError):
                os.close(fd)


def _not_started(
    reason: EndReason, started_at: str, t0: float, detail: str, *, errno: int | None = None
) -> StepRun:
    outcome = StepOutcome(
        reason=reason,
        exit_code=None,
        started_at=started_at,
        ended_at=utc_now(),
        duration_ms=max(0, round((time.monotonic() - t0) * 1000)),
        detail=detail,
    )
    log.debug("step.not_started", reason=str(reason), detail=detail)
    return StepRun(outcome=outcome, spawn_errno=errno)
