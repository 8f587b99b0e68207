"""`runner checkpoint`, `runner rollback` and `runner requirements`: undo and the freeze."""

from __future__ import annotations

import shlex
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

import anyio
import click

import protocol
from protocol import CheckpointManifest, DirEntry, FileEntry, LinkEntry, RollbackReport
from runner.checkpoint import (
    DEFAULT_EXCLUDE,
    DEFAULT_STORE,
    CheckpointError,
    CheckpointStore,
    UnsafePath,
    create_checkpoint,
    digest_problem,
    normalize_path,
    rollback,
    verify_checkpoint,
)
from runner.cli._group import FiniteFloatRange
from runner.requirements import (
    DEFAULT_CONTROLLER_TIMEOUT,
    RequirementsInputError,
    check_freeze,
    draft_requirements,
    freeze_requirements,
)

EXIT_BLOCKED = 1
F = TypeVar("F", bound=Callable[..., Any])

_workspace_option = click.option(
    "--workspace",
    type=click.Path(file_okay=False, path_type=Path),
    default=".",
    show_default=True,
    help="The workspace the paths are relative to.",
)
_store_option = click.option(
    "--checkpoint-dir",
    type=click.Path(file_okay=False, path_type=Path),
    help=f"The checkpoint store. [default: WORKSPACE/{DEFAULT_STORE.as_posix()}]",
)
_json_option = click.option("--json", "as_json", is_flag=True, help="Print JSON instead.")


def _digest(ctx: click.Context, param: click.Parameter, value: str | None) -> str | None:
    """A malformed --digest is a usage error, not a manifest that "changed since"."""
    if value is None:
        return None
    if digest_problem(value.lower()) is not None:  # hex digits in either case
        raise click.BadParameter(f"{value!r} is not a SHA-256 digest (64 hex digits)", ctx, param)
    return value.lower()


_digest_option = click.option(
    "--digest",
    callback=_digest,
    help="Expected manifest digest (sha256), as recorded at creation.",
)


def _dir_option(name: str, help: str) -> Callable[[F], F]:
    return click.option(
        name, required=True, type=click.Path(file_okay=False, path_type=Path), help=help
    )


def _store(workspace: Path, checkpoint_dir: Path | None) -> CheckpointStore:
    return CheckpointStore(
        checkpoint_dir if checkpoint_dir is not None else workspace / DEFAULT_STORE
    )


@click.group()
def checkpoint() -> None:
    """Content-addressed checkpoints of workspace files (undo for a risky step)."""


@checkpoint.command("create")
@click.option("--task-key", required=True, help="The task the checkpoint belongs to.")
@click.option("--run-id", required=True, help="The run the checkpoint belongs to.")
@click.option(
    "--file",
    "files",
    multiple=True,
    help="A workspace-relative file (repeatable); one that does not exist yet is recorded as "
    "absent, so rollback deletes it.",
)
@click.option(
    "--tree",
    "trees",
    multiple=True,
    help="A workspace-relative directory to checkpoint whole ('.' for the workspace); "
    "rollback deletes what appears under it later.",
)
@click.option(
    "--exclude",
    multiple=True,
    help="In trees: a name to skip anywhere, or a relative path prefix (repeatable); "
    f"added to the defaults: {', '.join(DEFAULT_EXCLUDE)}.",
)
@_store_option
@_workspace_option
@_json_option
def create(
    task_key: str,
    run_id: str,
    files: tuple[str, ...],
    trees: tuple[str, ...],
    exclude: tuple[str, ...],
    checkpoint_dir: Path | None,
    workspace: Path,
    as_json: bool,
) -> None:
    """Checkpoint files and trees; prints the checkpoint id."""
    _check_paths("--file", files)
    _check_paths("--tree", trees, root_ok=True)
    _check_paths("--exclude", exclude, excluding=True)
    manifest = create_checkpoint(
        workspace,
        files,
        task_key=task_key,
        run_id=run_id,
        store=_store(workspace, checkpoint_dir),
        trees=trees,
        exclude=(*DEFAULT_EXCLUDE, *exclude),
    )
    if as_json:
        click.echo(protocol.encode_pretty(manifest).decode(), nl=False)
        return
    click.echo(f"checkpoint {manifest.checkpoint_id}: {_summary(manifest)}")


def _check_paths(
    option: str, paths: tuple[str, ...], *, root_ok: bool = False, excluding: bool = False
) -> None:
    """Refuse a malformed path as a usage error naming its option (the checkpoint's own
    check would name the path only, and its reasons are written for --file)."""
    for raw in paths:
        try:
            rel = normalize_path(raw, root_ok=root_ok or excluding)
        except UnsafePath as exc:
            raise click.BadParameter(f"{raw!r}: {exc.reason}", param_hint=option) from None
        if excluding and rel == ".":
            raise click.BadParameter(
                f"{raw!r} names the workspace itself: it would exclude everything",
                param_hint=option,
            )


@checkpoint.command("list")
@click.option("--task-key", help="Only this task's checkpoints.")
@_store_option
@_workspace_option
@_json_option
def list_(
    task_key: str | None, checkpoint_dir: Path | None, workspace: Path, as_json: bool
) -> None:
    """List checkpoints, oldest first (unreadable manifests are reported on stderr)."""
    if task_key is not None:
        protocol.check_id("task key", task_key)
    store = _store(workspace, checkpoint_dir)
    if not store.root.is_dir():
        # An empty list would read as "no checkpoints here", for a mistyped path too.
        hint = "" if checkpoint_dir is not None else " (pass --checkpoint-dir or --workspace)"
        raise CheckpointError(f"checkpoint store {store.root} does not exist{hint}")
    manifests, bad = store.list()
    for problem in bad:
        click.echo(f"warning: {problem}", err=True)
    shown = [m for m in manifests if task_key is None or m.task_key == task_key]
    if as_json:
        click.echo(protocol.encode_pretty(shown).decode(), nl=False)
        return
    for m in shown:
        line = f"{m.checkpoint_id}  task={m.task_key}  run={m.run_id}  {m.created_at}"
        click.echo(f"{line}  {_summary(m)}")


@checkpoint.command("verify")
@click.option("--checkpoint-id", required=True)
@_digest_option
@_store_option
@_workspace_option
def verify(
    checkpoint_id: str, digest: str | None, checkpoint_dir: Path | None, workspace: Path
) -> None:
    """Check a checkpoint's manifest and every blob without restoring anything."""
    manifest = verify_checkpoint(
        checkpoint_id, store=_store(workspace, checkpoint_dir), expected_digest=digest
    )
    click.echo(f"ok: {manifest.checkpoint_id}: {_summary(manifest)}")


@click.command("rollback")
@click.option("--checkpoint-id", required=True, help="The checkpoint to restore.")
@_digest_option
@_store_option
@_workspace_option
@_json_option
def rollback_cmd(
    checkpoint_id: str,
    digest: str | None,
    checkpoint_dir: Path | None,
    workspace: Path,
    as_json: bool,
) -> None:
    """Restore the workspace to a checkpoint, after verifying it (a corrupt checkpoint is
    refused and nothing is touched)."""
    report = rollback(
        workspace,
        checkpoint_id,
        store=_store(workspace, checkpoint_dir),
        expected_digest=digest,
    )
    if as_json:
        click.echo(protocol.encode_pretty(report).decode(), nl=False)
        return
    for verb, paths in _changes(report):
        for path in paths:
            click.echo(f"{verb:<14} {path}")
    click.echo(
        f"rolled back to {report.checkpoint_id}: {report.changed} changes, "
        f"{report.unchanged} unchanged"
    )


def _changes(report: RollbackReport) -> list[tuple[str, list[str]]]:
    return [
        ("deleted", report.deleted),
        ("removed dir", report.dirs_removed),
        ("created dir", report.dirs_created),
        ("recreated", report.recreated),
        ("rewritten", report.rewritten),
        ("mode restored", report.mode_restored),
    ]


def _summary(manifest: CheckpointManifest) -> str:
    counts = {
        "file": sum(isinstance(e, FileEntry) for e in manifest.entries),
        "link": sum(isinstance(e, LinkEntry) for e in manifest.entries),
        "dir": sum(isinstance(e, DirEntry) for e in manifest.entries),
    }
    absent = len(manifest.entries) - sum(counts.values())
    parts = [_count(n, name) for name, n in counts.items() if n or name == "file"]
    parts.append(_count(manifest.total_bytes, "byte"))
    if absent:
        parts.append(f"{absent} absent")
    return ", ".join(parts)


def _count(n: int, word: str) -> str:
    return f"{n} {word}{'' if n == 1 else 's'}"


@click.group()
def requirements() -> None:
    """The freeze workflow: dialogue to draft, draft to an approved, versioned freeze."""


@requirements.command("draft")
@click.option(
    "--dialogue-file",
    required=True,
    type=click.Path(dir_okay=False, path_type=Path),
    help="The dialogue text to draft requirements from.",
)
@_dir_option("--out-dir", "Where requirements.draft.md and controller_profile.json go.")
@click.option(
    "--controller-command",
    help="An external controller (split like a shell would, run without one): dialogue on "
    "stdin, markdown on stdout. Without it, the built-in heuristic drafts.",
)
@click.option("--controller-model", help="A label for the model behind the controller.")
@click.option(
    "--controller-timeout",
    type=FiniteFloatRange(min=0, min_open=True),
    default=DEFAULT_CONTROLLER_TIMEOUT,
    show_default=True,
    help="Seconds the controller command may run.",
)
@click.option("--force", is_flag=True, help="Replace a draft that was edited by hand.")
def draft(
    dialogue_file: Path,
    out_dir: Path,
    controller_command: str | None,
    controller_model: str | None,
    controller_timeout: float,
    force: bool,
) -> None:
    """Turn dialogue into requirements.draft.md for people to review."""
    argv = None
    if controller_command is not None:
        try:
            argv = shlex.split(controller_command)
        except ValueError as exc:
            raise click.BadParameter(str(exc), param_hint="--controller-command") from None
        if not argv:
            raise click.BadParameter("is empty", param_hint="--controller-command")
    profile = anyio.run(
        lambda: draft_requirements(
            dialogue_file,
            out_dir,
            controller_command=argv,
            controller_model=controller_model,
            timeout_sec=controller_timeout,
            force=force,
        )
    )
    click.echo(
        f"wrote {out_dir / protocol.DRAFT_FILE} ({profile.backend.value}"
        f"{', ' + profile.model if profile.model else ''}); review it, then run "
        f"`runner requirements freeze --input-dir {out_dir} --approve --approved-by NAME`"
    )


@requirements.command("freeze")
@_dir_option("--input-dir", "The directory holding requirements.draft.md.")
@click.option("--approve", is_flag=True, help="Approve the frozen version for execution.")
@click.option("--approved-by", help="Who approves (required with --approve).")
def freeze(input_dir: Path, approve: bool, approved_by: str | None) -> None:
    """Freeze the draft as requirements.vN.md and requirements.current.md, with approval."""
    plan, meta = freeze_requirements(input_dir, approve=approve, approved_by=approved_by)
    state = f"approved by {meta.approved_by}" if meta.approved else "not approved"
    click.echo(f"{plan.detail}: {protocol.version_file(meta.version)} ({state})")


@requirements.command("status")
@_dir_option("--input-dir", "The directory holding freeze_meta.json.")
@_json_option
def status(input_dir: Path, as_json: bool) -> None:
    """Whether execution may start under the freeze: exit 0 if approved and current, 1 if
    blocked (with the reason)."""
    if not input_dir.is_dir():
        # Not "not frozen": a mistyped directory is bad input, not an unapproved freeze.
        raise RequirementsInputError(input_dir, "input directory not found")
    check = check_freeze(input_dir)
    if as_json:
        click.echo(protocol.encode_pretty(check).decode(), nl=False)
    else:
        click.echo(f"{check.decision.value}: {check.reason.value}: {check.detail}")
        if check.draft_changed:
            click.echo("note: the draft has changed since this freeze (not frozen yet)")
    if not check.allowed:
        raise SystemExit(EXIT_BLOCKED)
