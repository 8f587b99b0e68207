"""`runner ledger ...`: the workflow log from the command line (the original CLI's options).

Exit codes: 0 done; 1 verify ran and found damage (or appends were refused because of it);
2 bad input (unknown project, invalid ids or fields, an attempt that breaks the R/S rules, an
unsafe archive); 3 the project is locked by another writer (see --lock-timeout).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import click
import msgspec

from ledger import Head, ProjectPaths, VerifyReport
from ledger.chain import ChainReader
from ledger.store import read_manifest, read_tail
from ledger.sync import WorkflowLogger
from ledger.task_pool import PARALLEL_BYTES, available_cpus
from ledger.verify import read_head
from protocol import Verdict
from protocol.ledger_events import AttemptUsage, FinalStatus, TaskRecord
from runner.cli._group import FiniteFloatRange

EXIT_DAMAGED = 1

jobs_option = click.option(
    "--jobs",
    type=click.IntRange(min=1),
    default=lambda: min(available_cpus(), 8),
    show_default="one per CPU, within any cgroup quota, at most 8",
    help="Processes that verify the task chains (task chains under "
    f"{PARALLEL_BYTES >> 20} MiB in all are verified in one).",
)


class _Ctx:
    def __init__(self, root: Path, project_id: str | None, mode: str, lock_timeout: float):
        self.root = root
        self.project_id = project_id
        self.mode = mode
        self.lock_timeout = lock_timeout

    def logger(self) -> WorkflowLogger:
        if self.project_id is None:
            raise click.UsageError("--project-id is required for this command")
        return WorkflowLogger(
            self.root,
            self.project_id,
            mode=self.mode,  # type: ignore[arg-type]
            lock_timeout=self.lock_timeout,
            create=False,
        )


pass_ctx = click.make_pass_decorator(_Ctx)


@click.group()
@click.option(
    "--root-dir",
    type=click.Path(file_okay=False, path_type=Path),
    default=Path("workflow"),
    show_default=True,
    envvar="RUNNER_LEDGER_ROOT",
    help="Directory that holds one directory per project.",
)
@click.option("--project-id", help="The project (a safe id: [A-Za-z0-9._-], max 128).")
@click.option(
    "--mode",
    type=click.Choice(["durable", "buffered"]),
    default="durable",
    show_default=True,
    help="durable: fsync before an append returns; buffered: no fsync (survives a crash of "
    "this process, not of the machine).",
)
@click.option(
    "--lock-timeout",
    type=FiniteFloatRange(min=0),
    default=0.0,
    show_default=True,
    help="Seconds to wait for another writer to finish (0: half a second, the most a writer "
    "that has just died may hold the lock; then exit 3).",
)
@click.pass_context
def ledger(
    ctx: click.Context, root_dir: Path, project_id: str | None, mode: str, lock_timeout: float
) -> None:
    """The hash-chained workflow log: init, attempt, close, verify, head, show, render, export,
    import."""
    ctx.obj = _Ctx(root_dir, project_id, mode, lock_timeout)


@ledger.command()
@pass_ctx
def init(c: _Ctx) -> None:
    """Create the project (manifest and genesis event)."""
    head = c.logger().init()
    click.echo(f"created project {c.project_id} at {c.root / str(c.project_id)}; head {head}")


@ledger.command()
@click.option("--task-id", required=True)
@click.option("--r", "r", type=click.IntRange(min=0), required=True, help="Revision number.")
@click.option("--s", "s", type=click.IntRange(min=0), required=True, help="Retry number.")
@click.option("--acceptance", multiple=True, help="An acceptance criterion (repeatable).")
@click.option("--code-change-summary", default="")
@click.option("--code-artifact-ref", default=None)
@click.option("--code-content", default="", help="The code itself (or @FILE to read a file).")
@click.option("--executed-file", multiple=True, help="A file the attempt touched (repeatable).")
@click.option("--executed-command", multiple=True, help="A command it ran (repeatable).")
@click.option("--test-results", default="")
@click.option("--result", required=True, type=click.Choice([v.value for v in Verdict]))
@click.option("--reason-code", required=True, help="UPPER_SNAKE_CASE, e.g. PASS_ALL_CRITERIA.")
@click.option("--reason-detail", default="")
@click.option("--next-action", default="")
@click.option("--input-tokens", type=click.IntRange(min=0), default=None)
@click.option("--output-tokens", type=click.IntRange(min=0), default=None)
@click.option("--cost-micro-usd", type=click.IntRange(min=0), default=None)
@pass_ctx
def attempt(
    c: _Ctx,
    task_id: str,
    r: int,
    s: int,
    acceptance: tuple[str, ...],
    code_change_summary: str,
    code_artifact_ref: str | None,
    code_content: str,
    executed_file: tuple[str, ...],
    executed_command: tuple[str, ...],
    test_results: str,
    result: str,
    reason_code: str,
    reason_detail: str,
    next_action: str,
    input_tokens: int | None,
    output_tokens: int | None,
    cost_micro_usd: int | None,
) -> None:
    """Record attempt R/S of a task (first R0/S0; retry R/S+1; revision R+1/S0)."""
    if code_content.startswith("@"):
        source = Path(code_content[1:])
        try:
            code_content = source.read_text(encoding="utf-8")
        except (OSError, UnicodeDecodeError) as exc:
            raise click.BadParameter(f"{source}: {exc}", param_hint="--code-content") from None
    usage = None
    if (input_tokens, output_tokens, cost_micro_usd) != (None, None, None):
        usage = AttemptUsage(input_tokens or 0, output_tokens or 0, cost_micro_usd)
    got = c.logger().log_attempt(
        task_id, r, s,
        result=result, reason_code=reason_code, acceptance_snapshot=acceptance,
        code_change_summary=code_change_summary, code_artifact_ref=code_artifact_ref,
        code_content=code_content, executed_files=executed_file,
        executed_commands=executed_command, test_results=test_results,
        reason_detail=reason_detail, next_action=next_action, usage=usage,
    )  # fmt: skip
    click.echo(f"appended {task_id} R{r}/S{s}: task seq {got.seq}, project seq "
               f"{got.project_seq}, {got.event_hash}")  # fmt: skip


@ledger.command()
@click.option("--task-id", required=True)
@click.option("--final-status", required=True, type=click.Choice([s.value for s in FinalStatus]))
@click.option("--summary", default="")
@pass_ctx
def close(c: _Ctx, task_id: str, final_status: str, summary: str) -> None:
    """Close a task with its final record (once; nothing may follow)."""
    got = c.logger().close_task(task_id, final_status, summary)
    click.echo(f"closed {task_id} ({final_status}): task seq {got.seq}, {got.event_hash}")


@ledger.command()
@click.option("--task-id", help="Verify only this task's chain (and its links).")
@click.option(
    "--expect-head",
    "expect_heads",
    multiple=True,
    metavar="SEQ:HASH",
    help="A project head saved earlier (`runner ledger head`); fails if the chain was cut "
    "back or rewritten before it. Repeatable.",
)
@jobs_option
@click.option("--json", "as_json", is_flag=True, help="Print the report as JSON.")
@pass_ctx
def verify(
    c: _Ctx, task_id: str | None, expect_heads: tuple[str, ...], jobs: int, as_json: bool
) -> None:
    """Check every chain, hash and link; exit 1 with file:line: reason for each problem."""
    log = c.logger()
    heads = tuple(Head.parse(h) for h in expect_heads)
    task_ids = None if task_id is None else (task_id,)
    report = log.verify(heads, task_ids=task_ids, jobs=jobs)
    _print_report(report, as_json)
    if not report.ok:
        raise SystemExit(EXIT_DAMAGED)


def _print_report(report: VerifyReport, as_json: bool) -> None:
    if as_json:
        doc: dict[str, Any] = json.loads(_encode(report))
        doc["ok"] = report.ok
        click.echo(json.dumps(doc, indent=2))
        return
    for note in report.notes:
        click.echo(f"note: {note}", err=True)
    for problem in report.problems:
        click.echo(f"damage: {problem}", err=True)
    if report.ok:
        chains = len(report.task_heads) + 1
        click.echo(
            f"ok: project {report.project_id}: {_count(report.events, 'event')} in "
            f"{_count(chains, 'chain')}; head {report.project_head}"
        )


def _count(n: int, noun: str) -> str:
    return f"{n:,} {noun}" if n == 1 else f"{n:,} {noun}s"


def _encode(obj: object) -> bytes:
    return msgspec.json.encode(obj)


@ledger.command()
@click.option("--json", "as_json", is_flag=True)
@pass_ctx
def head(c: _Ctx, as_json: bool) -> None:
    """Print the chain heads (SEQ:HASH); keep the project head elsewhere to detect cutting."""
    log = c.logger()
    project_head = log.head()
    if read_tail(log.paths.events).torn:
        note = (f"note: {log.paths.events} ends in an incomplete line after this head (never "
                "acknowledged; quarantined when a writer next opens the ledger)")  # fmt: skip
        click.echo(note, err=True)
    manifest = read_manifest(log.paths)
    tasks = {}
    for task_id in log.paths.task_ids():
        identity = {"project_id": manifest.chain_project_id, "task_id": task_id}
        reader = ChainReader(log.paths.task_events(task_id), TaskRecord, identity)
        tasks[task_id] = read_head(reader)
    if as_json:
        doc = {"project": str(project_head), "tasks": {t: str(h) for t, h in tasks.items()}}
        click.echo(json.dumps(doc, indent=2))
        return
    click.echo(f"project {project_head}")
    for task_id, task_head in tasks.items():
        click.echo(f"task {task_id} {task_head}")


@ledger.command()
@click.option("--task-id", help="Show this task's log (default: the project's tasks).")
@pass_ctx
def show(c: _Ctx, task_id: str | None) -> None:
    """Print a task's log (Markdown, rendered from its chain), or list the project's tasks."""
    log = c.logger()
    if task_id is not None:
        click.echo(log.task_log(task_id))
        return
    manifest = read_manifest(log.paths)
    click.echo(f"project {manifest.project_id} (chain id {manifest.chain_project_id}), "
               f"created {manifest.created_at}; head {log.head()}")  # fmt: skip
    for tid in log.paths.task_ids():
        state = _task_state(log.paths, manifest.chain_project_id, tid)
        click.echo(f"  {tid}: {state}")


@ledger.command()
@click.option("--task-id", help="Only this task (default: every task).")
@pass_ctx
def render(c: _Ctx, task_id: str | None) -> None:
    """Rewrite task_log.md from the chain (written when a task closes; this renders any task);
    exit 1 if a chain is damaged (its log is left as it was, the others are written)."""
    log = c.logger()
    damaged = False
    for name, damage in log.write_task_logs(task_id):
        if damage is None:
            click.echo(str(log.paths.task_log(name)))
        else:
            damaged = True
            click.echo(f"damage: {damage}", err=True)
    if damaged:
        raise SystemExit(EXIT_DAMAGED)


def _task_state(paths: ProjectPaths, chain_id: str, task_id: str) -> str:
    identity = {"project_id": chain_id, "task_id": task_id}
    reader = ChainReader(paths.task_events(task_id), TaskRecord, identity)
    tail = read_tail(reader.path)
    record = reader.resume(tail.last, tail.last_at)
    where = str(record.pointer) if record.pointer else "no attempt"
    flags = " closed" if record.closed else (" attempt open" if record.attempt_open else "")
    return f"{_count(record.seq + 1, 'event')}, at {where}{flags}"


@ledger.command()
@click.option("--archive", type=click.Path(dir_okay=False, path_type=Path), required=True)
@jobs_option
@pass_ctx
def export(c: _Ctx, archive: Path, jobs: int) -> None:
    """Export the project (.zip, .tar, .tar.gz) with a manifest of every file's SHA-256."""
    path = c.logger().export_project(archive, jobs=jobs)
    click.echo(f"exported {c.project_id} to {path}")


@ledger.command(name="import")
@click.option("--archive", type=click.Path(dir_okay=False, path_type=Path), required=True)
@click.option("--target-project-id", help="Import under this id (default: the archive's).")
@jobs_option
@pass_ctx
def import_(c: _Ctx, archive: Path, target_project_id: str | None, jobs: int) -> None:
    """Import an archive: every file checked, every chain verified, then moved into place."""
    target = target_project_id or c.project_id
    got = WorkflowLogger.import_project(c.root, archive, target, jobs=jobs)
    click.echo(f"imported {archive} as project {got.project_id} under {c.root}; head {got.head}")
