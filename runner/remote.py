"""One step run on a cluster worker: a copy of the repository, a fresh worktree, the supervisor.

The controller sends a `StepTicket`: the pack, how to plan the round (its number, backend,
shim config, limits), where the repository is (`remote`, a git URL or path every worker can
reach) and what the worktree must hold (the `base` commit, plus `start`, the controller's
worktree content when it differs from the base, and the run's earlier evidence). `run_ticket`

1. keeps one bare copy of each remote per machine under the cache directory (the ticket's,
   else ``$RUNNER_WORKER_CACHE``, else ``~/.cache/ai-coding-control-plane/worker``), fetching
   the base commit when it is missing;
2. adds a fresh detached worktree at the base (holding `start` when given) and writes the
   carried evidence into it;
3. plans and runs the round exactly as the controller would (`runner.dispatch`), under a
   `Supervisor` of its own and the same limits;
4. returns a `StepReturn`: the `Dispatch`, the worktree's content as a `Change` (None when it
   is the base's), and the evidence files the round added or changed;
5. removes the worktree.

It knows nothing of Dask: `runner.distributed` wraps it in the task function and calls
`cancel_tickets` through the cluster when the controller stops a step.

The repository copy is shared by every worker process on the machine, so changing it (fetch,
worktree add and remove, prune) happens under a file lock. Each running step also holds a lock
on its own worktree; a worktree whose lock is free belongs to a worker that died, and is
removed by the next step that sets up on the machine.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import os
import shutil
import socket
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from pathlib import Path

import anyio

from protocol import ARTIFACTS_ROOT

from . import __version__, _proctree, git, transfer
from .dispatch import Dispatch, Kind, LimitOverrides, PlanOptions, execute
from .executor import StepOrder
from .log import configure_logging, get_logger
from .shim import ShimConfig
from .supervisor import Supervisor
from .transfer import Change, Files
from .workspace import TaskWorkspace, exclude_artifacts

log = get_logger("runner.remote")

CACHE_ENV = "RUNNER_WORKER_CACHE"
# The log level and format of a worker's steps (`runner --log-level/--log-format` read them too).
LOG_ENV = ("RUNNER_LOG_LEVEL", "RUNNER_LOG_FORMAT")
DEFAULT_CACHE = Path("~/.cache/ai-coding-control-plane/worker")
_LOCK_POLL_SEC = 0.02

# The steps running in this process, by ticket token (what `cancel_tickets` can reach).
_running: dict[str, Supervisor] = {}
_cancelled: set[str] = set()
_logging: list[bool] = []


class WorkerSetupError(Exception):
    """The worker cannot prepare the step (version, remote, base commit): names what."""


@dataclass(frozen=True)
class StepTicket:
    """Everything a worker needs to run one round; see the module docstring."""

    token: str
    task_id: str
    label: str
    kind: Kind
    pack: bytes
    round_number: int
    remote: str
    base: str
    thread_id: str | None = None
    backend: str | None = None
    shim_config: ShimConfig | None = None
    config_source: str = "the shim config"
    limits: LimitOverrides | None = None
    start: Change | None = None
    evidence: dict[str, bytes] = field(default_factory=dict)
    cache_dir: str | None = None
    version: str = __version__


@dataclass(frozen=True)
class StepReturn:
    """What came of a ticket: the round as dispatched, the change, the new evidence, and
    which machine ran it (for logs)."""

    dispatch: Dispatch
    change: Change | None
    evidence: Files
    worker: str


def cache_root(configured: str | None) -> Path:
    return Path(configured or os.environ.get(CACHE_ENV) or DEFAULT_CACHE).expanduser()


async def run_ticket(ticket: StepTicket) -> StepReturn:
    """Run the ticket's round on this machine; see the module docstring."""
    if ticket.version != __version__:
        raise WorkerSetupError(
            f"this worker runs ai-coding-control-plane {__version__}, the controller "
            f"{ticket.version}: install the same version on both"
        )
    if not _logging:  # a worker process is not the runner's CLI: configure as it would
        level, fmt = (os.environ.get(name) for name in LOG_ENV)
        configure_logging(level or "info", "json" if fmt == "json" else "auto")
        _logging.append(True)
    cache = cache_root(ticket.cache_dir)
    repo = await _repository(cache, ticket)
    work = cache / "work" / f"{ticket.task_id}-{ticket.label}-R{ticket.round_number}-{ticket.token}"
    async with _file_lock(_beside(work, ".lock")):
        async with _file_lock(_repo_lock(repo)):
            await git.git(repo, "worktree", "add", "--quiet", "--detach", str(work), ticket.base)
        try:
            return await _run_in(work, ticket)
        finally:
            with anyio.CancelScope(shield=True):
                async with _file_lock(_repo_lock(repo)):
                    await git.remove_worktree(repo, work)
                await anyio.to_thread.run_sync(_remove_leftovers, work)


async def _run_in(work: Path, ticket: StepTicket) -> StepReturn:
    if ticket.start is not None:
        await transfer.check_out(work, ticket.base, ticket.start.commit)
    await anyio.to_thread.run_sync(transfer.write_files, work, ticket.evidence)
    pack_file = _beside(work, ".pack.json")
    pack_file.write_bytes(ticket.pack)
    options = PlanOptions(
        workspace=work,
        config=ticket.shim_config,
        config_source=ticket.config_source,
        backend=ticket.backend,
        limits=ticket.limits,
        round_number=ticket.round_number,
    )
    ws = TaskWorkspace(ticket.task_id, ticket.label, work, base=ticket.base)
    order = StepOrder(ticket.kind, pack_file, options, ws, ticket.thread_id)
    plan = await anyio.to_thread.run_sync(order.plan)
    supervisor = Supervisor()
    _running[ticket.token] = supervisor
    try:
        if ticket.token in _cancelled:
            supervisor.cancel("cancelled by the controller")
        dispatch = await execute(plan, supervisor)
    finally:
        _running.pop(ticket.token, None)
        _cancelled.discard(ticket.token)
    message = f"{ticket.task_id} {ticket.label} R{ticket.round_number} on {socket.gethostname()}"
    change = await transfer.snapshot(work, ticket.base, message)
    evidence = await anyio.to_thread.run_sync(
        lambda: transfer.collect(work, ARTIFACTS_ROOT, skip=ticket.evidence)
    )
    return StepReturn(dispatch, change, evidence, worker=f"{socket.gethostname()}:{os.getpid()}")


def cancel_tickets(tokens: list[str]) -> int:
    """End the named steps running in this process as `cancelled` (a step still setting up
    is cancelled as it starts); returns how many were running. Call it on the event loop the
    steps run on."""
    found = 0
    for token in tokens:
        supervisor = _running.get(token)
        if supervisor is None:
            _cancelled.add(token)
            continue
        supervisor.cancel("cancelled by the controller")
        found += 1
    return found


async def _repository(cache: Path, ticket: StepTicket) -> Path:
    """This machine's bare copy of the ticket's remote, holding its base and start commits."""
    name = hashlib.sha256(ticket.remote.encode()).hexdigest()[:16]
    repo = cache / "repos" / f"{name}.git"
    async with _file_lock(_repo_lock(repo)):
        if not (repo / "HEAD").exists():
            repo.mkdir(parents=True, exist_ok=True)
            await git.git(repo, "init", "--quiet", "--bare")
            await exclude_artifacts(repo)
        if not await _has_commit(repo, ticket.base):
            await _fetch_base(repo, ticket.remote, ticket.base)
        if ticket.start is not None:
            await transfer.receive(repo, ticket.start, ticket.base)
        await _reap_stale(cache, repo)
    return repo


async def _fetch_base(repo: Path, remote: str, base: str) -> None:
    """Fetch `base` by its id; a server that refuses that gets asked for its branches and the
    bases the controller published (``refs/runner/bases/*``)."""
    try:
        await git.git(repo, "fetch", "--quiet", "--no-tags", remote, base)
        return
    except git.GitError as first:
        problem = first.stderr.strip()
    with contextlib.suppress(git.GitError):
        await git.git(
            repo, "fetch", "--quiet", "--no-tags", remote,
            "+refs/heads/*:refs/cache/heads/*", "+refs/runner/*:refs/cache/runner/*",
        )  # fmt: skip
    if not await _has_commit(repo, base):
        raise WorkerSetupError(f"cannot fetch base commit {base} from {remote}: {problem[:300]}")


async def _has_commit(repo: Path, commit: str) -> bool:
    out = await git.git(repo, "cat-file", "-t", commit, check=False)
    return out.strip() == "commit"


async def _reap_stale(cache: Path, repo: Path) -> None:
    """Remove worktrees whose step's lock is free: their worker died mid-step."""
    work = cache / "work"
    if not work.is_dir():
        return
    for lock in work.glob("*.lock"):
        async with _file_lock(lock, wait=False) as held:
            if not held:
                continue  # a running step
            stale = lock.with_name(lock.name.removesuffix(".lock"))
            killed = await anyio.to_thread.run_sync(_proctree.kill_orphans, stale)
            if killed:
                log.warning("worker.orphans_killed", path=str(stale), processes=killed)
            await git.remove_worktree(repo, stale)
            await anyio.to_thread.run_sync(_remove_leftovers, stale)
            log.info("worker.stale_removed", path=str(stale))


def _remove_leftovers(work: Path) -> None:
    shutil.rmtree(work, ignore_errors=True)
    for suffix in (".pack.json", ".lock"):
        with contextlib.suppress(FileNotFoundError):
            _beside(work, suffix).unlink()


def _beside(path: Path, suffix: str) -> Path:
    """`path` with `suffix` appended (ids may hold dots, so never `with_suffix`)."""
    return path.with_name(path.name + suffix)


def _repo_lock(repo: Path) -> Path:
    return _beside(repo, ".lock")


@contextlib.asynccontextmanager
async def _file_lock(path: Path, *, wait: bool = True) -> AsyncIterator[bool]:
    """Hold an exclusive `flock` on `path` (yields False without waiting when `wait` is False
    and another holder has it). The descriptor is close-on-exec: a step's processes never
    inherit it, so the lock ends with the worker process that took it. Waiting polls on the
    event loop rather than blocking a thread in `flock`, so a cancelled step stops waiting."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o644)
    try:
        while True:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except BlockingIOError:
                if not wait:
                    yield False
                    return
                await anyio.sleep(_LOCK_POLL_SEC)
        yield True
    finally:
        os.close(fd)
