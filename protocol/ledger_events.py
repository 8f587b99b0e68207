"""Ledger events: what the ledger records, as one line of JSON each.

A line is a *record*: an envelope that places the event in its chain (`seq`, `ts`,
`prev_event_hash`, `event_hash`, the chain's identity) around a *body*, one of the event Structs
below, told apart by its `type`. The project chain (`chain: "project"`) holds run-level events and
`task_events` lines that link every task event; each task has its own chain (`chain: "task"`).

The shapes are chosen so that the RFC 8785 canonical form of a record is exactly what msgspec
writes with sorted keys (see docs/FORMAT.md): no floats anywhere (times are RFC 3339 strings,
durations integer milliseconds, money integer micro-dollars), every integer within +-(2^53 - 1),
every member name ASCII, and no free-form mappings whose keys a caller chooses.
"""

from __future__ import annotations

import enum
from typing import Annotated, Any, Literal, cast

import msgspec

from .attempts import AttemptKind, AttemptPointer
from .ids import SafeId
from .outcome import EndReason, StepOutcome
from .qa_review import QAReason, ReviewVerdict
from .step_result import ReasonCode, Usage, Verdict

MAX_SAFE_INT = 2**53 - 1
SafeInt = Annotated[int, msgspec.Meta(ge=-MAX_SAFE_INT, le=MAX_SAFE_INT)]
Count = Annotated[int, msgspec.Meta(ge=0, le=MAX_SAFE_INT)]
Sha256Hex = Annotated[
    str, msgspec.Meta(pattern=r"^[0-9a-f]{64}$", description="Lowercase hex SHA-256.")
]
# Hashes and times in the envelope carry no pattern: verify checks them against the values it
# computes (a pattern would cost a third of verify's decode time and check nothing more).
Hash = Annotated[str, msgspec.Meta(description="Lowercase hex SHA-256 (64 characters).")]
# A linked hash has its exact length (verify compares it with the task event's own as part of a
# string, where a longer one could borrow the digits that follow).
LinkedHash = Annotated[
    str,
    msgspec.Meta(min_length=64, max_length=64, description="Lowercase hex SHA-256."),
]
Timestamp = Annotated[
    str,
    msgspec.Meta(
        min_length=27,
        max_length=27,
        description="RFC 3339 UTC with microseconds: 2026-11-25T03:50:57.123456Z",
    ),
]
TIMESTAMP_PATTERN = r"^\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}\.\d{6}Z$"
GENESIS_HASH = "0" * 64
FORMAT_VERSION = 2


class FileRef(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    """A file the event points at (a review, a rework pack, a patch) and its SHA-256, so the
    reference cannot be swapped for another file without breaking the chain."""

    path: str
    sha256: Sha256Hex
    size: Count | None = None


class AttemptUsage(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    input_tokens: Count = 0
    output_tokens: Count = 0
    cost_micro_usd: Count | None = None

    @classmethod
    def from_usage(cls, usage: Usage) -> AttemptUsage:
        return cls(usage.input_tokens, usage.output_tokens, usage.cost_micro_usd)


class FinalStatus(enum.StrEnum):
    ACCEPTED = "accepted"
    REJECTED = "rejected"
    FAILED = "failed"
    BLOCKED = "blocked"
    ABANDONED = "abandoned"
    CANCELLED = "cancelled"


class _Body(msgspec.Struct, frozen=True, forbid_unknown_fields=True, tag_field="type"):
    pass


# Task chain -----------------------------------------------------------------------------------


class Attempt(_Body, tag="attempt", frozen=True):
    """The original's full attempt record. Claims pointer R<r>/S<s> (R/S rules), or completes
    the attempt an `attempt_started` opened at the same pointer."""

    r: Count
    s: Count
    result: Verdict
    reason_code: ReasonCode
    acceptance_snapshot: list[str] = []
    code_change_summary: str = ""
    code_artifact_ref: str | None = None
    code_content: str = ""
    executed_files: list[str] = []
    executed_commands: list[str] = []
    test_results: str = ""
    reason_detail: str = ""
    next_action: str = ""
    usage: AttemptUsage | None = None


class AttemptStarted(_Body, tag="attempt_started", frozen=True):
    """An attempt is dispatched: claims pointer R<r>/S<s> under the R/S rules."""

    r: Count
    s: Count
    kind: AttemptKind
    worker_backend: str
    run_id: SafeId | None = None
    step_id: SafeId | None = None
    refs: list[FileRef] = []


class StepOutcomeRecorded(_Body, tag="step_outcome", frozen=True):
    """The supervisor's report for the current attempt (see protocol.StepOutcome)."""

    r: Count
    s: Count
    reason: EndReason
    exit_code: SafeInt | None
    started_at: str
    ended_at: str
    duration_ms: Count
    peak_memory_bytes: Count = 0
    stdout_bytes: Count = 0
    stderr_bytes: Count = 0
    detail: str = ""

    @classmethod
    def from_outcome(cls, pointer: AttemptPointer, outcome: StepOutcome) -> StepOutcomeRecorded:
        return cls(
            r=pointer.r,
            s=pointer.s,
            reason=outcome.reason,
            exit_code=outcome.exit_code,
            started_at=outcome.started_at,
            ended_at=outcome.ended_at,
            duration_ms=outcome.duration_ms,
            peak_memory_bytes=outcome.peak_memory_bytes,
            stdout_bytes=outcome.stdout_bytes,
            stderr_bytes=outcome.stderr_bytes,
            detail=outcome.detail,
        )


class ReviewRecorded(_Body, tag="review", frozen=True):
    """The QA verdict on the current attempt; the full review is the referenced file."""

    r: Count
    s: Count
    verdict: ReviewVerdict
    reason_codes: list[QAReason]
    review: FileRef


class ReworkDispatched(_Body, tag="rework_dispatched", frozen=True):
    r: Count
    s: Count
    rework_pack: FileRef


class AttemptInterrupted(_Body, tag="attempt_interrupted", frozen=True):
    """The open attempt ended without a record (runner killed, cancelled)."""

    r: Count
    s: Count
    reason: str


class TaskClosed(_Body, tag="task_closed", frozen=True):
    """The task's final record; nothing may follow it."""

    final_status: FinalStatus
    summary: str = ""


TaskEvent = (
    Attempt
    | AttemptStarted
    | StepOutcomeRecorded
    | ReviewRecorded
    | ReworkDispatched
    | AttemptInterrupted
    | TaskClosed
)
TASK_EVENT_TYPES: tuple[type[Any], ...] = TaskEvent.__args__
# The `type` of each task event (tests/protocol check it against TASK_EVENT_TYPES).
TaskEventType = Literal[
    "attempt", "attempt_started", "step_outcome", "review", "rework_dispatched",
    "attempt_interrupted", "task_closed",
]  # fmt: skip

# Project chain --------------------------------------------------------------------------------


class ProjectCreated(_Body, tag="project_created", frozen=True):
    format: Count = FORMAT_VERSION


class TaskEventLink(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    """The project chain's copy of one task event's hash: neither chain can be edited alone."""

    task_id: SafeId
    task_seq: Count
    task_event_hash: LinkedHash
    task_event_type: TaskEventType


class TaskEventsLinked(_Body, tag="task_events", frozen=True):
    """Links to the task events the writer sealed together, in the order it sealed them.

    One line for a batch's consecutive task events rather than one per event: a link costs a
    member of this list instead of a line of its own to seal, hash, write and verify.
    """

    events: Annotated[list[TaskEventLink], msgspec.Meta(min_length=1)]


class RecoveredTornTail(_Body, tag="recovered_torn_tail", frozen=True):
    """On open after a crash, unacknowledged bytes at the end of a chain file or of the
    writer's journal (an incomplete or undecodable last line: `reason` ``torn``) were moved to
    `quarantine_file`; `line` is the first line moved, `sha256` that of the bytes moved."""

    file: str
    line: Count
    lines: Count
    bytes: Count
    sha256: Sha256Hex
    quarantine_file: str
    reason: Literal["torn"]
    task_id: SafeId | None = None


class ProjectImported(_Body, tag="project_imported", frozen=True):
    source_project_id: SafeId
    archive_sha256: Sha256Hex
    source_head_seq: Count
    source_head_hash: Hash
    target_project_id: SafeId


class ExecutionStarted(_Body, tag="execution_started", frozen=True):
    run_id: SafeId | None = None
    detail: str = ""
    refs: list[FileRef] = []


class ExecutionBlockedUnapproved(_Body, tag="execution_blocked_unapproved", frozen=True):
    reason: str
    refs: list[FileRef] = []


class CampaignStarted(_Body, tag="campaign_started", frozen=True):
    campaign_id: SafeId
    max_cycles: Count | None = None
    detail: str = ""


class CampaignFinished(_Body, tag="campaign_finished", frozen=True):
    campaign_id: SafeId
    cycles: Count
    stop_reason: str
    completed: Count = 0
    failed: Count = 0


ProjectEvent = (
    ProjectCreated
    | TaskEventsLinked
    | RecoveredTornTail
    | ProjectImported
    | ExecutionStarted
    | ExecutionBlockedUnapproved
    | CampaignStarted
    | CampaignFinished
)
PROJECT_EVENT_TYPES: tuple[type[Any], ...] = ProjectEvent.__args__

# Envelopes ------------------------------------------------------------------------------------


class _Record(
    msgspec.Struct, frozen=True, forbid_unknown_fields=True, omit_defaults=True, tag_field="chain"
):
    pass


class ProjectRecord(_Record, tag="project", frozen=True):
    """One line of ``<project>/events.jsonl``. `event_hash` is empty only while sealing."""

    project_id: SafeId
    seq: Count
    ts: Timestamp
    prev_event_hash: Hash
    body: ProjectEvent
    event_hash: Hash = ""


class TaskRecord(_Record, tag="task", frozen=True):
    """One line of ``<project>/tasks/<task_id>/events.jsonl``.

    Besides the event it carries the task's state *after* it (`pointer`, `attempt_open`,
    `closed`) so that a task's tail state comes from its last line alone, and `project_seq`,
    the seq of the project chain's `task_events` line that links it.
    """

    project_id: SafeId
    task_id: SafeId
    seq: Count
    ts: Timestamp
    prev_event_hash: Hash
    project_seq: Count
    pointer: AttemptPointer | None
    attempt_open: bool
    closed: bool
    body: TaskEvent
    event_hash: Hash = ""


Record = ProjectRecord | TaskRecord
LEDGER_RECORD = cast("type[Any]", Record)
