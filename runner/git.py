"""Git, as the runner uses it: facts about a workspace, worktrees per task, merges back.

Every call goes through `git()`, which runs the real `git` binary with an argv (never a shell),
no terminal prompts, and a fixed identity for the commits the runner makes itself. Paths that
git prints are read with ``-z`` so that names with spaces, quotes or newlines come out exact.
"""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from pathlib import Path

import anyio
import msgspec

RUNNER_IDENTITY = ("-c", "user.name=runner", "-c", "user.email=runner@localhost")


class GitError(Exception):
    """A git command failed; carries the argv, exit code and stderr."""

    def __init__(self, args: Sequence[str], returncode: int, stderr: str) -> None:
        self.args_ = list(args)
        self.returncode = returncode
        self.stderr = stderr
        super().__init__(f"git {' '.join(args)} failed ({returncode}): {stderr.strip()[:500]}")


class MergeResult(msgspec.Struct, frozen=True):
    merged: bool
    commit: str | None = None
    conflicted_files: list[str] = []
    detail: str = ""


def _env() -> dict[str, str]:
    env = dict(os.environ)
    env.update(GIT_TERMINAL_PROMPT="0", GIT_OPTIONAL_LOCKS="0", LC_ALL="C")
    return env


async def git(
    repo: str | Path, *args: str, check: bool = True, env: Mapping[str, str] | None = None
) -> str:
    """Run ``git -C repo args...`` and return stdout (text); raise `GitError` if it fails.

    `env` adds variables (``GIT_INDEX_FILE``, say) to the runner's git environment."""
    out = await git_bytes(repo, *args, check=check, env=env)
    return out.decode("utf-8", "surrogateescape")


async def git_bytes(
    repo: str | Path,
    *args: str,
    check: bool = True,
    env: Mapping[str, str] | None = None,
    input: bytes | None = None,
) -> bytes:
    """`git` for binary data: `input` goes to its stdin, its stdout comes back as bytes."""
    argv = ["git", "-C", str(repo), *RUNNER_IDENTITY, *args]
    full_env = {**_env(), **(env or {})}
    try:
        if input is None:
            result = await anyio.run_process(argv, check=False, env=full_env, stdin=None)
        else:
            result = await anyio.run_process(argv, check=False, env=full_env, input=input)
    except OSError as exc:
        raise GitError(args, -1, f"cannot run git: {exc}") from None
    if check and result.returncode != 0:
        raise GitError(args, result.returncode, result.stderr.decode("utf-8", "replace"))
    return result.stdout


def _split_z(out: str) -> list[str]:
    return [p for p in out.split("\0") if p]


async def is_repo(path: str | Path) -> bool:
    """True when `path` is inside a git work tree."""
    if not Path(path).is_dir():
        return False
    try:
        out = await git(path, "rev-parse", "--is-inside-work-tree")
    except GitError:
        return False
    return out.strip() == "true"


async def toplevel(path: str | Path) -> Path:
    return Path((await git(path, "rev-parse", "--show-toplevel")).strip())


async def head(repo: str | Path) -> str:
    """The commit HEAD points at (full sha)."""
    return (await git(repo, "rev-parse", "HEAD")).strip()


async def current_branch(repo: str | Path) -> str | None:
    out = (await git(repo, "rev-parse", "--abbrev-ref", "HEAD")).strip()
    return None if out == "HEAD" else out


async def changed_files(repo: str | Path, base: str) -> list[str]:
    """Files that differ between `base` and the working tree, plus untracked files.

    Committed, staged and unstaged changes all count, deletions included; renames appear as
    the old and the new name. Files git ignores are not seen (document this to users: an agent
    writing to an ignored path is invisible here).
    """
    diff = await git(repo, "diff", "--name-only", "--no-renames", "-z", base, "--")
    untracked = await git(repo, "ls-files", "--others", "--exclude-standard", "-z")
    return sorted(set(_split_z(diff)) | set(_split_z(untracked)))


async def commit_all(repo: str | Path, message: str) -> str | None:
    """Stage everything and commit it; returns the new commit, or None if nothing changed."""
    await git(repo, "add", "--all")
    status = await git(repo, "status", "--porcelain", "-z")
    if not status:
        return None
    await git(repo, "commit", "--quiet", "--no-verify", "-m", message)
    return await head(repo)


async def add_worktree(repo: str | Path, path: str | Path, branch: str, base: str) -> None:
    """Create `path` as a new worktree on a new `branch` starting at `base`."""
    await git(repo, "worktree", "add", "--quiet", "-b", branch, str(path), base)


async def remove_worktree(repo: str | Path, path: str | Path) -> None:
    """Remove a worktree (even with uncommitted changes) and prune git's record of it."""
    if Path(path).exists():
        await git(repo, "worktree", "remove", "--force", "--force", str(path), check=False)
    await git(repo, "worktree", "prune")


async def list_worktrees(repo: str | Path) -> list[Path]:
    out = await git(repo, "worktree", "list", "--porcelain", "-z")
    return [
        Path(line[len("worktree ") :]) for line in _split_z(out) if line.startswith("worktree ")
    ]


async def delete_branch(repo: str | Path, branch: str) -> None:
    await git(repo, "branch", "-D", branch, check=False)


async def merge(repo: str | Path, branch: str, message: str) -> MergeResult:
    """Merge `branch` into the branch checked out at `repo` with a merge commit.

    On a conflict the merge is aborted (the target is left exactly as before) and the
    conflicted files are reported.
    """
    try:
        await git(repo, "merge", "--no-ff", "--no-edit", "-m", message, branch)
    except GitError as exc:
        conflicted = _split_z(await git(repo, "diff", "--name-only", "--diff-filter=U", "-z"))
        await git(repo, "merge", "--abort", check=False)
        return MergeResult(merged=False, conflicted_files=conflicted, detail=exc.stderr.strip())
    return MergeResult(merged=True, commit=await head(repo))
