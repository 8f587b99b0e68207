"""The kernel: the system's judgement as pure functions over `protocol` Structs.

No I/O here: the runner gathers facts (git, files, exit codes) and passes them in.

Each public thing has one name. Most live at the top level (`kernel.review`,
`kernel.negotiate`, `kernel.GuardRefused`). Five modules are exported as namespaces instead,
because their functions are named for the module they sit in (`intake.check`, `triage.get`,
`scoreboard.score`, `snapshot.freeze`, `contract.check_headings`); nothing of theirs is repeated
at the top level. The R/S attempt rules are `protocol`'s (`protocol.next_pointers`); the kernel
adds only which of them an attempt takes (`next_attempt`).
"""

from . import contract, intake, scoreboard, snapshot, triage
from .attempts import (
    AttemptCause,
    cause_after_outcome,
    cause_after_review,
    next_attempt,
    rework_to_repeat,
)
from .backoff import retry_delay
from .dependencies import DependencyKind, dependency_kind, dependency_violation
from .dialogue import RequirementsDraft, draft_from_dialogue, render_draft
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
from .freeze import FreezeAction, FreezeFacts, FreezePlan, assess_freeze, plan_freeze
from .guard import Violation, ViolationKind, enforce, guard_violations
from .negotiation import Negotiated, negotiate, queue_tasks
from .planner import plan_step
from .preparation import Prepared, prepare, prepare_task
from .qa import FAIL_REASONS, primary_reason, review, scope_rules_of, verdict_for
from .rework import build_conflict_rework, build_rework
from .rollback import Conflict, Observed, RollbackPlan, plan_rollback
from .scope import ScopeRules, glob_problem

__all__ = [
    "CLAIMS_ONLY",
    "FAIL_REASONS",
    "AttemptCause",
    "CannotPlan",
    "CommandRerun",
    "Conflict",
    "DependencyKind",
    "DuplicateTask",
    "FreezeAction",
    "FreezeFacts",
    "FreezePlan",
    "GuardRefused",
    "IllegalTransition",
    "IntakeInvalid",
    "KernelError",
    "Negotiated",
    "NotEligible",
    "Observed",
    "PackMismatch",
    "Prepared",
    "QueueInvalid",
    "RequirementsDraft",
    "RequirementsInvalid",
    "ReworkError",
    "RollbackPlan",
    "ScopePatternError",
    "ScopeRules",
    "SnapshotTampered",
    "TemplateInvalid",
    "UnknownTask",
    "Violation",
    "ViolationKind",
    "WorkspaceFacts",
    "assess_freeze",
    "build_conflict_rework",
    "build_rework",
    "cause_after_outcome",
    "cause_after_review",
    "contract",
    "dependency_kind",
    "dependency_violation",
    "draft_from_dialogue",
    "enforce",
    "glob_problem",
    "guard_violations",
    "intake",
    "negotiate",
    "next_attempt",
    "plan_freeze",
    "plan_rollback",
    "plan_step",
    "prepare",
    "prepare_task",
    "primary_reason",
    "queue_tasks",
    "render_draft",
    "retry_delay",
    "review",
    "rework_to_repeat",
    "scope_rules_of",
    "scoreboard",
    "snapshot",
    "triage",
    "verdict_for",
]
