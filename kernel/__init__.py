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
from .contract import ContractBundle, compile_contract
from .errors import (
    CannotPlan,
    DuplicateTask,
    IllegalTransition,
    IntakeInvalid,
    KernelError,
    NotEligible,
    QueueInvalid,
    RequirementsInvalid,
    SnapshotTampered,
    TemplateInvalid,
    UnknownTask,
)
from .guard import GuardRefused, Violation, check_pack, enforce
from .negotiation import Negotiated, negotiate, queue_tasks
from .planner import plan_step
from .preparation import PackMismatch, Prepared, prepare, prepare_task
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
    "AttemptKind",
    "AttemptOutcome",
    "AttemptPointer",
    "CannotPlan",
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
    "Selection",
    "SnapshotTampered",
    "TemplateInvalid",
    "UnknownTask",
    "Violation",
    "add_task",
    "append_trend",
    "check_pack",
    "claim",
    "classify",
    "compile_contract",
    "contract",
    "enforce",
    "explain",
    "guard",
    "intake",
    "negotiate",
    "negotiation",
    "next_pointers",
    "plan_step",
    "planner",
    "preparation",
    "prepare",
    "prepare_task",
    "queue_tasks",
    "record_attempt",
    "record_rework",
    "reopen",
    "score",
    "scoreboard",
    "select_next",
    "snapshot",
    "summary_markdown",
    "transition",
    "triage",
]
