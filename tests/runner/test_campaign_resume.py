"""Crash-proofing: `runner campaign` SIGKILLed at seeded random moments, then started again with
the same arguments until the queue drains, ends exactly where an uninterrupted run ends."""

from __future__ import annotations

import json
import random
import signal
import subprocess
from pathlib import Path

import anyio
import pytest

from ledger import open_ledger
from protocol import AttemptKind
from protocol.ledger_events import (
    Attempt,
    AttemptInterrupted,
    AttemptStarted,
    FinalStatus,
    TaskClosed,
)
from runner.workspace import GitWorktrees
from tests.runner.engine_fixtures import Project, TaskSpec, kill_processes_under

SLOW = "sleep 0.4"  # keeps tasks in flight long enough to be caught by the kill

SPECS = [
    TaskSpec("p1", commands=[SLOW]),
    TaskSpec("p2", commands=[SLOW]),
    TaskSpec("ftp", scenario="fail_then_pass", commands=[SLOW]),
    TaskSpec("conf_a", files={"src/shared.txt": "from a\n"}, commands=[SLOW]),
    TaskSpec("conf_b", files={"src/shared.txt": "from b\n"}, commands=[SLOW]),
    TaskSpec("oos", scenario="out_of_scope", commands=[SLOW], max_attempts=2),
    TaskSpec("after", depends_on=["p1", "p2"], commands=[SLOW]),
]
ARGS = ("--max-parallel-steps", "3", "--max-rework-rounds", "1")
SEEDS = [11, 23, 47]
MAX_KILLS = 3


def fresh(tmp_path: Path) -> Project:
    return Project(tmp_path, [TaskSpec(**vars(s)) for s in SPECS])


@pytest.fixture(scope="module")
def reference(tmp_path_factory: pytest.TempPathFactory) -> dict[str, str]:
    """The final statuses of an uninterrupted run."""
    p = fresh(tmp_path_factory.mktemp("reference"))
    result = p.run(*ARGS)
    assert result.returncode == 1, result.stderr[-2000:]  # `oos` fails
    return p.statuses()


def drain(p: Project, rng: random.Random) -> None:
    """Start the campaign, SIGKILL it at a random moment, up to MAX_KILLS times, then let it
    finish. The agents the killed runner had started live on in their own sessions, as they
    do after `kill -9`: the next runner must cope with them."""
    kills = 0
    while True:
        started = p.popen(*ARGS)
        if kills < MAX_KILLS:
            try:
                started.proc.wait(timeout=rng.uniform(0.3, 2.0))
            except subprocess.TimeoutExpired:
                started.proc.send_signal(signal.SIGKILL)
                started.proc.wait(timeout=10)
                kills += 1
                continue
        code = started.finish(timeout=60)
        assert code == 1, started.tail()  # drained, with `oos` failed
        break

    assert kills >= 1


@pytest.mark.slow
@pytest.mark.parametrize("seed", SEEDS)
def test_sigkill_at_random_moments_then_resume_ends_like_an_uninterrupted_run(
    tmp_path: Path, seed: int, reference: dict[str, str]
) -> None:
    rng = random.Random(seed)
    p = fresh(tmp_path)
    try:
        drain(p, rng)
    finally:
        kill_processes_under(p.root)  # agents a killed runner left behind, if still going
    assert p.statuses() == reference
    queue = p.queue()
    # Every completed task merged exactly once, and closed exactly once in the ledger.
    completed = sorted(k for k, s in reference.items() if s == "completed")
    assert p.merges_per_task() == dict.fromkeys(completed, 1)
    for key in completed:
        assert p.event_types(key).count("task_closed") == 1, key
    for key, task in queue.items():
        assert task.attempts <= task.max_attempts, key
    verified = p.verify_ledger()
    assert verified.returncode == 0, verified.stdout + verified.stderr
    # Every attempt started was ended: by its record, or as interrupted (by the cycle, or by
    # the reconciliation of the next run); none is left open.
    for key in p.specs:
        records = p.task_events(key)
        if records:
            assert not records[-1].attempt_open, key
        opened = sum(isinstance(r.body, AttemptStarted) for r in records)
        ended = sum(isinstance(r.body, Attempt | AttemptInterrupted) for r in records)
        assert opened == ended, key
    assert p.worktrees() == []
    assert p.runner_branches() == []
    assert p.head_file("src/p1.txt") == "p1\n"
    assert p.head_file("src/after.txt") == "after\n"


# -- the cases a kill can leave, built exactly ---------------------------------------------------


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
