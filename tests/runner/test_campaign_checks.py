"""What `runner campaign` checks before and around the work: bad input refused with nothing
written, backend health, the requirements freeze, the queue lock, retry backoff, workspace
hooks; and `runner run-cycle`, one cycle at a time."""

from __future__ import annotations

import json
import subprocess
import time
from datetime import datetime
from pathlib import Path
from typing import Any

import pytest

from protocol.ledger_events import Attempt, AttemptStarted, ReviewRecorded
from tests.runner.engine_fixtures import (
    FAST_CONFIG,
    RUNNER,
    SHIM_CONFIG,
    Project,
    TaskSpec,
    child_env,
    json_events,
)


def at(event: dict[str, Any]) -> float:
    return datetime.fromisoformat(event["timestamp"].replace("Z", "+00:00")).timestamp()


# -- bad input --------------------------------------------------------------------------------


def break_map(p: Project) -> str:
    p.map_path.write_text(json.dumps({"t1": "packs/t1.json", "ghost": "packs/t1.json"}))
    return "step pack map names tasks not in the queue: ghost"


def break_pack(p: Project) -> str:
    p.map_path.write_text(json.dumps({"t1": "packs/t2.json"}))
    return "packs/t2.json: task_id 't2' is not the mapped task 't1'"


def break_config_field(p: Project) -> str:
    p.config_path.write_text(json.dumps({"limits": {"max_silence_sec": "soon"}}))
    return "campaign.json"


def break_config_unknown(p: Project) -> str:
    p.config_path.write_text(json.dumps({"max_parallel": 3}))
    return "max_parallel"


def break_config_json(p: Project) -> str:
    p.config_path.write_text("{not json")
    return "campaign.json"


def break_queue(p: Project) -> str:
    queue = json.loads(p.queue_path.read_text())
    queue["tasks"][0]["depends_on"] = ["t2"]
    queue["tasks"][1]["depends_on"] = ["t1"]
    p.queue_path.write_text(json.dumps(queue))
    return "dependency cycle"


def break_shim(p: Project) -> str:
    p.shim_path.write_text(json.dumps({"backends": {"mock": {"create": []}}}))
    return "shim.json"


@pytest.mark.parametrize(
    "breaker",
    [break_map, break_pack, break_config_field, break_config_unknown, break_config_json,
     break_queue, break_shim],
)  # fmt: skip
def test_bad_input_exits_2_naming_the_problem_and_writes_nothing(
    tmp_path: Path, breaker: Any
) -> None:
    p = Project(tmp_path, [TaskSpec("t1"), TaskSpec("t2")])
    expected = breaker(p)
    queue_before = p.queue_path.read_bytes()
    head_before = p.head_file("src/base.txt")
    result = p.run("--max-parallel-steps", "2")
    assert result.returncode == 2, result.stdout + result.stderr
    assert "error:" in result.stderr
    assert expected in result.stderr, result.stderr
    assert p.queue_path.read_bytes() == queue_before
    assert not (p.progress / "ledger").exists()
    assert not (p.progress / "scoreboard.json").exists()
    assert not (p.progress / "worktrees").exists()
    assert p.head_file("src/base.txt") == head_before
    assert p.merges_per_task() == {}


def test_a_workspace_with_uncommitted_changes_is_refused(tmp_path: Path) -> None:
    p = Project(tmp_path, [TaskSpec("t1")])
    (p.workspace / "src" / "base.txt").write_text("my edit in progress\n")
    result = p.run()
    assert result.returncode == 2
    assert "uncommitted changes to tracked files (src/base.txt)" in result.stderr
    assert str(p.statuses()) == str({"t1": "pending"})
    assert (p.workspace / "src" / "base.txt").read_text() == "my edit in progress\n"
    assert not (p.progress / "ledger").exists()  # refused before the ledger is opened


# -- backend health ---------------------------------------------------------------------------


def missing_backend(p: Project) -> None:
    config = json.loads(json.dumps(SHIM_CONFIG))
    config["backends"]["ghost"] = {"create": ["/nonexistent/agent-cli", "{prompt}"]}
    p.shim_path.write_text(json.dumps(config))
    p.map_path.parent.joinpath("backends.json").write_text(json.dumps({"t2": "ghost"}))


def test_health_check_refuses_a_missing_backend_executable(tmp_path: Path) -> None:
    p = Project(tmp_path, [TaskSpec("t1"), TaskSpec("t2")])
    missing_backend(p)
    queue_before = p.queue_path.read_bytes()
    result = p.run("--worker-backend-map-file", str(p.progress / "backends.json"))
    assert result.returncode == 1, result.stderr
    assert "backend health check failed" in result.stderr
    assert "task t2: backend 'ghost': /nonexistent/agent-cli does not exist" in result.stderr
    assert "--skip-backend-health-check" in result.stderr
    assert p.queue_path.read_bytes() == queue_before
    assert not (p.progress / "ledger").exists()


def test_skipping_the_health_check_runs_and_the_spawn_failure_is_recorded(tmp_path: Path) -> None:
    p = Project(tmp_path, [TaskSpec("t1"), TaskSpec("t2", max_attempts=1)])
    missing_backend(p)
    result = p.run(
        "--worker-backend-map-file", str(p.progress / "backends.json"),
        "--skip-backend-health-check",
    )  # fmt: skip
    assert result.returncode == 1, result.stderr[-2000:]
    assert p.statuses() == {"t1": "completed", "t2": "failed"}
    attempt = next(r.body for r in p.task_events("t2") if isinstance(r.body, Attempt))
    assert attempt.reason_code == "SPAWN_FAILED"
    started = next(r.body for r in p.task_events("t2") if isinstance(r.body, AttemptStarted))
    assert started.worker_backend == "ghost"


# -- requirements freeze ----------------------------------------------------------------------


def test_require_freeze_refuses_until_approved_then_starts(tmp_path: Path) -> None:
    p = Project(tmp_path, [TaskSpec("t1")])
    queue_before = p.queue_path.read_bytes()
    typo = p.run("--require-freeze", "--input-dir", str(tmp_path / "inptu"))
    assert typo.returncode == 2 and "inptu: --input-dir not found" in typo.stderr
    assert not (p.progress / "ledger").exists()
    blocked = p.run("--require-freeze")
    assert blocked.returncode == 1, blocked.stderr
    assert "execution blocked" in blocked.stderr
    assert p.queue_path.read_bytes() == queue_before
    assert p.project_event_types() == ["project_created", "execution_blocked_unapproved"]
    assert p.event_types("t1") == []

    (p.progress / "requirements.draft.md").write_text("# Requirements\n\n- do t1\n")
    freeze = [*RUNNER, "requirements", "freeze", "--input-dir", str(p.progress)]

    subprocess.run(freeze, check=True, capture_output=True, env=child_env())
    unapproved = p.run("--require-freeze")
    assert unapproved.returncode == 1
    assert p.project_event_types().count("execution_blocked_unapproved") == 2

    subprocess.run(
        [*freeze, "--approve", "--approved-by", "Ann"], check=True, capture_output=True,
        env=child_env(),
    )  # fmt: skip
    started = p.run("--require-freeze")
    assert started.returncode == 0, started.stderr[-2000:]
    types = p.project_event_types()
    assert types.index("execution_started") < types.index("campaign_started")
    assert p.statuses() == {"t1": "completed"}
    assert p.verify_ledger().returncode == 0


# -- one runner per queue ---------------------------------------------------------------------


def test_a_second_campaign_on_the_same_queue_refuses_or_waits(tmp_path: Path) -> None:
    config = {"limits": {"max_silence_sec": 20}}
    p = Project(tmp_path, [TaskSpec("t1", commands=["sleep 1.5"])], config=config)
    first = p.popen()
    first.wait_for(lambda events: any(e["event"] == "task.claimed" for e in events), timeout=20)
    second = p.run()
    assert second.returncode == 3, second.stderr
    assert "the queue is locked by process" in second.stderr
    third = p.run("--lock-timeout", "30")  # waits for the first, then finds nothing to do
    assert first.finish() == 0
    assert third.returncode == 0, third.stderr[-2000:]
    assert ": 0 cycles" in third.stdout
    assert p.merges_per_task() == {"t1": 1}
    assert p.queue()["t1"].attempts == 1


# -- backoff ----------------------------------------------------------------------------------


def test_an_infrastructure_retry_backs_off_while_other_tasks_go_on(tmp_path: Path) -> None:
    config = {
        "limits": {"max_silence_sec": 5},
        "backoff": {"base_sec": 0.6, "factor": 2.0, "max_sec": 10.0, "jitter": 0.0},
    }
    specs = [
        TaskSpec("crashy", scenario="crash", max_attempts=3),
        *(TaskSpec(f"p{n}", commands=["sleep 0.4"]) for n in range(4)),
    ]
    p = Project(tmp_path, specs, config=config)
    result = p.run("--max-parallel-steps", "2")
    assert result.returncode == 1, result.stderr[-2000:]
    assert p.statuses()["crashy"] == "failed"
    events = json_events(result.stderr)
    backoffs = [e for e in events if e["event"] == "task.backoff"]
    assert [(e["task_id"], e["delay_sec"]) for e in backoffs] == [("crashy", 0.6), ("crashy", 1.2)]
    finished = [at(e) for e in events if e["event"] == "task.finished" and e["task_id"] == "crashy"]
    claimed = [at(e) for e in events if e["event"] == "task.claimed" and e["task_id"] == "crashy"]
    assert len(claimed) == len(finished) == 3
    for n, delay in ((0, 0.6), (1, 1.2)):
        assert claimed[n + 1] - finished[n] >= delay - 0.05  # it waited ...
        others = [
            e for e in events
            if e["event"] == "task.claimed" and e["task_id"] != "crashy"
            and finished[n] <= at(e) <= claimed[n + 1]
        ]  # fmt: skip
        if n == 0:
            assert others, "other tasks should start while crashy waits"  # ... they did not
    pointers = [
        (r.body.r, r.body.s) for r in p.task_events("crashy") if isinstance(r.body, AttemptStarted)
    ]
    assert pointers == [(0, 0), (0, 1), (0, 2)]


def test_a_retry_starts_when_its_backoff_ends_even_while_another_task_runs(
    tmp_path: Path,
) -> None:
    """A free slot and an expired backoff are enough: the retry does not wait for a long
    task in another slot to finish."""
    config = {
        "limits": {"max_silence_sec": 20},
        "backoff": {"base_sec": 0.3, "factor": 1.0, "max_sec": 1.0, "jitter": 0.0},
    }
    specs = [
        TaskSpec("long", commands=["sleep 2"]),
        TaskSpec("crashy", scenario="crash", max_attempts=2),
    ]
    p = Project(tmp_path, specs, config=config)
    result = p.run("--max-parallel-steps", "2")
    assert result.returncode == 1, result.stderr[-2000:]
    events = json_events(result.stderr)

    def when(event: str, key: str) -> list[float]:
        return [at(e) for e in events if e["event"] == event and e["task_id"] == key]

    first_end = when("task.finished", "crashy")[0]
    retry = when("task.claimed", "crashy")[1]
    assert retry < when("task.finished", "long")[0]
    assert 0.25 <= retry - first_end < 1.5


# -- hooks ------------------------------------------------------------------------------------


def hooks_config(log: Path, **hooks: str) -> dict[str, Any]:
    record = {
        name: f'echo "{name} $PWD" >> {log}' for name in
        ("after_create", "before_run", "after_run", "before_remove")
    }  # fmt: skip
    return {**FAST_CONFIG, "hooks": {**record, **hooks, "timeout_sec": 10}}


def test_a_failing_after_create_hook_fails_the_attempt_with_its_reason(tmp_path: Path) -> None:
    log = tmp_path / "hooks.log"
    config = hooks_config(log, after_create="echo 'npm: not found' >&2; exit 3")
    p = Project(tmp_path, [TaskSpec("t1", max_attempts=1)], config=config)
    result = p.run()
    assert result.returncode == 1
    task = p.queue()["t1"]
    assert str(task.status) == "failed"
    assert task.last_reason == "hook after_create failed (completed, exit code 3): npm: not found"
    assert p.event_types("t1") == ["attempt_started", "attempt"]  # the agent never ran
    attempt = p.task_events("t1")[-1].body
    assert isinstance(attempt, Attempt) and attempt.reason_code == "HOOK_FAILED"
    assert p.rounds("t1") == []
    lines = log.read_text().splitlines()
    assert [line.split()[0] for line in lines] == ["before_remove"]  # still cleaned up
    assert p.worktrees() == []


def test_hooks_run_in_each_worktree_including_a_conflict_reworks_fresh_one(
    tmp_path: Path,
) -> None:
    log = tmp_path / "hooks.log"
    specs = [
        TaskSpec("a", files={"src/shared.txt": "a\n"}, commands=["sleep 0.3"]),
        TaskSpec("b", files={"src/shared.txt": "b\n"}, commands=["sleep 0.3"]),
    ]
    p = Project(tmp_path, specs, config=hooks_config(log, after_run="exit 1"))
    result = p.run("--max-parallel-steps", "2")
    assert result.returncode == 0, result.stderr[-2000:]  # a failing after_run changes nothing
    reworked = "a" if p.queue()["a"].reworks else "b"
    other = "b" if reworked == "a" else "a"
    calls: dict[str, list[str]] = {}
    for line in log.read_text().splitlines():
        name, cwd = line.split(" ", 1)
        calls.setdefault(Path(cwd).parent.name, []).append(f"{name} {Path(cwd).name}")
    assert calls[other] == ["after_create R0S0", "before_run R0S0", "before_remove R0S0"]
    assert calls[reworked] == [
        "after_create R0S0", "before_run R0S0", "before_remove R0S0",
        "after_create R1S0", "before_run R1S0", "before_remove R1S0",
    ]  # fmt: skip
    # Each hook's output is kept as evidence in the main workspace.
    hooks_dir = p.workspace / ".artifacts" / "agent_runs" / f"{reworked}_run" / "hooks"
    assert (hooks_dir / f"{reworked}-R1S0-after_create.stdout.txt").exists()
    assert p.worktrees() == [] and p.runner_branches() == []


# -- run-cycle --------------------------------------------------------------------------------


def test_run_cycle_runs_exactly_one_cycle(tmp_path: Path) -> None:
    p = Project(tmp_path, [TaskSpec("t1"), TaskSpec("t2"), TaskSpec("t3")])
    result = p.run(command="run-cycle")
    assert result.returncode == 0, result.stderr[-2000:]  # its task completed
    assert ": 1 cycles" in result.stdout
    assert {k: t.attempts for k, t in p.queue().items()} == {"t1": 1, "t2": 0, "t3": 0}
    assert p.statuses() == {"t1": "completed", "t2": "pending", "t3": "pending"}
    chosen = p.run("--task-key", "t3", command="run-cycle")
    assert chosen.returncode == 0  # the exit code speaks for the cycle's task
    assert p.statuses() == {"t1": "completed", "t2": "pending", "t3": "completed"}
    # A pack given on the command line replaces the mapped one for this cycle.
    other = TaskSpec("t2", files={"src/given.txt": "from the given pack\n"})
    pack_file = tmp_path / "given_pack.json"
    pack_file.write_text(json.dumps(other.pack()))
    last = p.run("--step-pack-file", str(pack_file), command="run-cycle")
    assert last.returncode == 0, last.stderr[-2000:]
    assert p.head_file("src/given.txt") == "from the given pack\n"
    assert p.head_file("src/t2.txt") is None
    assert p.merges_per_task() == {"t1": 1, "t2": 1, "t3": 1}
    assert p.verify_ledger().returncode == 0


def test_run_cycle_refuses_a_pack_for_another_task_or_an_unknown_key(tmp_path: Path) -> None:
    p = Project(tmp_path, [TaskSpec("t1"), TaskSpec("t2")])
    pack_file = tmp_path / "t2_pack.json"
    pack_file.write_text(json.dumps(TaskSpec("t2").pack()))
    wrong = p.run("--task-key", "t1", "--step-pack-file", str(pack_file), command="run-cycle")
    assert wrong.returncode == 2
    assert "the pack is for task 't2'" in wrong.stderr
    unknown = p.run("--task-key", "nope", command="run-cycle")
    assert unknown.returncode == 2
    assert "no such task in the queue: nope" in unknown.stderr
    assert p.statuses() == {"t1": "pending", "t2": "pending"}
    assert not (p.progress / "ledger").exists()


def test_run_cycle_without_a_runnable_task_says_so(tmp_path: Path) -> None:
    p = Project(tmp_path, [TaskSpec("t1"), TaskSpec("t2", depends_on=["t1"])])
    started = time.monotonic()
    result = p.run("--task-key", "t2", command="run-cycle")
    assert time.monotonic() - started < 30
    assert result.returncode == 2  # the task asked for cannot run: bad input
    assert ": 0 cycles" in result.stdout
    assert "task t2 is not eligible to run: waits for t1 (pending)" in result.stderr
    assert p.statuses() == {"t1": "pending", "t2": "pending"}
    # Without --task-key: the cycle's task decides; then a finished one is refused too.
    first = p.run(command="run-cycle")
    assert first.returncode == 0 and p.statuses()["t1"] == "completed"
    again = p.run("--task-key", "t1", command="run-cycle")
    assert again.returncode == 2
    assert "task t1 is not eligible to run: status is completed, not pending" in again.stderr
    # No task eligible and none asked for: 0 once the queue is drained.
    assert p.run(command="run-cycle").returncode == 0  # t2
    drained = p.run(command="run-cycle")
    assert drained.returncode == 0 and ": 0 cycles" in drained.stdout


# -- options that shape the run ---------------------------------------------------------------


def review_codes(p: Project, key: str) -> list[str]:
    return [str(c) for r in p.task_events(key) if isinstance(r.body, ReviewRecorded)
            for c in r.body.reason_codes]  # fmt: skip


@pytest.mark.parametrize("verify", [False, True])
def test_verify_commands_catches_a_lie_about_exit_codes(tmp_path: Path, verify: bool) -> None:
    liar = TaskSpec("liar", scenario="lie", commands=["false"], max_attempts=1)
    p = Project(tmp_path, [liar])
    result = p.run("--max-rework-rounds", "0", *(["--verify-commands"] if verify else []))
    assert result.returncode == 1
    codes = review_codes(p, "liar")
    assert "CHANGE_CLAIMED_NOT_MADE" in codes  # seen from git either way
    assert ("COMMAND_CLAIM_CONTRADICTED" in codes) is verify  # only a re-run shows this


def auto_task() -> dict[str, Any]:
    return {
        "key": "auto",
        "title": "planned from its intake",
        "intake": {
            "task_title": "auto", "target": "src", "execution_route": ["edit"],
            "acceptance_criteria": ["AC1: src has the file"], "allowed_paths": ["src/**"],
            "commands_to_run": ["true"],
        },
    }  # fmt: skip


@pytest.mark.parametrize("auto_plan", [False, True])
def test_a_task_without_a_pack_is_planned_from_its_intake_only_when_asked(
    tmp_path: Path, auto_plan: bool
) -> None:
    p = Project(tmp_path, [TaskSpec("t1")])
    queue = json.loads(p.queue_path.read_text())
    queue["tasks"].append(auto_task())
    p.queue_path.write_text(json.dumps(queue))
    result = p.run(*(["--auto-plan-missing"] if auto_plan else []))
    task = p.queue()["auto"]
    if auto_plan:
        assert result.returncode == 0, result.stderr[-2000:]
        assert str(task.status) == "completed"
        assert (p.progress / "prepared" / "auto" / "step_pack.json").is_file()
        assert p.merges_per_task() == {"t1": 1, "auto": 1}
    else:
        assert result.returncode == 1
        assert str(task.status) == "blocked"
        assert "use --auto-plan-missing" in (task.last_reason or "")
        assert p.event_types("auto") == []


def test_max_cycles_stops_the_campaign(tmp_path: Path) -> None:
    p = Project(tmp_path, [TaskSpec(f"t{n}") for n in range(4)])
    result = p.run("--max-cycles", "2")
    assert result.returncode == 1
    assert "stopped: max cycles (2)" in result.stdout
    assert list(p.statuses().values()) == ["completed", "completed", "pending", "pending"]


def test_max_stagnant_cycles_stops_after_cycles_without_progress(tmp_path: Path) -> None:
    specs = [
        *(TaskSpec(f"bad{n}", scenario="out_of_scope", max_attempts=1) for n in range(3)),
        TaskSpec("good", priority=5),
    ]
    p = Project(tmp_path, specs)
    result = p.run("--max-stagnant-cycles", "2")
    assert result.returncode == 1
    assert "stopped: 2 cycles without progress" in result.stdout
    assert p.statuses() == {"bad0": "failed", "bad1": "failed", "bad2": "pending",
                            "good": "pending"}  # fmt: skip


def test_backend_choice_the_map_wins_over_the_default(tmp_path: Path) -> None:
    p = Project(tmp_path, [TaskSpec("t1"), TaskSpec("t2")])
    config = json.loads(json.dumps(SHIM_CONFIG))
    config["backends"]["other"] = config["backends"]["mock"]
    p.shim_path.write_text(json.dumps(config))
    (p.progress / "backends.json").write_text(json.dumps({"t2": "mock"}))
    result = p.run(
        "--worker-backend", "other",
        "--worker-backend-map-file", str(p.progress / "backends.json"),
    )  # fmt: skip
    assert result.returncode == 0, result.stderr[-2000:]
    used = {
        key: next(r.body.worker_backend for r in p.task_events(key)
                  if isinstance(r.body, AttemptStarted))
        for key in ("t1", "t2")
    }  # fmt: skip
    assert used == {"t1": "other", "t2": "mock"}


def test_a_renamed_workspace_does_not_start_a_new_ledger_project_silently(
    tmp_path: Path,
) -> None:
    """The default project id is the workspace's name: after a rename, the ledger root holds
    the old name's project only, and recording elsewhere must be asked for."""
    p = Project(tmp_path, [TaskSpec("t1"), TaskSpec("t2")])
    first = p.run("--project-id", "before-rename", "--task-key", "t1", command="run-cycle")
    assert first.returncode == 0, first.stderr
    result = p.run()
    assert result.returncode == 2, result.stderr
    assert "holds the ledger of before-rename, not of 'project'" in result.stderr
    assert "pass --project-id before-rename to go on recording there" in result.stderr
    assert sorted(d.name for d in (p.progress / "ledger").iterdir()) == ["before-rename"]
    assert p.statuses() == {"t1": "completed", "t2": "pending"}
    assert p.run("--project-id", "before-rename").returncode == 0
