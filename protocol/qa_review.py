"""QA review: the controller's judgement of one round, modelled on the original's reviews.

Each check records what it looked at (`scope_checks`, `paths_checked`, `command_checks`) so a
reader can audit the verdict without re-running it; `findings` say what is wrong, with codes.
`unchecked` names the facts the controller did not have (a review made from the worker's claims
alone), so a PASS on claims can never pass for a PASS on facts.
"""

from __future__ import annotations

import enum
from typing import Literal

import msgspec

from .step_result import Verdict


class ReviewVerdict(enum.StrEnum):
    """PASS: accept. REWORK: send back with a ReworkPack. FAIL: stop; a person decides."""

    PASS = "PASS"
    REWORK = "REWORK"
    FAIL = "FAIL"


class QAReason(enum.StrEnum):
    """Closed set of reasons a review gives; a typo is a decode error, not a new reason.

    Declaration order is priority order: a review's primary reason (the ReworkPack's
    `reason_code`) is the first of its reasons in this list.
    """

    PASS_ALL_GATES = "PASS_ALL_GATES"
    WORKER_BLOCKED = "WORKER_BLOCKED"
    RESULT_FOR_OTHER_STEP = "RESULT_FOR_OTHER_STEP"
    SCOPE_FORBIDDEN = "SCOPE_FORBIDDEN"
    DEPENDENCY_POLICY_VIOLATION = "DEPENDENCY_POLICY_VIOLATION"
    COMMAND_CLAIM_CONTRADICTED = "COMMAND_CLAIM_CONTRADICTED"
    CHANGE_NOT_REPORTED = "CHANGE_NOT_REPORTED"
    CHANGE_CLAIMED_NOT_MADE = "CHANGE_CLAIMED_NOT_MADE"
    SCOPE_NOT_ALLOWED = "SCOPE_NOT_ALLOWED"
    COMMAND_MISSING = "COMMAND_MISSING"
    COMMAND_FAILED = "COMMAND_FAILED"
    AC_MISSING = "AC_MISSING"
    AC_DUPLICATE = "AC_DUPLICATE"
    AC_UNEXPECTED = "AC_UNEXPECTED"
    AC_NOT_MET = "AC_NOT_MET"
    EVIDENCE_OUTSIDE_ARTIFACTS = "EVIDENCE_OUTSIDE_ARTIFACTS"
    EVIDENCE_MISSING = "EVIDENCE_MISSING"
    EVIDENCE_PATTERN_UNMATCHED = "EVIDENCE_PATTERN_UNMATCHED"
    WORKER_FAILED = "WORKER_FAILED"
    WORKER_VERDICT_NOT_PASS = "WORKER_VERDICT_NOT_PASS"
    # Not a review finding: accepted work that could not be merged into the target branch.
    MERGE_CONFLICT = "MERGE_CONFLICT"


# What a review may lack: the files git says changed, the evidence files that exist, the exit
# codes of the controller's own re-runs of `commands_to_run`.
Unchecked = Literal["changed_files", "evidence_files", "command_exit_codes"]


class Finding(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    """One thing wrong. `gate_ids` are the gates it fails (empty: it belongs to no gate the
    pack declares, and still blocks a PASS); `path` the file or evidence path concerned."""

    code: QAReason
    message: str
    gate_ids: list[str] = []
    path: str | None = None


class ScopeCheck(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    file: str
    allowed: bool
    forbidden_matches: list[str] = []


class PathCheck(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    """One evidence path the worker named. `exists` is None when it was not looked up: the
    path is outside the run's artifacts directory (never followed) or the review had no
    workspace."""

    section: Literal["commands_executed", "verification_results", "evidence_map"]
    index: int
    label: str
    evidence_path: str
    prefix_ok: bool
    exists: bool | None


class PatternResult(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    """An `evidence_required` pattern and what matched it; `checked` is False when the review
    had no listing of the artifacts directory."""

    id: str
    pattern: str
    count: int
    matches: list[str] = []
    checked: bool = True


class CommandCheck(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    """One entry of the pack's `commands_to_run` against the worker's record of it and, when
    the controller re-ran it, the re-run's exit code. `passed`: no finding about this command
    (its record, its exit code where a gate requires 0, or the evidence of its record)."""

    index: int
    command: str
    claimed_exit_code: int | None
    rerun_exit_code: int | None = None
    rerun_timed_out: bool = False
    rerun_detail: str = ""
    evidence_path: str | None = None
    passed: bool = False


class GateResult(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    gate_id: str
    type: str
    owner: str
    passed: bool
    pass_condition: str = ""
    target_ac: list[str] = []
    findings: list[QAReason] = []


class QAReview(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    task_id: str
    run_id: str
    step_id: str
    round: int
    verdict: ReviewVerdict
    reason_codes: list[QAReason]
    worker_verdict: Verdict
    worker_reason_code: str
    findings: list[Finding] = []
    gates: list[GateResult] = []
    scope_checks: list[ScopeCheck] = []
    changed_files: list[str] = []
    claimed_files: list[str] = []
    changed_not_claimed: list[str] = []
    claimed_not_changed: list[str] = []
    paths_checked: list[PathCheck] = []
    pattern_results: list[PatternResult] = []
    command_checks: list[CommandCheck] = []
    missing_acs: list[str] = []
    unexpected_acs: list[str] = []
    unmet_acs: list[str] = []
    dependency_violations: list[str] = []
    unchecked: list[Unchecked] = []
    base_revision: str | None = None
