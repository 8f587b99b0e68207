"""Moving work between repositories as git objects (`runner.transfer`): a worktree's content
travels as a commit on top of the base and comes out as uncommitted work on the other side;
evidence files travel with caps and never land outside ``.artifacts/``."""

from __future__ import annotations

from pathlib import Path

import pytest

from runner import transfer
from runner.transfer import TransferError
from tests.runner.engine_fixtures import git

pytestmark = pytest.mark.anyio


def _repo(path: Path) -> str:
    path.mkdir()
    git(path, "init", "-q", "-b", "main")
    (path / "keep.txt").write_text("keep\n")
    (path / "edit.txt").write_text("old\n")
    (path / "gone.txt").write_text("gone\n")
    git(path, "add", ".")
    git(path, "commit", "-qm", "base")
    return git(path, "rev-parse", "HEAD").strip()


async def test_a_worktree_state_travels_and_arrives_as_uncommitted_work(tmp_path: Path) -> None:
    here, there = tmp_path / "here", tmp_path / "there"
    base = _repo(here)
    git(tmp_path, "clone", "-q", str(here), str(there))
    (here / "edit.txt").write_text("new\n")
    (here / "gone.txt").unlink()
    (here / "added.bin").write_bytes(bytes(range(256)))
    head_before = git(here, "rev-parse", "HEAD")

    change = await transfer.snapshot(here, base, "test")
    assert change is not None
    # Taking the snapshot changed nothing here: same HEAD, same (empty) index.
    assert git(here, "rev-parse", "HEAD") == head_before
    assert git(here, "diff", "--cached", "--name-only") == ""

    await transfer.receive(there, change, base)
    await transfer.check_out(there, base, change.commit)
    assert git(there, "rev-parse", "HEAD").strip() == base
    assert (there / "edit.txt").read_text() == "new\n"
    assert not (there / "gone.txt").exists()
    assert (there / "added.bin").read_bytes() == bytes(range(256))
    assert sorted(git(there, "diff", "--cached", "--name-only", base).split()) == [
        "added.bin", "edit.txt", "gone.txt",
    ]  # fmt: skip


async def test_an_unchanged_worktree_is_no_change(tmp_path: Path) -> None:
    base = _repo(tmp_path / "r")
    assert await transfer.snapshot(tmp_path / "r", base, "test") is None


async def test_a_change_not_on_the_base_is_refused(tmp_path: Path) -> None:
    here, there = tmp_path / "here", tmp_path / "there"
    base = _repo(here)
    git(tmp_path, "clone", "-q", str(here), str(there))
    (here / "edit.txt").write_text("one\n")
    git(here, "commit", "-qam", "one")
    other_base = git(here, "rev-parse", "HEAD").strip()
    (here / "edit.txt").write_text("two\n")
    change = await transfer.snapshot(here, other_base, "test")
    assert change is not None
    with pytest.raises(TransferError, match="not on top of base"):
        await transfer.receive(there, change, base)


def test_evidence_outside_artifacts_is_refused_and_nothing_is_written(tmp_path: Path) -> None:
    for bad in ("src/x.py", ".artifacts/../x", "/etc/passwd", ".artifacts/a/../../x", ""):
        with pytest.raises(TransferError):
            transfer.write_files(tmp_path, {".artifacts/agent_runs/ok.txt": b"ok", bad: b"x"})
    assert not (tmp_path / ".artifacts").exists()


def test_evidence_through_a_link_is_refused_before_any_directory_is_made(tmp_path: Path) -> None:
    workspace, outside = tmp_path / "ws", tmp_path / "outside"
    workspace.mkdir()
    outside.mkdir()
    (workspace / ".artifacts").symlink_to(outside)
    with pytest.raises(TransferError, match="through a link"):
        transfer.write_files(workspace, {".artifacts/agent_runs/r/R1/out.txt": b"x"})
    assert list(outside.iterdir()) == []


def test_evidence_is_collected_once_and_big_files_as_their_tail(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(transfer, "EVIDENCE_FILE_CAP", 10)
    run = tmp_path / ".artifacts" / "agent_runs" / "r"
    run.mkdir(parents=True)
    (run / "old.txt").write_bytes(b"old")
    (run / "big.txt").write_bytes(b"0123456789abcdef")
    (run / "link").symlink_to(run / "old.txt")
    got = transfer.collect(tmp_path, ".artifacts/agent_runs", skip={
        ".artifacts/agent_runs/r/old.txt": b"old",
    })  # fmt: skip
    assert got.files == {".artifacts/agent_runs/r/big.txt": b"6789abcdef"}
    assert got.cut == (".artifacts/agent_runs/r/big.txt",)
