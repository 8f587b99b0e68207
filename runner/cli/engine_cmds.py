"""`runner campaign` and `runner run-cycle`: the engine from the command line."""

from __future__ import annotations

import dataclasses
import signal
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

import click
import msgspec

import protocol
from kernel import triage
from ledger import project_ids
from protocol import CampaignConfig, ClusterConfig
from runner.campaign import CampaignReport
from runner.cli._group import EXIT_CLUSTER, FiniteFloatRange
from runner.distributed import EXECUTOR_KINDS, ClusterSettings
from runner.engine import EngineError, Settings, default_project_id, run_campaign
from runner.live import Board, is_terminal
from runner.progress import load_queue

F = TypeVar("F", bound=Callable[..., Any])

# Exit codes of a campaign (docs/campaign.md).
EXIT_DONE = 0
EXIT_UNFINISHED = 1


def engine_options(f: F) -> F:
    """The options `campaign` and `run-cycle` share."""
    options = [
        click.option("--queue-path", type=click.Path(dir_okay=False, path_type=Path),
                     default=Path("progress/task_queue.json"), show_default=True),
        click.option("--progress-dir", type=click.Path(file_okay=False, path_type=Path),
                     help="Scoreboard, trends, prepared packs [default: the queue's directory]."),
        click.option("--workspace", type=click.Path(file_okay=False, exists=True, path_type=Path),
                     default=Path(), show_default=True,
                     help="The project the agents work on (a git repository, or any directory)."),
        click.option("--config", "config_file", type=click.Path(dir_okay=False, path_type=Path),
                     help="Campaign config file (JSON, `runner schema campaign-config`)."),
        click.option("--shim-config", type=click.Path(dir_okay=False, path_type=Path),
                     help="Backend command templates (docs/supervisor.md)."),
        click.option("--step-pack-map-file", type=click.Path(dir_okay=False, path_type=Path),
                     help="JSON: task key -> StepPack file (relative to the map)."),
        click.option("--worker-backend-map-file", type=click.Path(dir_okay=False, path_type=Path),
                     help="JSON: task key -> backend name."),
        click.option("--worker-backend", help="Backend for tasks the maps do not name."),
        click.option("--auto-plan-missing", is_flag=True, default=None,
                     help="Plan a StepPack from the task's intake when it has none "
                          "(none mapped, no step_pack_ref)."),
        click.option("--max-rework-rounds", type=click.IntRange(min=0)),
        click.option("--verify-commands", is_flag=True, default=None,
                     help="Re-run each pack's commands in the workspace before reviewing."),
        click.option("--max-runtime-sec", type=FiniteFloatRange(min=0, min_open=True)),
        click.option("--max-silence-sec", type=FiniteFloatRange(min=0, min_open=True)),
        click.option("--max-memory-mb", type=click.IntRange(min=1)),
        click.option("--ledger-root", type=click.Path(file_okay=False, path_type=Path),
                     help="[default: <progress-dir>/ledger]"),
        click.option("--project-id", help="Ledger project [default: the workspace's name]."),
        click.option("--worktree-dir", type=click.Path(file_okay=False, path_type=Path),
                     help="Where task worktrees live [default: <progress-dir>/worktrees]."),
        click.option("--require-freeze", is_flag=True,
                     help="Refuse to start unless the requirements freeze is approved and "
                          "current (recorded in the ledger either way)."),
        click.option("--input-dir", type=click.Path(file_okay=False, path_type=Path),
                     help="Where the freeze lives [default: the progress dir]."),
        click.option("--skip-backend-health-check", is_flag=True),
        click.option("--rollback-on-fail", is_flag=True,
                     help="Without git: roll a failed attempt's changes back."),
        click.option("--run-prefix", default="run", show_default=True,
                     help="Run id suffix of auto-planned steps (<task>_<prefix>)."),
        click.option("--seed", type=int, help="Seed for backoff jitter."),
        click.option("--no-live", is_flag=True, help="No live view on a terminal."),
        click.option("--lock-timeout", type=FiniteFloatRange(min=0), default=0.0,
                     show_default=True, help="Wait this long for another runner's locks."),
        click.option("--executor", type=click.Choice(EXECUTOR_KINDS),
                     help="Where steps run: here, on the Dask cluster of --scheduler, or on a "
                          "Dask LocalCluster of --workers processes (docs/scale-out.md) "
                          "[default: the config's cluster.executor, else local]."),
        click.option("--scheduler", metavar="ADDRESS",
                     help="The Dask scheduler of --executor dask (tcp://HOST:8786)."),
        click.option("--workers", type=click.IntRange(min=1),
                     help="Worker processes of --executor dask-local [default: 2]."),
        click.option("--remote", metavar="URL",
                     help="Git remote the workers fetch from [default: the workspace's path]; "
                          "each base commit is pushed to it (refs/runner/bases/*)."),
        click.option("--worker-cache-dir", type=click.Path(file_okay=False, path_type=Path),
                     help="Workers' repository cache [default: <progress-dir>/worker-cache "
                          "for dask-local, the worker's own for dask]."),
        click.option("--connect-timeout", type=FiniteFloatRange(min=0, min_open=True),
                     help="Seconds to reach the Dask scheduler and see a worker there "
                          "[default: the config's cluster.connect_timeout_sec, 30]."),
    ]  # fmt: skip
    for option in reversed(options):
        f = option(f)
    return f


def _settings(
    kw: dict[str, Any], overrides: dict[str, Any], only: tuple[str, ...] = ()
) -> Settings:
    queue_path: Path = kw["queue_path"]
    progress = kw["progress_dir"] or queue_path.parent
    config = CampaignConfig()
    if kw["config_file"] is not None:
        config = protocol.read(kw["config_file"], CampaignConfig)
    changes: dict[str, Any] = {k: v for k, v in overrides.items() if v is not None}
    cli_limits = {
        name: kw[name]
        for name in ("max_runtime_sec", "max_silence_sec", "max_memory_mb")
        if kw[name] is not None
    }
    if cli_limits:
        changes["limits"] = msgspec.structs.replace(config.limits, **cli_limits)
    for name in ("worker_backend", "auto_plan_missing", "verify_commands", "max_rework_rounds"):
        if kw[name] is not None:
            changes[name] = kw[name]
    config = msgspec.structs.replace(config, **changes)
    workspace: Path = kw["workspace"].resolve()
    ledger_root = (kw["ledger_root"] or progress / "ledger").resolve()
    return Settings(
        queue_path=queue_path.resolve(),
        progress_dir=progress.resolve(),
        workspace=workspace,
        ledger_root=ledger_root,
        project_id=kw["project_id"] or _default_project(workspace, ledger_root),
        worktree_dir=(kw["worktree_dir"] or progress / "worktrees").resolve(),
        config=config,
        shim_config_path=kw["shim_config"],
        step_pack_map_path=kw["step_pack_map_file"],
        backend_map_path=kw["worker_backend_map_file"],
        require_freeze=kw["require_freeze"],
        input_dir=kw["input_dir"],
        skip_health_check=kw["skip_backend_health_check"],
        rollback_on_fail=kw["rollback_on_fail"],
        run_prefix=kw["run_prefix"],
        seed=kw["seed"],
        live=not kw["no_live"],
        lock_timeout=kw["lock_timeout"],
        only_keys=only,
        cluster=_cluster(kw, config.cluster),
    )


def _default_project(workspace: Path, ledger_root: Path) -> str:
    """The workspace's name, unless the ledger root already holds other projects and not that
    one: a workspace renamed or moved would otherwise start a new ledger project silently,
    its history left in the old one."""
    default = default_project_id(workspace)
    others = project_ids(ledger_root)
    if others and default not in others:
        names = ", ".join(others)
        raise EngineError(
            f"{ledger_root} holds the ledger of {names}, not of {default!r} (the default "
            f"--project-id: the workspace's name); pass --project-id {others[0]} to go on "
            f"recording there, or --project-id {default} to start a new project"
        )
    return default


def _cluster(kw: dict[str, Any], config: ClusterConfig) -> ClusterSettings:
    """The config file's cluster section with the command line's options over it. An
    executor named on the command line takes none of the file's executor-specific options
    (a file's scheduler must not follow `--executor dask-local`)."""
    if kw["executor"] is not None and kw["executor"] != config.executor:
        config = ClusterConfig(executor=kw["executor"])

    def pick(name: str, default: Any) -> Any:
        return kw[name] if kw[name] is not None else default

    return ClusterSettings(
        executor=config.executor,
        scheduler=pick("scheduler", config.scheduler),
        workers=pick("workers", config.workers),
        remote=pick("remote", config.remote),
        cache_dir=kw["worker_cache_dir"].resolve() if kw["worker_cache_dir"] else None,
        connect_timeout=pick("connect_timeout", config.connect_timeout_sec),
    )


def _run(settings: Settings, *, one_cycle: bool = False) -> None:
    boards: list[Board] = []
    report = run_campaign(settings, on_ready=boards.append)
    _print_report(report, boards[0] if boards else None)
    if report.signal is not None:
        click.echo(
            f"stopped by {signal.Signals(report.signal).name}: running steps were killed and "
            "recorded as interrupted; run the same command again to resume",
            err=True,
        )
        sys.exit(128 + report.signal)
    if report.executor_lost is not None:
        click.echo(
            f"the cluster went away ({report.executor_lost}): running steps were recorded as "
            "interrupted and given back; run the same command again to resume",
            err=True,
        )
        sys.exit(EXIT_CLUSTER)
    if one_cycle and report.cycles:  # the cycle's own task, whatever the others' state
        sys.exit(EXIT_DONE if report.completed else EXIT_UNFINISHED)
    if one_cycle and settings.only_keys:
        queue = load_queue(settings.queue_path)
        task = next(t for t in queue.tasks if t.key in settings.only_keys)
        reasons = "; ".join(triage.ineligibility(queue, task)) or "not selected"
        raise EngineError(f"task {task.key} is not eligible to run: {reasons}")
    sys.exit(EXIT_DONE if _all_done(settings) else EXIT_UNFINISHED)


def _all_done(settings: Settings) -> bool:
    queue = load_queue(settings.queue_path)
    wanted = [t for t in queue.tasks if not settings.only_keys or t.key in settings.only_keys]
    return all(t.status == "completed" for t in wanted)


def _print_report(report: CampaignReport, board: Board | None) -> None:
    if board is not None and is_terminal(sys.stdout):
        for line in board.summary():
            click.echo(line)
    click.echo(
        f"{report.campaign_id}: {report.cycles} cycles, stopped: {report.stop_reason}; "
        f"completed {len(report.completed)}, failed {len(report.failed)}, "
        f"blocked {len(report.blocked)}, interrupted {len(report.interrupted)}"
        + (f", reconciled after a crash {len(report.reconciled)}" if report.reconciled else "")
    )


@click.command()
@engine_options
@click.option("--max-parallel-steps", type=click.IntRange(min=1))
@click.option("--max-cycles", type=click.IntRange(min=1))
@click.option("--max-stagnant-cycles", type=click.IntRange(min=1))
def campaign(
    max_parallel_steps: int | None,
    max_cycles: int | None,
    max_stagnant_cycles: int | None,
    **kw: Any,
) -> None:
    """Run cycles over the queue until it drains (docs/campaign.md).

    Exit code: 0 every task completed; 1 the campaign ended with tasks not completed (failed,
    blocked, or stopped by a limit); 2 bad input; 3 another runner holds the queue or ledger;
    4 the Dask cluster could not be reached or went away; 128+N stopped by signal N (resume
    by running the same command again).
    """
    overrides = {
        "max_parallel_steps": max_parallel_steps,
        "max_cycles": max_cycles,
        "max_stagnant_cycles": max_stagnant_cycles,
    }
    _run(_settings(kw, overrides))


@click.command("run-cycle")
@engine_options
@click.option("--task-key", help="Run this task (it must be eligible) instead of the next one.")
@click.option("--step-pack-file", type=click.Path(dir_okay=False, path_type=Path),
              help="The StepPack for the task this cycle runs.")  # fmt: skip
@click.option("--auto-checkpoint", is_flag=True,
              help="Accepted for the original's CLI: every attempt is checkpointed (without git) "
                   "or isolated in a worktree (with git) anyway.")  # fmt: skip
def run_cycle(
    task_key: str | None, step_pack_file: Path | None, auto_checkpoint: bool, **kw: Any
) -> None:
    """Run one cycle: the next eligible task (or --task-key), one attempt with its reworks.

    Exit code: 0 the cycle's task completed (or, with no task eligible, the queue is drained);
    1 it did not (failed, blocked, to be retried), or no task was eligible with some not
    completed; 2 bad input, --task-key of a task that is not eligible included; 3, 4 and
    128+N as for `campaign`.
    """
    only: tuple[str, ...] = ()
    if task_key is not None:
        only = (protocol.check_id("task key", task_key),)
    if step_pack_file is not None:
        pack = protocol.read(step_pack_file, protocol.StepPack)
        only = only or (pack.task_id,)
        if pack.task_id not in only:
            raise EngineError(f"{step_pack_file}: the pack is for task {pack.task_id!r}")
    settings = _settings(kw, {"max_parallel_steps": 1, "max_cycles": 1}, only)
    if step_pack_file is not None:
        settings = dataclasses.replace(settings, step_packs={only[0]: step_pack_file.resolve()})
    _run(settings, one_cycle=True)
