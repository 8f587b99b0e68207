from __future__ import annotations

import hashlib

import msgspec
import pytest

from kernel import GuardRefused, PackMismatch
from kernel.errors import CannotPlan, IntakeInvalid
from kernel.negotiation import negotiate, queue_tasks
from kernel.preparation import prepare, prepare_task
from protocol import Preparation, QueueTask, RiskFlag, StepPack, TaskIntake, decode, read
from tests.conftest import SEED
from tests.kernel.test_negotiation import example
from tests.kernel.test_planner import INTAKE, TASK


def test_prepare_tier2_lists_no_contract() -> None:
    prepared = prepare(INTAKE, task_id="T-1", run_id="R")
    assert list(prepared.files) == ["preparation.json"]
    assert prepared.preparation.files == [] and prepared.decision.tier == "tier2"


def test_prepare_tier3_hashes_every_file_it_lists() -> None:
    risky = msgspec.structs.replace(INTAKE, risk_flags=[RiskFlag.DESTRUCTIVE])
    prepared = prepare(risky, task_id="T-1", run_id="R")
    listed = decode(prepared.files["preparation.json"], Preparation).files
    assert [f.name for f in listed] == [
        "master_contract.md",
        "template_snapshot.md",
        "conformance_report.json",
    ]
    for f in listed:
        assert hashlib.sha256(prepared.files[f.name]).hexdigest() == f.sha256


def test_prepare_refuses_an_invalid_intake() -> None:
    with pytest.raises(IntakeInvalid):
        prepare(TaskIntake(), task_id="T-1", run_id="R")


def test_prepare_task_plans_when_the_task_has_no_pack() -> None:
    prepared = prepare_task(TASK, run_id="R")
    assert prepared.preparation.auto_planned and prepared.pack is not None
    assert prepared.preparation.step_pack_ref == "step_pack.json"
    assert decode(prepared.files["step_pack.json"], StepPack) == prepared.pack


def test_a_tier3_planned_pack_points_at_its_contract() -> None:
    risky = msgspec.structs.replace(
        TASK, intake=msgspec.structs.replace(INTAKE, risk_flags=[RiskFlag.DESTRUCTIVE])
    )
    prepared = prepare_task(risky, run_id="R")
    assert prepared.pack is not None
    assert prepared.pack.context["master_contract"] == "master_contract.md"
    assert prepared.pack.context["tier"] == "tier3"


def test_prepare_task_with_a_real_pack_routes_the_intake_it_implies() -> None:
    pack = read(SEED / "step_packs" / "MVP-3_S1.json", StepPack)
    task = QueueTask(key=pack.task_id, title="S2 hardening")
    prepared = prepare_task(task, run_id=pack.run_id, pack=pack)
    assert not prepared.preparation.auto_planned
    assert prepared.pack == pack
    # Seven allowed paths over several directories: contract first.
    assert prepared.decision.tier == "tier3"
    assert "master_contract.md" in prepared.files


@pytest.mark.parametrize(
    ("field", "task_key", "run_id"), [("task_id", "OTHER", None), ("run_id", None, "R-x")]
)
def test_a_pack_for_another_task_or_run_is_refused(
    field: str, task_key: str | None, run_id: str | None
) -> None:
    pack = read(SEED / "step_packs" / "MVP-3_S1.json", StepPack)
    task = QueueTask(key=task_key or pack.task_id, title="t")
    with pytest.raises(PackMismatch, match=field):
        prepare_task(task, run_id=run_id or pack.run_id, pack=pack)


def test_prepare_task_applies_the_guard() -> None:
    boundary = negotiate(example()).boundary
    inside = queue_tasks(negotiate(example()).plan.tasks)[0]
    assert prepare_task(inside, run_id="R", boundary=boundary).pack is not None
    outside = msgspec.structs.replace(
        TASK, intake=msgspec.structs.replace(INTAKE, allowed_paths=["lib/**"])
    )
    with pytest.raises(GuardRefused):
        prepare_task(outside, run_id="R", boundary=boundary)


def test_nothing_to_plan_from() -> None:
    with pytest.raises(CannotPlan):
        prepare_task(QueueTask(key="T", title="t"), run_id="R")
