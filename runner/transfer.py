"""Moving an attempt's work between machines as git objects, and its evidence as files.

A step that runs on another machine starts from the controller's worktree and comes back as a
change to it. Both directions use the same shape, a `Change`: the worktree's content (tracked
and untracked files, not ignored ones) as one commit whose parent is the attempt's base, plus a
pack of the objects that commit adds (what a git bundle carries, without its ref header, so no
temporary ref is ever made in anyone's repository). `snapshot` takes it without touching the
worktree's index or HEAD; `receive` stores it in the other repository and checks that it is
what it says; `check_out` makes a worktree hold it with HEAD left at the base, so that the
change looks exactly like an agent's uncommitted edits to the review and the merge that follow.

Evidence files travel as bytes keyed by their workspace-relative path, each under a size cap
(the tail is kept: a log's end says how it ended); `write_files` refuses any path that would
land outside ``.artifacts/`` of the workspace.
"""

from __future__ import annotations

import tempfile
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath

from protocol import ARTIFACTS_ROOT

from . import git

# A file bigger than this travels as its last EVIDENCE_FILE_CAP bytes (and is named as cut).
EVIDENCE_FILE_CAP = 16 * 1024 * 1024
# All evidence of one round together; files past it travel as their tails of 64 KiB.
EVIDENCE_TOTAL_CAP = 256 * 1024 * 1024
_SMALL_TAIL = 64 * 1024


class TransferError(Exception):
    """What came from the other side cannot be used: names what and why."""


@dataclass(frozen=True)
class Change:
    """A worktree's content as `commit` (its parent is the base) and the pack of its objects."""

    commit: str
    pack: bytes


@dataclass(frozen=True)
class Files:
    """Evidence files by workspace-relative POSIX path; `cut` names those sent as a tail."""

    files: dict[str, bytes] = field(default_factory=dict)
    cut: tuple[str, ...] = ()


async def snapshot(worktree: Path, base: str, message: str) -> Change | None:
    """The worktree's content as a commit on top of `base`; None when it is `base`'s tree.

    A private index is used, so the worktree's own index, HEAD and files stay as they are.
    """
    with tempfile.TemporaryDirectory(prefix="runner-index-") as tmp:
        env = {"GIT_INDEX_FILE": str(Path(tmp) / "index")}
        await git.git(worktree, "read-tree", base, env=env)
        await git.git(worktree, "add", "--all", env=env)
        tree = (await git.git(worktree, "write-tree", env=env)).strip()
    if tree == (await git.git(worktree, "rev-parse", f"{base}^{{tree}}")).strip():
        return None
    commit = (await git.git(worktree, "commit-tree", tree, "-p", base, "-m", message)).strip()
    pack = await git.git_bytes(
        worktree, "pack-objects", "--revs", "--stdout", "-q", input=f"{commit}\n^{base}\n".encode()
    )
    return Change(commit, pack)


async def receive(repo: Path, change: Change, base: str) -> None:
    """Store `change`'s objects in `repo`; raises `TransferError` unless it is one commit on
    top of `base` (the pack came from another machine)."""
    await git.git_bytes(repo, "unpack-objects", "-q", input=change.pack)
    try:
        parents = (await git.git(repo, "rev-parse", f"{change.commit}^@")).split()
    except git.GitError as exc:
        raise TransferError(f"the change {change.commit} did not arrive: {exc.stderr}") from None
    if parents != [base]:
        raise TransferError(f"the change {change.commit} is not on top of base {base}")


async def check_out(worktree: Path, base: str, commit: str | None) -> None:
    """Make the worktree's files and index those of `commit` (or of `base` when None), HEAD
    staying at `base`: files not in `commit` go, ignored files stay."""
    await git.git(worktree, "add", "--all")
    await git.git(worktree, "reset", "-q", "--hard", commit or base)
    if commit is not None:
        await git.git(worktree, "reset", "-q", "--soft", base)


def collect(root: Path, under: str, *, skip: Mapping[str, bytes] | None = None) -> Files:
    """Regular files below `root/under` (links skipped) whose content is not already `skip`'s,
    each cut to its tail past `EVIDENCE_FILE_CAP`, smaller tails past `EVIDENCE_TOTAL_CAP`."""
    base = root / under
    files: dict[str, bytes] = {}
    cut: list[str] = []
    total = 0
    if not base.is_dir() or base.is_symlink():
        return Files()
    for path in sorted(base.rglob("*")):
        if path.is_symlink() or not path.is_file():
            continue
        rel = path.relative_to(root).as_posix()
        size = path.stat().st_size
        cap = EVIDENCE_FILE_CAP if total < EVIDENCE_TOTAL_CAP else _SMALL_TAIL
        with path.open("rb") as f:
            if size > cap:
                f.seek(size - cap)
                cut.append(rel)
            data = f.read()
        if skip is not None and skip.get(rel) == data:
            continue
        files[rel] = data
        total += len(data)
    return Files(files, tuple(cut))


def write_files(root: Path, files: Mapping[str, bytes]) -> None:
    """Write evidence files into `root`; a path outside ``.artifacts/`` is a `TransferError`."""
    for rel in files:
        _check_rel(rel)
    inside = root.resolve()
    for rel, data in files.items():
        target = root / rel
        # Checked on the deepest directory that exists before any is made: a link in the
        # way must not get directories made through it either.
        existing = next(p for p in target.parents if p.is_dir())
        if not existing.resolve().is_relative_to(inside):
            raise TransferError(f"evidence path {rel!r} leads out of {root} through a link")
        target.parent.mkdir(parents=True, exist_ok=True)
        if target.is_symlink():
            target.unlink()
        target.write_bytes(data)


def _check_rel(rel: str) -> None:
    parts = PurePosixPath(rel).parts
    if (
        not parts
        or parts[0] != ARTIFACTS_ROOT.split("/")[0]
        or any(p in ("", ".", "..") for p in parts)
        or rel.startswith("/")
        or "\\" in rel
        or "\0" in rel
    ):
        raise TransferError(f"evidence path {rel!r} is not a plain path under .artifacts/")
