"""`runner.workspace` through its Python API on real git repositories and plain directories:
a worktree per attempt, merges back with trailers, conflicts, stale cleanup after a crash,
recognising work merged before a crash, and the in-place checkpoint strategy."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import anyio
import pytest

from runner.workspace import GitWorktrees, InPlace, WorkspaceError, copy_evidence
from tests.runner.engine_fixtures import git

pytestmark = pytest.mark.anyio


@pytest.fixture
def repo(tmp_path: Path) -> Path:
    path = tmp_path / "repo"
    path.mkdir()
    (path / "a.txt").write_text("a\n")
    git(path, "init", "-q", "-b", "main")
    git(path, "add", ".")
    git(path, "commit", "-qm", "start")
    return path


def branches(repo: Path) -> list[str]:
    return git(repo, "for-each-ref", "--format=%(refname:short)", "refs/heads/").split()


def worktrees(repo: Path) -> list[str]:
    out = git(repo, "worktree", "list", "--porcelain")
    return [line.split(" ", 1)[1] for line in out.splitlines() if line.startswith("worktree ")]


def assert_only_main(repo: Path) -> None:
    """No worktree but the main one, no branch but `main`: nothing left behind."""
    assert worktrees(repo) == [str(repo)]
    assert branches(repo) == ["main"]


async def test_parallel_attempts_create_and_remove_worktrees_without_racing(
    repo: Path, tmp_path: Path
) -> None:
    """`git worktree prune` of one task must not run while another task's worktree is being
    added (it deletes the half-made admin directory): many tasks churning at once."""
    spaces = await GitWorktrees.open(repo, tmp_path / "wt")

    async def churn(key: str) -> None:
        for s in range(5):
            ws = await spaces.prepare(key, f"R0S{s}")
            assert (ws.path / "a.txt").read_text() == "a\n"
            await spaces.release(ws)

    async with anyio.create_task_group() as tg:
        for n in range(16):
            tg.start_soon(churn, f"t{n}")
    assert_only_main(repo)


async def test_accepted_work_is_merged_with_trailers_and_found_after_a_crash(
    repo: Path, tmp_path: Path
) -> None:
    spaces = await GitWorktrees.open(repo, tmp_path / "wt")
    ws = await spaces.prepare("t1", "R0S0")
    (ws.path / "b.txt").write_text("b\n")
    (ws.path / ".artifacts" / "agent_runs").mkdir(parents=True)
    (ws.path / ".artifacts" / "agent_runs" / "evidence.txt").write_text("proof\n")
    accepted = await spaces.accept(ws, "t1: add b")
    await spaces.release(ws)
    assert accepted.merged and accepted.commit == git(repo, "rev-parse", "HEAD").strip()
    assert (repo / "b.txt").read_text() == "b\n"
    message = git(repo, "log", "-1", "--format=%B")
    assert "Runner-Task: t1" in message and "Runner-Attempt: R0S0" in message
    # Evidence is never committed, but it is copied to the main workspace on release.
    assert git(repo, "ls-files", ".artifacts") == ""
    assert (repo / ".artifacts" / "agent_runs" / "evidence.txt").read_text() == "proof\n"
    assert git(repo, "status", "--porcelain") == ""
    assert await spaces.accepted_attempt("t1") == "R0S0"
    assert await spaces.accepted_attempt("t2") is None


async def test_a_relabelled_worktree_is_merged_as_its_new_attempt(
    repo: Path, tmp_path: Path
) -> None:
    """A rework round in the same worktree (R0S0, then R1S0): the branch is renamed, the work
    and the worktree stay, and the commit, the merge and `accepted_attempt` name R1S0."""
    spaces = await GitWorktrees.open(repo, tmp_path / "wt")
    ws = await spaces.prepare("t1", "R0S0")
    (ws.path / "b.txt").write_text("b\n")
    moved = await spaces.relabel(ws, "R1S0")
    assert (moved.label, moved.branch, moved.path, moved.base) == (
        "R1S0", "runner/t1/R1S0", ws.path, ws.base,
    )  # fmt: skip
    assert branches(repo) == ["main", "runner/t1/R1S0"]
    assert git(ws.path, "rev-parse", "--abbrev-ref", "HEAD").strip() == "runner/t1/R1S0"
    assert (ws.path / "b.txt").read_text() == "b\n"
    assert await spaces.relabel(moved, "R1S0") == moved
    assert (await spaces.accept(moved, "t1: add b")).merged
    await spaces.release(moved)
    assert git(repo, "log", "-1", "--format=%s", "HEAD").startswith("Merge runner/t1/R1S0: ")
    for rev in ("HEAD", "HEAD^2"):  # the merge, and the commit it merged
        assert "Runner-Task: t1\nRunner-Attempt: R1S0" in git(repo, "log", "-1", "--format=%B", rev)
    assert await spaces.accepted_attempt("t1") == "R1S0"
    assert_only_main(repo)


async def test_evidence_can_be_copied_for_one_directory_only(tmp_path: Path) -> None:
    source, target = tmp_path / "source", tmp_path / "target"
    for name in ("run_a/steps/S1/rounds/R1/x.txt", "run_b/y.txt"):
        (source / ".artifacts" / "agent_runs" / name).parent.mkdir(parents=True, exist_ok=True)
        (source / ".artifacts" / "agent_runs" / name).write_text(name)
    target.mkdir()
    copy_evidence(source, target, ".artifacts/agent_runs/run_a/steps/S1")
    copied = sorted(p.relative_to(target).as_posix() for p in target.rglob("*") if p.is_file())
    assert copied == [".artifacts/agent_runs/run_a/steps/S1/rounds/R1/x.txt"]
    # A link on the way is never followed.
    shutil.rmtree(target / ".artifacts")
    (source / ".artifacts" / "agent_runs" / "run_c").symlink_to(source / ".artifacts")
    copy_evidence(source, target, ".artifacts/agent_runs/run_c/agent_runs")
    assert not (target / ".artifacts").exists()


async def test_nothing_changed_is_accepted_without_a_merge(repo: Path, tmp_path: Path) -> None:
    spaces = await GitWorktrees.open(repo, tmp_path / "wt")
    head = git(repo, "rev-parse", "HEAD")
    ws = await spaces.prepare("t1", "R0S0")
    accepted = await spaces.accept(ws, "t1: nothing")
    await spaces.release(ws)
    assert accepted.merged and accepted.commit is None
    assert git(repo, "rev-parse", "HEAD") == head


async def test_a_conflict_leaves_the_target_as_it_was(repo: Path, tmp_path: Path) -> None:
    spaces = await GitWorktrees.open(repo, tmp_path / "wt")
    one = await spaces.prepare("t1", "R0S0")
    two = await spaces.prepare("t2", "R0S0")
    (one.path / "a.txt").write_text("one\n")
    (two.path / "a.txt").write_text("two\n")
    assert (await spaces.accept(one, "t1")).merged
    head = git(repo, "rev-parse", "HEAD")
    conflict = await spaces.accept(two, "t2")
    assert not conflict.merged
    assert conflict.conflicted_files == ("a.txt",)
    assert git(repo, "rev-parse", "HEAD") == head
    assert git(repo, "status", "--porcelain") == ""
    assert (repo / "a.txt").read_text() == "one\n"
    assert await spaces.accepted_attempt("t2") is None
    for ws in (one, two):
        await spaces.release(ws)
    assert branches(repo) == ["main"]


async def test_stale_worktrees_and_branches_of_a_killed_runner_are_cleaned_up(
    repo: Path, tmp_path: Path
) -> None:
    spaces = await GitWorktrees.open(repo, tmp_path / "wt")
    ws = await spaces.prepare("t1", "R0S0")
    rd = ws.path / ".artifacts" / "agent_runs" / "t1_run" / "steps" / "S1" / "rounds" / "R1"
    rd.mkdir(parents=True)
    (rd / "shim_stdout.txt").write_text("half a run\n")
    (tmp_path / "wt" / "junk").mkdir()  # a directory git does not know
    # The runner dies here. The next one cleans up, keeping the evidence.
    again = await GitWorktrees.open(repo, tmp_path / "wt")
    removed = await again.cleanup_stale()
    assert str(ws.path) in removed and "runner/t1/R0S0" in removed
    assert_only_main(repo)
    assert list((tmp_path / "wt").iterdir()) == []
    copied = repo / rd.relative_to(ws.path) / "shim_stdout.txt"
    assert copied.read_text() == "half a run\n"


@pytest.mark.parametrize(
    ("setup", "reason"),
    [
        (lambda r: (r / "a.txt").write_text("dirty\n"), "uncommitted changes to tracked files"),
        (lambda r: git(r, "checkout", "-q", "--detach"), "HEAD is detached"),
    ],
)
async def test_a_repository_that_cannot_take_merges_is_refused(
    repo: Path, tmp_path: Path, setup: object, reason: str
) -> None:
    setup(repo)  # type: ignore[operator]
    with pytest.raises(WorkspaceError, match=reason):
        await GitWorktrees.open(repo, tmp_path / "wt")


async def test_a_subdirectory_of_a_repository_is_refused(repo: Path, tmp_path: Path) -> None:
    (repo / "sub").mkdir()
    with pytest.raises(WorkspaceError, match="pass its top level"):
        await GitWorktrees.open(repo / "sub", tmp_path / "wt")


async def test_in_place_lists_changes_and_rolls_back(tmp_path: Path) -> None:
    ws_dir = tmp_path / "ws"
    (ws_dir / "progress").mkdir(parents=True)
    (ws_dir / "keep.txt").write_text("keep\n")
    (ws_dir / "gone.txt").write_text("gone\n")
    (ws_dir / "progress" / "queue.json").write_text("{}")
    spaces = InPlace(ws_dir, ws_dir / "progress" / "checkpoints", rollback_on_fail=True,
                     exclude=(ws_dir / "progress",))  # fmt: skip
    ws = await spaces.prepare("t1", "R0S0")
    (ws_dir / "keep.txt").write_text("changed\n")
    (ws_dir / "gone.txt").unlink()
    (ws_dir / "new.txt").write_text("new\n")
    (ws_dir / "progress" / "queue.json").write_text('{"changed": true}')
    assert await spaces.changed_files(ws) == ["gone.txt", "keep.txt", "new.txt"]
    await spaces.reject(ws)
    assert (ws_dir / "keep.txt").read_text() == "keep\n"
    assert (ws_dir / "gone.txt").read_text() == "gone\n"
    assert not (ws_dir / "new.txt").exists()
    # The runner's own files are neither the agent's changes nor rolled back.
    assert (ws_dir / "progress" / "queue.json").read_text() == '{"changed": true}'


async def test_a_worktree_whose_directory_was_deleted_is_forgotten(
    repo: Path, tmp_path: Path
) -> None:
    spaces = await GitWorktrees.open(repo, tmp_path / "wt")
    ws = await spaces.prepare("t1", "R0S0")
    shutil.rmtree(ws.path)
    await spaces.cleanup_stale()
    assert_only_main(repo)
    again = await spaces.prepare("t1", "R0S0")  # the same path can be used again
    await spaces.release(again)


def conflicted_merge(repo: Path, message: str) -> None:
    """Leave `repo` in the middle of a conflicted merge with `message`, as a runner killed
    between `git merge` and `git merge --abort` does."""
    git(repo, "checkout", "-q", "-b", "runner/t1/R0S0")
    (repo / "a.txt").write_text("theirs\n")
    git(repo, "commit", "-qam", "theirs")
    git(repo, "checkout", "-q", "main")
    (repo / "a.txt").write_text("ours\n")
    git(repo, "commit", "-qam", "ours")
    merge = subprocess.run(
        ["git", "-C", str(repo), "merge", "--no-ff", "-m", message, "runner/t1/R0S0"],
        capture_output=True, check=False,
    )  # fmt: skip
    assert merge.returncode != 0 and (repo / ".git" / "MERGE_HEAD").exists()


async def test_a_conflicted_merge_left_by_a_killed_runner_is_aborted(
    repo: Path, tmp_path: Path
) -> None:
    conflicted_merge(repo, "Merge runner/t1/R0S0: t1\n\nRunner-Task: t1\nRunner-Attempt: R0S0")
    spaces = await GitWorktrees.open(repo, tmp_path / "wt")
    assert not (repo / ".git" / "MERGE_HEAD").exists()
    assert (repo / "a.txt").read_text() == "ours\n"
    assert git(repo, "status", "--porcelain") == ""
    await spaces.cleanup_stale()
    assert branches(repo) == ["main"]


async def test_a_merge_a_person_has_in_progress_is_left_alone(repo: Path, tmp_path: Path) -> None:
    conflicted_merge(repo, "my own merge")
    with pytest.raises(WorkspaceError, match="uncommitted changes"):
        await GitWorktrees.open(repo, tmp_path / "wt")
    assert (repo / ".git" / "MERGE_HEAD").exists()


async def test_in_place_recover_undoes_only_the_last_attempt_and_only_when_asked(
    tmp_path: Path,
) -> None:
    ws_dir = tmp_path / "ws"
    ws_dir.mkdir()
    (ws_dir / "f.txt").write_text("before\n")
    store = tmp_path / "checkpoints"
    keep = InPlace(ws_dir, store, rollback_on_fail=False)
    await keep.prepare("t1", "R0S0")
    (ws_dir / "f.txt").write_text("t1 half done\n")
    assert await keep.recover("t1") is None  # not asked to roll back
    assert (ws_dir / "f.txt").read_text() == "t1 half done\n"

    spaces = InPlace(ws_dir, store, rollback_on_fail=True)
    restored = await spaces.recover("t1")
    assert restored is not None
    assert (ws_dir / "f.txt").read_text() == "before\n"
    await spaces.prepare("t2", "R0S0")  # t2 ran after t1's checkpoint ...
    (ws_dir / "f.txt").write_text("t2's work\n")
    assert await spaces.recover("t1") is None  # ... so t1's checkpoint would undo t2's work
    assert (ws_dir / "f.txt").read_text() == "t2's work\n"
