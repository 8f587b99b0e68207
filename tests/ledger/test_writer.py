"""The writer: many producers, group commit, the task rules, the lock, O(1) open, recovery."""

from __future__ import annotations

import shutil
from pathlib import Path

import anyio
import msgspec
import pytest

from ledger.errors import (
    AttemptOrderRejected,
    AttemptStillOpen,
    EventRejected,
    InvalidEvent,
    InvalidLedgerId,
    LedgerDamaged,
    LedgerError,
    LedgerLocked,
    PointerMismatch,
    TaskAlreadyClosed,
)
from ledger.store import ProjectPaths
from ledger.verify import verify_project
from ledger.writer import Appended, Ledger, open_ledger
from protocol import AttemptKind, AttemptPointer
from protocol.ledger_events import (
    AttemptInterrupted,
    AttemptStarted,
    CampaignFinished,
    FinalStatus,
    ProjectCreated,
    ProjectRecord,
    RecoveredTornTail,
    StepOutcomeRecorded,
    TaskClosed,
    TaskEventLink,
    TaskEventsLinked,
    TaskRecord,
)
from protocol.outcome import EndReason
from tests.ledger.conftest import PROJECT, attempt, crash_image, listing

pytestmark = pytest.mark.anyio


def records(path: Path, type_: type[ProjectRecord] | type[TaskRecord]) -> list[object]:
    return [msgspec.json.decode(line, type=type_) for line in path.read_bytes().splitlines()]


async def test_concurrent_producers_are_all_committed_and_verify(tmp_path: Path) -> None:
    results: list[Appended] = []

    async with open_ledger(tmp_path, PROJECT, create=True) as ledger:

        async def producer(n: int) -> None:
            task = f"T-{n}"
            for s in range(5):
                results.append(await ledger.append_task_event(task, attempt(0, s)))

        async with anyio.create_task_group() as tg:
            for n in range(16):
                tg.start_soon(producer, n)
    paths = ProjectPaths.of(tmp_path, PROJECT)
    report = verify_project(paths)
    assert report.ok, report.problems
    assert len(results) == 80
    # Group commit: 80 events from 16 producers did not need 80 separate batches, and every
    # acknowledged event is where its receipt says, linked from the project line it names.
    assert len({r.project_seq for r in results}) < 80
    project = records(paths.events, ProjectRecord)
    for r in results:
        assert r.task_id is not None
        line = paths.task_events(r.task_id).read_bytes().splitlines()[r.seq]
        assert msgspec.json.decode(line, type=TaskRecord).event_hash == r.event_hash
        body = project[r.project_seq].body  # type: ignore[attr-defined]
        assert isinstance(body, TaskEventsLinked)
        assert TaskEventLink(r.task_id, r.seq, r.event_hash, "attempt") in body.events
    linked = [e for rec in project for e in getattr(rec.body, "events", [])]
    assert len(linked) == 80


async def test_rs_rules_are_enforced_with_the_legal_next_pointers(tmp_path: Path) -> None:
    async with open_ledger(tmp_path, PROJECT, create=True, mode="buffered") as ledger:
        with pytest.raises(AttemptOrderRejected) as first:
            await ledger.append_task_event("T-1", attempt(0, 1))
        assert first.value.legal == (AttemptPointer(0, 0),)
        await ledger.append_task_event("T-1", attempt(0, 0))
        head = ledger.head
        with pytest.raises(AttemptOrderRejected) as skip:
            await ledger.append_task_event("T-1", attempt(0, 2))
        assert "retry keeps R" in str(skip.value)
        assert skip.value.legal == (AttemptPointer(0, 1), AttemptPointer(1, 0))
        assert ledger.head == head, "a refused event writes nothing"
        await ledger.append_task_event("T-1", attempt(1, 0))
        await ledger.append_task_event("T-1", TaskClosed(final_status=FinalStatus.ACCEPTED))
        with pytest.raises(TaskAlreadyClosed):
            await ledger.append_task_event("T-1", attempt(1, 1))
        with pytest.raises(TaskAlreadyClosed):
            await ledger.append_task_event("T-1", TaskClosed(final_status=FinalStatus.FAILED))
    assert verify_project(ProjectPaths.of(tmp_path, PROJECT)).ok


async def test_started_attempt_must_be_finished_before_the_next(tmp_path: Path) -> None:
    started = AttemptStarted(r=0, s=0, kind=AttemptKind.FIRST, worker_backend="mock")
    async with open_ledger(tmp_path, PROJECT, create=True, mode="buffered") as ledger:
        with pytest.raises(EventRejected, match="is a first attempt, not retry"):
            await ledger.append_task_event(
                "T", AttemptStarted(r=0, s=0, kind=AttemptKind.RETRY, worker_backend="m")
            )
        await ledger.append_task_event("T", started)
        outcome = StepOutcomeRecorded(
            r=0, s=0, reason=EndReason.SILENCE_LIMIT, exit_code=None, started_at="a",
            ended_at="b", duration_ms=5,
        )  # fmt: skip
        await ledger.append_task_event("T", outcome)
        with pytest.raises(PointerMismatch):
            await ledger.append_task_event("T", msgspec.structs.replace(outcome, s=1))
        with pytest.raises(AttemptStillOpen):
            await ledger.append_task_event(
                "T", AttemptStarted(r=0, s=1, kind=AttemptKind.RETRY, worker_backend="m")
            )
        await ledger.append_task_event("T", AttemptInterrupted(r=0, s=0, reason="killed"))
        with pytest.raises(EventRejected, match="no open attempt"):
            await ledger.append_task_event("T", AttemptInterrupted(r=0, s=0, reason="again"))
        await ledger.append_task_event(
            "T", AttemptStarted(r=0, s=1, kind=AttemptKind.RETRY, worker_backend="m")
        )
        await ledger.append_task_event("T", attempt(0, 1))  # completes the open attempt
        state = ledger.task_state("T")
        assert (state.pointer, state.attempt_open) == (AttemptPointer(0, 1), False)
    assert verify_project(ProjectPaths.of(tmp_path, PROJECT)).ok


async def test_invalid_events_and_ids_are_refused_before_writing(tmp_path: Path) -> None:
    async with open_ledger(tmp_path, PROJECT, create=True, mode="buffered") as ledger:
        head = ledger.head
        with pytest.raises(InvalidEvent):
            await ledger.append_task_event("T", attempt(0, 0, code_content="\ud800"))
        with pytest.raises(InvalidEvent):
            await ledger.append_task_event("T", attempt(-1, 0))
        with pytest.raises(InvalidEvent):
            await ledger.append_project_event(attempt(0, 0))
        with pytest.raises(InvalidEvent):  # init's alone: the chain's first event
            await ledger.append_project_event(ProjectCreated())
        with pytest.raises(InvalidEvent):
            await ledger.append_task_event("T", attempt("zero", None))  # type: ignore[arg-type]
        with pytest.raises(InvalidEvent):
            await ledger.append_task_event("T", TaskClosed(final_status="done"))  # type: ignore[arg-type]
        for bad in ["../x", "a/b", "", ".hidden", "x" * 200, "a..b"]:
            with pytest.raises(InvalidLedgerId):
                await ledger.append_task_event(bad, attempt(0, 0))
        assert ledger.head == head
        assert ledger.task_state("T").seq == -1
    before = listing(tmp_path)
    assert "proj/tasks/T" not in before
    with pytest.raises(InvalidLedgerId):
        async with open_ledger(tmp_path, "../escape", create=True):
            pass
    assert listing(tmp_path) == before


async def test_second_writer_is_locked_out_or_waits(tmp_path: Path) -> None:
    async with open_ledger(tmp_path, PROJECT, create=True, mode="buffered"):
        with pytest.raises(LedgerLocked):
            async with open_ledger(tmp_path, PROJECT):
                pass
    got_in = anyio.Event()

    async def late_writer() -> None:
        async with open_ledger(tmp_path, PROJECT, lock_timeout=5, mode="buffered") as ledger:
            await ledger.append_project_event(CampaignFinished(campaign_id="c", cycles=1,
                                                               stop_reason="done"))  # fmt: skip
            got_in.set()

    async with anyio.create_task_group() as tg:
        async with open_ledger(tmp_path, PROJECT, mode="buffered"):
            tg.start_soon(late_writer)
            await anyio.sleep(0.2)
            assert not got_in.is_set()
        await got_in.wait()
    assert verify_project(ProjectPaths.of(tmp_path, PROJECT)).ok


async def test_open_reads_only_the_tails(tmp_path: Path) -> None:
    async with open_ledger(tmp_path, PROJECT, create=True, mode="buffered") as ledger:
        for s in range(50):
            await ledger.append_task_event("T", attempt(0, s))
    paths = ProjectPaths.of(tmp_path, PROJECT)
    # Damage in the middle of both chains: open does not read there (O(1)); verify does.
    for path in (paths.events, paths.task_events("T")):
        data = bytearray(path.read_bytes())
        data[len(data) // 2] ^= 1
        path.write_bytes(bytes(data))
    async with open_ledger(tmp_path, PROJECT, mode="buffered") as ledger:
        assert ledger.head.seq == 50
        assert ledger.task_state("T").pointer == AttemptPointer(0, 49)
    assert not verify_project(paths).ok


def recovered_events(paths: ProjectPaths) -> list[RecoveredTornTail]:
    return [
        r.body
        for r in records(paths.events, ProjectRecord)
        if isinstance(r.body, RecoveredTornTail)  # type: ignore[attr-defined]
    ]  # type: ignore[misc]


def reopen(paths: ProjectPaths) -> None:
    async def main() -> None:
        async with open_ledger(paths.root, PROJECT, mode="buffered"):
            pass

    anyio.run(main)


def cut(path: Path, keep_lines: int, partial: int = 0) -> bytes:
    """Cut `path` back to its first `keep_lines` lines plus `partial` bytes of the next one,
    as a kill in the middle of writing the rest leaves it; returns the partial piece."""
    lines = path.read_bytes().splitlines(keepends=True)
    piece = lines[keep_lines][:partial] if partial else b""
    path.write_bytes(b"".join(lines[:keep_lines]) + piece)
    return piece


def test_kill_mid_chain_write_is_redone_from_the_journal(project_root: Path) -> None:
    paths = ProjectPaths.of(project_root, PROJECT)
    bodies = [("T", attempt(0, 1)), ("U", attempt(0, 0)), ("T", attempt(0, 2))]
    image = crash_image(project_root, project_root / "image", bodies)
    complete = {p: p.read_bytes() for p in (image.events, image.task_events("T"))}
    # The kill landed while the chain files were being written: T got one and a half of its
    # two new lines, the project chain half of its first link, U nothing (no file yet).
    torn_task = cut(image.task_events("T"), 2, partial=30)
    torn_project = cut(image.events, 2, partial=50)
    shutil.rmtree(image.task_dir("U"))
    assert verify_project(image).ok  # pending, not damage
    reopen(image)
    recovered = recovered_events(image)
    assert {(r.file, r.reason, r.line) for r in recovered} == {
        ("events.jsonl", "torn", 3), ("tasks/T/events.jsonl", "torn", 3),
    }  # fmt: skip
    assert {(image.dir / r.quarantine_file).read_bytes() for r in recovered} == {
        torn_task,
        torn_project,
    }
    # Every acknowledged line is back, byte for byte, and the recovery is on the record.
    assert image.task_events("T").read_bytes() == complete[image.task_events("T")]
    assert image.events.read_bytes().startswith(complete[image.events])
    assert image.task_events("U").exists()
    report = verify_project(image)
    assert report.ok and not report.notes, (report.problems, report.notes)
    assert image.journal.stat().st_size == 0
    del paths


def test_torn_journal_tail_is_quarantined_and_chains_left_alone(project_root: Path) -> None:
    image = crash_image(project_root, project_root / "image", [("T", attempt(0, 1))])
    before = image.task_events("T").read_bytes()
    with image.journal.open("ab") as f:
        f.write(b'{"attempt_open":false,"body":{"acceptance_sn')
    reopen(image)
    # Journal lines 1-3 are the batch (task line, link, commit line); the torn piece is line 4.
    assert [(r.file, r.line) for r in recovered_events(image)] == [(".journal.jsonl", 4)]
    assert image.task_events("T").read_bytes() == before
    assert verify_project(image).ok


def test_batch_cut_short_in_the_journal_is_quarantined_whole(project_root: Path) -> None:
    image = crash_image(project_root, project_root / "image", [("T", attempt(0, 1))])
    chains = {p: p.read_bytes() for p in (image.events, image.task_events("T"))}
    committed = image.journal.read_bytes()
    # The next batch (two tasks) was cut short in the journal on a line boundary: its task
    # lines are complete, its links and commit line missing. It must not be half applied.
    shutil.copytree(image.dir, project_root / "scratch" / PROJECT)
    image2 = crash_image(project_root / "scratch", project_root / "image2",
                         [("T", attempt(0, 2)), ("U", attempt(0, 0))])  # fmt: skip
    partial = b"".join(image2.journal.read_bytes().splitlines(keepends=True)[:2])
    assert b"commit" not in partial
    image.journal.write_bytes(committed + partial)
    reopen(image)
    assert [(r.file, r.lines) for r in recovered_events(image)] == [(".journal.jsonl", 2)]
    assert image.task_events("T").read_bytes() == chains[image.task_events("T")]
    assert not image.task_events("U").exists()
    assert verify_project(image).ok


@pytest.mark.parametrize("tail", [b'{"attempt_open":false,"bo', b'{"attempt_open":false}\n'])
def test_torn_chain_after_clean_shutdown_is_damage(project_root: Path, tail: bytes) -> None:
    """A torn or undecodable last line is refused, and numbered as verify numbers it (the
    line after the last good one), though the writer reads only the file's end."""
    paths = ProjectPaths.of(project_root, PROJECT)
    lines = paths.task_events("T").read_bytes().count(b"\n")
    with paths.task_events("T").open("ab") as f:
        f.write(tail)
    before = paths.task_events("T").read_bytes()

    async def main() -> None:
        async with open_ledger(project_root, PROJECT) as ledger:
            await ledger.append_task_event("T", attempt(0, 1))

    with pytest.raises(LedgerDamaged) as refused:
        anyio.run(main)
    assert refused.value.cause.line == lines + 1
    assert f"{paths.task_events('T')}:{lines + 1}: last line" in str(refused.value)
    assert paths.task_events("T").read_bytes() == before
    problems = verify_project(paths).problems
    assert [(p.path, p.line) for p in problems] == [(str(paths.task_events("T")), lines + 1)]


def test_journal_that_does_not_continue_a_chain_is_damage(project_root: Path) -> None:
    image = crash_image(project_root, project_root / "image", [("T", attempt(0, 1))])
    cut(image.task_events("T"), 0)  # the chain lost lines the journal does not hold
    before = {p: p.read_bytes() for p in (image.events, image.task_events("T"), image.journal)}
    with pytest.raises(LedgerDamaged, match="does not continue"):
        reopen(image)
    assert {p: p.read_bytes() for p in before} == before


async def test_more_tasks_in_one_batch_than_open_files(tmp_path: Path) -> None:
    from ledger.commit_process import OPEN_FILES

    async with open_ledger(tmp_path, PROJECT, create=True, mode="buffered") as ledger:
        async with anyio.create_task_group() as tg:
            for n in range(OPEN_FILES + 44):
                tg.start_soon(ledger.append_task_event, f"T-{n}", attempt(0, 0))
        async with anyio.create_task_group() as tg:
            for n in range(OPEN_FILES + 44):
                tg.start_soon(ledger.append_task_event, f"T-{n}", attempt(0, 1))
    report = verify_project(ProjectPaths.of(tmp_path, PROJECT))
    assert report.ok, report.problems[:3]
    assert len(report.task_heads) == OPEN_FILES + 44
    assert {h.seq for h in report.task_heads.values()} == {1}


async def test_chain_files_catch_up_when_the_writer_is_idle(tmp_path: Path) -> None:
    async with open_ledger(tmp_path, PROJECT, create=True, mode="buffered") as ledger:
        got = await ledger.append_task_event("T", attempt(0, 0))
        path = ledger.paths.task_events("T")
        # Acknowledged means journaled; the chain file follows once the writer is idle.
        await anyio.sleep(0.2)
        assert got.event_hash.encode() in await anyio.Path(path).read_bytes()
        await ledger.append_task_event("T", attempt(0, 1))
        await ledger.flush()
        assert len((await anyio.Path(path).read_bytes()).splitlines()) == 2


async def test_only_the_event_types_themselves_are_accepted(tmp_path: Path) -> None:
    class Sneaky(AttemptInterrupted, frozen=True):  # the writer dispatches on exact types
        pass

    async with open_ledger(tmp_path, PROJECT, create=True, mode="buffered") as ledger:
        with pytest.raises(InvalidEvent, match="Sneaky"):
            await ledger.append_task_event("T", Sneaky(r=0, s=0, reason="x"))
        assert ledger.task_state("T").seq == -1


def test_manifest_with_an_unsafe_chain_id_is_refused_at_open(project_root: Path) -> None:
    paths = ProjectPaths.of(project_root, PROJECT)
    manifest = paths.manifest.read_bytes()
    paths.manifest.write_bytes(manifest.replace(b'"chain_project_id": "proj"',
                                                b'"chain_project_id": "p\\"x"'))  # fmt: skip
    assert paths.manifest.read_bytes() != manifest
    with pytest.raises(InvalidLedgerId, match="chain_project_id"):
        reopen(paths)


async def test_durable_appends_from_many_producers_are_flushed_in_order(tmp_path: Path) -> None:
    # More producers than a batch holds: several batches, their fsyncs overlapping.
    async def producer(ledger: Ledger, task: str) -> None:
        for s in range(5):
            await ledger.append_task_event(task, attempt(0, s))

    async with open_ledger(tmp_path, PROJECT, create=True) as ledger:
        async with anyio.create_task_group() as tg:
            for n in range(100):
                tg.start_soon(producer, ledger, f"T-{n}")
        await ledger.flush()
        # 500 task events in batches of at most 64: at least 8 `task_events` lines.
        lines = ledger.paths.events.read_bytes().splitlines()
        assert 8 < len(lines) == ledger.head.seq + 1
    report = verify_project(ProjectPaths.of(tmp_path, PROJECT))
    assert report.ok, report.problems
    assert {h.seq for h in report.task_heads.values()} == {4}
    linked = [e for r in records(ProjectPaths.of(tmp_path, PROJECT).events, ProjectRecord)
              for e in getattr(r.body, "events", [])]  # fmt: skip
    assert len(linked) == 500


async def test_a_task_whose_chain_cannot_be_read_is_refused_and_the_writer_goes_on(
    tmp_path: Path,
) -> None:
    async with open_ledger(tmp_path, PROJECT, create=True, mode="buffered") as ledger:
        ledger.paths.tasks.mkdir(exist_ok=True)
        ledger.paths.task_dir("BAD").write_text("a file where the task's directory should be\n")
        with pytest.raises(LedgerError, match=r"tasks/BAD/events\.jsonl: cannot read"):
            await ledger.append_task_event("BAD", attempt(0, 0))
        await ledger.append_task_event("T", attempt(0, 0))
    assert ProjectPaths.of(tmp_path, PROJECT).task_events("T").exists()


async def test_the_writer_renders_the_log_of_each_task_it_closed_when_it_closes(
    tmp_path: Path,
) -> None:
    paths = ProjectPaths.of(tmp_path, PROJECT)
    async with open_ledger(tmp_path, PROJECT, create=True, mode="durable") as ledger:
        for task_id in ("T-open", "T-done"):
            await ledger.append_task_event(task_id, attempt(0, 0, code_content="x = 1\n"))
        await ledger.append_task_event(
            "T-done", TaskClosed(final_status=FinalStatus.ACCEPTED, summary="merged")
        )
        assert not paths.task_log("T-done").exists()  # the chain file may still lag
    done = paths.task_log("T-done").read_text()
    assert "final status: accepted" in done and "x = 1" in done
    assert not paths.task_log("T-open").exists()
    # Not when the body fails: closing does not wait for it.
    with pytest.raises(RuntimeError):
        async with open_ledger(tmp_path, PROJECT) as ledger:
            await ledger.append_task_event(
                "T-open", TaskClosed(final_status=FinalStatus.FAILED, summary="gave up")
            )
            raise RuntimeError("the body failed")
    assert not paths.task_log("T-open").exists()
    # A task left open, when asked for (a campaign's failed task): rendered on close too.
    async with open_ledger(tmp_path, PROJECT) as ledger:
        await ledger.append_task_event("T-left", attempt(0, 0, code_content="y = 2\n"))
        ledger.render_log_on_close("T-left")
        with pytest.raises(InvalidLedgerId):
            ledger.render_log_on_close("../x")
    assert not ledger.task_state("T-left").closed
    assert "y = 2" in paths.task_log("T-left").read_text()
