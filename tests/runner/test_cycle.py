"""`runner.cycle.Cycle` through its Python API: one attempt of one task, with a real ledger, a
real git repository, the supervisor and the mock shim; what it reports and records."""

from __future__ import annotations

import ctypes
from collections.abc import Iterator
from pathlib import Path

import anyio
import pytest

from kernel.triage import AttemptOutcome
from ledger import Ledger, open_ledger
from protocol import AttemptKind, QueueTask
from protocol.ledger_events import AttemptInterrupted, AttemptStarted
from runner import _proctree
from runner.cycle import Cycle, CycleEnd, EngineOptions
from runner.dispatch import LimitOverrides
from runner.shim import load_config
from runner.supervisor import Supervisor
from runner.workspace import GitWorktrees
from tests.runner.engine_fixtures import Project, TaskSpec, processes_under

pytestmark = pytest.mark.anyio


@pytest.fixture(scope="module", autouse=True)
def not_a_subreaper_afterwards() -> Iterator[None]:
    """The supervisor makes its process a child subreaper, here the test process: orphans
    that later tests of other modules leave (killed grandchildren of their own subprocesses)
    would then become unreaped zombies of this process and trip test_supervisor's zombie
    check. Undo it after this module (the next supervisor sets it again)."""
    was = _proctree._subreaper_set
    yield
    if not was and _proctree._subreaper_set:
        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(_proctree.PR_SET_CHILD_SUBREAPER, 0, 0, 0, 0)
        _proctree._subreaper_set = False


class Recorder:
    """A reporter that keeps every event."""

    def __init__(self) -> None:
        self.events: list[tuple[str, str, dict[str, object]]] = []

    def emit(self, event: str, task_id: str, **fields: object) -> None:
        self.events.append((event, task_id, fields))

    def names(self) -> list[str]:
        return [e for e, _, _ in self.events]


def options(p: Project, **changes: object) -> EngineOptions:
    packs = {key: p.progress / "packs" / f"{key}.json" for key in p.specs}
    base: dict[str, object] = {
        "progress_dir": p.progress,
        "step_packs": packs,
        "shim_config": load_config(p.shim_path),
        "limits": LimitOverrides(max_silence_sec=1.0, kill_grace_sec=0.2),
        "max_rework_rounds": 1,
    }
    return EngineOptions(**{**base, **changes})  # type: ignore[arg-type]


async def cycle_for(
    p: Project, ledger: Ledger, key: str, reporter: Recorder, **changes: object
) -> Cycle:
    return Cycle(
        QueueTask(key=key, title=f"task {key}", status="in_progress", attempts=1),  # type: ignore[arg-type]
        ledger=ledger,
        workspaces=await GitWorktrees.open(p.workspace, p.progress / "worktrees"),
        supervisor=Supervisor(max_parallel_steps=2),
        options=options(p, **changes),
        reporter=reporter,
    )


async def run_one(
    p: Project, key: str, reporter: Recorder, *before: object, **changes: object
) -> CycleEnd:
    """Open the ledger, append `before` to the task's chain, run one cycle of `key`."""
    async with open_ledger(p.progress / "ledger", "project", create=True) as ledger:
        for body in before:
            await ledger.append_task_event(key, body)
        return await (await cycle_for(p, ledger, key, reporter, **changes)).run()


async def test_a_rework_round_is_reported_and_recorded_in_order(tmp_path: Path) -> None:
    p = Project(tmp_path, [TaskSpec("t1", scenario="fail_then_pass")])
    reporter = Recorder()
    end = await run_one(p, "t1", reporter)
    assert end.outcome is AttemptOutcome.PASSED
    assert (end.reworks, end.resume_as, end.reason) == (1, None, "accepted")
    assert end.merged_commit is not None
    assert end.spend is not None and end.spend.input_tokens > 0
    assert reporter.names() == [
        "attempt.started", "step.dispatched", "review.finished", "rework.dispatched",
        "attempt.started", "step.dispatched", "review.finished", "task.merged",
        "attempt.finished",
    ]  # fmt: skip
    verdicts = [f["verdict"] for e, _, f in reporter.events if e == "review.finished"]
    assert verdicts == ["REWORK", "PASS"]
    # The cycle does not close the task (the campaign does, with the queue): no task_closed.
    assert p.event_types("t1")[-1] == "attempt"
    assert p.worktrees() == [] and p.runner_branches() == []


async def test_without_rework_rounds_a_rework_verdict_ends_the_attempt_as_a_revision(
    tmp_path: Path,
) -> None:
    p = Project(tmp_path, [TaskSpec("t1", scenario="fail_then_pass")])
    reporter = Recorder()
    end = await run_one(p, "t1", reporter, max_rework_rounds=0)
    assert end.outcome is AttemptOutcome.FAILED
    assert end.resume_as == "revision"
    assert end.reason.startswith("REWORK: ")
    assert p.merges_per_task() == {}


async def test_a_pending_task_with_an_open_attempt_records_the_interruption_first(
    tmp_path: Path,
) -> None:
    """A runner died mid-attempt and the queue was put back by hand: the cycle itself says
    so in the ledger before it starts the next attempt (a retry)."""
    p = Project(tmp_path, [TaskSpec("t1")])
    reporter = Recorder()
    started = AttemptStarted(r=0, s=0, kind=AttemptKind.FIRST, worker_backend="mock")
    end = await run_one(p, "t1", reporter, started)
    assert end.outcome is AttemptOutcome.PASSED
    bodies = [r.body for r in p.task_events("t1")]
    assert isinstance(bodies[1], AttemptInterrupted)
    assert bodies[1].reason == "runner stopped mid-attempt"
    assert isinstance(bodies[2], AttemptStarted)
    assert (bodies[2].r, bodies[2].s, str(bodies[2].kind)) == (0, 1, "retry")


async def test_a_cancelled_cycle_kills_its_step_records_the_interruption_and_cleans_up(
    tmp_path: Path,
) -> None:
    p = Project(tmp_path, [TaskSpec("t1", scenario="hang")])
    reporter = Recorder()
    async with open_ledger(p.progress / "ledger", "project", create=True) as ledger:
        cycle = await cycle_for(p, ledger, "t1", reporter, limits=LimitOverrides())
        with anyio.move_on_after(1.5) as scope:
            await cycle.run()
        assert scope.cancelled_caught
    assert p.event_types("t1") == ["attempt_started", "attempt_interrupted"]
    assert p.worktrees() == [] and p.runner_branches() == []
    assert processes_under(p.root) == []
    assert len(p.rounds("t1")) == 1  # the killed round's evidence was kept


async def test_a_task_without_a_pack_is_blocked_unless_auto_planned(tmp_path: Path) -> None:
    p = Project(tmp_path, [TaskSpec("t1")])
    reporter = Recorder()
    end = await run_one(p, "t1", reporter, step_packs={})
    assert end.outcome is AttemptOutcome.BLOCKED
    assert "use --auto-plan-missing" in end.reason
    assert p.event_types("t1") == []  # nothing was attempted
    assert reporter.names() == ["task.blocked"]
