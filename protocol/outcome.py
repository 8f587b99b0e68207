"""How a supervised subprocess ended: the supervisor's report on one step."""

from __future__ import annotations

import enum

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
