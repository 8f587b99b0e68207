"""`runner prepare`, `negotiate`, `prepare-next` and `queue ...`: the kernel from the command line.

Each command reads and checks everything first, asks the kernel, and writes only when all of
that succeeded (atomically, the queue last, under the queue lock). Bad input exits 2 naming the
file, field and reason, with nothing written.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import click
import msgspec

import kernel
import protocol
from kernel import intake as intake_rules
from kernel import triage
from kernel.contract import DEFAULT_TEMPLATE
from kernel.intake import DEFAULT_RULES
from kernel.snapshot import content_sha256
from kernel.triage import AttemptOutcome
from protocol import (
    ARTIFACTS_ROOT,
    LastSelected,
    QueueTask,
    RuntimePolicy,
    StepPack,
    TaskIntake,
    TaskQueue,
    TaskStatus,
    TierRules,
    encode_pretty,
    is_safe_id,
)
from runner.log import get_logger
from runner.progress import (
    Progress,
    SnapshotFrozen,
    load,
    load_queue,
    queue_lock,
    read_bytes,
    save_queue,
    utc_now,
    write_all,
)

log = get_logger(__name__)

FilePath = click.Path(dir_okay=False, path_type=Path)
DirPath = click.Path(file_okay=False, path_type=Path)


def _safe_id(ctx: click.Context, param: click.Parameter, value: str | None) -> str | None:
    """Ids become directory names: refuse unsafe ones as a usage error (exit 2)."""
    if value is not None and not is_safe_id(value):
        raise click.BadParameter(
            f"{value!r} is not a safe id: use 1-128 of [A-Za-z0-9._-], starting with a letter "
            "or digit, without '..'"
        )
    return value


def _existing(queue_path: Path) -> Path:
    """Refuse a missing queue before taking its lock (which would create the lock file)."""
    if not queue_path.is_file():
        raise protocol.ProtocolError("cannot read file: no such queue file", source=str(queue_path))
    return queue_path


def _rules(path: Path | None) -> TierRules:
    return DEFAULT_RULES if path is None else load(path, TierRules)


def _template(path: Path | None) -> str:
    if path is None:
        return DEFAULT_TEMPLATE
    try:
        return read_bytes(path).decode("utf-8")
    except UnicodeDecodeError as exc:
        raise protocol.ProtocolError(f"not UTF-8 text: {exc}", source=str(path)) from None


def _out_dir(out_dir: Path | None, run_id: str, task_id: str) -> Path:
    return out_dir or Path(ARTIFACTS_ROOT) / run_id / "prepare" / task_id


def _write_prepared(prepared: kernel.Prepared, out_dir: Path) -> dict[Path, bytes]:
    return {out_dir / name: data for name, data in prepared.files.items()}


def _echo_decision(prepared: kernel.Prepared, written: Sequence[Path]) -> None:
    decision = prepared.decision
    overridden = "" if decision.tier == decision.rules_tier else f" (rules: {decision.rules_tier})"
    click.echo(f"tier: {decision.tier}{overridden}")
    for reason in decision.reasons:
        click.echo(f"  {reason.rule.value}: {reason.detail}")
    for path in written:
        click.echo(f"wrote {path}")


rules_option = click.option(
    "--rules-file", type=FilePath, help="Tier routing rules (JSON, kind tier-rules)."
)
template_option = click.option(
    "--template", "template_file", type=FilePath, help="Contract template (markdown)."
)
out_dir_option = click.option(
    "--out-dir",
    type=DirPath,
    help=f"Where to write (default {ARTIFACTS_ROOT}/<run-id>/prepare/<task-id>).",
)


@click.command()
@click.option("--task-file", type=FilePath, required=True, help="Task intake (JSON).")
@click.option("--run-id", required=True, callback=_safe_id, help="Run id (a safe id).")
@click.option("--task-id", required=True, callback=_safe_id, help="Task id (a safe id).")
@out_dir_option
@rules_option
@template_option
def prepare(
    task_file: Path,
    run_id: str,
    task_id: str,
    out_dir: Path | None,
    rules_file: Path | None,
    template_file: Path | None,
) -> None:
    """Validate a task intake and route it to tier2 or tier3 (tier3: compile its contract).

    Writes preparation.json and, for tier3, master_contract.md, template_snapshot.md and
    conformance_report.json.
    """
    intake = load(task_file, TaskIntake)
    prepared = kernel.prepare(
        intake,
        task_id=task_id,
        run_id=run_id,
        rules=_rules(rules_file),
        template=_template(template_file),
        source=str(task_file),
    )
    written = write_all(_write_prepared(prepared, _out_dir(out_dir, run_id, task_id)))
    log.info("prepare.done", task_id=task_id, run_id=run_id, tier=prepared.decision.tier)
    _echo_decision(prepared, written)


@click.command()
@click.option("--requirements-md", type=FilePath, required=True, help="Requirements markdown.")
@click.option("--progress-dir", type=DirPath, required=True, help="Progress directory.")
@click.option(
    "--queue-path",
    type=FilePath,
    help="Also add the plan's tasks to this queue (tasks already there are kept as they are).",
)
@click.option("--refreeze", is_flag=True, help="Replace snapshots frozen from other content.")
def negotiate(
    requirements_md: Path, progress_dir: Path, queue_path: Path | None, refreeze: bool
) -> None:
    """Freeze a requirements markdown into plan_snapshot.json and boundary_snapshot.json."""
    result = kernel.negotiate(read_bytes(requirements_md), source=str(requirements_md))
    progress = Progress(progress_dir)
    files: dict[Path, bytes] = {}
    for path, old, new in (
        (progress.plan, progress.load_plan(), result.plan),
        (progress.boundary, progress.load_boundary(), result.boundary),
    ):
        if old is not None and old.content_sha256 != content_sha256(new) and not refreeze:
            raise SnapshotFrozen(path, old.content_sha256, new.content_sha256)
        files[path] = encode_pretty(new)
    if queue_path is None:
        write_all(files)
        _echo_frozen(result)
        return
    with queue_lock(queue_path):
        queue = load_queue(queue_path, missing_ok=True)
        present = {t.key for t in queue.tasks}
        added = []
        for task in kernel.queue_tasks(result.plan.tasks):
            if task.key not in present:
                queue = triage.add_task(queue, task)
                added.append(task.key)
        files.update(progress.updated(queue, now=utc_now()))
        files[queue_path] = encode_pretty(queue)
        write_all(files)
    _echo_frozen(result)
    click.echo(f"queue {queue_path}: added {', '.join(added) or 'nothing'}")
    kept = sorted({t.key for t in result.plan.tasks} & present)
    if kept:
        click.echo(f"kept as they are (already queued): {', '.join(kept)}")


def _echo_frozen(result: kernel.Negotiated) -> None:
    log.info("negotiate.frozen", boundary_sha256=result.boundary.content_sha256)
    click.echo(f"plan: {len(result.plan.tasks)} task(s), sha256 {result.plan.content_sha256}")
    click.echo(f"boundary: sha256 {result.boundary.content_sha256}")


@click.command("prepare-next")
@click.option(
    "--run-id", required=True, callback=_safe_id, help="Run id for the selected task (a safe id)."
)
@click.option("--queue-path", type=FilePath, required=True, help="The triage queue (JSON).")
@click.option("--progress-dir", type=DirPath, required=True, help="Progress directory.")
@out_dir_option
@click.option("--timeout-sec", type=click.IntRange(min=1), help="Runtime limit of a planned step.")
@click.option("--silence-sec", type=click.IntRange(min=1), help="Silence limit of a planned step.")
@rules_option
@template_option
def prepare_next(
    run_id: str,
    queue_path: Path,
    progress_dir: Path,
    out_dir: Path | None,
    timeout_sec: int | None,
    silence_sec: int | None,
    rules_file: Path | None,
    template_file: Path | None,
) -> None:
    """Select the next eligible task, prepare it, and mark it in progress.

    Writes the preparation (and the task's step pack, auto-planned when it has none) to
    OUT_DIR, then scoreboard.json, trends.json and summary.md, then the queue. With nothing
    eligible it writes nothing and says why: exit 0 when tasks are in progress or all are done,
    exit 1 when pending tasks can never become eligible without a person.
    """
    rules, template = _rules(rules_file), _template(template_file)
    progress = Progress(progress_dir)
    runtime = RuntimePolicy(timeout_sec=timeout_sec, no_output_timeout_sec=silence_sec)
    with queue_lock(_existing(queue_path)):
        queue = load_queue(queue_path)
        selection = triage.select_next(queue)
        if selection.key is None:
            _echo_nothing(selection)
            return
        task = triage.get(queue, selection.key)
        pack = _referenced_pack(task, queue_path)
        prepared = kernel.prepare_task(
            task,
            run_id=run_id,
            pack=pack,
            boundary=progress.load_boundary(),
            rules=rules,
            template=template,
            runtime=runtime,
        )
        now = utc_now()
        claimed = triage.claim(queue, task.key, now=now, reason=f"selected for run {run_id}")
        files = _write_prepared(prepared, _out_dir(out_dir, run_id, task.key))
        selected = LastSelected(key=task.key, run_id=run_id, at=now)
        files.update(progress.updated(claimed, now=now, selected=selected))
        files[queue_path] = encode_pretty(claimed)
        written = write_all(files)
    log.info("queue.selected", task_id=task.key, run_id=run_id, tier=prepared.decision.tier)
    planned = " (auto-planned step pack)" if prepared.preparation.auto_planned else ""
    click.echo(f"selected: {task.key}{planned}")
    _echo_decision(prepared, written)


def _referenced_pack(task: QueueTask, queue_path: Path) -> StepPack | None:
    """The task's StepPack; a relative `step_pack_ref` is relative to the queue file."""
    if task.step_pack_ref is None:
        return None
    ref = Path(task.step_pack_ref)
    path = ref if ref.is_absolute() else queue_path.parent / ref
    return load(path, StepPack)


def _echo_nothing(selection: triage.Selection) -> None:
    click.echo(f"nothing selected: {selection.state}")
    for skip in selection.skipped:
        if skip.status in (TaskStatus.PENDING, TaskStatus.IN_PROGRESS):
            click.echo(f"  {skip.key}: {'; '.join(skip.reasons)}")
    if selection.state == "stuck":
        raise click.exceptions.Exit(1)


# -- queue helpers ------------------------------------------------------------------------------


@click.group()
def queue() -> None:
    """Look at and change the triage queue (the same rules as the runner applies)."""


queue_option = click.option(
    "--queue-path", type=FilePath, required=True, help="The triage queue (JSON)."
)


@queue.command("add")
@click.argument("key", callback=_safe_id)
@queue_option
@click.option("--title", required=True)
@click.option("--priority", type=int, default=0, show_default=True, help="Lower runs first.")
@click.option("--max-attempts", type=click.IntRange(min=1), default=3, show_default=True)
@click.option("--depends-on", multiple=True, help="Key of a task this one waits for (repeat).")
@click.option("--intake-file", type=FilePath, help="The task's intake (JSON).")
@click.option("--step-pack", type=FilePath, help="The task's StepPack (JSON).")
@click.option("--backend", help="Worker backend for this task.")
def queue_add(
    key: str,
    queue_path: Path,
    title: str,
    priority: int,
    max_attempts: int,
    depends_on: tuple[str, ...],
    intake_file: Path | None,
    step_pack: Path | None,
    backend: str | None,
) -> None:
    """Append task KEY to the queue (created when missing)."""
    intake = None
    if intake_file is not None:
        intake = load(intake_file, TaskIntake)
        intake_rules.check(intake, task_id=key, source=str(intake_file))
    ref = None
    if step_pack is not None:
        pack = load(step_pack, StepPack)
        if pack.task_id != key:
            raise kernel.PackMismatch("task_id", pack.task_id, key)
        ref = _relative_ref(step_pack, queue_path)
    fields: dict[str, Any] = {
        "key": key,
        "title": title,
        "priority": priority,
        "max_attempts": max_attempts,
        "depends_on": list(depends_on),
        "worker_backend": backend,
        "step_pack_ref": ref,
    }
    task = protocol.convert(fields, QueueTask, source="queue add")
    task = msgspec.structs.replace(task, intake=intake)
    with queue_lock(queue_path):
        current = load_queue(queue_path, missing_ok=True)
        save_queue(queue_path, triage.add_task(current, task))
    log.info("queue.task_added", task_id=key, queue=str(queue_path))
    click.echo(f"added {key} to {queue_path}")


def _relative_ref(path: Path, queue_path: Path) -> str:
    try:
        return str(path.resolve().relative_to(queue_path.resolve().parent))
    except ValueError:
        return str(path.resolve())


@queue.command("list")
@queue_option
@click.option("--json", "as_json", is_flag=True, help="Machine-readable output.")
def queue_list(queue_path: Path, as_json: bool) -> None:
    """Every task with its status, and which one runs next."""
    current = load_queue(queue_path)
    selection = triage.select_next(current)
    if as_json:
        out = {
            "selected": selection.key,
            "state": selection.state,
            "eligible": list(selection.eligible),
            "tasks": protocol.to_builtins(current.tasks),
        }
        click.echo(json.dumps(out, indent=2))
        return
    click.echo(f"{'':2}{'key':<20} {'status':<12} {'prio':>4} {'tries':>5}  depends on")
    for task in current.tasks:
        mark = "> " if task.key == selection.key else "  "
        tries = f"{task.attempts}/{task.max_attempts}"
        deps = ", ".join(task.depends_on)
        click.echo(
            f"{mark}{task.key:<20} {task.status.value:<12} {task.priority:>4} {tries:>5}  {deps}"
        )
    click.echo(f"next: {selection.key or 'none'} ({selection.state})")


@queue.command("explain")
@click.argument("key", required=False)
@queue_option
def queue_explain(key: str | None, queue_path: Path) -> None:
    """Why KEY was or was not picked (every task without KEY)."""
    current = load_queue(queue_path)
    keys = [key] if key is not None else [t.key for t in current.tasks]
    for k in keys:
        explanation = triage.explain(current, k)
        click.echo(f"{k} ({explanation.status.value}): {'; '.join(explanation.reasons)}")


progress_option = click.option(
    "--progress-dir",
    type=DirPath,
    help="Also refresh scoreboard.json, trends.json and summary.md there.",
)


def _change_queue(
    queue_path: Path, progress_dir: Path | None, change: Callable[[TaskQueue], TaskQueue]
) -> TaskQueue:
    """Apply `change` to the queue under its lock; write progress files, then the queue."""
    with queue_lock(_existing(queue_path)):
        changed = change(load_queue(queue_path))
        files: dict[Path, bytes] = {}
        if progress_dir is not None:
            files.update(Progress(progress_dir).updated(changed, now=utc_now()))
        files[queue_path] = encode_pretty(changed)
        write_all(files)
    return changed


@queue.command("set")
@click.argument("key")
@click.argument("status", type=click.Choice([s.value for s in TaskStatus]))
@queue_option
@progress_option
@click.option("--reason", required=True, help="Why (recorded on the task).")
@click.option(
    "--extra-attempts",
    type=click.IntRange(min=0),
    default=0,
    help="With pending on a failed or blocked task: attempts to add.",
)
def queue_set(
    key: str,
    status: str,
    queue_path: Path,
    progress_dir: Path | None,
    reason: str,
    extra_attempts: int,
) -> None:
    """Move task KEY to STATUS, if the transition table allows it."""
    to = TaskStatus(status)
    before: list[TaskStatus] = []

    def change(current: TaskQueue) -> TaskQueue:
        before.append(triage.get(current, key).status)
        if to is TaskStatus.PENDING and before[0] in (TaskStatus.FAILED, TaskStatus.BLOCKED):
            return triage.reopen(
                current, key, reason=reason, now=utc_now(), extra_attempts=extra_attempts
            )
        return triage.transition(current, key, to, reason=reason, now=utc_now())

    _change_queue(queue_path, progress_dir, change)
    log.info("queue.transition", task_id=key, before=before[0].value, after=to.value)
    click.echo(f"{key}: {before[0].value} -> {to.value}")


@queue.command("finish")
@click.argument("key")
@click.argument("outcome", type=click.Choice([o.value for o in AttemptOutcome]))
@queue_option
@progress_option
@click.option("--reason", required=True, help="Why (recorded on the task).")
@click.option("--reworks", type=click.IntRange(min=0), default=0, help="Rework rounds used.")
def queue_finish(
    key: str, outcome: str, queue_path: Path, progress_dir: Path | None, reason: str, reworks: int
) -> None:
    """End the attempt in progress on KEY: passed, failed (retried while attempts remain),
    blocked or cancelled."""
    changed = _change_queue(
        queue_path,
        progress_dir,
        lambda current: triage.record_attempt(
            current, key, AttemptOutcome(outcome), reason=reason, now=utc_now(), reworks=reworks
        ),
    )
    after = triage.get(changed, key).status
    log.info("queue.attempt_recorded", task_id=key, outcome=outcome, status=after.value)
    click.echo(f"{key}: {outcome} -> {after.value}")
