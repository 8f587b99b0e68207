"""Where a task's agent works: its own git worktree, or the workspace itself.

Parallel agents cannot share one working tree (the QA review could not tell whose change is
whose), so with git each attempt gets a worktree on its own branch from the target branch's
current head, and accepted work is merged back one task at a time. Without git, tasks run one
at a time in place, each attempt behind a checkpoint of the whole tree so that its changes can
be listed (the QA review's facts) and rolled back.

Evidence (``.artifacts/``) is never committed: it is added to the repository's
``info/exclude``; when a worktree is removed its evidence is copied into the main workspace's
``.artifacts/`` first, so every round's evidence outlives the worktree.
"""

from __future__ import annotations

import contextlib
import shutil
from dataclasses import dataclass, replace
from pathlib import Path, PurePosixPath
from typing import Protocol

import anyio

from protocol import ARTIFACTS_ROOT

from . import _proctree, git
from .checkpoint import CheckpointStore, changed_paths, create_checkpoint, rollback
from .log import get_logger

log = get_logger("runner.workspace")

BRANCH_PREFIX = "runner/"
TASK_TRAILER = "Runner-Task"
ATTEMPT_TRAILER = "Runner-Attempt"
EXCLUDE_LINE = ".artifacts/"


class WorkspaceError(Exception):
    """The workspace cannot be used: carries the path and the reason."""

    def __init__(self, path: str | Path, reason: str) -> None:
        self.path = str(path)
        self.reason = reason
        super().__init__(f"{path}: {reason}")


@dataclass(frozen=True)
class TaskWorkspace:
    """One attempt's working directory and what its changes are measured against."""

    task_key: str
    label: str
    path: Path
    base: str | None = None
    branch: str | None = None
    checkpoint_id: str | None = None


@dataclass(frozen=True)
class Accepted:
    merged: bool
    commit: str | None = None
    conflicted_files: tuple[str, ...] = ()
    detail: str = ""
    # Tracked files of the target checkout changed outside the runner: no merge can go in
    # until a person deals with them (a rework cannot help, unlike a conflict).
    target_edited: bool = False


class Workspaces(Protocol):
    """What the engine needs from a workspace strategy."""

    root: Path
    isolated: bool

    async def prepare(self, task_key: str, label: str) -> TaskWorkspace: ...
    async def relabel(self, ws: TaskWorkspace, label: str) -> TaskWorkspace: ...
    async def changed_files(self, ws: TaskWorkspace) -> list[str] | None: ...
    async def accept(self, ws: TaskWorkspace, message: str) -> Accepted: ...
    async def reject(self, ws: TaskWorkspace) -> None: ...
    async def release(self, ws: TaskWorkspace) -> None: ...
    async def cleanup_stale(self) -> list[str]: ...
    async def accepted_attempt(self, task_key: str) -> str | None: ...
    async def recover(self, task_key: str) -> str | None: ...


def trailers(task_key: str, label: str) -> str:
    return f"{TASK_TRAILER}: {task_key}\n{ATTEMPT_TRAILER}: {label}"


class GitWorktrees:
    """One worktree per attempt under `worktree_dir`, merged into `repo`'s current branch."""

    isolated = True

    def __init__(self, repo: Path, worktree_dir: Path) -> None:
        self.root = repo
        self.worktree_dir = worktree_dir
        # One git operation on the main repository's worktrees and branch at a time: `git
        # worktree prune` run while another task's `git worktree add` is half done deletes
        # the new worktree's admin directory, and a merge must not move the base under an add.
        self._git_lock = anyio.Lock()

    @classmethod
    async def open(cls, repo: Path, worktree_dir: Path) -> GitWorktrees:
        """Check that `repo` can take merges: the top of a work tree, on a branch, with no
        uncommitted change to a tracked file (a merge could not tell it from the agent's)."""
        if not await git.is_repo(repo):
            raise WorkspaceError(repo, "not a git work tree")
        top = await git.toplevel(repo)
        if top.resolve() != repo.resolve():
            raise WorkspaceError(repo, f"is inside the git work tree at {top}; pass its top level")
        if await git.current_branch(repo) is None:
            raise WorkspaceError(repo, "HEAD is detached; check out the branch to merge into")
        try:
            await git.head(repo)
        except git.GitError:
            raise WorkspaceError(repo, "the repository has no commit yet") from None
        if await _abort_own_merge(repo):
            log.warning("workspace.merge_aborted", path=str(repo), reason="left by a killed runner")
        dirty = await _edited_tracked_files(repo)
        if dirty:
            files = ", ".join(dirty[:5])
            raise WorkspaceError(
                repo, f"uncommitted changes to tracked files ({files}); commit or stash them"
            )
        await exclude_artifacts(repo)
        return cls(repo.resolve(), worktree_dir.resolve())

    async def prepare(self, task_key: str, label: str) -> TaskWorkspace:
        path = self.worktree_dir / task_key / label
        branch = f"{BRANCH_PREFIX}{task_key}/{label}"
        await self._remove(path, branch)
        async with self._git_lock:  # the base must not move while the worktree is created
            base = await git.head(self.root)
            await git.add_worktree(self.root, path, branch, base)
        log.info("workspace.created", task_id=task_key, path=str(path), branch=branch, base=base)
        return TaskWorkspace(task_key, label, path, base=base, branch=branch)

    async def relabel(self, ws: TaskWorkspace, label: str) -> TaskWorkspace:
        """`ws` for the next attempt of its task, a rework round in the same worktree: its
        branch renamed after that attempt, so that the branch, the commit and the merge name
        the attempt that is accepted. The worktree stays where it is (the agent resuming its
        thread finds its files where it left them)."""
        assert ws.branch is not None
        branch = f"{BRANCH_PREFIX}{ws.task_key}/{label}"
        if branch != ws.branch:
            async with self._git_lock:
                await git.git(self.root, "branch", "-M", ws.branch, branch)
            log.info("workspace.relabelled", task_id=ws.task_key, branch=branch)
        return replace(ws, label=label, branch=branch)

    async def changed_files(self, ws: TaskWorkspace) -> list[str] | None:
        return None  # gathered by runner.facts from git itself

    async def accept(self, ws: TaskWorkspace, message: str) -> Accepted:
        assert ws.branch is not None
        full = f"{message}\n\n{trailers(ws.task_key, ws.label)}"
        committed = await git.commit_all(ws.path, full)
        if committed is None:
            return Accepted(merged=True, detail="no change to merge")
        merge_message = f"Merge {ws.branch}: {message}\n\n{trailers(ws.task_key, ws.label)}"
        async with self._git_lock:
            # The checkout was clean when the campaign opened it, and only merges change it:
            # an edit now came from outside the runner (an agent that wrote out of its
            # worktree, say). A merge would leave it in place, unreviewed, to be committed by
            # whoever comes next; nothing is merged until a person has dealt with it.
            edited = await _edited_tracked_files(self.root)
            if edited:
                log.warning("workspace.target_edited", task_id=ws.task_key, files=edited)
                return Accepted(
                    merged=False,
                    conflicted_files=tuple(edited),
                    target_edited=True,
                    detail=f"{self.root}: tracked files edited outside the runner: "
                    f"{', '.join(edited[:5])}; nothing is merged until they are committed or "
                    "reverted",
                )
            result = await git.merge(self.root, ws.branch, merge_message)
        if result.merged:
            log.info("workspace.merged", task_id=ws.task_key, commit=result.commit)
            return Accepted(merged=True, commit=result.commit)
        log.info("workspace.conflict", task_id=ws.task_key, files=result.conflicted_files)
        return Accepted(
            merged=False,
            conflicted_files=tuple(result.conflicted_files),
            detail=result.detail,
        )

    async def reject(self, ws: TaskWorkspace) -> None:
        """Nothing to undo: the work stays on its branch, which `release` deletes."""

    async def release(self, ws: TaskWorkspace) -> None:
        await anyio.to_thread.run_sync(copy_evidence, ws.path, self.root)
        await self._remove(ws.path, ws.branch)
        with contextlib.suppress(OSError):
            ws.path.parent.rmdir()  # the task's directory, once its last worktree is gone
        log.info("workspace.removed", task_id=ws.task_key, path=str(ws.path))

    async def _remove(self, path: Path, branch: str | None) -> None:
        async with self._git_lock:
            if path.exists() or path.is_symlink():
                await git.remove_worktree(self.root, path)
                if path.exists():
                    await anyio.to_thread.run_sync(shutil.rmtree, path)
                await git.git(self.root, "worktree", "prune")
            if branch is not None:
                await git.delete_branch(self.root, branch)

    async def cleanup_stale(self) -> list[str]:
        """Remove worktrees and branches a killed runner left behind, after killing the agents
        still running in them (their supervisor died with that runner); returns what went."""
        if self.worktree_dir.is_dir():
            killed = await anyio.to_thread.run_sync(_proctree.kill_orphans, self.worktree_dir)
            if killed:
                log.warning("campaign.orphans_killed", path=str(self.worktree_dir),
                            processes=killed)  # fmt: skip
        removed: list[str] = []
        async with self._git_lock:  # worktrees whose directory is gone: forget them
            await git.git(self.root, "worktree", "prune")
        for path in await git.list_worktrees(self.root):
            if path.resolve().is_relative_to(self.worktree_dir):
                await anyio.to_thread.run_sync(copy_evidence, path, self.root)
                await self._remove(path, None)
                removed.append(str(path))
        if self.worktree_dir.is_dir():
            for leftover in self.worktree_dir.iterdir():
                await anyio.to_thread.run_sync(shutil.rmtree, leftover, True)
                removed.append(str(leftover))
        out = await git.git(
            self.root, "for-each-ref", "--format=%(refname:short)", f"refs/heads/{BRANCH_PREFIX}"
        )
        for branch in out.split():
            await git.delete_branch(self.root, branch)
            removed.append(branch)
        return removed

    async def accepted_attempt(self, task_key: str) -> str | None:
        """The attempt label of a merge of `task_key` already on the target branch, if any
        (a runner killed between merging and recording it must not run the task again)."""
        out = await git.git(
            self.root,
            "log",
            "--format=%(trailers:key=Runner-Task,valueonly)%x00"
            "%(trailers:key=Runner-Attempt,valueonly)%x00",
            "-n",
            "10000",
        )
        fields = out.split("\0")
        for task, attempt in zip(fields[0::2], fields[1::2], strict=False):
            if task.strip() == task_key:
                return attempt.strip() or "?"
        return None

    async def recover(self, task_key: str) -> str | None:
        """Nothing to undo: an abandoned attempt's worktree went with `cleanup_stale`."""
        return None


class InPlace:
    """Tasks run one at a time in the workspace itself, each attempt behind a checkpoint."""

    isolated = False

    def __init__(
        self,
        workspace: Path,
        store: Path,
        *,
        rollback_on_fail: bool,
        exclude: tuple[Path, ...] = (),
    ) -> None:
        self.root = workspace.resolve()
        self.store = store
        self.rollback_on_fail = rollback_on_fail
        # The runner's own files (queue, ledger, checkpoints) change during a step and must
        # neither count as the agent's changes nor be rolled back.
        self._exclude = _in_place_exclusions(self.root, (store, *exclude))

    async def prepare(self, task_key: str, label: str) -> TaskWorkspace:
        manifest = await anyio.to_thread.run_sync(
            lambda: create_checkpoint(
                self.root,
                trees=["."],
                task_key=task_key,
                run_id=label.replace("/", "-"),
                store=self.store,
                exclude=self._exclude,
            )
        )
        log.info("workspace.checkpointed", task_id=task_key, checkpoint_id=manifest.checkpoint_id)
        return TaskWorkspace(task_key, label, self.root, checkpoint_id=manifest.checkpoint_id)

    async def relabel(self, ws: TaskWorkspace, label: str) -> TaskWorkspace:
        """The same workspace and checkpoint: the attempt's changes are still measured
        against the tree before its first round."""
        return replace(ws, label=label)

    async def changed_files(self, ws: TaskWorkspace) -> list[str] | None:
        assert ws.checkpoint_id is not None
        cid = ws.checkpoint_id
        return await anyio.to_thread.run_sync(
            lambda: changed_paths(self.root, cid, store=self.store)
        )

    async def accept(self, ws: TaskWorkspace, message: str) -> Accepted:
        return Accepted(merged=True, detail="in place: the changes are already there")

    async def reject(self, ws: TaskWorkspace) -> None:
        if self.rollback_on_fail and ws.checkpoint_id is not None:
            cid = ws.checkpoint_id
            report = await anyio.to_thread.run_sync(
                lambda: rollback(self.root, cid, store=self.store)
            )
            log.info(
                "workspace.rolled_back",
                task_id=ws.task_key,
                checkpoint_id=cid,
                rewritten=len(report.rewritten),
                deleted=len(report.deleted),
                recreated=len(report.recreated),
            )

    async def release(self, ws: TaskWorkspace) -> None:
        """Nothing to remove in place."""

    async def cleanup_stale(self) -> list[str]:
        return []

    async def accepted_attempt(self, task_key: str) -> str | None:
        return None

    async def recover(self, task_key: str) -> str | None:
        """Undo the edits of `task_key`'s attempt that a killed runner abandoned (with
        rollback-on-fail): its newest checkpoint is the workspace before that attempt, since
        tasks run in place one at a time. Returns the checkpoint restored, if any."""
        if not self.rollback_on_fail:
            return None
        store = CheckpointStore(self.store)
        manifests, _ = await anyio.to_thread.run_sync(store.list)
        mine = [m for m in manifests if m.task_key == task_key]
        if not mine or mine[-1] is not manifests[-1]:
            return None  # another task ran in place since: rolling back would undo its work
        cid = mine[-1].checkpoint_id
        await anyio.to_thread.run_sync(lambda: rollback(self.root, cid, store=self.store))
        log.info("workspace.rolled_back", task_id=task_key, checkpoint_id=cid, reason="abandoned")
        return cid


def copy_evidence(
    source_workspace: Path, target_workspace: Path, under: str = ARTIFACTS_ROOT
) -> None:
    """Merge ``source/.artifacts`` into ``target/.artifacts`` (files only, links skipped); with
    `under` (a path relative to the workspaces, inside their evidence), only that directory.

    The agent may have replaced the evidence directory itself, or its parent, with a link (to
    ``/``, say): nothing is copied then, or the runner would copy whatever the link points at
    into the main workspace.
    """
    src = source_workspace
    for part in PurePosixPath(under).parts:
        src = src / part
        if src.is_symlink():
            log.warning("workspace.artifacts_link_skipped", path=str(src))
            return
    if not src.is_dir() or source_workspace.resolve() == target_workspace.resolve():
        return
    dst = target_workspace / under
    for path in src.rglob("*"):
        if path.is_symlink() or not path.is_file():
            continue
        target = dst / path.relative_to(src)
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(path, target)


async def _edited_tracked_files(repo: Path) -> list[str]:
    """Tracked files of `repo`'s checkout that differ from HEAD (staged or not)."""
    out = await git.git(repo, "status", "--porcelain", "--untracked-files=no")
    return [line[3:] for line in out.splitlines() if line.strip()]


async def _abort_own_merge(repo: Path) -> bool:
    """Abort a conflicted merge that a runner started and was killed before aborting (its
    message carries our trailer); a merge a person has in progress is left alone."""
    paths = await git.git(repo, "rev-parse", "--git-path", "MERGE_HEAD", "--git-path", "MERGE_MSG")
    merge_head, merge_msg = (repo / p for p in paths.splitlines())
    if not merge_head.exists() or not merge_msg.exists():
        return False
    if f"\n{TASK_TRAILER}: " not in merge_msg.read_text(encoding="utf-8", errors="replace"):
        return False
    await git.git(repo, "merge", "--abort")
    return True


async def exclude_artifacts(repo: Path) -> None:
    """Add ``.artifacts/`` to the repository's ``info/exclude`` (shared by its worktrees)."""
    common = Path((await git.git(repo, "rev-parse", "--git-common-dir")).strip())
    if not common.is_absolute():
        common = repo / common
    exclude = common / "info" / "exclude"
    exclude.parent.mkdir(parents=True, exist_ok=True)
    lines = exclude.read_text(encoding="utf-8").splitlines() if exclude.exists() else []
    if EXCLUDE_LINE not in lines:
        with exclude.open("a", encoding="utf-8") as f:
            f.write(("\n" if lines and lines[-1] else "") + EXCLUDE_LINE + "\n")


def _in_place_exclusions(workspace: Path, own: tuple[Path, ...]) -> list[str]:
    out = [".git", ".artifacts"]
    for path in own:
        try:
            rel = path.resolve().relative_to(workspace).as_posix()
        except ValueError:
            continue
        if rel != ".":
            out.append(rel)
    return out
