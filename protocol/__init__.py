"""Wire shapes of the control plane: every payload as a strict msgspec Struct.

This package imports nothing else of ours; every other layer imports it.
"""

from .attempts import (
    FIRST_ATTEMPT,
    AttemptKind,
    AttemptOrderError,
    AttemptPointer,
    classify,
    next_pointers,
)
from .codec import convert, decode, encode, encode_pretty, read, to_builtins
from .errors import ProtocolError
from .ids import MAX_ID_LENGTH, SafeId, check_id, is_safe_id
from .intake import RiskFlag, TaskIntake, Tier
from .kinds import KINDS, decode_kind, detect_kind, schema
from .outcome import EndReason, ParseFailureReason, ResultParseFailure, StepOutcome
from .qa_review import (
    CommandCheck,
    Finding,
    GateResult,
    PathCheck,
    PatternResult,
    QAReason,
    QAReview,
    ReviewVerdict,
    ScopeCheck,
)
from .queue import QueueTask, TaskQueue, TaskStatus
from .rework_pack import FailedGate, ReworkPack, ReworkScope
from .step_pack import (
    ARTIFACTS_ROOT,
    Acceptance,
    Criterion,
    DependencyPolicy,
    EvidenceRequirement,
    Gate,
    Precondition,
    RetryPolicy,
    RuntimePolicy,
    Scope,
    ScopeGuard,
    StepPack,
    StepPackView,
    ac_id_of,
    scope_pattern_problem,
)
from .step_result import CommandRecord, StepResult, Usage, Verdict, VerificationResult

__all__ = [
    "ARTIFACTS_ROOT",
    "FIRST_ATTEMPT",
    "KINDS",
    "MAX_ID_LENGTH",
    "Acceptance",
    "AttemptKind",
    "AttemptOrderError",
    "AttemptPointer",
    "CommandCheck",
    "CommandRecord",
    "Criterion",
    "DependencyPolicy",
    "EndReason",
    "EvidenceRequirement",
    "FailedGate",
    "Finding",
    "Gate",
    "GateResult",
    "ParseFailureReason",
    "PathCheck",
    "PatternResult",
    "Precondition",
    "ProtocolError",
    "QAReason",
    "QAReview",
    "QueueTask",
    "ResultParseFailure",
    "RetryPolicy",
    "ReviewVerdict",
    "ReworkPack",
    "ReworkScope",
    "RiskFlag",
    "RuntimePolicy",
    "SafeId",
    "Scope",
    "ScopeCheck",
    "ScopeGuard",
    "StepOutcome",
    "StepPack",
    "StepPackView",
    "StepResult",
    "TaskIntake",
    "TaskQueue",
    "TaskStatus",
    "Tier",
    "Usage",
    "Verdict",
    "VerificationResult",
    "ac_id_of",
    "check_id",
    "classify",
    "convert",
    "decode",
    "decode_kind",
    "detect_kind",
    "encode",
    "encode_pretty",
    "is_safe_id",
    "next_pointers",
    "read",
    "schema",
    "scope_pattern_problem",
    "to_builtins",
]
