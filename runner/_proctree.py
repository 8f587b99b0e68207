"""Which processes belong to one step, found cheaply and completely (Linux ``/proc``).

A step's tree is not just "the descendants of its root": a grandchild may call ``setsid`` (it
leaves the step's process group and session) and its parent may exit (it stops being a
descendant). Walking down from the root at the end would miss it, so every process that ever
belonged to the step is remembered, with its start time so a reused pid is never mistaken for
it.

Finding members cheaply matters: psutil's ``children(recursive=True)`` reads every
``/proc/*/stat`` on the machine (5 ms per call with 80 processes), which per step and per poll is
a third of a core for 16 steps. A new member must have a pid allocated after the step was
spawned, and Linux hands out pids in increasing order (wrapping at ``pid_max``), so each refresh
probes only the pids allocated since the previous one: the last allocated pid is the last field
of ``/proc/loadavg``. A pid is a member when its parent is a member, its process group or session
is one of the step's, or (for orphans the runner adopted as subreaper) its environment carries
the step's token.

The runner makes itself a child subreaper (``PR_SET_CHILD_SUBREAPER``): an orphan of a step
becomes the runner's child, not init's. That is what lets the supervisor reap the zombies of
processes it killed: on hosts whose pid 1 does not reap (minimal container and VM inits, this
project's own CI machine among them), every killed orphan would otherwise stay a zombie forever.

A process that daemonizes (fork, ``setsid``, parent exits) *and* clears its environment
before the next refresh carries no link to its step at all: an *escapee*. It is still the
runner's child (the subreaper adopted it), in a session that is neither the runner's nor any
step's, and it is not one of the runner's own processes (those that are session leaders register
with `own_spawn`). While a step's tree is being killed the runner's children are listed, and
every such child is handed to an ending step to be killed with its tree, unless a step that was
already running when the escapee started is still running (it may be that step's, and a running
step's processes are never killed early). A child older than every step still registered is left
alone: nothing says it came from a step.
"""

from __future__ import annotations

import contextlib
import ctypes
import functools
import os
import signal
import sys
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import NamedTuple

TOKEN_ENV = "RUNNER_STEP_TOKEN"
PR_SET_CHILD_SUBREAPER = 36
PAGE_SIZE = os.sysconf("SC_PAGE_SIZE") if hasattr(os, "sysconf") else 4096
# Above this many new pids, one listdir of /proc is cheaper than probing each pid.
_PROBE_LIMIT = 512
# A pid is allocated a little before its /proc entry appears: re-probe the newest few.
_FRONTIER = 16


class ProcStat(NamedTuple):
    pid: int
    state: str
    ppid: int
    pgrp: int
    session: int
    starttime: int


def supported() -> bool:
    return sys.platform.startswith("linux") and _read("/proc/loadavg") is not None


def _read(path: str, limit: int = 1 << 22) -> bytes | None:
    """A whole small /proc file, or None when it cannot be read (the process is gone).

    os-level calls: this runs a few times per process per poll, and the buffered file
    object of ``open()`` costs more than the read itself.
    """
    try:
        fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
    except OSError:
        return None
    try:
        parts = []
        size = 0
        while size < limit:
            part = os.read(fd, 65536)
            if not part:
                break
            parts.append(part)
            size += len(part)
        return b"".join(parts)
    except OSError:
        return None
    finally:
        os.close(fd)


def read_stat(pid: int) -> ProcStat | None:
    """Parse ``/proc/<pid>/stat``; None when the process (or thread) does not exist."""
    data = _read(f"/proc/{pid}/stat")
    if data is None:
        return None
    # The command name is in parentheses and may itself contain ") ": split at the last one.
    end = data.rfind(b")")
    if end < 0:
        return None
    fields = data[end + 2 :].split(b" ", 20)
    try:
        return ProcStat(
            pid=pid,
            state=fields[0].decode("ascii", "replace"),
            ppid=int(fields[1]),
            pgrp=int(fields[2]),
            session=int(fields[3]),
            starttime=int(fields[19]),
        )
    except (IndexError, ValueError):
        return None


def last_pid() -> int:
    """The most recently allocated pid in our pid namespace (last field of /proc/loadavg)."""
    data = _read("/proc/loadavg")
    if data is None:
        raise OSError("cannot read /proc/loadavg")
    return int(data.split()[-1])


@functools.cache
def pid_max() -> int:
    data = _read("/proc/sys/kernel/pid_max")
    try:
        return int(data) if data else 4_194_304
    except ValueError:
        return 4_194_304


def _field(data: bytes | None, name: bytes) -> int | None:
    """An integer field of a ``Key:  value [kB]`` /proc file."""
    if data is None:
        return None
    for line in data.splitlines():
        if line.startswith(name):
            try:
                return int(line.split()[1])
            except (IndexError, ValueError):
                return None
    return None


def _thread_group_leader(pid: int) -> bool:
    """True for a process, False for one of its threads (``/proc/<tid>`` resolves too)."""
    return _field(_read(f"/proc/{pid}/status"), b"Tgid:") == pid


def rss_bytes(pid: int) -> int:
    data = _read(f"/proc/{pid}/statm")
    try:
        return int(data.split()[1]) * PAGE_SIZE if data else 0
    except (ValueError, IndexError):
        return 0


def pss_bytes(pid: int) -> int:
    """Proportional set size: shared pages divided among the processes sharing them.

    Reading it makes the kernel walk the page tables, so it costs far more than RSS; the
    supervisor reads it only when the RSS sum says the tree may be over its limit.
    """
    kib = _field(_read(f"/proc/{pid}/smaps_rollup"), b"Pss:")
    return 0 if kib is None else kib * 1024


_subreaper_set = False


def become_subreaper() -> bool:
    """Make this process the reaper of its descendants' orphans (idempotent, Linux only)."""
    global _subreaper_set
    if _subreaper_set:
        return True
    if not sys.platform.startswith("linux"):
        return False
    libc = ctypes.CDLL(None, use_errno=True)
    if libc.prctl(PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0) != 0:
        return False
    _subreaper_set = True
    return True


def new_pids(last: int, newest: int, top: int) -> list[int]:
    """Pids allocated after `last` up to `newest`, in allocation order (`top` is pid_max).

    Allocation wraps from ``pid_max - 1`` to a low number; more than ``pid_max`` allocations
    between two scans (hundreds of thousands a second) would go unseen. A long range is read
    from one listing of /proc instead of probing every number.
    """
    if newest == last:
        return []
    spans = [(last + 1, newest + 1)] if newest > last else [(last + 1, top), (1, newest + 1)]
    if sum(b - a for a, b in spans) <= _PROBE_LIMIT:
        return [pid for a, b in spans for pid in range(a, b)]
    with os.scandir("/proc") as entries:
        listed = sorted(int(e.name) for e in entries if e.name.isdigit())
    return [pid for a, b in spans for pid in listed if a <= pid < b]


class _Scanner:
    """Looks at each newly allocated pid once, for every step tree of this process.

    Probing per tree would read the same /proc entries once per running step; on a busy
    machine (a build spawning thousands of processes next to 16 idle agents) that was most of
    the monitor's cost.
    """

    def __init__(self) -> None:
        self.trees: dict[int, ProcessTree] = {}  # root pid -> tree
        self.by_token: dict[bytes, ProcessTree] = {}
        self.last = 0
        self.pending: set[int] = set()
        self.unclaimed: dict[int, int] = {}  # our children that belong to no tree (yet)
        self.own: dict[int, int] = {}  # the runner's own session leaders (pid -> starttime)
        self.spawning = 0  # own spawns between the fork and their registration
        self.me = os.getpid()

    def register(self, tree: ProcessTree, since_pid: int) -> None:
        if not self.trees:
            self.last, self.pending, self.unclaimed = since_pid, set(), {}
        else:
            self.last = min(self.last, since_pid)
        self.trees[tree.root] = tree
        self.by_token[tree.token] = tree

    def release(self, tree: ProcessTree) -> None:
        self.trees.pop(tree.root, None)
        self.by_token.pop(tree.token, None)

    def scan(self) -> None:
        newest = last_pid()
        top = pid_max()
        for pid in [*sorted(self.pending), *new_pids(self.last, newest, top)]:
            self.pending.discard(pid)
            if pid == self.me or pid in self.trees:
                continue
            stat = read_stat(pid)
            if stat is None:
                if 0 <= (newest - pid) % top < _FRONTIER:
                    self.pending.add(pid)
                continue
            owner = self._owner(stat)
            if owner is not None:
                if _thread_group_leader(pid):
                    owner.adopt(stat)
            elif stat.ppid == self.me and _thread_group_leader(pid):
                self.unclaimed[pid] = stat.starttime
        self.last = newest
        self._claim_orphans()
        if any(tree.killing for tree in self.trees.values()):
            self._claim_escapees()

    def _owner(self, stat: ProcStat) -> ProcessTree | None:
        """The tree `stat` belongs to: by parent, group or session, else by its token."""
        for tree in self.trees.values():
            if (
                stat.ppid in tree.members
                or stat.pgrp in tree.groups
                or stat.session in tree.sessions
            ):
                return tree
        if stat.ppid == self.me:
            return self.by_token.get(_token_of(stat.pid) or b"")
        return None

    def _claim_orphans(self) -> None:
        """Re-examine the runner's children that belonged to no tree when first seen.

        A zombie's environment cannot be read, so an exited parent of an escaped grandchild
        (``setsid`` then fork then exit) is recognised only by the session or group of the
        grandchild, which may be found after it.
        """
        for pid, starttime in list(self.unclaimed.items()):
            stat = read_stat(pid)
            if stat is None or stat.starttime != starttime or stat.ppid != self.me:
                del self.unclaimed[pid]
                continue
            for tree in self.trees.values():
                if stat.pgrp in tree.groups or stat.session in tree.sessions:
                    del self.unclaimed[pid]
                    tree.adopt(stat)
                    break

    def _claim_escapees(self) -> None:
        """Hand the runner's escaped children to ending trees (see the module docstring).

        Called while a tree is being killed. Our children are read from
        ``/proc/self/task/*/children`` (a subreaper's adopted orphans are attached to any of its
        threads): a few small reads, only while some step is ending.
        """
        if self.spawning:
            return  # an own process may be forked but not registered yet: decide next time
        session = os.getsid(0)
        members = [tree.members for tree in self.trees.values()]
        self.own = {p: t for p, t in self.own.items() if (s := read_stat(p)) and s.starttime == t}
        for pid in _children():
            if pid in self.trees or any(pid in m for m in members):
                continue
            stat = read_stat(pid)
            if stat is None or stat.ppid != self.me or stat.session == session:
                continue
            if self.own.get(pid) == stat.starttime or not _thread_group_leader(pid):
                continue
            owners = [t for t in self.trees.values() if t.started <= stat.starttime]
            if not owners or not all(tree.ending for tree in owners):
                continue  # older than every step, or a running step may own it
            killing = [t for t in owners if t.killing] or [
                t for t in self.trees.values() if t.killing
            ]
            if not killing:
                continue
            heir = killing[-1]
            self.unclaimed.pop(pid, None)
            heir.adopt(stat)
            heir.escapees.append(pid)

    def own_child(self, pid: int) -> None:
        stat = read_stat(pid)
        if stat is not None:
            self.own[pid] = stat.starttime


def _children() -> list[int]:
    """The pids of this process's children (every thread's)."""
    found: list[int] = []
    try:
        with os.scandir("/proc/self/task") as entries:
            tids = [e.name for e in entries]
    except OSError:
        return found
    for tid in tids:
        data = _read(f"/proc/self/task/{tid}/children")
        if data:
            found.extend(int(p) for p in data.split())
    return found


@contextlib.contextmanager
def own_spawn() -> Iterator[Callable[[int], None]]:
    """Wrap a spawn of one of the runner's own processes in a session of its own (not a step):
    call the function it yields with the new pid. Such a process looks like an escapee (our
    child, outside the runner's session and every step's); registered, it is never taken for
    one, and while the spawn is under way no escapee is decided on at all."""
    _SCANNER.spawning += 1
    try:
        yield _SCANNER.own_child
    finally:
        _SCANNER.spawning -= 1


def _token_of(pid: int) -> bytes | None:
    data = _read(f"/proc/{pid}/environ")
    if not data:
        return None
    prefix = f"{TOKEN_ENV}=".encode()
    for entry in data.split(b"\0"):
        if entry.startswith(prefix):
            return entry[len(prefix) :]
    return None


def kill_orphans(directory: Path) -> int:
    """Kill what a dead runner's steps left running in `directory` (their worktrees); returns
    how many processes were sent SIGKILL.

    The supervisor that enforced their limits died (SIGKILL, a lost machine), so an agent that
    hangs would run on for good. A step's process is found by its token in its environment
    and its working directory inside `directory` (a worktree deleted meanwhile still counts:
    the kernel reports it as ``<path> (deleted)``); then every process of its session goes,
    each step running in a session of its own. Call it only where no live runner can have a
    step in `directory` (its owner's lock held): the token says "a step's", not "a dead
    runner's". A process that left both the directory and its session, and cleared its
    environment, is not found. This process's session is never touched.
    """
    root = os.fsencode(directory.resolve()).rstrip(b"/") + b"/"
    me, own = os.getpid(), os.getsid(0)
    sessions: set[int] = set()
    with os.scandir("/proc") as entries:
        pids = [int(entry.name) for entry in entries if entry.name.isdigit()]
    for pid in pids:
        if pid == me or _token_of(pid) is None:
            continue
        with contextlib.suppress(OSError):
            cwd = os.fsencode(Path(f"/proc/{pid}/cwd").readlink())
            if (cwd + b"/").startswith(root):
                sessions.add(os.getsid(pid))
    sessions.discard(own)
    killed = 0
    for pid in pids:
        with contextlib.suppress(OSError):
            if pid != me and os.getsid(pid) in sessions:
                os.kill(pid, signal.SIGKILL)
                killed += 1
    return killed


_SCANNER = _Scanner()


class ProcessTree:
    """Every process that ever belonged to one step, found by `refresh`.

    `root` is the step's first process, a session and group leader (started with
    ``start_new_session``) whose environment carries ``RUNNER_STEP_TOKEN=<token>``;
    `since_pid` is the last pid allocated before it was spawned. Create the tree right after
    the spawn, with no checkpoint in between, and `release` it when the step is over.
    """

    def __init__(self, root: int, *, token: str, since_pid: int) -> None:
        self.root = root
        self.token = token.encode()
        # The root is our child: its pid cannot be reused before it is reaped, and after that
        # it is gone (`root_reaped`), so it needs no start time.
        self.members: dict[int, int] = {root: -1}  # pid -> starttime
        self.groups: set[int] = {root}
        self.sessions: set[int] = {root}
        self.root_reaped = False
        stat = read_stat(root)
        self.started = stat.starttime if stat is not None else 0
        # `ending`: the step is over (its tree is being killed, or was); `killing` while the
        # kill is under way, the only time an escapee can be handed to it and still be killed.
        self.ending = False
        self.killing = False
        self.escapees: list[int] = []
        self.reaped = 0
        self._me = os.getpid()
        _SCANNER.register(self, since_pid)

    def release(self) -> None:
        """The step is over: stop looking for its processes."""
        _SCANNER.release(self)

    def refresh(self) -> None:
        """Find the members spawned since the last look (by any tree of this process)."""
        _SCANNER.scan()

    def adopt(self, stat: ProcStat) -> None:
        self.members[stat.pid] = stat.starttime
        self.groups.add(stat.pgrp)
        self.sessions.add(stat.session)

    def _current(self, pid: int) -> ProcStat | None:
        """The member's stat, or None when it is gone (or its pid now names another process)."""
        if pid == self.root and self.root_reaped:
            return None
        stat = read_stat(pid)
        if stat is None:
            return None
        expected = self.members[pid]
        if expected != -1 and stat.starttime != expected:
            return None
        return stat

    def alive(self) -> list[ProcStat]:
        """Members that still exist, zombies included (a zombie still needs reaping)."""
        return [s for pid in self.members if (s := self._current(pid)) is not None]

    def running(self) -> list[int]:
        return [s.pid for s in self.alive() if s.state not in ("Z", "X")]

    def group_alive(self, alive: list[ProcStat]) -> bool:
        """True while any process is left in the step's own process group.

        While the root is unreaped its pid names the group, so ``killpg(root, 0)`` also sees
        members not probed yet; after that, the members found are asked instead (the group id
        could name somebody else's group once it is empty).
        """
        if self.root_reaped:
            return any(s.pgrp == self.root for s in alive)
        try:
            os.killpg(self.root, 0)
        except ProcessLookupError:
            return False
        except PermissionError:
            return True
        return True

    def rss_bytes(self) -> int:
        return sum(rss_bytes(pid) for pid in self.running())

    def pss_bytes(self) -> int:
        return sum(pss_bytes(pid) for pid in self.running())

    def signal_group(self, sig: int) -> None:
        """Signal the step's process group (only while the root's pid still names it)."""
        if not self.root_reaped:
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(self.root, sig)

    def settle(self) -> list[ProcStat]:
        """Reap the members that became our zombie children; return the members left.

        Only members are waited for, by pid: never ``waitpid(-1)``, which would steal the exit
        status of a child some other code is waiting for. The root is left to its `Child`,
        which reaps it.
        """
        left = []
        for stat in self.alive():
            if stat.pid != self.root and stat.ppid == self._me and stat.state == "Z":
                with contextlib.suppress(ChildProcessError, OSError):
                    if os.waitpid(stat.pid, os.WNOHANG)[0] == stat.pid:
                        self.reaped += 1
                        continue
            left.append(stat)
        return left


def signal_name(sig: int) -> str:
    try:
        return signal.Signals(sig).name
    except ValueError:
        return f"signal {sig}"
