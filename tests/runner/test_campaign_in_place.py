"""`runner campaign` on a workspace that is not a git repository: tasks run one at a time in
place, each attempt behind a checkpoint that lists its changes and can roll them back."""

from __future__ import annotations

import signal
import time
from pathlib import Path
from typing import Any

from protocol.ledger_events import Attempt, ReviewRecorded
from tests.runner.engine_fixtures import (
    FAST_CONFIG,
    Project,
    TaskSpec,
    json_events,
    kill_processes_under,
)


def attempts(project: Project, key: str) -> list[Attempt]:
    return [r.body for r in project.task_events(key) if isinstance(r.body, Attempt)]


def max_in_flight(events: list[dict[str, Any]]) -> int:
    running: set[str] = set()
    most = 0
    for e in events:
        if e["event"] == "task.claimed":
            running.add(e["task_id"])
            most = max(most, len(running))
        elif e["event"] in ("task.finished", "task.interrupted"):
            running.discard(e["task_id"])
    return most


def test_without_git_tasks_run_one_at_a_time_and_changes_come_from_the_checkpoint(
    tmp_path: Path,
) -> None:
    specs = [
        TaskSpec("a", commands=["sleep 0.2"]),
        TaskSpec("b", files={"src/b.txt": "b\n", "src/base.txt": "edited by b\n"}),
        TaskSpec("lie", scenario="lie", max_attempts=1),
        TaskSpec("c"),
    ]
    p = Project(tmp_path, specs, use_git=False, progress_inside=True)
    result = p.run("--max-parallel-steps", "3", "--max-rework-rounds", "0")
    assert result.returncode == 1, result.stderr[-2000:]  # `lie` failed
    assert p.statuses() == {"a": "completed", "b": "completed", "lie": "failed", "c": "completed"}
    assert max_in_flight(json_events(result.stderr)) == 1
    # The agents' edits are in the workspace itself.
    assert (p.workspace / "src" / "a.txt").read_text() == "a\n"
    assert (p.workspace / "src" / "base.txt").read_text() == "edited by b\n"
    # The QA review saw exactly the files each attempt changed (from the checkpoint), not
    # the runner's own queue, ledger and checkpoints under progress/, nor other tasks' files.
    assert attempts(p, "a")[0].executed_files == ["src/a.txt"]
    assert attempts(p, "b")[0].executed_files == ["src/b.txt", "src/base.txt"]
    assert attempts(p, "c")[0].executed_files == ["src/c.txt"]
    # The lie (claims src/lie.txt, wrote nothing) is caught from the checkpoint's facts.
    review = next(r.body for r in p.task_events("lie") if isinstance(r.body, ReviewRecorded))
    assert "CHANGE_CLAIMED_NOT_MADE" in [str(c) for c in review.reason_codes]
    assert p.verify_ledger().returncode == 0
    assert (p.progress / "checkpoints").is_dir()


def rollback_project(tmp_path: Path) -> Project:
    specs = [
        # Fails its review (the last criterion unmet) after editing, creating and deleting.
        TaskSpec(
            "bad",
            scenario="fail_ac",
            files={"src/base.txt": "damaged\n", "src/new.txt": "new\n"},
            commands=["rm README.md"],
            allowed=["src/**", "README.md"],
            max_attempts=1,
        ),
        TaskSpec("good", depends_on=[]),
    ]
    return Project(tmp_path, specs, use_git=False, progress_inside=True, config=FAST_CONFIG)


def test_rollback_on_fail_restores_the_workspace_after_a_failing_attempt(tmp_path: Path) -> None:
    p = rollback_project(tmp_path)
    result = p.run("--rollback-on-fail", "--max-rework-rounds", "0")
    assert result.returncode == 1, result.stderr[-2000:]
    assert p.statuses() == {"bad": "failed", "good": "completed"}
    # Edited, created and deleted files are back as they were before `bad` ran ...
    assert (p.workspace / "src" / "base.txt").read_text() == "base\n"
    assert not (p.workspace / "src" / "new.txt").exists()
    assert (p.workspace / "README.md").read_text() == "# project\n"
    # ... while the accepted task's work, the queue and the ledger stay.
    assert (p.workspace / "src" / "good.txt").read_text() == "good\n"
    assert p.verify_ledger().returncode == 0
    events = {e["event"] for e in json_events(result.stderr)}
    assert "workspace.rolled_back" in events
    # Evidence of the failed round survives the rollback.
    assert len(p.rounds("bad")) == 1


def test_without_rollback_a_failing_attempt_leaves_its_changes(tmp_path: Path) -> None:
    p = rollback_project(tmp_path)
    result = p.run("--max-rework-rounds", "0")
    assert result.returncode == 1, result.stderr[-2000:]
    assert (p.workspace / "src" / "base.txt").read_text() == "damaged\n"
    assert (p.workspace / "src" / "new.txt").exists()
    assert not (p.workspace / "README.md").exists()


def test_an_in_place_attempt_killed_with_its_runner_is_rolled_back_on_resume(
    tmp_path: Path,
) -> None:
    """Without git, a runner killed mid-attempt leaves the agent's half-done edits in the
    workspace itself; with --rollback-on-fail the resumed campaign restores the attempt's
    checkpoint before the retry, so the retry's review sees only its own changes."""
    spec = TaskSpec(
        "t1", files={"src/partial.txt": "half\n", "src/base.txt": "half done\n"},
        commands=["sleep 30"],
    )  # fmt: skip
    config = {"limits": {"max_silence_sec": 60}}
    p = Project(tmp_path, [spec], use_git=False, config=config, progress_inside=True)
    started = p.popen("--rollback-on-fail")
    deadline = time.monotonic() + 20
    while not (p.workspace / "src" / "partial.txt").exists():
        assert time.monotonic() < deadline and started.proc.poll() is None, started.tail()
        time.sleep(0.05)
    started.proc.send_signal(signal.SIGKILL)
    started.proc.wait(timeout=10)
    kill_processes_under(p.root)

    spec.files, spec.commands = {"src/t1.txt": "t1\n"}, []
    p.set_scenario("t1", "pass")
    result = p.run("--rollback-on-fail")
    assert result.returncode == 0, result.stderr[-2000:]
    assert not (p.workspace / "src" / "partial.txt").exists()
    assert (p.workspace / "src" / "base.txt").read_text() == "base\n"
    assert (p.workspace / "src" / "t1.txt").read_text() == "t1\n"
    assert attempts(p, "t1")[-1].executed_files == ["src/t1.txt"]
    assert p.event_types("t1")[:2] == ["attempt_started", "attempt_interrupted"]
    assert p.verify_ledger().returncode == 0
