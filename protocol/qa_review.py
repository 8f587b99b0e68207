"""QA review: the controller's judgement of one round, modelled on the original's reviews.

Each check records what it looked at (`scope_checks`, `paths_checked`, `command_checks`) so a
reader can audit the verdict without re-running it; `findings` say what is wrong, with codes.
"""

from __future__ import annotations

import enum
from typing import Literal

import msgspec

from .step_result import Verdict


class ReviewVerdict(enum.StrEnum):
    PASS = "PASS"
    REWORK = "REWORK"
    FAIL = "FAIL"


class QAReason(enum.StrEnum):
    """Closed set of reasons a review gives; a typo is a decode error, not a new reason."""

    PASS_ALL_GATES = "PASS_ALL_GATES"
    AC_MISSING = "AC_MISSING"
    AC_UNEXPECTED = "AC_UNEXPECTED"
    AC_NOT_MET = "AC_NOT_MET"
    COMMAND_MISSING = "COMMAND_MISSING"
    COMMAND_FAILED = "COMMAND_FAILED"
    COMMAND_CLAIM_CONTRADICTED = "COMMAND_CLAIM_CONTRADICTED"
    SCOPE_NOT_ALLOWED = "SCOPE_NOT_ALLOWED"
    SCOPE_FORBIDDEN = "SCOPE_FORBIDDEN"
    DEPENDENCY_POLICY_VIOLATION = "DEPENDENCY_POLICY_VIOLATION"
    EVIDENCE_MISSING = "EVIDENCE_MISSING"
    EVIDENCE_OUTSIDE_ARTIFACTS = "EVIDENCE_OUTSIDE_ARTIFACTS"
    EVIDENCE_PATTERN_UNMATCHED = "EVIDENCE_PATTERN_UNMATCHED"
    CHANGE_NOT_REPORTED = "CHANGE_NOT_REPORTED"
    CHANGE_CLAIMED_NOT_MADE = "CHANGE_CLAIMED_NOT_MADE"
    WORKER_BLOCKED = "WORKER_BLOCKED"
    WORKER_FAILED = "WORKER_FAILED"
    WORKER_VERDICT_NOT_PASS = "WORKER_VERDICT_NOT_PASS"


class Finding(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    code: QAReason
    message: str
    gate_id: str | None = None
    path: str | None = None


class ScopeCheck(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    file: str
    allowed: bool
    forbidden_matches: list[str] = []


class PathCheck(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    section: Literal["commands_executed", "verification_results", "evidence_map"]
    index: int
    label: str
    evidence_path: str
    prefix_ok: bool
    exists: bool


class PatternResult(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    id: str
    pattern: str
    count: int
    matches: list[str] = []


class CommandCheck(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    index: int
    command: str
    claimed_exit_code: int | None
    rerun_exit_code: int | None = None
    evidence_path: str | None = None
    passed: bool = False


class GateResult(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    gate_id: str
    type: str
    owner: str
    passed: bool
    pass_condition: str = ""
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
