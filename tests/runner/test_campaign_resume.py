"""Crash-proofing: the cases a SIGKILL of `runner campaign` can leave, built exactly, and what
the next run makes of them. (SIGKILL at seeded random moments, then resumed until the queue
drains: tests/adversarial/test_crash.py.)"""

from __future__ import annotations

import json
from pathlib import Path

import anyio

from ledger import open_ledger
from protocol import AttemptKind
from protocol.ledger_events import AttemptStarted, FinalStatus, TaskClosed
from runner.workspace import GitWorktrees
from tests.runner.engine_fixtures import Project, TaskSpec


def set_in_progress(p: Project, key: str) -> None:
    """The queue as a runner killed mid-attempt leaves it: claimed, attempt counted."""
    queue = json.loads(p.queue_path.read_text())
    for task in queue["tasks"]:
        if task["key"] == key:
            task.update(status="in_progress", attempts=task.get("attempts", 0) + 1)
    p.queue_path.write_text(json.dumps(queue))


def ledger_events(p: Project, key: str, *bodies: object) -> None:
    async def append() -> None:
        async with open_ledger(p.progress / "ledger", "project", create=True) as ledger:
            for body in bodies:
                await ledger.append_task_event(key, body)

    anyio.run(append)


def test_a_task_killed_mid_attempt_is_retried_with_the_interruption_recorded(
    tmp_path: Path,
) -> None:
    p = Project(tmp_path, [TaskSpec("t1"), TaskSpec("t2")])
    set_in_progress(p, "t1")
    ledger_events(p, "t1", AttemptStarted(r=0, s=0, kind=AttemptKind.FIRST, worker_backend="mock"))
    result = p.run("--max-parallel-steps", "2")
    assert result.returncode == 0, result.stderr[-2000:]
    assert "reconciled after a crash 1" in result.stdout
    assert p.event_types("t1") == [
        "attempt_started", "attempt_interrupted", *["attempt_started", "step_outcome", "review",
        "attempt"], "task_closed",
    ]  # fmt: skip
    started = [r.body for r in p.task_events("t1") if isinstance(r.body, AttemptStarted)]
    assert [(b.r, b.s, str(b.kind)) for b in started] == [(0, 0, "first"), (0, 1, "retry")]
    assert p.queue()["t1"].attempts == 1  # the abandoned attempt was given back
    assert p.merges_per_task() == {"t1": 1, "t2": 1}
    assert p.verify_ledger().returncode == 0


def test_a_task_merged_just_before_the_kill_is_completed_without_running_again(
    tmp_path: Path,
) -> None:
    p = Project(tmp_path, [TaskSpec("t1"), TaskSpec("t2")])

    async def merge_t1() -> None:
        spaces = await GitWorktrees.open(p.workspace, p.progress / "worktrees")
        ws = await spaces.prepare("t1", "R0S0")
        (ws.path / "src" / "t1.txt").write_text("merged before the kill\n")
        assert (await spaces.accept(ws, "t1: done")).merged
        await spaces.release(ws)

    anyio.run(merge_t1)
    set_in_progress(p, "t1")
    ledger_events(p, "t1", AttemptStarted(r=0, s=0, kind=AttemptKind.FIRST, worker_backend="mock"))
    result = p.run("--max-parallel-steps", "2")
    assert result.returncode == 0, result.stderr[-2000:]
    assert p.statuses() == {"t1": "completed", "t2": "completed"}
    assert p.event_types("t1") == ["attempt_started", "task_closed"]  # no second run
    assert p.head_file("src/t1.txt") == "merged before the kill\n"
    assert p.merges_per_task() == {"t1": 1, "t2": 1}
    assert p.queue()["t1"].attempts == 1
    assert p.verify_ledger().returncode == 0


def test_a_task_closed_in_the_ledger_but_not_in_the_queue_is_completed(tmp_path: Path) -> None:
    p = Project(tmp_path, [TaskSpec("t1")])
    set_in_progress(p, "t1")
    ledger_events(p, "t1", TaskClosed(final_status=FinalStatus.ACCEPTED, summary="no change"))
    result = p.run()
    assert result.returncode == 0, result.stderr[-2000:]
    assert p.statuses() == {"t1": "completed"}
    assert p.event_types("t1") == ["task_closed"]
