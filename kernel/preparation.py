"""Preparing a task for dispatch: validate, route, contract, step pack, guard, in one place.

`runner prepare` (a task file) and `runner prepare-next` (the task the queue selects) both end
here, so they apply the same checks in the same order. Everything is computed before anything
is written: the runner receives the files as bytes and writes them only when all succeeded.
"""

from __future__ import annotations

import hashlib

import msgspec

from protocol import (
    BoundarySnapshot,
    Preparation,
    PreparedFile,
    QueueTask,
    RuntimePolicy,
    StepPack,
    TaskIntake,
    TierDecision,
    TierRules,
    encode_pretty,
)

from . import intake as intake_rules
from .contract import DEFAULT_TEMPLATE, compile_contract
from .errors import CannotPlan, PackMismatch
from .guard import enforce
from .planner import plan_step

PREPARATION = "preparation.json"
STEP_PACK = "step_pack.json"
MASTER_CONTRACT = "master_contract.md"
TEMPLATE_SNAPSHOT = "template_snapshot.md"
CONFORMANCE_REPORT = "conformance_report.json"


class Prepared(msgspec.Struct, frozen=True):
    """The decision and the files to write (name -> bytes, in writing order)."""

    decision: TierDecision
    preparation: Preparation
    files: dict[str, bytes]
    pack: StepPack | None = None


def prepare(
    intake: TaskIntake,
    *,
    task_id: str,
    run_id: str,
    rules: TierRules = intake_rules.DEFAULT_RULES,
    template: str = DEFAULT_TEMPLATE,
    source: str | None = None,
) -> Prepared:
    """Validate and route `intake`; tier3 also gets its contract files."""
    intake_rules.check(intake, task_id=task_id, source=source)
    decision = intake_rules.route(intake, rules)
    files = _contract_files(intake, decision, task_id, run_id, template)
    return _finish(decision, files, task_id=task_id, run_id=run_id)


def prepare_task(
    task: QueueTask,
    *,
    run_id: str,
    pack: StepPack | None = None,
    boundary: BoundarySnapshot | None = None,
    rules: TierRules = intake_rules.DEFAULT_RULES,
    template: str = DEFAULT_TEMPLATE,
    runtime: RuntimePolicy | None = None,
) -> Prepared:
    """Prepare a queue task: its own `pack` (from `step_pack_ref`) or an auto-planned one.

    The intake is the task's, else the one the pack implies. With a frozen `boundary` the pack
    must stay inside it (`GuardRefused`).
    """
    if pack is not None:
        if pack.task_id != task.key:
            raise PackMismatch("task_id", pack.task_id, task.key)
        if pack.run_id != run_id:
            raise PackMismatch("run_id", pack.run_id, run_id)
    intake = task.intake or (intake_rules.intake_of_pack(pack) if pack is not None else None)
    if intake is None:
        raise CannotPlan(task.key, "the task has neither a step_pack_ref nor an intake")
    intake_rules.check(intake, task_id=task.key, source=f"task {task.key} intake")
    decision = intake_rules.route(intake, rules)
    files = _contract_files(intake, decision, task.key, run_id, template)
    auto = pack is None
    if pack is None:
        contract_ref = MASTER_CONTRACT if MASTER_CONTRACT in files else None
        pack = plan_step(
            task,
            run_id=run_id,
            intake=intake,
            boundary=boundary,
            decision=decision,
            contract_ref=contract_ref,
            runtime=runtime,
        )
    if boundary is not None:
        enforce(pack, boundary)
    files[STEP_PACK] = encode_pretty(pack)
    return _finish(decision, files, task_id=task.key, run_id=run_id, auto_planned=auto, pack=pack)


def _contract_files(
    intake: TaskIntake, decision: TierDecision, task_id: str, run_id: str, template: str
) -> dict[str, bytes]:
    if decision.tier != "tier3":
        return {}
    bundle = compile_contract(intake, decision, task_id=task_id, run_id=run_id, template=template)
    return {
        MASTER_CONTRACT: bundle.master_contract,
        TEMPLATE_SNAPSHOT: bundle.template_snapshot,
        CONFORMANCE_REPORT: bundle.conformance_report,
    }


def _finish(
    decision: TierDecision,
    files: dict[str, bytes],
    *,
    task_id: str,
    run_id: str,
    auto_planned: bool = False,
    pack: StepPack | None = None,
) -> Prepared:
    listed = [PreparedFile(name, hashlib.sha256(data).hexdigest()) for name, data in files.items()]
    preparation = Preparation(
        task_id=task_id,
        run_id=run_id,
        decision=decision,
        files=listed,
        auto_planned=auto_planned,
        step_pack_ref=STEP_PACK if pack is not None else None,
    )
    everything = {**files, PREPARATION: encode_pretty(preparation)}
    return Prepared(decision=decision, preparation=preparation, files=everything, pack=pack)
