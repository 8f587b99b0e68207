from __future__ import annotations

import subprocess
from pathlib import Path

import pytest

from runner import git


def sh(repo: Path, *args: str) -> str:
    return subprocess.run(
        ["git", "-C", str(repo), *git.RUNNER_IDENTITY, *args],
        check=True,
        capture_output=True,
        text=True,
    ).stdout


@pytest.fixture
def repo(tmp_path: Path) -> Path:
    root = tmp_path / "repo"
    root.mkdir()
    sh(root, "init", "-q", "-b", "main")
    (root / "a.txt").write_text("a\n")
    (root / "keep.txt").write_text("keep\n")
    (root / ".gitignore").write_text(".artifacts/\n")
    sh(root, "add", "-A")
    sh(root, "commit", "-qm", "init")
    return root


@pytest.mark.anyio
async def test_is_repo(repo: Path, tmp_path: Path) -> None:
    assert await git.is_repo(repo)
    assert not await git.is_repo(tmp_path / "nothing")
    plain = tmp_path / "plain"
    plain.mkdir()
    assert not await git.is_repo(plain)


@pytest.mark.anyio
async def test_changed_files_sees_every_kind_of_change(repo: Path) -> None:
    base = await git.head(repo)
    (repo / "a.txt").write_text("changed\n")  # unstaged
    (repo / "new dir").mkdir()
    (repo / "new dir" / "we'ird\nname.txt").write_text("x")  # untracked, odd name
    (repo / "keep.txt").unlink()  # deleted
    (repo / "staged.txt").write_text("s")
    sh(repo, "add", "staged.txt")
    (repo / ".artifacts").mkdir()
    (repo / ".artifacts" / "evidence.txt").write_text("ignored")
    assert await git.changed_files(repo, base) == sorted(
        ["a.txt", "keep.txt", "new dir/we'ird\nname.txt", "staged.txt"]
    )
    await git.commit_all(repo, "work")
    assert "a.txt" in await git.changed_files(repo, base)
    assert await git.changed_files(repo, await git.head(repo)) == []


@pytest.mark.anyio
async def test_worktree_merge_and_conflict(repo: Path, tmp_path: Path) -> None:
    base = await git.head(repo)
    wt1, wt2 = tmp_path / "wt1", tmp_path / "wt2"
    await git.add_worktree(repo, wt1, "task-1", base)
    await git.add_worktree(repo, wt2, "task-2", base)
    assert {wt1.resolve(), wt2.resolve()} <= {p.resolve() for p in await git.list_worktrees(repo)}
    (wt1 / "a.txt").write_text("from task 1\n")
    (wt2 / "a.txt").write_text("from task 2\n")
    assert await git.commit_all(wt1, "task 1") is not None
    assert await git.commit_all(wt2, "task 2") is not None
    assert await git.commit_all(wt2, "nothing") is None

    first = await git.merge(repo, "task-1", "merge task 1")
    assert first.merged and first.commit == await git.head(repo)
    second = await git.merge(repo, "task-2", "merge task 2")
    assert not second.merged
    assert second.conflicted_files == ["a.txt"]
    # The target is left as it was before the failed merge.
    assert (repo / "a.txt").read_text() == "from task 1\n"
    assert sh(repo, "status", "--porcelain") == ""

    for wt, branch in ((wt1, "task-1"), (wt2, "task-2")):
        await git.remove_worktree(repo, wt)
        await git.delete_branch(repo, branch)
    assert not wt1.exists() and not wt2.exists()
    assert [p.resolve() for p in await git.list_worktrees(repo)] == [repo.resolve()]


@pytest.mark.anyio
async def test_git_error_carries_facts(repo: Path) -> None:
    with pytest.raises(git.GitError) as info:
        await git.git(repo, "rev-parse", "no-such-ref")
    assert info.value.returncode != 0
    assert "no-such-ref" in str(info.value)
