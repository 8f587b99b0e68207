"""How a supervised subprocess ended: the supervisor's report on one step."""

from __future__ import annotations

import enum
from typing import Literal

import msgspec

from .scalars import NonNegInt


class EndReason(enum.StrEnum):
    COMPLETED = "completed"
    RUNTIME_LIMIT = "runtime_limit"
    SILENCE_LIMIT = "silence_limit"
    MEMORY_LIMIT = "memory_limit"
    CANCELLED = "cancelled"
    SPAWN_FAILED = "spawn_failed"


class StepOutcome(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    """Facts about one subprocess run. Times are RFC 3339 UTC strings, durations integer ms."""

    reason: EndReason
    exit_code: int | None
    started_at: str
    ended_at: str
    duration_ms: NonNegInt
    peak_memory_bytes: NonNegInt = 0
    stdout_bytes: NonNegInt = 0
    stderr_bytes: NonNegInt = 0
    pid: int | None = None
    detail: str = ""


class ParseFailureReason(enum.StrEnum):
    """Why no StepResult could be taken from a round (see docs/supervisor.md, the one rule)."""

    NO_RESULT = "NO_RESULT"
    RESULT_MALFORMED = "RESULT_MALFORMED"
    RESULT_FILE_MALFORMED = "RESULT_FILE_MALFORMED"
    RESULT_FILE_UNREADABLE = "RESULT_FILE_UNREADABLE"
    RESULT_CONFLICT = "RESULT_CONFLICT"
    RESULT_WRONG_STEP = "RESULT_WRONG_STEP"


class ResultParseFailure(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    """A round whose output held no usable StepResult: an infrastructure failure (a retry),
    never an exception. `excerpt` quotes what was found (bounded), for the reader."""

    reason: ParseFailureReason
    detail: str
    excerpt: str = ""
    source: Literal["file", "stdout"] | None = None
