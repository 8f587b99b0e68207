"""The kernel: the system's judgement as pure functions over `protocol` Structs.

No I/O here: the runner gathers facts (git, files, exit codes) and passes them in.
"""

from protocol.attempts import AttemptKind, AttemptPointer, classify, next_pointers

from . import (
    contract,
    guard,
    intake,
    negotiation,
    planner,
    preparation,
    scoreboard,
    snapshot,
    triage,
)
from .attempts import AttemptCause, cause_after_outcome, cause_after_review, next_attempt
from .contract import ContractBundle, compile_contract
from .dependencies import dependency_kind, dependency_violation
from .errors import (
    CannotPlan,
    DuplicateTask,
    GuardRefused,
    IllegalTransition,
    IntakeInvalid,
    KernelError,
    NotEligible,
    PackMismatch,
    QueueInvalid,
    RequirementsInvalid,
    ReworkError,
    ScopePatternError,
    SnapshotTampered,
    TemplateInvalid,
    UnknownTask,
)
from .facts import CLAIMS_ONLY, CommandRerun, WorkspaceFacts
from .guard import Violation, enforce, guard_violations
from .negotiation import Negotiated, negotiate, queue_tasks
from .planner import plan_step
from .preparation import Prepared, prepare, prepare_task
from .qa import FAIL_REASONS, primary_reason, review, scope_rules_of, verdict_for
from .rework import build_rework
from .scope import ScopeRules
from .scoreboard import append_trend, score, summary_markdown
from .triage import (
    AttemptOutcome,
    Explanation,
    Selection,
    add_task,
    claim,
    explain,
    record_attempt,
    record_rework,
    reopen,
    select_next,
    transition,
)

__all__ = [
    "CLAIMS_ONLY",
    "FAIL_REASONS",
    "AttemptCause",
    "AttemptKind",
    "AttemptOutcome",
    "AttemptPointer",
    "CannotPlan",
    "CommandRerun",
    "ContractBundle",
    "DuplicateTask",
    "Explanation",
    "GuardRefused",
    "IllegalTransition",
    "IntakeInvalid",
    "KernelError",
    "Negotiated",
    "NotEligible",
    "PackMismatch",
    "Prepared",
    "QueueInvalid",
    "RequirementsInvalid",
    "ReworkError",
    "ScopePatternError",
    "ScopeRules",
    "Selection",
    "SnapshotTampered",
    "TemplateInvalid",
    "UnknownTask",
    "Violation",
    "WorkspaceFacts",
    "add_task",
    "append_trend",
    "build_rework",
    "cause_after_outcome",
    "cause_after_review",
    "claim",
    "classify",
    "compile_contract",
    "contract",
    "dependency_kind",
    "dependency_violation",
    "enforce",
    "explain",
    "guard",
    "guard_violations",
    "intake",
    "negotiate",
    "negotiation",
    "next_attempt",
    "next_pointers",
    "plan_step",
    "planner",
    "preparation",
    "prepare",
    "prepare_task",
    "primary_reason",
    "queue_tasks",
    "record_attempt",
    "record_rework",
    "reopen",
    "review",
    "scope_rules_of",
    "score",
    "scoreboard",
    "select_next",
    "snapshot",
    "summary_markdown",
    "transition",
    "triage",
    "verdict_for",
]
