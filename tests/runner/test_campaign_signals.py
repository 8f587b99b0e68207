"""SIGINT and SIGTERM to a running `runner campaign`: the running steps' process trees are
killed, their attempts recorded as interrupted and given back, the exit code says which
signal, and the same command run again finishes the work."""

from __future__ import annotations

import signal
import time
from pathlib import Path

import pytest

from protocol.ledger_events import AttemptInterrupted, AttemptStarted
from tests.runner.engine_fixtures import Project, TaskSpec, processes_under


def wait_gone(root: Path, timeout: float = 5.0) -> list[str]:
    deadline = time.monotonic() + timeout
    while (left := processes_under(root)) and time.monotonic() < deadline:
        time.sleep(0.1)
    return [f"{p.pid} {p.info}" for p in left]


@pytest.mark.parametrize(("signum", "code"), [(signal.SIGTERM, 143), (signal.SIGINT, 130)])
def test_a_signal_kills_running_steps_and_gives_their_attempts_back(
    tmp_path: Path, signum: signal.Signals, code: int
) -> None:
    # The fork tree's escaped child ignores SIGTERM and costs the kill grace: once is enough.
    tree = "fork_tree" if signum == signal.SIGTERM else "hang"
    specs = [
        TaskSpec("tree", scenario=tree),
        TaskSpec("hang1", scenario="hang"),
        TaskSpec("hang2", scenario="hang"),
        TaskSpec("later"),  # not started: parallelism 3 is taken
    ]
    config = {"limits": {"max_silence_sec": 20, "max_runtime_sec": 60}}
    p = Project(tmp_path, specs, config=config)
    started = p.popen("--max-parallel-steps", "3")
    started.wait_for(
        lambda events: sum(e["event"] == "step.dispatched" for e in events) >= 3, timeout=20
    )
    pids_file = next(p.progress.glob("worktrees/tree/*/.artifacts/**/mock_pids.txt"), None)
    deadline = time.monotonic() + 10
    expected = 4 if tree == "fork_tree" else 1
    while pids_file is None or len(pids_file.read_text().split()) < expected:
        assert time.monotonic() < deadline, "the agent never started"
        time.sleep(0.05)
        pids_file = next(p.progress.glob("worktrees/tree/*/.artifacts/**/mock_pids.txt"), None)
    assert processes_under(p.root), "the steps should be running"

    started.proc.send_signal(signum)
    assert started.finish(timeout=30) == code
    err = started.stderr.read_text()
    assert f"stopped by {signum.name}" in err
    assert "run the same command again to resume" in err
    assert wait_gone(p.root) == []  # the fork tree's escaped, SIGTERM-ignoring child too
    # Every tree died at the kill; none was wrongly reported as surviving SIGKILL (an
    # unreaped root of a cancelled step once was, after a 5 s give-up).
    assert "step.kill_incomplete" not in {e["event"] for e in started.events()}

    queue = p.queue()
    for key in ("tree", "hang1", "hang2"):
        task = queue[key]
        assert str(task.status) == "pending", key
        assert task.attempts == 0, key  # given back: the runner abandoned it, nothing judged
        assert task.resume_as == "retry", key
        assert p.event_types(key) == ["attempt_started", "attempt_interrupted"]
        interrupted = p.task_events(key)[-1]
        assert isinstance(interrupted.body, AttemptInterrupted)
        assert not interrupted.attempt_open
    assert str(queue["later"].status) == "pending" and queue["later"].attempts == 0
    assert p.worktrees() == [] and p.runner_branches() == []
    assert p.verify_ledger().returncode == 0
    assert p.project_event_types()[-1] == "campaign_finished"

    # The agents behave this time: the same command finishes the work, each interrupted task
    # retried at the same R, S+1.
    for key in ("tree", "hang1", "hang2"):
        p.set_scenario(key, "pass")
    again = p.run("--max-parallel-steps", "3")
    assert again.returncode == 0, again.stderr[-2000:]
    assert set(p.statuses().values()) == {"completed"}
    assert {k: t.attempts for k, t in p.queue().items()} == dict.fromkeys(p.specs, 1)
    for key in ("tree", "hang1", "hang2"):
        pointers = [
            (r.body.r, r.body.s, str(r.body.kind))
            for r in p.task_events(key)
            if isinstance(r.body, AttemptStarted)
        ]
        assert pointers == [(0, 0, "first"), (0, 1, "retry")], key
    assert p.merges_per_task() == dict.fromkeys(p.specs, 1)
    assert p.verify_ledger().returncode == 0
