"""ReworkPack: controller to worker after a failing review.

Built deterministically from the review (same review, same bytes) so a rework is a reproducible
instruction, not hand-written feedback. Failed gates and acceptance criteria are quoted
verbatim, as the original's rework ticket requires. `review_verdict` says whether the review
asked for a rework (REWORK, which the engine dispatches) or stopped the task (FAIL: the pack
then only documents what went wrong, for a person to act on).
"""

from __future__ import annotations

from typing import Literal

import msgspec

from .ids import SafeId
from .qa_review import QAReason, ReviewVerdict
from .scalars import PosInt
from .step_pack import DependencyPolicy


class FailedGate(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    gate_id: str
    type: str
    pass_condition: str
    findings: list[str] = []


class ReworkScope(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    allowed_paths: list[str]
    forbidden_paths: list[str] = []
    dependency_policy: DependencyPolicy = msgspec.field(default_factory=DependencyPolicy)


class ReworkPack(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    task_id: SafeId
    run_id: SafeId
    step_id: SafeId
    rework_round: PosInt
    reason_code: QAReason
    scope_guard: ReworkScope
    task_kind: Literal["rework"] = "rework"
    step_title: str = ""
    objective: str = ""
    failed_gates: list[FailedGate] = []
    failed_acceptance_criteria: list[str] = []
    missing_evidence: list[str] = []
    minimal_fix_list: list[str] = []
    rerun_commands: list[str] = []
    acceptance_criteria: list[str] = []
    review_ref: str | None = None
    review_verdict: ReviewVerdict = ReviewVerdict.REWORK
