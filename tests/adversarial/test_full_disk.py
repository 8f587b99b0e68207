"""The ledger on a filesystem that fills up: a small tmpfs this test mounts (root only; skipped,
with the reason, where mounting is not allowed).

Appends fail with a clear error naming the file that could not be written; nothing already
acknowledged is lost; after space returns the ledger recovers, verifies and takes appends
again."""

from __future__ import annotations

import contextlib
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import anyio
import msgspec
import pytest

from ledger import Ledger, ProjectPaths, WriterFailed, open_ledger
from ledger.verify import verify_project
from protocol import Verdict
from protocol.ledger_events import Attempt, ExecutionStarted, TaskRecord
from tests.adversarial.trials import seeds
from tests.runner.engine_fixtures import child_env

RUNNER = [sys.executable, "-m", "runner", "--log-level", "warning"]
SIZE_KB = 2048
BIG_KB = 16384
FILLS = seeds("full-disk", 2, 10)


@pytest.fixture
def small_fs(tmp_path: Path) -> Iterator[Path]:
    """A 2 MiB tmpfs mounted for this test, unmounted afterwards."""
    mnt = tmp_path / "mnt"
    mnt.mkdir()
    try:
        done = subprocess.run(
            ["mount", "-t", "tmpfs", "-o", f"size={SIZE_KB}k,mode=0755", "tmpfs", str(mnt)],
            capture_output=True, text=True, timeout=10, check=False,
        )  # fmt: skip
    except OSError as exc:
        pytest.skip(f"cannot mount a small tmpfs to fill ({exc})")
    if done.returncode != 0:
        pytest.skip(f"cannot mount a small tmpfs to fill (needs CAP_SYS_ADMIN): {done.stderr}")
    try:
        yield mnt
    finally:
        subprocess.run(["umount", "-l", str(mnt)], capture_output=True, timeout=10, check=False)


def resize(mnt: Path, kb: int) -> None:
    subprocess.run(
        ["mount", "-o", f"remount,size={kb}k", str(mnt)], check=True, capture_output=True
    )


def ledger(root: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [*RUNNER, "ledger", "--root-dir", str(root), "--project-id", "p", *args],
        capture_output=True, text=True, timeout=60, check=False, env=child_env(),
    )  # fmt: skip


def attempt(root: Path, task: str, s: int, content: str) -> subprocess.CompletedProcess[str]:
    return ledger(
        root, "attempt", "--task-id", task, "--r", "0", "--s", str(s), "--result", "FAIL",
        "--reason-code", "RETRY", "--code-content", content,
    )  # fmt: skip


def fill(mnt: Path, leave_kb: int) -> Path:
    """A file taking all but about `leave_kb` KiB of the filesystem."""
    st = os.statvfs(mnt)
    free = st.f_bavail * st.f_frsize
    filler = mnt / "filler"
    with filler.open("wb") as f, contextlib.suppress(OSError):
        f.write(b"\0" * max(0, free - leave_kb * 1024))
    return filler


@pytest.mark.parametrize("trial", FILLS)
def test_appends_on_a_full_disk_fail_clearly_and_lose_nothing(small_fs: Path, trial: str) -> None:
    root = small_fs / "ledger"
    assert ledger(root, "init").returncode == 0
    n = int(trial.rsplit("-", 1)[1])
    filler = fill(small_fs, leave_kb=40 + 7 * n)  # a different tail of free space per trial
    acked: list[str] = []  # the event hashes the CLI acknowledged (exit 0)
    failed: subprocess.CompletedProcess[str] | None = None
    for s in range(200):
        done = attempt(root, "T-1", len(acked), f"{s}:" + "x" * 6000)
        if done.returncode != 0:
            failed = done
            break
        acked.append(done.stdout.split()[-1])
    assert failed is not None, "the filesystem never filled up"
    assert acked, "not one append fitted before the disk was full"
    # A clear error: non-zero exit, the file that could not be written, the reason; no traceback.
    assert failed.returncode == 1, failed.stderr
    assert "Traceback" not in failed.stderr, failed.stderr
    assert "No space left on device" in failed.stderr, failed.stderr
    assert str(root / "p") in failed.stderr, failed.stderr
    # Still full: another append fails as clearly, and damages nothing.
    again = attempt(root, "T-1", len(acked), "y" * 6000)
    assert again.returncode != 0 and "Traceback" not in again.stderr, again.stderr
    # Space returns: the next writer recovers, everything acknowledged is there, and the
    # ledger verifies and takes appends again.
    filler.unlink()
    if n % 2:
        resize(small_fs, BIG_KB)  # the other way space comes back: a bigger filesystem
    anyio.run(reopen, root)
    # An append reported as failed may still have been committed (its journal fsync done, the
    # chain write after it failed): it is then recorded once, never half.
    chain = task_hashes(root)
    assert chain[: len(acked)] == acked, "an acknowledged event is missing"
    assert len(chain) <= len(acked) + 2, "more events than appends that may have landed"
    appended = attempt(root, "T-1", len(chain), "after the disk was freed")
    assert appended.returncode == 0, appended.stderr
    verified = ledger(root, "verify")
    assert verified.returncode == 0, verified.stdout + verified.stderr
    report = verify_project(ProjectPaths.of(root, "p"))
    assert report.ok and not report.notes, (report.problems, report.notes)
    assert task_hashes(root) == [*chain, appended.stdout.split()[-1]]


async def reopen(root: Path) -> None:
    async with open_ledger(root, "p"):
        pass


def task_hashes(root: Path) -> list[str]:
    lines = (root / "p" / "tasks" / "T-1" / "events.jsonl").read_bytes().splitlines()
    return [msgspec.json.decode(line, type=TaskRecord).event_hash for line in lines]


@pytest.mark.parametrize("trial", FILLS)
def test_one_writer_filling_the_disk_refuses_appends_and_recovers(
    small_fs: Path, trial: str
) -> None:
    """One open writer, many producers, until the disk is full: the first failed append and
    every later one raise `WriterFailed` naming a file; each append that returned is on disk
    after space returns and the ledger is reopened."""
    root = small_fs / "ledger"
    n = int(trial.rsplit("-", 1)[1])
    filler = fill(small_fs, leave_kb=300 + 50 * n)
    acked: dict[str, list[str]] = {}
    errors: list[WriterFailed] = []

    async def produce(ledger: Ledger, task: str) -> None:
        s = 0
        while not errors:
            body = Attempt(
                r=0, s=s, result=Verdict.FAIL, reason_code="RETRY", code_content="z" * 3000
            )
            try:
                got = await ledger.append_task_event(task, body)
            except WriterFailed as exc:
                errors.append(exc)
                return
            acked.setdefault(task, []).append(got.event_hash)
            s += 1

    async def main() -> None:
        async with open_ledger(root, "p", create=True, mode="durable") as ledger:
            async with anyio.create_task_group() as tg:
                for i in range(4):
                    tg.start_soon(produce, ledger, f"T-{i}")
            with pytest.raises(WriterFailed):  # refused from now on, clearly
                await ledger.append_project_event(ExecutionStarted(detail="after"))

    anyio.run(main)
    assert errors, "the filesystem never filled up"
    for exc in errors:
        assert exc.reason == "No space left on device", exc
        assert str(exc.path).startswith(str(root / "p")), exc
    filler.unlink()
    anyio.run(reopen, root)
    paths = ProjectPaths.of(root, "p")
    report = verify_project(paths)
    assert report.ok and not report.notes, (report.problems, report.notes)
    for task, hashes in acked.items():
        lines = paths.task_events(task).read_bytes().splitlines()
        chain = [msgspec.json.decode(x, type=TaskRecord).event_hash for x in lines]
        assert chain[: len(hashes)] == hashes, f"{task}: an acknowledged event is missing"


def test_creating_a_ledger_on_a_full_disk_fails_clearly_then_works(small_fs: Path) -> None:
    root = small_fs / "ledger"
    filler = fill(small_fs, leave_kb=0)
    failed = ledger(root, "init")
    assert failed.returncode == 1, failed.stderr
    assert "No space left on device" in failed.stderr and str(root / "p") in failed.stderr
    assert "Traceback" not in failed.stderr
    filler.unlink()
    assert ledger(root, "init").returncode == 0
    assert ledger(root, "verify").returncode == 0
