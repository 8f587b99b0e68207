from __future__ import annotations

import msgspec
import pytest

from kernel import intake as ki
from kernel.errors import CannotPlan, IntakeInvalid
from kernel.guard import guard_violations
from kernel.negotiation import negotiate, queue_tasks
from kernel.planner import plan_step
from protocol import QueueTask, RuntimePolicy, StepPack, TaskIntake, decode, encode
from tests.kernel.test_negotiation import example

INTAKE = TaskIntake(
    task_title="Add a --json flag",
    target="report --json prints JSON",
    execution_route=["add the flag", "add a test"],
    acceptance_criteria=["AC1: prints valid JSON", "tests pass"],
    allowed_paths=["src/report/cli.py", "tests/test_report.py"],
    commands_to_run=["python -m pytest tests/test_report.py -q", "ruff check ."],
    description="Users asked for it.",
)
TASK = QueueTask(key="T-1", title="Add a --json flag", intake=INTAKE, max_attempts=2)


def test_a_planned_pack_is_complete_and_marked() -> None:
    pack = plan_step(TASK, run_id="T-1_r1")
    view = pack.view
    assert pack.auto_planned
    assert (view.task_id, view.run_id, view.step_id) == ("T-1", "T-1_r1", "S1")
    assert [c.id for c in view.criteria] == ["AC1", "AC2"]
    assert list(view.commands_to_run) == INTAKE.commands_to_run and view.objective == INTAKE.target
    assert [(g.gate_id, g.type, g.command_index) for g in view.gates] == [
        ("G1", "required_command_exit_0", 0),
        ("G2", "required_command_exit_0", 1),
        ("G3", "qa_scope_guard_review", None),
        ("G4", "qa_evidence_review", None),
        ("G5", "qa_dependency_policy_review", None),
        ("G6", "qa_acceptance_review", None),
    ]
    assert all(g.target_ac == ["AC1", "AC2"] for g in view.gates)
    assert view.evidence_required[0].path_pattern == (
        ".artifacts/agent_runs/T-1_r1/steps/S1/rounds/R*/step_result.json"
    )
    assert pack.step_description == "Users asked for it.\n\nRoute:\n1. add the flag\n2. add a test"


def test_planning_is_deterministic_and_the_pack_decodes() -> None:
    a, b = plan_step(TASK, run_id="R"), plan_step(TASK, run_id="R")
    assert encode(a) == encode(b)
    assert decode(encode(a), StepPack) == a


def test_a_task_without_commands_gets_review_gates_only() -> None:
    task = msgspec.structs.replace(TASK, intake=msgspec.structs.replace(INTAKE, commands_to_run=[]))
    view = plan_step(task, run_id="R").view
    assert [g.owner for g in view.gates] == ["controller"] * 4
    assert [e.id for e in view.evidence_required] == ["E1_step_result", "E2_verification_records"]


def test_runtime_policy_and_decision_are_carried() -> None:
    decision = ki.route(INTAKE)
    pack = plan_step(
        TASK,
        run_id="R",
        decision=decision,
        contract_ref="prepare/master_contract.md",
        runtime=RuntimePolicy(timeout_sec=600, no_output_timeout_sec=60),
    )
    assert pack.runtime_policy.timeout_sec == 600
    assert pack.context["tier"] == "tier2"
    assert pack.context["master_contract"] == "prepare/master_contract.md"


def test_pack_planned_from_negotiated_tasks_passes_the_guard() -> None:
    result = negotiate(example())
    for task in queue_tasks(result.plan.tasks):
        pack = plan_step(task, run_id="R1", boundary=result.boundary)
        assert guard_violations(pack, result.boundary) == []
        assert pack.context["boundary_sha256"] == result.boundary.content_sha256
        assert pack.view.dependency_policy == result.boundary.dependency_policy


def test_scope_falls_back_to_the_boundary() -> None:
    result = negotiate(example())
    bare = msgspec.structs.replace(INTAKE, allowed_paths=[], commands_to_run=[])
    pack = plan_step(TASK, run_id="R", intake=bare, boundary=result.boundary)
    assert list(pack.view.allowed_paths) == result.boundary.allowed_paths
    assert set(result.boundary.forbidden_paths) <= set(pack.view.forbidden_paths)


@pytest.mark.parametrize(
    ("task", "error", "words"),
    [
        (QueueTask(key="T-2", title="x"), CannotPlan, "neither a step_pack_ref nor an intake"),
        (
            QueueTask(
                key="T-2", title="x", intake=msgspec.structs.replace(INTAKE, allowed_paths=[])
            ),
            CannotPlan,
            "no allowed_paths",
        ),
        (QueueTask(key="T-2", title="x", intake=TaskIntake()), IntakeInvalid, "$.task_title"),
    ],
)
def test_cannot_plan(task: QueueTask, error: type[Exception], words: str) -> None:
    with pytest.raises(error, match=words.replace("$", r"\$")):
        plan_step(task, run_id="R")
