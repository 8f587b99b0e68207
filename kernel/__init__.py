"""The kernel: the system's judgement as pure functions over `protocol` Structs.

No I/O here: the runner gathers facts (git, files, exit codes) and passes them in.
"""

from protocol.attempts import AttemptKind, AttemptPointer, classify, next_pointers

from .attempts import AttemptCause, cause_after_outcome, cause_after_review, next_attempt
from .facts import CLAIMS_ONLY, CommandRerun, WorkspaceFacts
from .qa import FAIL_REASONS, check_pack, primary_reason, review, verdict_for
from .rework import ReworkError, build_rework
from .scope import ScopePatternError, ScopeRules, dependency_kind, dependency_violation

__all__ = [
    "CLAIMS_ONLY",
    "FAIL_REASONS",
    "AttemptCause",
    "AttemptKind",
    "AttemptPointer",
    "CommandRerun",
    "ReworkError",
    "ScopePatternError",
    "ScopeRules",
    "WorkspaceFacts",
    "build_rework",
    "cause_after_outcome",
    "cause_after_review",
    "check_pack",
    "classify",
    "dependency_kind",
    "dependency_violation",
    "next_attempt",
    "next_pointers",
    "primary_reason",
    "review",
    "verdict_for",
]
