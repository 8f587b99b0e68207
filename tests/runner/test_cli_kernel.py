"""End to end: the kernel commands on real files in tmp_path."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner, Result

from protocol import (
    BoundarySnapshot,
    ConformanceReport,
    PlanSnapshot,
    Preparation,
    Scoreboard,
    StepPack,
    TaskQueue,
    decode,
    read,
)
from runner.cli import main
from tests.conftest import ROOT, SEED

REQUIREMENTS = ROOT / "tests" / "fixtures" / "kernel" / "requirements.md"
INTAKE: dict[str, Any] = {
    "task_title": "Add a --json flag",
    "target": "report --json prints JSON",
    "execution_route": ["add the flag", "add a test"],
    "acceptance_criteria": ["AC1: prints valid JSON", "AC2: tests pass"],
    "allowed_paths": ["src/report/cli.py", "tests/test_report.py"],
    "commands_to_run": ["python -m pytest tests/test_report.py -q"],
}
RISKY = {**INTAKE, "risk_flags": ["security_sensitive"], "execution_route": list("abcd")}


def invoke(*args: str | Path) -> Result:
    return CliRunner().invoke(main, ["--log-level", "warning", *map(str, args)])


def write(path: Path, data: Any) -> Path:
    path.write_text(json.dumps(data) if not isinstance(data, str) else data)
    return path


def snapshot(directory: Path) -> dict[str, bytes]:
    """Every file under `directory` with its bytes: to prove nothing was written."""
    return {
        str(p.relative_to(directory)): p.read_bytes()
        for p in sorted(directory.rglob("*"))
        if p.is_file()
    }


# -- prepare ------------------------------------------------------------------------------------


def prepare(task: Path, out: Path | None, *extra: str | Path, run_id: str = "R1") -> Result:
    where = ["--out-dir", out] if out is not None else []
    return invoke(
        "prepare", "--task-file", task, "--run-id", run_id, "--task-id", "T-1", *where, *extra
    )


def test_prepare_tier2_writes_the_decision_only(tmp_path: Path) -> None:
    task = write(tmp_path / "task.json", INTAKE)
    result = prepare(task, tmp_path / "out")
    assert result.exit_code == 0, result.output
    assert "tier: tier2" in result.output and "within_tier2_limits" in result.output
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == ["preparation.json"]
    prep = read(tmp_path / "out" / "preparation.json", Preparation)
    assert (prep.task_id, prep.run_id, prep.decision.tier, prep.files) == ("T-1", "R1", "tier2", [])


def test_prepare_tier3_compiles_a_byte_stable_contract(tmp_path: Path) -> None:
    task = write(tmp_path / "task.json", RISKY)
    outs = []
    for name in ("a", "b"):
        out = tmp_path / name
        result = prepare(task, out)
        assert result.exit_code == 0, result.output
        outs.append(snapshot(out))
    assert outs[0] == outs[1]
    assert sorted(outs[0]) == [
        "conformance_report.json",
        "master_contract.md",
        "preparation.json",
        "template_snapshot.md",
    ]
    report = decode(outs[0]["conformance_report.json"], ConformanceReport)
    assert report.conformant
    assert (
        b"## Acceptance Criteria\n\n- AC1: prints valid JSON\n- AC2: tests pass"
        in outs[0]["master_contract.md"]
    )
    prep = decode(outs[0]["preparation.json"], Preparation)
    assert [f.name for f in prep.files] == [
        "master_contract.md",
        "template_snapshot.md",
        "conformance_report.json",
    ]


def test_prepare_default_out_dir_is_under_the_run_artifacts(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    write(tmp_path / "task.json", INTAKE)
    assert (
        invoke(
            "prepare", "--task-file", "task.json", "--run-id", "R1", "--task-id", "T-1"
        ).exit_code
        == 0
    )
    assert (tmp_path / ".artifacts/agent_runs/R1/prepare/T-1/preparation.json").is_file()


def test_prepare_with_rules_and_template_files(tmp_path: Path) -> None:
    task = write(tmp_path / "task.json", INTAKE)
    rules = write(tmp_path / "rules.json", {"max_tier2_steps": 1})
    template = write(tmp_path / "t.md", "# {{task_title}}\n\n## Target\n\n{{target}}\n")
    out = tmp_path / "out"
    result = prepare(task, out, "--rules-file", rules, "--template", template, run_id="R")
    assert result.exit_code == 0, result.output
    assert "step_count: 2 route steps; tier2 allows at most 1" in result.output
    assert (out / "template_snapshot.md").read_text() == template.read_text()
    report = read(out / "conformance_report.json", ConformanceReport)
    assert not report.conformant and "Scope" in report.missing


@pytest.mark.parametrize(
    ("data", "extra", "words"),
    [
        ({"task_title": ""}, [], ["$.task_title: a task needs a title", "$.acceptance_criteria"]),
        ({**INTAKE, "priority": 1}, [], ["task.json: $: Object contains unknown field `priority`"]),
        ("not json", [], ["not valid JSON"]),
        (INTAKE, ["--rules-file", "missing.json"], ["cannot read file"]),
        (
            {**INTAKE, "task_id": "T-2"},
            [],
            ["the intake says 'T-2' but the task id given is 'T-1'"],
        ),
    ],
)
def test_prepare_rejects_bad_input_and_writes_nothing(
    tmp_path: Path, data: Any, extra: list[str], words: list[str]
) -> None:
    task = write(tmp_path / "task.json", data)
    out = tmp_path / "out"
    result = prepare(task, out, *extra, run_id="R")
    assert result.exit_code == 2
    for word in words:
        assert word in result.output
    assert not out.exists()


def test_prepare_rejects_an_unsafe_run_id(tmp_path: Path) -> None:
    task = write(tmp_path / "task.json", INTAKE)
    result = invoke("prepare", "--task-file", task, "--run-id", "../up", "--task-id", "T")
    assert result.exit_code == 2 and "not a safe id" in result.output


def test_prepare_rejects_a_template_with_unknown_placeholders(tmp_path: Path) -> None:
    task = write(tmp_path / "task.json", RISKY)
    template = write(tmp_path / "t.md", "# {{nope}}\n")
    out = tmp_path / "out"
    result = prepare(task, out, "--template", template, run_id="R")
    assert result.exit_code == 2 and "unknown placeholder {{nope}}" in result.output
    assert not out.exists()


# -- negotiate ----------------------------------------------------------------------------------


def negotiate(tmp_path: Path, *extra: str | Path, doc: Path = REQUIREMENTS) -> Result:
    return invoke(
        "negotiate", "--requirements-md", doc, "--progress-dir", tmp_path / "progress", *extra
    )


def test_negotiate_freezes_plan_and_boundary(tmp_path: Path) -> None:
    result = negotiate(tmp_path)
    assert result.exit_code == 0, result.output
    plan = read(tmp_path / "progress" / "plan_snapshot.json", PlanSnapshot)
    boundary = read(tmp_path / "progress" / "boundary_snapshot.json", BoundarySnapshot)
    assert f"boundary: sha256 {boundary.content_sha256}" in result.output
    assert [t.key for t in plan.tasks] == ["T-1", "T-2"]
    before = snapshot(tmp_path / "progress")
    assert negotiate(tmp_path).exit_code == 0
    assert snapshot(tmp_path / "progress") == before


def test_negotiate_refuses_to_replace_a_frozen_boundary(tmp_path: Path) -> None:
    assert negotiate(tmp_path).exit_code == 0
    before = snapshot(tmp_path / "progress")
    changed = write(tmp_path / "req.md", REQUIREMENTS.read_text().replace("- tests/**", "- **"))
    result = negotiate(tmp_path, doc=changed)
    assert (
        result.exit_code == 1
        and "already frozen" in result.output
        and "--refreeze" in result.output
    )
    assert snapshot(tmp_path / "progress") == before
    assert negotiate(tmp_path, "--refreeze", doc=changed).exit_code == 0
    assert (
        read(tmp_path / "progress" / "boundary_snapshot.json", BoundarySnapshot).allowed_paths[1]
        == "**"
    )


def test_negotiate_rejects_bad_requirements_and_writes_nothing(tmp_path: Path) -> None:
    bad = write(
        tmp_path / "req.md", REQUIREMENTS.read_text().replace("target: report", "targt: report")
    )
    result = negotiate(tmp_path, "--queue-path", tmp_path / "q.json", doc=bad)
    assert result.exit_code == 2
    assert f"{bad}: requirements have" in result.output and "unknown key 'targt'" in result.output
    assert not (tmp_path / "progress").exists() and not (tmp_path / "q.json").exists()


def test_negotiate_seeds_the_queue_once(tmp_path: Path) -> None:
    queue = tmp_path / "q.json"
    result = negotiate(tmp_path, "--queue-path", queue)
    assert result.exit_code == 0, result.output
    assert "added T-1, T-2" in result.output
    assert [t.key for t in read(queue, TaskQueue).tasks] == ["T-1", "T-2"]
    assert (tmp_path / "progress" / "summary.md").is_file()
    again = negotiate(tmp_path, "--queue-path", queue)
    assert (
        "added nothing" in again.output
        and "kept as they are (already queued): T-1, T-2" in again.output
    )


# -- prepare-next -------------------------------------------------------------------------------


def prepare_next(tmp_path: Path, run_id: str, queue: Path | None = None) -> Result:
    return invoke("prepare-next", "--run-id", run_id, "--queue-path", queue or tmp_path / "q.json",
                  "--progress-dir", tmp_path / "progress",
                  "--out-dir", tmp_path / "out" / run_id)  # fmt: skip


def test_a_campaign_over_the_queue(tmp_path: Path) -> None:
    queue = tmp_path / "q.json"
    assert negotiate(tmp_path, "--queue-path", queue).exit_code == 0

    first = prepare_next(tmp_path, "R1")
    assert first.exit_code == 0, first.output
    assert "selected: T-1 (auto-planned step pack)" in first.output
    pack = read(tmp_path / "out" / "R1" / "step_pack.json", StepPack)
    assert pack.auto_planned and pack.task_id == "T-1" and pack.run_id == "R1"
    board = read(tmp_path / "progress" / "scoreboard.json", Scoreboard)
    assert board.last_selected is not None and board.last_selected.key == "T-1"
    assert board.counts.in_progress == 1 and board.attempts == 1

    before = snapshot(tmp_path)
    waiting = prepare_next(tmp_path, "R2")
    assert waiting.exit_code == 0
    assert (
        "nothing selected: waiting" in waiting.output
        and "T-2: waits for T-1 (in_progress)" in waiting.output
    )
    assert snapshot(tmp_path) == before

    done = invoke("queue", "finish", "T-1", "passed", "--queue-path", queue, "--reason", "QA PASS")
    assert done.exit_code == 0 and "T-1: passed -> completed" in done.output
    second = prepare_next(tmp_path, "R2")
    assert "selected: T-2" in second.output
    progress = tmp_path / "progress"
    finished = invoke("queue", "finish", "T-2", "passed", "--queue-path", queue, "--reason", "ok",
                      "--progress-dir", progress)  # fmt: skip
    assert finished.exit_code == 0, finished.output
    assert read(progress / "scoreboard.json", Scoreboard).counts.completed == 2
    final = prepare_next(tmp_path, "R3")
    assert final.exit_code == 0 and "nothing selected: done" in final.output
    summary = (tmp_path / "progress" / "summary.md").read_text()
    assert "- last selected: T-2 (run R2" in summary


def test_a_stuck_queue_exits_1(tmp_path: Path) -> None:
    queue = tmp_path / "q.json"
    assert negotiate(tmp_path, "--queue-path", queue).exit_code == 0
    assert (
        invoke(
            "queue", "set", "T-1", "blocked", "--queue-path", queue, "--reason", "needs a key"
        ).exit_code
        == 0
    )
    result = prepare_next(tmp_path, "R1")
    assert result.exit_code == 1
    assert "nothing selected: stuck" in result.output
    assert "T-2: waits for T-1 (blocked and cannot complete without a person)" in result.output


def seed_queue(tmp_path: Path) -> tuple[Path, StepPack]:
    """A queue holding the real MVP-2 pack as its task's step pack."""
    pack_file = tmp_path / "packs" / "MVP-2_S1.json"
    pack_file.parent.mkdir()
    shutil.copy(SEED / "step_packs" / "MVP-2_S1.json", pack_file)
    pack = read(pack_file, StepPack)
    queue = tmp_path / "q.json"
    result = invoke(
        "queue",
        "add",
        "MVP-2",
        "--queue-path",
        queue,
        "--title",
        "S2 scaffolding",
        "--step-pack",
        pack_file,
    )
    assert result.exit_code == 0, result.output
    assert read(queue, TaskQueue).tasks[0].step_pack_ref == "packs/MVP-2_S1.json"
    return queue, pack


def test_prepare_next_uses_the_tasks_own_step_pack(tmp_path: Path) -> None:
    queue, pack = seed_queue(tmp_path)
    result = prepare_next(tmp_path, pack.run_id, queue)
    assert result.exit_code == 0, result.output
    assert "selected: MVP-2\n" in result.output
    written = read(tmp_path / "out" / pack.run_id / "step_pack.json", StepPack)
    assert written == pack and not written.auto_planned


def test_prepare_next_refuses_a_pack_for_another_run(tmp_path: Path) -> None:
    queue, pack = seed_queue(tmp_path)
    before = snapshot(tmp_path)
    result = prepare_next(tmp_path, "R-other", queue)
    assert result.exit_code == 2 and f"run_id is '{pack.run_id}'" in result.output
    assert snapshot(tmp_path) == before


def test_the_guard_refuses_a_pack_outside_the_frozen_boundary(tmp_path: Path) -> None:
    queue, pack = seed_queue(tmp_path)
    assert negotiate(tmp_path).exit_code == 0  # the report tool's boundary: not the S2 files
    before = snapshot(tmp_path)
    result = prepare_next(tmp_path, pack.run_id, queue)
    assert result.exit_code == 1
    assert "steps outside the frozen boundary" in result.output
    assert (
        "$.allowed_paths[0] ('README.md'): allows 'README.md', which no boundary allowed path"
        in result.output
    )
    assert "$.commands_to_run[0]" in result.output
    assert snapshot(tmp_path) == before


def test_a_tampered_boundary_is_refused(tmp_path: Path) -> None:
    queue = tmp_path / "q.json"
    assert negotiate(tmp_path, "--queue-path", queue).exit_code == 0
    path = tmp_path / "progress" / "boundary_snapshot.json"
    data = json.loads(path.read_text())
    data["allowed_paths"].append("**")
    path.write_text(json.dumps(data))
    before = snapshot(tmp_path)
    result = prepare_next(tmp_path, "R1")
    assert (
        result.exit_code == 2
        and "boundary snapshot was changed after it was frozen" in result.output
    )
    assert snapshot(tmp_path) == before


def test_prepare_next_on_a_broken_queue_names_the_cycle(tmp_path: Path) -> None:
    queue = write(tmp_path / "q.json", {"tasks": [
        {"key": "A", "title": "a", "depends_on": ["B"]},
        {"key": "B", "title": "b", "depends_on": ["A"]},
    ]})  # fmt: skip
    before = snapshot(tmp_path)
    result = prepare_next(tmp_path, "R1", queue)
    assert result.exit_code == 2 and f"{queue}: invalid queue" in result.output
    assert "dependency cycle: A -> B -> A" in result.output
    assert {k: v for k, v in snapshot(tmp_path).items() if not k.endswith(".lock")} == before


def test_prepare_next_task_without_anything_to_plan_from(tmp_path: Path) -> None:
    queue = tmp_path / "q.json"
    assert invoke("queue", "add", "T-1", "--queue-path", queue, "--title", "vague").exit_code == 0
    result = prepare_next(tmp_path, "R1", queue)
    assert result.exit_code == 2 and "neither a step_pack_ref nor an intake" in result.output
    assert read(queue, TaskQueue).tasks[0].status.value == "pending"


# -- queue helpers ------------------------------------------------------------------------------


def test_queue_helpers(tmp_path: Path) -> None:
    queue = tmp_path / "q.json"
    intake = write(tmp_path / "intake.json", INTAKE)
    assert (
        invoke(
            "queue", "add", "A", "--queue-path", queue, "--title", "a", "--intake-file", intake
        ).exit_code
        == 0
    )
    assert (
        invoke(
            "queue",
            "add",
            "B",
            "--queue-path",
            queue,
            "--title",
            "b",
            "--priority",
            "-1",
            "--depends-on",
            "A",
        ).exit_code
        == 0
    )
    assert (
        invoke(
            "queue", "add", "C", "--queue-path", queue, "--title", "c", "--priority", "5"
        ).exit_code
        == 0
    )

    listing = invoke("queue", "list", "--queue-path", queue)
    assert listing.exit_code == 0
    assert "> A" in listing.output and "next: A (selected)" in listing.output
    data = json.loads(invoke("queue", "list", "--queue-path", queue, "--json").output)
    assert (data["selected"], data["eligible"]) == ("A", ["A", "C"])

    explained = invoke("queue", "explain", "C", "--queue-path", queue)
    assert (
        "C (pending): eligible, number 2 in line: A is picked first (priority 0 runs before"
        in explained.output
    )
    everything = invoke("queue", "explain", "--queue-path", queue).output
    assert "B (pending): waits for A (pending)" in everything

    assert (
        invoke(
            "queue", "set", "A", "in_progress", "--queue-path", queue, "--reason", "by hand"
        ).exit_code
        == 0
    )
    failed = invoke(
        "queue",
        "finish",
        "A",
        "failed",
        "--queue-path",
        queue,
        "--reason",
        "G1 failed",
        "--reworks",
        "1",
    )
    assert "A: failed -> pending" in failed.output
    task = read(queue, TaskQueue).tasks[0]
    assert (task.attempts, task.reworks, task.last_reason) == (1, 1, "G1 failed")


@pytest.mark.parametrize(
    ("args", "words"),
    [
        (
            ["queue", "set", "A", "completed", "--reason", "x"],
            "pending -> completed is not a legal transition",
        ),
        (["queue", "set", "Z", "pending", "--reason", "x"], "no task 'Z' in the queue"),
        (
            ["queue", "finish", "A", "passed", "--reason", "x"],
            "pending -> completed is not a legal transition",
        ),
        (["queue", "add", "A", "--title", "again"], "task 'A' is already in the queue"),
        (["queue", "add", "B", "--title", "b", "--depends-on", "Q"], "depends on unknown task 'Q'"),
        (["queue", "add", "B/..", "--title", "b"], "not a safe id"),
        (["queue", "set", "A", "done", "--reason", "x"], "'done' is not one of"),
    ],
)
def test_queue_helpers_refuse_bad_changes(tmp_path: Path, args: list[str], words: str) -> None:
    queue = tmp_path / "q.json"
    assert invoke("queue", "add", "A", "--queue-path", queue, "--title", "a").exit_code == 0
    before = queue.read_bytes()
    result = invoke(*args, "--queue-path", queue)
    assert result.exit_code == 2, result.output
    assert words in result.output
    assert queue.read_bytes() == before


def test_queue_add_refuses_an_invalid_intake(tmp_path: Path) -> None:
    intake = write(tmp_path / "intake.json", {"task_title": "x"})
    queue = tmp_path / "q.json"
    result = invoke(
        "queue", "add", "A", "--queue-path", queue, "--title", "a", "--intake-file", intake
    )
    assert result.exit_code == 2 and f"{intake}: $.target" in result.output
    assert not queue.exists()


def test_reopen_a_failed_task_with_more_attempts(tmp_path: Path) -> None:
    queue = write(
        tmp_path / "q.json",
        {"tasks": [{"key": "A", "title": "a", "status": "failed", "attempts": 3}]},
    )
    result = invoke(
        "queue",
        "set",
        "A",
        "pending",
        "--queue-path",
        queue,
        "--reason",
        "fixed CI",
        "--extra-attempts",
        "1",
    )
    assert result.exit_code == 0, result.output
    assert read(queue, TaskQueue).tasks[0].max_attempts == 4


def test_the_real_binary_runs_the_commands(tmp_path: Path) -> None:
    run = subprocess.run(
        [sys.executable, "-m", "runner", "negotiate", "--requirements-md", str(REQUIREMENTS),
         "--progress-dir", str(tmp_path / "p"), "--queue-path", str(tmp_path / "q.json")],
        capture_output=True, text=True, check=False,
    )  # fmt: skip
    assert run.returncode == 0, run.stderr
    run = subprocess.run(
        [sys.executable, "-m", "runner", "prepare-next", "--run-id", "R1", "--queue-path",
         str(tmp_path / "q.json"), "--progress-dir", str(tmp_path / "p"),
         "--out-dir", str(tmp_path / "o")],
        capture_output=True, text=True, check=False,
    )  # fmt: skip
    assert run.returncode == 0, run.stderr
    assert "selected: T-1" in run.stdout and "Traceback" not in run.stderr
    run = subprocess.run(
        [sys.executable, "-m", "runner", "queue", "set", "T-1", "completed",
         "--queue-path", str(tmp_path / "nope.json"), "--reason", "x"],
        capture_output=True, text=True, check=False,
    )  # fmt: skip
    assert (
        run.returncode == 2 and "cannot read file" in run.stderr and "Traceback" not in run.stderr
    )


def test_every_file_written_is_a_known_payload_kind(tmp_path: Path) -> None:
    queue = tmp_path / "q.json"
    assert negotiate(tmp_path, "--queue-path", queue).exit_code == 0
    assert prepare_next(tmp_path, "R1").exit_code == 0
    task = write(tmp_path / "task.json", RISKY)
    assert prepare(task, tmp_path / "contract").exit_code == 0
    expected = {
        "q.json": "task-queue",
        "progress/plan_snapshot.json": "plan-snapshot",
        "progress/boundary_snapshot.json": "boundary-snapshot",
        "progress/scoreboard.json": "scoreboard",
        "progress/trends.json": "trends",
        "out/R1/step_pack.json": "step-pack",
        "out/R1/preparation.json": "preparation",
        "contract/conformance_report.json": "conformance-report",
    }
    for name, kind in expected.items():
        result = invoke("validate", tmp_path / name)
        assert (result.exit_code, result.output.strip()) == (0, f"ok: {kind}"), name
        assert invoke("schema", kind).exit_code == 0
