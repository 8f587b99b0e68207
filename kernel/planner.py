"""The auto-planner: a StepPack for a queue task that has none [the original's fallback].

A task negotiated from requirements (or added with an intake) carries what a step needs: the
target, the route, acceptance criteria, scope and commands. `plan_step` turns that into one
bounded step, marked ``auto_planned`` so reviews and the ledger can tell it from a pack a person
wrote. The pack is built only from its inputs, so the same task gives the same pack.

Gates: one ``required_command_exit_0`` gate per verification command, then the controller's
scope, evidence, dependency-policy and acceptance reviews, all over every criterion. Evidence:
the round's ``step_result.json`` and the result's command and verification records.
"""

from __future__ import annotations

from typing import Any

from protocol import (
    ARTIFACTS_ROOT,
    BoundarySnapshot,
    QueueTask,
    RuntimePolicy,
    StepPack,
    TaskIntake,
    TierDecision,
    ac_id_of,
    convert,
    to_builtins,
)

from . import intake as intake_rules
from .boundary import task_scope
from .errors import CannotPlan

_REVIEW_GATES = (
    ("qa_scope_guard_review", "every changed file is inside allowed_paths and none is forbidden"),
    ("qa_evidence_review", "every evidence path exists under the run's artifacts directory"),
    ("qa_dependency_policy_review", "no dependency manifest, lockfile or CI change"),
    ("qa_acceptance_review", "every criterion is answered, met, and backed by evidence"),
)


def plan_step(
    task: QueueTask,
    *,
    run_id: str,
    intake: TaskIntake | None = None,
    step_id: str = "S1",
    boundary: BoundarySnapshot | None = None,
    decision: TierDecision | None = None,
    contract_ref: str | None = None,
    runtime: RuntimePolicy | None = None,
) -> StepPack:
    """Derive the step for `task` from `intake` (default: the task's own).

    Scope: the intake's allowed paths, else the boundary's; forbidden paths are the intake's
    plus the boundary's, so a planned pack stays inside the frozen boundary by construction.
    Raises `CannotPlan` without an intake or without any allowed path, `IntakeInvalid` for an
    intake with problems.
    """
    intake = intake or task.intake
    if intake is None:
        raise CannotPlan(task.key, "the task has neither a step_pack_ref nor an intake")
    intake_rules.check(intake, task_id=task.key, source=f"task {task.key} intake")
    allowed, forbidden = task_scope(intake.allowed_paths, intake.forbidden_paths, boundary)
    if not allowed:
        raise CannotPlan(task.key, "no allowed_paths in the intake and no frozen boundary")
    criteria = list(intake.acceptance_criteria)
    ac_ids = [ac_id_of(text, i + 1) for i, text in enumerate(criteria)]
    commands = list(intake.commands_to_run)
    gates: list[dict[str, Any]] = [
        {
            "gate_id": f"G{i + 1}",
            "owner": "worker",
            "type": "required_command_exit_0",
            "target_ac": ac_ids,
            "command_index": i,
            "pass_condition": f"`{command}` exits 0",
        }
        for i, command in enumerate(commands)
    ]
    gates += [
        {
            "gate_id": f"G{len(commands) + i + 1}",
            "owner": "controller",
            "type": gate_type,
            "target_ac": ac_ids,
            "pass_condition": condition,
        }
        for i, (gate_type, condition) in enumerate(_REVIEW_GATES)
    ]
    rounds = f"{ARTIFACTS_ROOT}/{run_id}/steps/{step_id}/rounds/R*"
    records = [
        ("E1_step_result", f"{rounds}/step_result.json"),
        ("E2_verification_records", "step_result.json::verification_results[*]"),
    ]
    if commands:
        records.append(("E3_command_records", "step_result.json::commands_executed[*]"))
    evidence = [{"id": i, "path_pattern": p, "required_for": ac_ids} for i, p in records]
    route = "\n".join(f"{i}. {step}" for i, step in enumerate(intake.execution_route, start=1))
    description = "\n\n".join(filter(None, [intake.description.strip(), f"Route:\n{route}"]))
    context: dict[str, Any] = {"planned_from": f"queue task {task.key}"}
    if decision is not None:
        context["tier"] = decision.tier
    if contract_ref is not None:
        context["master_contract"] = contract_ref
    if boundary is not None:
        context["boundary_sha256"] = boundary.content_sha256
    policy = boundary.dependency_policy if boundary is not None else None
    pack: dict[str, Any] = {
        "task_id": task.key,
        "run_id": run_id,
        "step_id": step_id,
        "step_title": task.title,
        "step_description": description,
        "objective": intake.target,
        "allowed_paths": allowed,
        "forbidden_paths": forbidden,
        "commands_to_run": commands,
        "AC": criteria,
        "gates": gates,
        "evidence_required": evidence,
        "runtime_policy": to_builtins(runtime) if runtime is not None else {},
        "evidence_requirement": (
            "For each command and each criterion give the exit code or met flag and an "
            f"evidence_path under {ARTIFACTS_ROOT}/{run_id}/steps/{step_id}/rounds/R<n>/."
        ),
        "allowed_actions": [
            "edit only files inside allowed_paths",
            "run the commands in commands_to_run",
        ],
        "context": context,
        "worker_backend": task.worker_backend or intake.worker_backend,
        "auto_planned": True,
    }
    if policy is not None:
        pack["dependency_policy"] = to_builtins(policy)
    return convert(pack, StepPack, source=f"auto-plan of task {task.key}")
