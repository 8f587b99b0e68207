"""Gather, from a real workspace, the facts the QA reviewer weighs a worker's claims against.

- **changed files**: `runner.git.changed_files` against the base commit (committed, staged,
  unstaged, deleted and untracked files; ignored files are invisible to it);
- **artifact files**: every regular file under ``.artifacts/agent_runs/<run_id>/``, walked
  without following symlinks; a symlink is never evidence, and when any directory on the way to
  the run's artifacts is a symlink nothing there is listed (evidence must live in the
  workspace, not wherever a link points);
- **command re-runs** (optional): each of the pack's `commands_to_run`, run again by the
  controller in the workspace through ``/bin/sh -c`` with a timeout, after the other facts are
  gathered so its side effects cannot hide the worker's.

The re-run is a deliberately small seam (`CommandRunner`): `run_shell` is enough for the
offline review, and the engine can pass the supervisor's runner instead (limits on memory and
silence, output to evidence files) without this module changing.
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import time
from collections.abc import Sequence
from pathlib import Path, PurePosixPath
from typing import Protocol

import anyio

from kernel import CommandRerun, WorkspaceFacts
from protocol import StepPack
from runner import _proctree
from runner.git import GitError, changed_files, git, is_repo, toplevel
from runner.log import get_logger

log = get_logger("runner.facts")

DEFAULT_COMMAND_TIMEOUT_S = 600.0
OUTPUT_TAIL_BYTES = 2000
MAX_ARTIFACT_FILES = 100_000


class FactsError(Exception):
    """The facts cannot be gathered: carries the workspace and the reason."""

    def __init__(self, workspace: str | Path, reason: str) -> None:
        self.workspace = str(workspace)
        self.reason = reason
        super().__init__(f"{workspace}: {reason}")


class CommandRunner(Protocol):
    """Runs one of the pack's commands for the controller and reports how it ended."""

    async def __call__(
        self, index: int, command: str, *, cwd: Path, timeout_s: float
    ) -> CommandRerun: ...


async def gather_facts(
    workspace: str | Path,
    pack: StepPack,
    *,
    base: str = "HEAD",
    round_no: int,
    verify_commands: bool = False,
    command_timeout_s: float | None = None,
    run_command: CommandRunner | None = None,
    changed: Sequence[str] | None = None,
) -> WorkspaceFacts:
    """The facts of one round in `workspace`, the top level of a git work tree.

    `base` is the revision the worker started from. `command_timeout_s` bounds each re-run
    (default: the pack's `runtime_policy.timeout_sec`, else 600 s). Raises `FactsError` when
    `workspace` is not the top level of a git work tree or `base` is not a commit in it.

    A workspace without git passes `changed` (the files that differ from a checkpoint, say);
    git is then not consulted and the facts carry no base revision.
    """
    root = Path(workspace)
    view = pack.view
    base_sha: str | None = None
    if changed is None:
        base_sha = await _git_base(root, base)
        changed = await changed_files(root, base_sha)
    artifacts = await anyio.to_thread.run_sync(list_artifacts, root, view.run_dir)
    reruns: tuple[CommandRerun, ...] | None = None
    if verify_commands:
        timeout = command_timeout_s or float(
            view.runtime_policy.timeout_sec or DEFAULT_COMMAND_TIMEOUT_S
        )
        runner = run_command or run_shell
        done: list[CommandRerun] = []
        for index, command in enumerate(view.commands_to_run):
            rerun = await runner(index, command, cwd=root, timeout_s=timeout)
            log.info(
                "facts.rerun",
                task_id=view.task_id,
                round=round_no,
                index=index,
                exit_code=rerun.exit_code,
                timed_out=rerun.timed_out,
                duration_ms=rerun.duration_ms,
            )
            done.append(rerun)
        reruns = tuple(done)
    log.info(
        "facts.gathered",
        task_id=view.task_id,
        run_id=view.run_id,
        round=round_no,
        base=base_sha,
        changed=len(changed),
        artifacts=len(artifacts),
        reruns=None if reruns is None else len(reruns),
    )
    return WorkspaceFacts(
        changed_files=tuple(changed),
        artifact_files=artifacts,
        command_reruns=reruns,
        base=base_sha,
    )


async def _git_base(root: Path, base: str) -> str:
    if not await is_repo(root):
        raise FactsError(root, "not a git work tree")
    top = await toplevel(root)
    if top.resolve() != root.resolve():
        raise FactsError(root, f"is inside the git work tree at {top}; pass its top level")
    try:
        return (await git(root, "rev-parse", "--verify", "--quiet", f"{base}^{{commit}}")).strip()
    except GitError:
        raise FactsError(root, f"base revision {base!r} is not a commit here") from None


def list_artifacts(root: Path, run_dir: str) -> tuple[str, ...]:
    """Workspace-relative paths (sorted, ``/`` separated) of the regular files under
    `run_dir`, symlinks neither listed nor followed."""
    here = root
    for part in PurePosixPath(run_dir).parts:
        here = here / part
        if here.is_symlink():
            log.warning("facts.artifacts_symlink", path=str(here))
            return ()
    if not here.is_dir():
        return ()
    found: list[str] = []
    for dirpath, _dirnames, filenames in os.walk(here, followlinks=False):
        for name in filenames:
            path = Path(dirpath) / name
            if path.is_symlink() or not path.is_file():
                continue
            found.append(path.relative_to(root).as_posix())
            if len(found) >= MAX_ARTIFACT_FILES:
                log.warning("facts.artifacts_truncated", run_dir=run_dir, limit=len(found))
                return tuple(sorted(found))
    return tuple(sorted(found))


async def run_shell(index: int, command: str, *, cwd: Path, timeout_s: float) -> CommandRerun:
    """Run `command` with ``/bin/sh -c`` in `cwd`, in its own process group, stdin closed.

    On timeout the whole group is killed (a command's children go with it). The tail of the
    combined output of a failing or timed-out run is kept in `detail`.
    """
    started = time.monotonic()
    try:
        with _proctree.own_spawn() as own:
            process = await anyio.open_process(
                ["/bin/sh", "-c", command],
                cwd=cwd,
                stdin=subprocess.DEVNULL,
                stdout=subprocess.PIPE,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
            own(process.pid)
    except OSError as exc:
        return CommandRerun(
            index=index, command=command, exit_code=None, detail=f"could not start: {exc}"
        )
    tail = bytearray()
    timed_out = False
    try:
        with anyio.move_on_after(timeout_s) as scope:
            if process.stdout is not None:
                async for chunk in process.stdout:
                    tail += chunk
                    del tail[:-OUTPUT_TAIL_BYTES]
            await process.wait()
        timed_out = scope.cancelled_caught
    finally:
        with anyio.CancelScope(shield=True):
            if timed_out or process.returncode is None:
                with contextlib.suppress(ProcessLookupError, PermissionError):
                    os.killpg(process.pid, signal.SIGKILL)
                await process.wait()
            await process.aclose()
    code = process.returncode
    detail = ""
    if timed_out:
        detail = f"timed out after {timeout_s:g} s"
    if timed_out or code != 0:
        output = tail.decode("utf-8", "replace").strip()
        detail = "; ".join(x for x in (detail, f"output tail: {output}" if output else "") if x)
    return CommandRerun(
        index=index,
        command=command,
        exit_code=None if timed_out else code,
        timed_out=timed_out,
        duration_ms=int((time.monotonic() - started) * 1000),
        detail=detail,
    )
