"""The agents of a runner killed with SIGKILL: their supervisor died with it, so the next
`runner campaign` on the same progress directory kills them before it removes their worktrees
(they would otherwise run on with no limit, in a deleted directory)."""

from __future__ import annotations

import os
import signal
import time
from pathlib import Path

import psutil

from tests.runner.engine_fixtures import Project, TaskSpec, kill_processes_under, processes_under


def gone(proc: psutil.Process) -> bool:
    try:
        return proc.status() == psutil.STATUS_ZOMBIE  # killed; pid 1 may not reap here
    except psutil.NoSuchProcess:
        return True


def test_a_resumed_campaign_kills_the_killed_runners_agents(tmp_path: Path) -> None:
    p = Project(tmp_path, [TaskSpec("stuck", scenario="fork_tree"), TaskSpec("other")])
    worktrees = p.progress / "worktrees"
    started = p.popen("--no-live")
    try:
        deadline = time.monotonic() + 60
        # fork_tree: children and grandchildren, one escaped with setsid (a session of its own).
        while len(agents := processes_under(worktrees)) < 4:
            assert started.proc.poll() is None, started.tail()
            assert time.monotonic() < deadline, started.tail()
            time.sleep(0.1)
        time.sleep(0.3)  # the escapee's setsid
        agents = processes_under(worktrees)
        assert len({os.getsid(a.pid) for a in agents}) >= 2  # the escapee's own session
        os.kill(started.proc.pid, signal.SIGKILL)
        started.proc.wait(timeout=10)
        time.sleep(0.5)
        assert not any(gone(a) for a in agents)  # the runner's death alone kills nothing
        p.set_scenario("stuck", "pass")
        resumed = p.popen("--no-live")
        assert resumed.finish(timeout=90) == 0, resumed.tail()
        assert all(gone(a) for a in agents), [a for a in agents if not gone(a)]
        killed = [e for e in resumed.events() if e.get("event") == "campaign.orphans_killed"]
        assert killed and killed[0]["processes"] >= len(agents), killed
    finally:
        kill_processes_under(worktrees)
    assert p.statuses() == {"stuck": "completed", "other": "completed"}
    assert p.verify_ledger().returncode == 0
