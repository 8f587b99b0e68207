"""The rework builder [the original's ReworkBuilder]: a ReworkPack from a failing review.

The pack is the rework ticket of the original's workflow, built rather than written: the failed
gates with their pass conditions, the failed acceptance criteria quoted verbatim from the step
pack, the missing evidence, one fix per finding, the commands to re-run, the primary reason
code and the scope guard the rework must stay inside. It is a pure function of the step pack
and the review, so the same review always gives the same bytes.
"""

from __future__ import annotations

from collections.abc import Iterable

from protocol import (
    FailedGate,
    Finding,
    QAReason,
    QAReview,
    ReviewVerdict,
    ReworkPack,
    ReworkScope,
    StepPack,
    StepPackView,
)

from .errors import ReworkError
from .qa import primary_reason

R = QAReason

# One instruction per reason; the finding's own message says what, where and which AC.
_FIXES: dict[QAReason, str] = {
    R.WORKER_BLOCKED: "Resolve the blocker, or report exactly what is needed to resolve it",
    R.RESULT_FOR_OTHER_STEP: "Report the result under this step's task, run and step ids",
    R.SCOPE_FORBIDDEN: "Revert the change to a forbidden path",
    R.DEPENDENCY_POLICY_VIOLATION: "Revert the change; it needs a change order first",
    R.COMMAND_CLAIM_CONTRADICTED: "Re-run the command and report the exit code it really gives",
    R.CHANGE_NOT_REPORTED: "List the file in files_changed, or revert the change",
    R.CHANGE_CLAIMED_NOT_MADE: "Drop the file from files_changed, or make the change",
    R.SCOPE_NOT_ALLOWED: "Revert the change outside the allowed paths",
    R.COMMAND_MISSING: "Run the command and record it with its exit code and evidence path",
    R.COMMAND_FAILED: "Fix the work until the command exits 0",
    R.AC_MISSING: "Answer the criterion in verification_results, quoting its text exactly",
    R.AC_DUPLICATE: "Answer the criterion once",
    R.AC_UNEXPECTED: "Quote the step pack's criterion text exactly, or drop the entry",
    R.AC_NOT_MET: "Meet the criterion and point to the evidence",
    R.EVIDENCE_OUTSIDE_ARTIFACTS: "Write the evidence under the run's artifacts directory",
    R.EVIDENCE_MISSING: "Write the evidence file the result points to",
    R.EVIDENCE_PATTERN_UNMATCHED: "Produce the required evidence",
    R.WORKER_FAILED: "Finish the step; report PASS only when every criterion is met",
    R.WORKER_VERDICT_NOT_PASS: "Finish the step; report PASS only when every criterion is met",
    R.MERGE_CONFLICT: "Redo the change on top of the current target branch",
}


def build_rework(
    pack: StepPack,
    review: QAReview,
    *,
    rework_round: int,
    review_ref: str | None = None,
) -> ReworkPack:
    """The ReworkPack for a REWORK (or FAIL) review of `pack`.

    `rework_round` counts reworks of this step from 1. `review_ref` names where the review is
    stored, for the worker and the ledger to cite. `rerun_commands` are all of the pack's
    `commands_to_run`, in order: the next review needs a fresh record of every one, and any
    fix can change what a command that passed before now gives.
    """
    view = pack.view
    if review.verdict is ReviewVerdict.PASS:
        raise ReworkError(
            view.task_id, view.step_id, "the review passed; there is nothing to rework"
        )
    ids = (review.task_id, review.run_id, review.step_id)
    if ids != (view.task_id, view.run_id, view.step_id):
        raise ReworkError(
            view.task_id,
            view.step_id,
            f"the review is of {'/'.join(ids)}, not of this pack's "
            f"{view.task_id}/{view.run_id}/{view.step_id}",
        )
    if rework_round < 1:
        raise ReworkError(
            view.task_id, view.step_id, f"rework_round counts from 1, got {rework_round}"
        )

    failed_gates = [
        FailedGate(
            gate_id=g.gate_id,
            type=g.type,
            pass_condition=g.pass_condition,
            findings=[f.message for f in review.findings if g.gate_id in f.gate_ids],
        )
        for g in review.gates
        if not g.passed
    ]
    return _pack(
        view,
        rework_round,
        primary_reason(review),
        failed_gates=failed_gates,
        failed_acceptance_criteria=_failed_criteria(pack, review),
        missing_evidence=_missing_evidence(review),
        minimal_fix_list=_unique(_fix(f, view.run_dir) for f in review.findings),
        review_ref=review_ref,
        review_verdict=review.verdict,
    )


def build_conflict_rework(
    pack: StepPack, conflicted_files: Iterable[str], *, rework_round: int
) -> ReworkPack:
    """The ReworkPack for work that passed review but conflicts with the target branch.

    The worker gets a fresh workspace at the target's new head and redoes the change there;
    the conflicted files are named so it can look at what landed meanwhile. Deterministic, like
    `build_rework`.
    """
    view = pack.view
    if rework_round < 1:
        raise ReworkError(
            view.task_id, view.step_id, f"rework_round counts from 1, got {rework_round}"
        )
    files = sorted(set(conflicted_files))
    listed = ", ".join(files) if files else "(git named no file)"
    return _pack(
        view,
        rework_round,
        R.MERGE_CONFLICT,
        minimal_fix_list=[
            f"{_FIXES[R.MERGE_CONFLICT]}: the workspace now starts from the target branch, "
            f"which changed these files since your work began: {listed}",
            *[f"Re-check {f} against what landed on the target branch" for f in files],
        ],
    )


def _pack(view: StepPackView, rework_round: int, reason: QAReason, **parts: object) -> ReworkPack:
    """The parts every ReworkPack takes from its step: ids, scope guard, commands, criteria."""
    return ReworkPack(
        task_id=view.task_id,
        run_id=view.run_id,
        step_id=view.step_id,
        rework_round=rework_round,
        reason_code=reason,
        scope_guard=ReworkScope(
            allowed_paths=list(view.allowed_paths),
            forbidden_paths=list(view.forbidden_paths),
            dependency_policy=view.dependency_policy,
        ),
        step_title=view.title,
        objective=view.objective,
        rerun_commands=list(view.commands_to_run),
        acceptance_criteria=[c.text for c in view.criteria],
        **parts,  # type: ignore[arg-type]
    )


def _failed_criteria(pack: StepPack, review: QAReview) -> list[str]:
    """Verbatim texts, in the pack's order, of the criteria the review found failing: missing
    or unmet answers, the targets of failed gates, and the criteria unmatched evidence was
    required for."""
    view = pack.view
    failed_ids = {ac for g in review.gates if not g.passed for ac in g.target_ac}
    unmatched = {p.id for p in review.pattern_results if p.checked and p.count == 0}
    failed_ids |= {
        ac for req in view.evidence_required if req.id in unmatched for ac in req.required_for
    }
    failed_texts = set(review.missing_acs) | set(review.unmet_acs)
    return [c.text for c in view.criteria if c.id in failed_ids or c.text in failed_texts]


def _missing_evidence(review: QAReview) -> list[str]:
    """Evidence paths that are missing or outside the artifacts directory (as the worker
    gave them), references with no path at all, and required patterns nothing matched."""
    out: list[str] = []
    for check in review.paths_checked:
        if not check.evidence_path.strip():
            out.append(f"{check.section}[{check.index}] ({check.label}): no evidence path")
        elif not check.prefix_ok or check.exists is False:
            out.append(check.evidence_path)
    out += [f"{p.pattern} ({p.id})" for p in review.pattern_results if p.checked and p.count == 0]
    return _unique(out)


def _fix(finding: Finding, run_dir: str) -> str:
    action = _FIXES.get(finding.code, "Fix")
    if finding.code is R.EVIDENCE_OUTSIDE_ARTIFACTS:
        action += f" ({run_dir}/)"
    return f"{action}: {finding.message}"


def _unique(items: Iterable[str]) -> list[str]:
    return list(dict.fromkeys(items))
