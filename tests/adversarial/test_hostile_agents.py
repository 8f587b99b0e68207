"""Hostile agents in a real campaign: each task's agent misbehaves in its own way (see
`hostile_agent.py`). The limits hold, every process an agent started is gone afterwards, the
runner neither hangs nor follows the agent's links, and each finding is in the ledger."""

from __future__ import annotations

import json
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest

from protocol.ledger_events import Attempt, StepOutcomeRecorded
from tests.adversarial.trials import seeds, trials
from tests.runner.engine_fixtures import (
    RUNNER,
    Project,
    TaskSpec,
    child_env,
    git,
    json_events,
    kill_processes_under,
    processes_under,
)
from tests.runner.hostile import survivors
from tests.runner.test_mock_shim import IDS

AGENT = str(Path(__file__).with_name("hostile_agent.py"))
PY = sys.executable
HOSTILE_SHIM = {
    "default_backend": "hostile",
    "backends": {
        "hostile": {
            "create": [PY, AGENT, "create", "{prompt}", *IDS],
            "resume": [PY, AGENT, "resume", "{prompt}", "{thread_id}", *IDS],
        }
    },
}
LIMITS = {"max_silence_sec": 1.0, "max_runtime_sec": 3.0, "max_memory_mb": 200}
CONFIG: dict[str, Any] = {
    "limits": LIMITS,
    "max_parallel_steps": 6,
    "max_rework_rounds": 0,
    "backoff": {"base_sec": 0.1, "factor": 2.0, "max_sec": 0.2},
}

# task key: (behaviour, the attempt's reason code in the ledger; None: it completes).
# "mock:S" is the mock shim's own scenario S.
CASES: dict[str, tuple[str, str | None]] = {
    "fork": ("mock:fork_tree", "SILENCE_LIMIT"),
    "daemon": ("daemon", None),
    "closeout": ("close_stdout", "SILENCE_LIMIT"),
    "term": ("ignore_term", "RUNTIME_LIMIT"),
    "stdin": ("read_stdin", "SILENCE_LIMIT"),
    "garbage": ("garbage", "RESULT_MALFORMED"),  # it prints a cut-off result
    "fiforesult": ("fifo_result", "RESULT_FILE_UNREADABLE"),
    "fifostdout": ("fifo_stdout", "NO_RESULT"),
    "symlink": ("symlink_result", "RESULT_FILE_UNREADABLE"),
    "memory": ("eat_memory", "MEMORY_LIMIT"),
}
CAMPAIGNS = seeds("hostile-campaign", 1, 5)


def hostile_project(root: Path, cases: dict[str, str], **context: Any) -> Project:
    specs = [
        TaskSpec(key, max_attempts=1, context={"hostile": b, **context})
        if not b.startswith("mock:")
        else TaskSpec(key, max_attempts=1, scenario=b.removeprefix("mock:"))
        for key, b in cases.items()
    ]
    p = Project(root, specs, config=CONFIG)
    p.shim_path.write_text(json.dumps(HOSTILE_SHIM))
    return p


def recorded(p: Project) -> list[int]:
    """Every pid the agents recorded, from the evidence copied back to the main workspace."""
    files = [
        *(p.workspace / ".artifacts").rglob("hostile_pids.txt"),
        *(p.workspace / ".artifacts").rglob("mock_pids.txt"),
    ]
    return [int(pid) for f in files for pid in f.read_text().split()]


def attempts(p: Project, key: str) -> list[Attempt]:
    return [r.body for r in p.task_events(key) if isinstance(r.body, Attempt)]


def outcomes(p: Project, key: str) -> list[StepOutcomeRecorded]:
    return [r.body for r in p.task_events(key) if isinstance(r.body, StepOutcomeRecorded)]


@pytest.mark.parametrize("trial", CAMPAIGNS)
def test_hostile_agents_are_contained_and_recorded(tmp_path: Path, trial: str) -> None:
    p = hostile_project(tmp_path, {k: b for k, (b, _) in CASES.items()})
    try:
        result = p.run(timeout=120)
        ended = time.time()
        left = [f"{x.pid} {x.info.get('cwd')}" for x in processes_under(tmp_path)]
    finally:
        kill_processes_under(tmp_path)
    assert result.returncode == 1, result.stderr[-3000:]  # the hostile tasks failed
    assert left == [], "processes of the agents outlived the campaign"
    pids = recorded(p)
    assert len(pids) >= len(CASES) + 4, pids  # every agent, the forked tree, the daemon
    assert survivors(pids, ended) == []
    statuses = p.statuses()
    for key, (behaviour, reason) in CASES.items():
        got = attempts(p, key)
        if reason is None:
            assert statuses[key] == "completed", (key, behaviour, got)
            continue
        assert statuses[key] == "failed", (key, behaviour)
        assert [a.reason_code for a in got] == [reason], (key, behaviour, got)
    term = outcomes(p, "term")[0]
    assert term.exit_code == -9, term  # SIGTERM ignored: SIGKILL after the grace period
    # The daemon is killed with the last step that was running when it appeared (its own, or
    # one started before it that ended later): that step's outcome names it. (Unless a poll
    # caught the chain while it formed: then it was a member like any other, killed as one.)
    (daemon_pids,) = list(p.rounds("daemon")[0].rglob("hostile_pids.txt"))
    daemon_pid = f"[{daemon_pids.read_text().split()[-1]}]"
    named = [o.detail for key in CASES for o in outcomes(p, key) if daemon_pid in o.detail]
    assert len(named) <= 1 and all("escaped a step's tree" in d for d in named), named
    assert p.verify_ledger().returncode == 0


def test_an_agent_that_edits_the_target_checkout_gets_nothing_merged(tmp_path: Path) -> None:
    """The agent writes into the main checkout (outside its worktree), then does its own work
    truthfully and passes review. The runner does not merge on top of the edit: the target
    branch never contains it, the task waits for a person with the file named (a rework
    could not help), and the campaign starts nothing more (every merge would meet the edit)."""
    p = hostile_project(tmp_path, {"outside": "edit_outside", "later": "mock:pass"})
    try:
        result = p.run("--max-parallel-steps", "1", timeout=60)
    finally:
        kill_processes_under(tmp_path)
    assert result.returncode == 1, result.stderr[-3000:]
    task = p.queue()["outside"]
    assert task.status == "blocked"
    assert task.last_reason is not None and task.last_reason.startswith("TARGET_EDITED: "), task
    assert "tracked files edited outside the runner: README.md" in task.last_reason
    assert task.reworks == 0  # no pointless conflict rework
    assert "stopped: TARGET_EDITED" in result.stdout, result.stdout
    assert p.statuses()["later"] == "pending"  # not started after the stop
    assert p.head_file("README.md") == "# project\n"
    assert p.head_file("src/outside.txt") is None  # nothing of the attempt was merged
    assert p.merges_per_task() == {}
    logged = [e for e in json_events(result.stderr) if e.get("event") == "workspace.target_edited"]
    assert logged and logged[0]["files"] == ["README.md"], logged
    assert p.verify_ledger().returncode == 0


def test_an_agent_that_links_its_evidence_directory_elsewhere_gets_nothing_copied(
    tmp_path: Path,
) -> None:
    """The agent moves its evidence (`.artifacts/agent_runs`) into a directory outside the
    workspace that holds a secret, and leaves a link in its place: nothing is copied back
    through the link (the secret stays where it is), the review finds the evidence missing,
    and the task is not accepted."""
    outside = tmp_path / "outside"
    outside.mkdir()
    (outside / "secret.txt").write_text("do not copy me\n")
    p = hostile_project(tmp_path, {"links": "artifacts_elsewhere"}, outside_dir=str(outside))
    try:
        result = p.run(timeout=60)
    finally:
        kill_processes_under(tmp_path)
    assert result.returncode == 1, result.stderr[-3000:]
    assert p.statuses() == {"links": "failed"}
    assert "EVIDENCE_MISSING" in (p.queue()["links"].last_reason or "")
    assert not list(p.workspace.rglob("secret.txt"))
    assert p.head_file(".artifacts") is None
    assert p.merges_per_task() == {}
    assert p.verify_ledger().returncode == 0


FLOOD_MB = trials(1024, 4096)  # through a pipe: nothing reaches the disk
FILE_FLOOD_MB = trials(256, 1024)  # into the evidence file, then read back for the result
RUNNER_RSS_LIMIT_MB = 200

MAXRSS = (
    "import resource, subprocess, sys\n"
    "done = subprocess.run(sys.argv[1:], stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)\n"
    "peak = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss // 1024\n"
    "print(peak, done.returncode, done.stderr.decode(errors='replace')[-2000:])\n"
)


def peak_rss_mb(*argv: str, cwd: Path | None = None) -> tuple[int, int, str]:
    """Run `argv` under a small parent that reports the largest RSS of any process it waited
    for, directly or not (the runner, and every agent the runner reaped): MB, exit code,
    stderr tail."""
    out = subprocess.run(
        [PY, "-c", MAXRSS, *argv],
        capture_output=True, text=True, timeout=300, check=True, cwd=cwd, env=child_env(),
    )  # fmt: skip
    peak, code, err = out.stdout.split(" ", 2)
    return int(peak), int(code), err


def test_a_gigabyte_without_a_newline_through_a_pipe_keeps_the_runner_small() -> None:
    flood = (
        "import sys\nchunk = b'x' * (1024 * 1024)\n"
        f"for _ in range({FLOOD_MB}): sys.stdout.buffer.write(chunk)\n"
    )
    peak, code, err = peak_rss_mb(
        *RUNNER, "exec", "--max-runtime-sec", "120", "--", PY, "-c", flood
    )
    assert code == 0, err
    assert peak < RUNNER_RSS_LIMIT_MB, f"{peak} MB after {FLOOD_MB} MB without a newline"


def test_a_flood_without_a_newline_in_the_evidence_file_is_bounded(tmp_path: Path) -> None:
    """The agent writes straight into its evidence file; the runner reads back at most the last
    8 MiB to look for the result. A NO_RESULT finding, the file complete, the runner small."""
    ws = tmp_path / "ws"
    ws.mkdir()
    git(ws, "init", "-q", "-b", "main")
    git(ws, "commit", "-q", "--allow-empty", "-m", "start")
    spec = TaskSpec("flood", context={"hostile": "flood_line", "flood_mb": FILE_FLOOD_MB})
    (tmp_path / "pack.json").write_text(json.dumps(spec.pack()))
    (tmp_path / "shim.json").write_text(json.dumps(HOSTILE_SHIM))
    peak, code, err = peak_rss_mb(
        *RUNNER, "dispatch-step", "--step-pack-file", str(tmp_path / "pack.json"),
        "--shim-config", str(tmp_path / "shim.json"), "--max-runtime-sec", "120", cwd=ws,
    )  # fmt: skip
    assert code == 1, err  # no result: an infrastructure failure
    (stdout,) = ws.glob(".artifacts/agent_runs/*/steps/*/rounds/R1/shim_stdout.txt")
    assert stdout.stat().st_size == FILE_FLOOD_MB * 1024 * 1024
    record = json.loads((stdout.parent / "logs" / "command.json").read_text())
    assert record["parse_failure"]["reason"] == "NO_RESULT"
    assert len(record["parse_failure"]["excerpt"]) <= 600
    assert peak < RUNNER_RSS_LIMIT_MB, f"{peak} MB after {FILE_FLOOD_MB} MB without a newline"
    stdout.unlink()  # not left on the disk for the rest of the run
