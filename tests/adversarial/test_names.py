"""Hostile names and paths: task, project, run and step ids with `..`, absolute paths, NUL
bytes, newlines, separators or too many characters are refused before anything is written, by
every command that takes one. An evidence path in a StepResult that points outside the run's
artifacts directory is a QA finding and is never followed (a FIFO there would hang a reader)."""

from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner, Result

from runner.cli import main
from tests.ledger.conftest import listing
from tests.runner.engine_fixtures import RUNNER, Project, TaskSpec, child_env, git

BAD_IDS = [
    "..",
    "../escape",
    "a/../../b",
    "/etc/passwd",
    "a/b",
    "a\\b",
    "a\x00b",
    "a\nb",
    "tail\n",
    "x" * 129,
    "",
    " lead",
    "-flag",
    ".hidden",
    "a..b",
    "é",
]
IDS = [repr(v)[:24] for v in BAD_IDS]


def run(*args: str) -> Result:
    """The CLI in this process (click's runner): the same parsing, checks and exit codes as
    `runner ...`, without starting an interpreter per hostile name."""
    return CliRunner().invoke(main, list(args), catch_exceptions=True)


def refused(done: Result) -> str:
    """Exit 2 with a message saying what is wrong; never a traceback."""
    assert done.exception is None or isinstance(done.exception, SystemExit), done.exception
    assert done.exit_code == 2, (done.exit_code, done.output)
    assert "invalid" in done.output.lower() or "error" in done.output.lower(), done.output
    return done.output


@pytest.mark.parametrize("bad", BAD_IDS, ids=IDS)
def test_ledger_commands_refuse_a_hostile_id_before_writing(tmp_path: Path, bad: str) -> None:
    root = tmp_path / "root"
    assert run("ledger", "--root-dir", str(root), "--project-id", "p", "init").exit_code == 0
    (tmp_path / "x").write_text("x")
    before = listing(tmp_path)
    refused(run("ledger", "--root-dir", str(root), "--project-id", bad, "init"))
    refused(
        run("ledger", "--root-dir", str(root), "--project-id", "p", "attempt", "--task-id", bad,
            "--r", "0", "--s", "0", "--result", "PASS", "--reason-code", "PASS_ALL_CRITERIA")
    )  # fmt: skip
    refused(
        run("ledger", "--root-dir", str(root), "--project-id", "p", "close", "--task-id", bad,
            "--final-status", "accepted")
    )  # fmt: skip
    refused(
        run("checkpoint", "create", "--workspace", str(tmp_path), "--task-key", bad,
            "--run-id", "r1", "--file", "x")
    )  # fmt: skip
    refused(
        run("checkpoint", "create", "--workspace", str(tmp_path), "--task-key", "t1",
            "--run-id", bad, "--file", "x")
    )  # fmt: skip
    assert listing(tmp_path) == before
    assert not (tmp_path / "escape").exists() and not (tmp_path.parent / "escape").exists()


def write_pack(path: Path, **ids: str) -> None:
    pack = TaskSpec("T-1").pack()
    pack.update(ids)
    path.write_text(json.dumps(pack))


@pytest.mark.parametrize("bad", BAD_IDS, ids=IDS)
@pytest.mark.parametrize("field", ["task_id", "run_id", "step_id"])
def test_a_step_pack_with_a_hostile_id_is_refused_before_any_evidence_is_written(
    tmp_path: Path, bad: str, field: str
) -> None:
    ws = tmp_path / "ws"
    ws.mkdir()
    pack = tmp_path / "pack.json"
    write_pack(pack, **{field: bad})
    out = refused(run("dispatch-step", "--step-pack-file", str(pack), "--workspace", str(ws)))
    assert f"$.{field}" in out, out
    assert list(ws.iterdir()) == []


@pytest.mark.parametrize("bad", BAD_IDS, ids=IDS)
def test_a_queue_with_a_hostile_task_key_is_refused_before_any_write(
    tmp_path: Path, bad: str
) -> None:
    p = Project(tmp_path, [TaskSpec("t1")])
    queue = json.loads(p.queue_path.read_text())
    queue["tasks"].append({"key": bad, "title": "hostile"})
    p.queue_path.write_text(json.dumps(queue))
    before = listing(tmp_path)
    out = refused(run(*p.argv()[len(RUNNER) :]))
    assert str(p.queue_path) in out and "$.tasks[1].key" in out, out
    assert listing(tmp_path) == before


# -- evidence paths in a StepResult ------------------------------------------------------------

RUN_ID = "T-1_run"
ROUND = f".artifacts/agent_runs/{RUN_ID}/steps/S1/rounds/R1"


def review(tmp_path: Path, evidence: str) -> tuple[subprocess.CompletedProcess[str], Any]:
    ws = tmp_path / "ws"
    ws.mkdir(exist_ok=True)
    if not (ws / ".git").exists():
        git(ws, "init", "-q", "-b", "main")
        git(ws, "commit", "-q", "--allow-empty", "-m", "start")
    pack = TaskSpec("T-1", commands=["true"]).pack()
    pack["gates"] = [{"gate_id": "G1", "owner": "worker", "type": "required_command_exit_0",
                      "target_ac": ["AC1"], "command_index": 0}]  # fmt: skip
    (tmp_path / "pack.json").write_text(json.dumps(pack))
    result = {
        "verdict": "PASS", "reason_code": "PASS_ALL_CRITERIA", "task_id": "T-1",
        "run_id": RUN_ID, "step_id": "S1",
        "commands_executed": [{"command": "true", "exit_code": 0, "evidence_path": evidence}],
        "verification_results": [{"ac": "AC1: T-1 is done.", "met": True,
                                  "evidence_path": evidence}],
    }  # fmt: skip
    (tmp_path / "result.json").write_text(json.dumps(result))
    out = tmp_path / "review.json"
    done = subprocess.run(
        [*RUNNER, "review-step", "--step-pack-file", str(tmp_path / "pack.json"),
         "--step-result-file", str(tmp_path / "result.json"), "--workspace", str(ws),
         "--write-review-file", str(out)],
        capture_output=True, text=True, timeout=30, check=False, env=child_env(),
    )  # fmt: skip
    return done, json.loads(out.read_text()) if out.exists() else None


def outside_fifo(tmp_path: Path) -> Path:
    fifo = tmp_path / "trap.fifo"  # opening it for reading blocks until a writer comes
    os.mkfifo(fifo)
    return fifo


@pytest.mark.parametrize(
    "make",
    [
        lambda t: "../../../../../../etc/passwd",
        lambda t: "/etc/passwd",
        lambda t: str(outside_fifo(t)),
        lambda t: f"{ROUND}/../../../../../../trap.fifo",
        lambda t: f".artifacts/agent_runs/{RUN_ID}/../other_run/x.txt",
        lambda t: f"{ROUND}/\x00.txt",
    ],
    ids=["climbs", "absolute", "absolute-fifo", "climbs-from-the-round", "sideways", "nul"],
)
def test_evidence_outside_the_run_directory_is_a_finding_never_followed(
    tmp_path: Path, make: Any
) -> None:
    evidence = make(tmp_path)
    if not (tmp_path / "trap.fifo").exists():
        outside_fifo(tmp_path)
    done, qa = review(tmp_path, evidence)
    assert done.returncode == 1, done.stderr  # a finding: not PASS
    assert qa is not None and qa["verdict"] != "PASS"
    assert "EVIDENCE_OUTSIDE_ARTIFACTS" in qa["reason_codes"], qa


def test_a_link_in_the_run_directory_to_a_fifo_outside_is_not_followed(tmp_path: Path) -> None:
    ws = tmp_path / "ws"
    (ws / ROUND).mkdir(parents=True)
    (ws / ROUND / "cmd_0.txt").symlink_to(outside_fifo(tmp_path))
    done, qa = review(tmp_path, f"{ROUND}/cmd_0.txt")
    assert done.returncode == 1, done.stderr
    assert "EVIDENCE_MISSING" in qa["reason_codes"], qa  # a link is not evidence
