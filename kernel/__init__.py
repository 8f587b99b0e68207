"""The kernel: the system's judgement as pure functions over `protocol` Structs.

No I/O here: the runner gathers facts (git, files, exit codes) and passes them in.
"""

from protocol.attempts import AttemptKind, AttemptPointer, classify, next_pointers

from .dialogue import RequirementsDraft, draft_from_dialogue, render_draft
from .freeze import FreezeAction, FreezeFacts, FreezePlan, assess_freeze, plan_freeze
from .rollback import Conflict, Observed, RollbackPlan, plan_rollback

__all__ = [
    "AttemptKind",
    "AttemptPointer",
    "Conflict",
    "FreezeAction",
    "FreezeFacts",
    "FreezePlan",
    "Observed",
    "RequirementsDraft",
    "RollbackPlan",
    "assess_freeze",
    "classify",
    "draft_from_dialogue",
    "next_pointers",
    "plan_freeze",
    "plan_rollback",
    "render_draft",
]
