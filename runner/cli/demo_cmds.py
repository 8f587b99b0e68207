"""`runner demo` and `runner status`."""

from __future__ import annotations

import sys
from pathlib import Path

import click

from ledger import LedgerNotFound, ProjectPaths, project_ids, verify_project
from protocol import ExecutorKind
from runner import demo as demo_run
from runner.distributed import ClusterSettings, check_settings
from runner.engine import default_project_id
from runner.live import is_terminal
from runner.progress import Progress, load_queue


@click.command()
@click.option("--keep", is_flag=True, help="Keep the demo directory afterwards.")
@click.option(
    "--dir",
    "directory",
    type=click.Path(file_okay=False, path_type=Path),
    help="Build the demo here (must not exist) instead of a temporary directory.",
)
@click.option(
    "--executor",
    type=click.Choice(["local", "dask-local"]),
    default="local",
    show_default=True,
    help="Run the steps here, or on a Dask LocalCluster (needs the [distributed] extra).",
)
@click.option(
    "--workers",
    type=click.IntRange(min=1),
    help="Worker processes of --executor dask-local [default: 2].",
)
def demo(keep: bool, directory: Path | None, executor: ExecutorKind, workers: int | None) -> None:
    """Run a small campaign of mock agents on a real git project (about 5 s; 10 s on Dask).

    Exit code 0 when every task ended as the demo expects and the ledger verifies, else 1.
    """  # fmt: skip
    cluster = ClusterSettings(executor=executor, workers=workers)
    check_settings(cluster)  # before anything is written
    if directory is not None:
        try:
            directory.mkdir(parents=True)
        except OSError as exc:
            reason = "exists already" if isinstance(exc, FileExistsError) else exc.strerror
            raise click.BadParameter(f"{directory}: {reason}", param_hint="--dir") from None
        root = directory.resolve()
    else:
        root = demo_run.temp_root()
    click.echo(f"demo: building a git project and a queue of {len(demo_run.TASKS)} tasks "
               f"in {root}")  # fmt: skip
    try:
        result = demo_run.run(root, live=is_terminal(), cluster=cluster)
    finally:
        if not keep and directory is None:
            demo_run.remove(root)
    click.echo("")
    click.echo(f"{'task':<6} {'expected':<10} {'got':<10} story")
    for key, expected, got, story in result.rows:
        mark = " " if expected == got else "!"
        click.echo(f"{key:<6} {expected:<10} {got:<10}{mark}{story}")
    click.echo("")
    click.echo(f"ledger: {result.ledger_summary}")
    click.echo(f"took {result.seconds:.1f} s")
    if keep or directory is not None:
        click.echo(f"everything is in {root}:")
        click.echo("  project/                 the git repository (git log --graph shows "
                   "the merges)")  # fmt: skip
        click.echo("  project/.artifacts/      every round's evidence (prompt, output, result, "
                   "review)")  # fmt: skip
        click.echo("  progress/summary.md      the scoreboard; task_queue.json the queue")
        click.echo(f"  progress/ledger/{demo_run.PROJECT_ID}/  the hash-chained ledger "
                   f"(runner ledger --root-dir {root}/progress/ledger --project-id "
                   f"{demo_run.PROJECT_ID} verify)")  # fmt: skip
    else:
        click.echo("(the demo directory was removed; run `runner demo --keep` to look inside)")
    sys.exit(0 if result.ok else 1)


@click.command()
@click.option(
    "--progress-dir",
    type=click.Path(file_okay=False, path_type=Path),
    default=Path("progress"),
    show_default=True,
)
@click.option(
    "--queue-path",
    type=click.Path(dir_okay=False, path_type=Path),
    help="[default: <progress-dir>/task_queue.json]",
)
@click.option(
    "--ledger-root",
    type=click.Path(file_okay=False, path_type=Path),
    help="[default: <progress-dir>/ledger]",
)
@click.option("--project-id", help="Ledger project [default: the workspace's name].")
@click.option(
    "--workspace",
    type=click.Path(file_okay=False, path_type=Path),
    default=Path(),
    show_default=True,
)
def status(
    progress_dir: Path,
    queue_path: Path | None,
    ledger_root: Path | None,
    project_id: str | None,
    workspace: Path,
) -> None:
    """The scoreboard and queue of a progress directory, and whether its ledger verifies.

    Without --project-id: the workspace's project, or else every project under the ledger
    root. Exit code 0 when each verifies (or there is none yet), 1 when one does not.
    """  # fmt: skip
    queue = load_queue(queue_path or progress_dir / "task_queue.json")
    board = Progress(progress_dir).load_scoreboard()
    counts: dict[str, int] = {}
    for task in queue.tasks:
        counts[str(task.status)] = counts.get(str(task.status), 0) + 1
    click.echo("queue: " + ", ".join(f"{n} {s}" for s, n in sorted(counts.items())))
    if board.pass_rate is not None:
        click.echo(f"pass rate: {board.pass_rate:.0%}")
    click.echo(f"{'task':<20} {'status':<12} {'attempts':>8} {'reworks':>7}  last reason")
    for t in queue.tasks:
        click.echo(
            f"{t.key:<20} {t.status!s:<12} {f'{t.attempts}/{t.max_attempts}':>8} "
            f"{t.reworks:>7}  {(t.last_reason or '')[:70]}"
        )
    root = ledger_root or progress_dir / "ledger"
    projects = [project_id] if project_id else _projects(root, default_project_id(workspace))
    if not projects:
        click.echo(f"ledger: none yet under {root}")
        return
    damaged = False
    for project in projects:
        try:
            report = verify_project(ProjectPaths.of(root, project))
        except LedgerNotFound:
            click.echo(f"ledger: none yet at {root}/{project}")
            continue
        if report.ok:
            head = report.project_head
            where = f", head {head.seq}:{head.hash}" if head else ""
            click.echo(f"ledger {project}: ok, {report.events} events{where}")
            continue
        damaged = True
        click.echo(f"ledger {project}: DAMAGED ({len(report.problems)} problems)")
        for problem in report.problems[:20]:
            click.echo(f"  {problem}")
    if damaged:
        sys.exit(1)


def _projects(root: Path, default: str) -> list[str]:
    """Which ledger projects a progress directory's status covers without --project-id: the
    workspace's default one when it exists, else every project under the root (the demo and
    `runner campaign --project-id X` name theirs, and status should find them, not say none)."""
    if ProjectPaths.of(root, default).manifest.is_file():
        return [default]
    return project_ids(root)
