"""Putting a campaign together from its settings: inputs checked first, then the run.

`load_inputs` reads and validates everything a campaign needs (queue, config file, step pack
and backend maps, shim config, frozen boundary) before anything is written, so bad input is an
error with the file, field and reason and nothing changes. `run_campaign` holds the queue lock,
starts or connects to the executor's cluster (``--executor dask``/``dask-local``), opens the
ledger, reconciles after a crash, and runs the scheduler.
"""

from __future__ import annotations

import contextlib
import re
import sys
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field, replace
from pathlib import Path

import anyio

import protocol
from ledger import open_ledger
from protocol import CampaignConfig, QueueTask, TaskQueue, TaskStatus
from protocol.ledger_events import ExecutionBlockedUnapproved

from . import git
from .campaign import Campaign, CampaignLimits, CampaignReport, record_freeze
from .cycle import EngineOptions
from .dispatch import LimitOverrides
from .distributed import ClusterSettings, check_settings, open_dask
from .executor import Executor
from .health import BackendProblem, check_backends
from .live import Board, is_terminal, quiet_logs, redraw
from .progress import Progress, QueueKeeper, load_queue, queue_lock
from .requirements import check_freeze
from .shim import ShimConfig, load_config
from .workspace import GitWorktrees, InPlace, Workspaces


class EngineError(Exception):
    """A campaign cannot start: bad settings, unhealthy backends, an unapproved freeze."""


class BackendsUnhealthy(EngineError):
    def __init__(self, problems: list[BackendProblem]) -> None:
        self.problems = problems
        listed = "\n  ".join(str(p) for p in problems)
        super().__init__(
            f"backend health check failed (use --skip-backend-health-check to run anyway):\n"
            f"  {listed}"
        )


class FreezeBlocked(EngineError):
    """The requirements freeze is not approved and current (`--require-freeze`)."""


@dataclass(frozen=True)
class Settings:
    """Everything `runner campaign` was given (paths resolved by the CLI)."""

    queue_path: Path
    progress_dir: Path
    workspace: Path
    ledger_root: Path
    project_id: str
    worktree_dir: Path
    config: CampaignConfig = field(default_factory=CampaignConfig)
    shim_config_path: Path | None = None
    step_pack_map_path: Path | None = None
    backend_map_path: Path | None = None
    require_freeze: bool = False
    input_dir: Path | None = None
    skip_health_check: bool = False
    rollback_on_fail: bool = False
    run_prefix: str = "run"
    seed: int | None = None
    live: bool = True
    lock_timeout: float = 0.0
    only_keys: tuple[str, ...] = ()
    cluster: ClusterSettings = field(default_factory=ClusterSettings)
    # Packs given for this run (`run-cycle --step-pack-file`): they win over both maps.
    step_packs: dict[str, Path] = field(default_factory=dict)


@dataclass(frozen=True)
class Inputs:
    queue: TaskQueue
    options: EngineOptions
    limits: CampaignLimits
    shim: ShimConfig | None


def load_inputs(settings: Settings) -> Inputs:
    """Read and check every input; raises `ProtocolError` / `EngineError` naming the file."""
    check_settings(settings.cluster)
    queue = load_queue(settings.queue_path)
    cfg = settings.config
    shim = load_config(settings.shim_config_path) if settings.shim_config_path else None
    packs = _resolve_map(cfg.step_pack_map, settings.queue_path.parent)
    if settings.step_pack_map_path:
        raw = protocol.read(settings.step_pack_map_path, dict[protocol.SafeId, str])
        packs.update(_resolve_map(raw, settings.step_pack_map_path.parent))
    packs.update(settings.step_packs)
    backends = dict(cfg.worker_backend_map)
    if settings.backend_map_path:
        backends.update(protocol.read(settings.backend_map_path, dict[protocol.SafeId, str]))
    keys = {t.key for t in queue.tasks}
    for name, mapping in (("step pack map", packs), ("worker backend map", backends)):
        unknown = sorted(set(mapping) - keys)
        if unknown:
            raise EngineError(f"{name} names tasks not in the queue: {', '.join(unknown)}")
    for key, path in packs.items():
        pack = protocol.read(path, protocol.StepPack)
        if pack.task_id != key:
            raise EngineError(f"{path}: task_id {pack.task_id!r} is not the mapped task {key!r}")
    unknown_only = sorted(set(settings.only_keys) - keys)
    if unknown_only:
        raise EngineError(f"no such task in the queue: {', '.join(unknown_only)}")
    boundary = Progress(settings.progress_dir).load_boundary()
    limits = LimitOverrides(
        max_runtime_sec=cfg.limits.max_runtime_sec,
        max_silence_sec=cfg.limits.max_silence_sec,
        max_memory_mb=cfg.limits.max_memory_mb,
    )
    options = EngineOptions(
        progress_dir=settings.progress_dir,
        run_prefix=settings.run_prefix,
        max_rework_rounds=cfg.max_rework_rounds,
        verify_commands=cfg.verify_commands,
        auto_plan_missing=cfg.auto_plan_missing,
        step_packs=packs,
        backends=backends,
        default_backend=cfg.worker_backend,
        shim_config=shim,
        shim_config_source=str(settings.shim_config_path or "the built-in gxd-subagent-shim"),
        limits=limits,
        hooks=cfg.hooks,
        boundary=boundary,
    )
    campaign_limits = CampaignLimits(
        max_parallel_steps=cfg.max_parallel_steps,
        max_cycles=cfg.max_cycles,
        max_stagnant_cycles=cfg.max_stagnant_cycles,
        backoff=cfg.backoff,
        seed=settings.seed,
    )
    return Inputs(queue, options, campaign_limits, shim)


def _resolve_map(mapping: dict[str, str], base: Path) -> dict[str, Path]:
    return {key: (base / value) for key, value in mapping.items()}


def health_problems(settings: Settings, inputs: Inputs) -> list[BackendProblem]:
    wanted = [
        (t.key, inputs.options.backends.get(t.key) or t.worker_backend
         or inputs.options.default_backend)
        for t in inputs.queue.tasks
        if t.status in (TaskStatus.PENDING, TaskStatus.IN_PROGRESS) and _selected(settings, t)
    ]  # fmt: skip
    return check_backends(wanted, inputs.shim, inputs.options.shim_config_source)


def _selected(settings: Settings, task: QueueTask) -> bool:
    return not settings.only_keys or task.key in settings.only_keys


async def _workspaces(settings: Settings) -> Workspaces:
    if await git.is_repo(settings.workspace):
        return await GitWorktrees.open(settings.workspace, settings.worktree_dir)
    return InPlace(
        settings.workspace,
        settings.progress_dir / "checkpoints",
        rollback_on_fail=settings.rollback_on_fail,
        exclude=(settings.progress_dir, settings.ledger_root, settings.worktree_dir),
    )


def run_campaign(
    settings: Settings, *, on_ready: Callable[[Board], None] | None = None
) -> CampaignReport:
    """Check inputs, hold the queue lock and run the campaign to its end (blocking)."""
    inputs = load_inputs(settings)
    input_dir = settings.input_dir if settings.require_freeze else None
    if input_dir is not None and not input_dir.is_dir():  # a typo, not a missing freeze
        raise EngineError(f"{input_dir}: --input-dir not found")
    # On a cluster of its own the backends' binaries are the workers' (their resources say
    # which they have); this machine needs none of them.
    if not settings.skip_health_check and settings.cluster.executor != "dask":
        problems = health_problems(settings, inputs)
        if problems:
            raise BackendsUnhealthy(problems)
    with queue_lock(settings.queue_path, timeout=settings.lock_timeout):
        # Read again under the lock: another process may have changed it meanwhile.
        inputs = replace(inputs, queue=load_queue(settings.queue_path))
        return anyio.run(_run, settings, inputs, on_ready)


async def _run(
    settings: Settings, inputs: Inputs, on_ready: Callable[[Board], None] | None
) -> CampaignReport:
    live = settings.live and is_terminal()
    board = Board(quiet_log=live)
    if on_ready:
        on_ready(board)
    # Before the ledger: a workspace that cannot take merges is refused with nothing written.
    workspaces = await _workspaces(settings)
    async with (
        _executor(settings, inputs) as executor,
        open_ledger(
            settings.ledger_root,
            settings.project_id,
            create=True,
            lock_timeout=settings.lock_timeout,
        ) as ledger,
    ):
        if settings.require_freeze:
            check = check_freeze(settings.input_dir or settings.progress_dir)
            await record_freeze(ledger, check, settings.run_prefix)
            if check.decision != "execution_started":
                raise FreezeBlocked(
                    f"execution blocked: {check.reason}: {check.detail} "
                    f"(recorded as {ExecutionBlockedUnapproved.__struct_config__.tag})"
                )
        keeper = QueueKeeper(settings.queue_path, Progress(settings.progress_dir), inputs.queue)
        only = set(settings.only_keys)
        campaign = Campaign(
            keeper=keeper,
            ledger=ledger,
            workspaces=workspaces,
            options=inputs.options,
            limits=inputs.limits,
            reporter=board,
            only=(lambda t: t.key in only) if only else None,
            executor=executor,
        )
        if not live:
            return await campaign.run()
        with quiet_logs():
            async with anyio.create_task_group() as tg:
                tg.start_soon(redraw, board, sys.stderr)
                try:
                    report = await campaign.run()
                finally:
                    tg.cancel_scope.cancel()
        return report


@contextlib.asynccontextmanager
async def _executor(settings: Settings, inputs: Inputs) -> AsyncIterator[Executor | None]:
    """None for the local executor (the campaign makes it); else the Dask cluster's, opened
    before the ledger so that a cluster that cannot be had leaves nothing written."""
    cluster = settings.cluster
    if cluster.executor == "local":
        yield None
        return
    if not await git.is_repo(settings.workspace):
        raise EngineError(
            f"--executor {cluster.executor}: the workspace {settings.workspace} is not a git "
            "repository (workers get their work from git)"
        )
    async with open_dask(
        cluster,
        repo=settings.workspace,
        parallel=inputs.limits.max_parallel_steps,
        default_cache=settings.progress_dir / "worker-cache",
    ) as executor:
        yield executor


def default_project_id(workspace: Path) -> str:
    """A ledger project id from the workspace's directory name (made a safe id)."""
    name = re.sub(r"[^A-Za-z0-9._-]+", "-", workspace.resolve().name).strip(".-")
    name = re.sub(r"\.{2,}", ".", name)[:100]
    return name or "project"
