"""The commit process (ledger/commit_process.py): journal rotation and checkpoints while
appends go on, recovery from both journals, and what happens when the process or its writer
dies."""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import anyio
import pytest

from ledger import (
    Appended,
    AttemptOrderRejected,
    Ledger,
    LedgerError,
    ProjectPaths,
    WriterFailed,
    committer,
    open_ledger,
    verify_project,
)
from ledger.lock import WriterLock
from protocol import AttemptPointer
from tests.ledger.conftest import PROJECT, attempt, crash_image

pytestmark = pytest.mark.anyio

WRITER = Path(__file__).with_name("crash_writer.py")


def commit_processes(paths: ProjectPaths) -> list[int]:
    """Pids of commit processes working on `paths` (from /proc)."""
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            cmdline = (entry / "cmdline").read_bytes()
        except OSError:
            continue
        if b"commit_process.py" in cmdline and str(paths.dir).encode() in cmdline:
            found.append(int(entry.name))
    return found


async def test_journal_rotates_and_checkpoints_while_appends_go_on(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(committer, "CHECKPOINT_BYTES", 64 * 1024)
    paths = ProjectPaths.of(tmp_path, PROJECT)
    largest = 0
    rotated = False
    done = False

    async def watch() -> None:
        nonlocal largest, rotated
        while not done:
            rotated = rotated or paths.old_journal.exists()
            if paths.journal.exists():
                largest = max(largest, paths.journal.stat().st_size)
            await anyio.sleep(0.001)

    async def producer(ledger: Ledger, task: str) -> None:
        for s in range(40):
            await ledger.append_task_event(task, attempt(0, s, code_content="x" * 900))

    async with (
        open_ledger(tmp_path, PROJECT, create=True) as ledger,
        anyio.create_task_group() as tg,
    ):
        tg.start_soon(watch)
        async with anyio.create_task_group() as producers:
            for n in range(8):
                producers.start_soon(producer, ledger, f"T-{n}")
        done = True
    # 320 events of about 1.3 KB: 400 KB through journals that were renamed at 64 KB (the
    # current one grows on while the old one's checkpoint runs) and deleted once checkpointed.
    total = sum(p.stat().st_size for p in paths.dir.rglob("events.jsonl"))
    assert rotated
    assert 0 < largest < total * 3 // 4
    assert not paths.old_journal.exists()
    assert paths.journal.stat().st_size == 0
    report = verify_project(paths)
    assert report.ok and not report.notes, (report.problems, report.notes)
    assert {h.seq for h in report.task_heads.values()} == {39}


def test_recovery_redoes_the_old_journal_then_the_current_one(project_root: Path) -> None:
    # A crash while a checkpoint ran: the old journal holds batch A, the current one batch B,
    # and the chain files hold neither.
    image = crash_image(project_root, project_root / "image", [("T", attempt(0, 1))])
    before = {p: p.read_bytes() for p in (image.events, image.task_events("T"))}
    scratch = project_root / "scratch"
    shutil.copytree(image.dir, scratch / PROJECT)
    image2 = crash_image(scratch, project_root / "image2",
                         [("T", attempt(0, 2)), ("U", attempt(0, 0))])  # fmt: skip
    names = ("events.jsonl", "tasks/T/events.jsonl", "tasks/U/events.jsonl")
    complete = {name: (image2.dir / name).read_bytes() for name in names}
    image.journal.replace(image.old_journal)
    shutil.copyfile(image2.journal, image.journal)
    for path, data in before.items():  # cut back to before batch A
        lines = data.splitlines(keepends=True)
        path.write_bytes(b"".join(lines[:-1]))
    assert verify_project(image).ok  # pending, not damage

    async def reopen() -> None:
        async with open_ledger(image.root, PROJECT, mode="buffered"):
            pass

    anyio.run(reopen)
    for name, data in complete.items():
        assert (image.dir / name).read_bytes().startswith(data), name
    assert not image.old_journal.exists()
    report = verify_project(image)
    assert report.ok and not report.notes, (report.problems, report.notes)


async def test_a_dead_commit_process_fails_appends_with_a_clear_error(tmp_path: Path) -> None:
    paths = ProjectPaths.of(tmp_path, PROJECT)
    with pytest.raises(WriterFailed, match="commit process ended"):
        async with open_ledger(tmp_path, PROJECT, create=True) as ledger:
            first = await ledger.append_task_event("T", attempt(0, 0))
            (pid,) = commit_processes(paths)
            os.kill(pid, signal.SIGKILL)
            await anyio.sleep(0.2)
            await ledger.append_task_event("T", attempt(0, 1))
    # The acknowledged event was journaled: the next writer has it.
    async with open_ledger(tmp_path, PROJECT) as ledger:
        assert ledger.task_state("T").head == first.event_hash
    report = verify_project(paths)
    assert report.ok and not report.notes, (report.problems, report.notes)


def test_a_killed_writer_takes_its_commit_process_and_lock_with_it(tmp_path: Path) -> None:
    paths = ProjectPaths.of(tmp_path, PROJECT)
    proc = subprocess.Popen(
        [sys.executable, str(WRITER), str(tmp_path), PROJECT, "durable"],
        stdout=subprocess.PIPE, stderr=subprocess.DEVNULL,
    )  # fmt: skip
    assert proc.stdout is not None
    for _ in range(20):
        assert proc.stdout.readline()
    assert len(commit_processes(paths)) == 1
    proc.kill()
    proc.wait()

    async def reopen() -> None:
        async with open_ledger(tmp_path, PROJECT):
            pass

    # At once: the dying commit process may hold the lock a moment more, within the grace
    # every writer waits (ledger/lock.py).
    anyio.run(reopen)
    deadline = time.monotonic() + 5
    while commit_processes(paths):
        assert time.monotonic() < deadline, "the commit process outlived its writer"
        time.sleep(0.01)
    assert verify_project(paths).ok


async def test_signals_to_the_process_group_are_left_to_the_writer(tmp_path: Path) -> None:
    # Ctrl-C or a service manager's SIGTERM reach every process of the group: the writer may
    # still record what it was doing (a campaign records its interrupted attempts).
    paths = ProjectPaths.of(tmp_path, PROJECT)
    async with open_ledger(tmp_path, PROJECT, create=True) as ledger:
        await ledger.append_task_event("T", attempt(0, 0))
        (pid,) = commit_processes(paths)
        for sig in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP):
            os.kill(pid, sig)
        await anyio.sleep(0.1)
        await ledger.append_task_event("T", attempt(0, 1))
        assert commit_processes(paths) == [pid]
    report = verify_project(paths)
    assert report.ok and report.task_heads["T"].seq == 1


async def test_a_ledger_opened_only_to_read_starts_no_commit_process(tmp_path: Path) -> None:
    async with open_ledger(tmp_path, PROJECT, create=True) as ledger:
        await ledger.append_task_event("T", attempt(0, 0))
    paths = ProjectPaths.of(tmp_path, PROJECT)
    async with open_ledger(tmp_path, PROJECT) as ledger:
        assert ledger.task_state("T").seq == 0
        assert commit_processes(paths) == []


@pytest.mark.parametrize(
    ("edited", "message"),
    [
        (b'"format": 1', r"project_manifest.json: ledger format 1"),
        # A manifest that does not say its format is not taken for the current one.
        (b"", r"project_manifest.json: not a project manifest: Object missing required field"),
    ],
)
def test_a_ledger_of_another_format_is_refused_naming_the_manifest(
    project_root: Path, edited: bytes, message: str
) -> None:
    paths = ProjectPaths.of(project_root, PROJECT)
    manifest = paths.manifest.read_bytes()
    member = b'"format": 2'
    assert manifest.count(member) == 1
    paths.manifest.write_bytes(
        manifest.replace(b",\n  " + member, b",\n  " + edited if edited else b"")
    )

    async def main() -> None:
        async with open_ledger(project_root, PROJECT):
            pass

    with pytest.raises(LedgerError, match=message):
        anyio.run(main)


async def test_a_refused_append_does_not_publish_a_batch_still_in_flight(tmp_path: Path) -> None:
    paths = ProjectPaths.of(tmp_path, PROJECT)
    async with open_ledger(tmp_path, PROJECT, create=True) as ledger:
        await ledger.append_task_event("T", attempt(0, 0))
        before = ledger.head
        (pid,) = commit_processes(paths)
        os.kill(pid, signal.SIGSTOP)  # the next batch stays in flight
        try:
            async with anyio.create_task_group() as tg:
                tg.start_soon(ledger.append_task_event, "T", attempt(0, 1))
                await anyio.sleep(0.1)
                with pytest.raises(AttemptOrderRejected):  # S5 after the sealed S1
                    await ledger.append_task_event("T", attempt(0, 5))
                assert ledger.head == before
                assert ledger.task_state("T").pointer == AttemptPointer(0, 0)
                os.kill(pid, signal.SIGCONT)
        finally:
            os.kill(pid, signal.SIGCONT)
        assert ledger.head.seq == before.seq + 1
        assert ledger.task_state("T").pointer == AttemptPointer(0, 1)


async def test_a_failed_flush_fails_alone_not_the_appends_committed_with_it(
    tmp_path: Path,
) -> None:
    """The chain file cannot be written (its directory is a file), but the batch is in the
    journal: its append is acknowledged, the flush that needed the chain file fails, and so
    does every later append; a reopen (with the obstacle gone) has the event."""
    paths = ProjectPaths.of(tmp_path, PROJECT)
    got: dict[str, object] = {}

    async def append(ledger: Ledger) -> None:
        got["append"] = await ledger.append_task_event("BAD", attempt(0, 0))

    async def flush(ledger: Ledger) -> None:
        try:
            await ledger.flush()
        except WriterFailed as exc:
            got["flush"] = exc

    async with open_ledger(tmp_path, PROJECT, create=True) as ledger:
        await ledger.append_task_event("A", attempt(0, 0))
        ledger.task_state("BAD")  # no chain yet
        paths.task_dir("BAD").write_text("not a directory\n")
        async with anyio.create_task_group() as tg:  # one batch: the append and the flush
            tg.start_soon(append, ledger)
            tg.start_soon(flush, ledger)
        with pytest.raises(WriterFailed):
            await ledger.append_task_event("A", attempt(0, 1))
    assert "tasks/BAD/events.jsonl" in str(got["flush"])
    appended = got["append"]
    assert isinstance(appended, Appended)
    paths.task_dir("BAD").unlink()
    async with open_ledger(tmp_path, PROJECT) as ledger:
        assert ledger.task_state("BAD").head == appended.event_hash
        assert ledger.task_state("A").seq == 0
    assert verify_project(paths).ok


async def test_closing_waits_for_a_stalled_commit_process_on_the_event_loop(
    tmp_path: Path,
) -> None:
    """Cancelled with a batch in flight and the commit process stalled (here SIGSTOP; a slow
    disk in life): the close waits for it, and the other tasks of the loop run meanwhile."""
    paths = ProjectPaths.of(tmp_path, PROJECT)
    gaps: list[float] = []

    async def ticker() -> None:
        last = time.monotonic()
        while True:
            await anyio.sleep(0.02)
            now = time.monotonic()
            gaps.append(now - last)
            last = now

    async with anyio.create_task_group() as tg:
        tg.start_soon(ticker)
        start = time.monotonic()
        with anyio.move_on_after(0.3):
            async with open_ledger(tmp_path, PROJECT, create=True) as ledger:
                await ledger.append_task_event("T", attempt(0, 0))
                (pid,) = commit_processes(paths)
                os.kill(pid, signal.SIGSTOP)
                threading.Timer(1.0, os.kill, (pid, signal.SIGCONT)).start()
                await ledger.append_task_event("T", attempt(0, 1))  # cancelled, in flight
        closed = time.monotonic() - start
        tg.cancel_scope.cancel()
    assert closed >= 0.9, "the close waited for the commit process"
    assert max(gaps) < 0.5, "the event loop was blocked while it waited"
    assert verify_project(paths).ok


def test_a_lock_shared_with_a_child_outlives_its_release(tmp_path: Path) -> None:
    """A writer that gives up its lock (a second Ctrl-C while it closes, say) must not free it
    while its commit process, which shares it, may still write."""
    lock = WriterLock(tmp_path / ".lock")
    assert lock.try_acquire()
    child = subprocess.Popen(
        [sys.executable, "-c", "import time; time.sleep(30)"], pass_fds=(lock.fd,)
    )
    other = WriterLock(tmp_path / ".lock")
    try:
        lock.release()
        assert not other.try_acquire()
    finally:
        child.kill()
        child.wait()
    assert other.try_acquire()
    other.release()
