"""Task chains checked by worker processes while this one reads the project chain: what
`verify_project(jobs=N)` adds. Each worker checks whole chains with `check_task`; what it
finds is used only where this process would have found the same (`TaskChecks`).
"""

from __future__ import annotations

import contextlib
import math
import multiprocessing
import os
import threading
from collections import deque
from collections.abc import Callable
from concurrent.futures import FIRST_COMPLETED, Future, ProcessPoolExecutor, wait
from pathlib import Path

from protocol.ledger_events import MAX_SAFE_INT

from .commit_process import die_with_parent
from .store import ProjectPaths
from .task_check import LinkDigest, TaskChecked, check_task, links_agree

# Task chains that hold less than this are checked in one process even when workers are asked
# for: a worker starts in 0.25-0.55 s, the time this process takes to check 40-90 MB, and
# gains nothing on chains that take less than about twice that (docs/performance.md).
PARALLEL_BYTES = 128 << 20
# The least a worker is given at a time (else about a sixteenth of a process's share).
CHUNK_BYTES = 1 << 20


def available_cpus() -> int:
    """The CPUs this process may use: those it may run on (its affinity, where the platform
    tells), capped by a cgroup CPU quota (a container's `--cpus`, a systemd `CPUQuota=`),
    which the affinity does not show: workers beyond the quota only take turns."""
    cpus = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    quota = cgroup_cpu_quota()
    if quota is not None:
        return max(1, min(cpus or 1, math.ceil(quota)))
    return cpus or 1


def cgroup_cpu_quota(
    proc_cgroup: Path = Path("/proc/self/cgroup"), mount: Path = Path("/sys/fs/cgroup")
) -> float | None:
    """The tightest CPU quota, in CPUs, of this process's cgroups and their ancestors (v2
    `cpu.max`; v1 `cpu.cfs_quota_us` over `cpu.cfs_period_us`), or None without one. A
    cgroup path not found under the mount (another cgroup namespace) still has its
    ancestors read, the mount's root among them."""
    try:
        entries = [line.split(":", 2) for line in proc_cgroup.read_text().splitlines()]
    except OSError:
        return None
    quotas: list[float] = []
    for entry in entries:
        if len(entry) != 3:
            continue
        _, controllers, path = entry
        if not controllers:  # v2, mounted alone or beside v1 ("hybrid")
            for base in (mount, mount / "unified"):
                quotas += _quotas(base, path, _v2_quota)
        elif "cpu" in controllers.split(","):
            quotas += _quotas(mount / controllers, path, _v1_quota)
    return min(quotas, default=None)


def _quotas(base: Path, path: str, read: Callable[[Path], float | None]) -> list[float]:
    if not base.is_dir():
        return []
    found = []
    directory = base / path.lstrip("/")
    while True:
        with contextlib.suppress(OSError, ValueError, IndexError, ZeroDivisionError):
            quota = read(directory)
            if quota is not None:
                found.append(quota)
        if directory == base or base not in directory.parents:
            return found
        directory = directory.parent


def _v2_quota(directory: Path) -> float | None:
    limit, period = (directory / "cpu.max").read_text().split()[:2]
    return None if limit == "max" else int(limit) / int(period)


def _v1_quota(directory: Path) -> float | None:
    limit = int((directory / "cpu.cfs_quota_us").read_text())
    if limit <= 0:  # -1: no quota
        return None
    return limit / int((directory / "cpu.cfs_period_us").read_text())


class TaskChecks:
    """The task chains' checks: made here when asked for, or ahead of time in `jobs - 1`
    worker processes, this one taking its share once it has read the project chain.

    The chains are cut into chunks, in name order (the report's). A feeder thread keeps each
    worker one chunk ahead, from the first; this process takes the rest from the last, so a
    worker's start-up (an interpreter and its imports: 0.25 s, 0.55 s under the `runner`
    script, which the worker imports again) is not time lost. Nothing is ever cancelled: on
    Python 3.11.7 a pool that breaks (a worker killed) with a cancelled future leaves the
    other workers running and the interpreter's exit waiting for them (CPython gh-107219).

    A worker checks a chain before the project chain has been read (as if every event were
    linked: `last_linked` is the largest seq). Its check is taken only when it is one this
    process could have made: it found nothing wrong and agrees with the links, event for event
    (an event the project chain does not link, or a running writer's events and links added
    since the worker read the chain, make them differ). Anything else, damage included, is
    checked again here, so that the report is the one a single process makes. A worker that
    fails or dies costs only time."""

    def __init__(
        self, paths: ProjectPaths, chain_id: str, names: list[str], dirty: bool, jobs: int
    ) -> None:
        self.paths = paths
        self.chain_id = chain_id
        self.dirty = dirty
        self.names = names
        self.jobs = jobs
        self.pool: ProcessPoolExecutor | None = None
        self.feeder: threading.Thread | None = None
        self.lock = threading.Lock()  # the feeder's and this thread's: `unsent`, `sent`
        self.unsent: deque[list[str]] = deque()
        self.sent: dict[str, Future[list[TaskChecked]]] = {}
        self.ready: dict[str, TaskChecked] = {}  # from workers, not yet asked for
        # Made here once the project head is known, or the error that stopped the check.
        self.here: dict[str, TaskChecked | Exception] = {}

    def __enter__(self) -> TaskChecks:
        if self.jobs > 1 and len(self.names) > 1:
            self._start()
        return self

    def __exit__(self, *exc: object) -> None:
        with self.lock:
            self.unsent.clear()
        if self.feeder is not None:
            self.feeder.join()  # once the chunks it sent are done: at most one per worker more
        if self.pool is not None:
            self.pool.shutdown()

    def _start(self) -> None:
        sizes = [_size(self.paths.task_events(name)) for name in self.names]
        total = sum(sizes)
        if total < PARALLEL_BYTES:
            return  # starting the workers would cost more than they save
        target = max(total // (self.jobs * 16), CHUNK_BYTES)
        chunks: list[list[str]] = [[]]
        size = 0
        for name, name_size in zip(self.names, sizes, strict=True):
            if size >= target:
                chunks.append([])
                size = 0
            chunks[-1].append(name)
            size += name_size
        self.unsent.extend(chunks)
        workers = min(self.jobs - 1, len(chunks))
        # `spawn`: a fork of a process with threads (an event loop's, a logger's) may deadlock.
        # The workers die with this process (`die_with_parent`), not live on after a kill.
        self.pool = ProcessPoolExecutor(
            workers,
            mp_context=multiprocessing.get_context("spawn"),
            initializer=die_with_parent,
            initargs=(os.getpid(),),
        )
        # The first chunks go now, before this process reads the project chain.
        in_flight: set[Future[list[TaskChecked]]] = set()
        self._send(self.pool, workers, in_flight)
        self.feeder = threading.Thread(
            target=self._feed,
            args=(self.pool, workers, in_flight),
            name="verify-feeder",
            daemon=True,
        )
        self.feeder.start()

    def _feed(
        self,
        pool: ProcessPoolExecutor,
        workers: int,
        in_flight: set[Future[list[TaskChecked]]],
    ) -> None:
        while in_flight:
            _, still = wait(in_flight, return_when=FIRST_COMPLETED)
            in_flight = set(still)
            self._send(pool, workers, in_flight)

    def _send(
        self,
        pool: ProcessPoolExecutor,
        workers: int,
        in_flight: set[Future[list[TaskChecked]]],
    ) -> None:
        """Send chunks from the first until each worker has one more waiting."""
        root, project_id = str(self.paths.root), self.paths.project_id
        with self.lock:
            while self.unsent and len(in_flight) <= workers:
                chunk = self.unsent.popleft()
                try:
                    future = pool.submit(
                        _check_tasks, root, project_id, self.chain_id, chunk, self.dirty
                    )
                except Exception:  # a broken pool: this process checks the rest
                    self.unsent.appendleft(chunk)
                    return
                in_flight.add(future)
                for name in chunk:
                    self.sent[name] = future

    def take_share(self, last_linked: int) -> None:
        """Check here the chunks no worker has been sent, the last first. An error is kept
        for `result`, which raises it in its turn, as one process would."""
        while True:
            with self.lock:
                if not self.unsent:
                    return
                chunk = self.unsent.pop()
            for name in chunk:
                try:
                    self.here[name] = self._check_here(name, last_linked)
                except Exception as exc:
                    self.here[name] = exc

    def result(
        self, name: str, last_linked: int, links: LinkDigest | None, head_seq: int | None
    ) -> TaskChecked:
        here = self.here.pop(name, None)
        if isinstance(here, Exception):
            raise here
        if here is not None:
            return here
        with self.lock:
            future = self.sent.pop(name, None)
        if future is not None and name not in self.ready:
            # A worker's error: the chains are checked here, where a real one is raised again.
            with contextlib.suppress(Exception):
                self.ready.update((c.task_id, c) for c in future.result())
        checked = self.ready.pop(name, None)
        # With the head known, agreeing links also mean no event above it: the worker counted
        # every event as linked, and the links end at the head.
        if (
            checked is not None
            and checked.problem is None
            and (head_seq is None or links_agree(checked, links))
        ):
            return checked
        return self._check_here(name, last_linked)

    def _check_here(self, name: str, last_linked: int) -> TaskChecked:
        return check_task(self.paths, self.chain_id, name, last_linked, self.dirty)


def _check_tasks(
    root: str, project_id: str, chain_id: str, names: list[str], dirty: bool
) -> list[TaskChecked]:
    """A worker process's part (see `TaskChecks`)."""
    paths = ProjectPaths.of(root, project_id)
    return [check_task(paths, chain_id, name, MAX_SAFE_INT, dirty) for name in names]


def _size(path: Path) -> int:
    try:
        return path.stat().st_size
    except OSError:
        return 0  # checked, and reported, with the rest


__all__ = ["CHUNK_BYTES", "PARALLEL_BYTES", "TaskChecks", "available_cpus", "cgroup_cpu_quota"]
