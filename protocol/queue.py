"""The triage queue file (``progress/task_queue.json``) and its tasks."""

from __future__ import annotations

import enum
from typing import Annotated

import msgspec

from .ids import SafeId
from .intake import TaskIntake

NonNegInt = Annotated[int, msgspec.Meta(ge=0)]
PosInt = Annotated[int, msgspec.Meta(ge=1)]


class TaskStatus(enum.StrEnum):
    PENDING = "pending"
    IN_PROGRESS = "in_progress"
    COMPLETED = "completed"
    FAILED = "failed"
    BLOCKED = "blocked"
    CANCELLED = "cancelled"


class QueueTask(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    """One task in the queue. Its position in `TaskQueue.tasks` is its insertion order."""

    key: SafeId
    title: str
    priority: int = 0
    status: TaskStatus = TaskStatus.PENDING
    attempts: NonNegInt = 0
    max_attempts: PosInt = 3
    reworks: NonNegInt = 0
    depends_on: list[SafeId] = []
    step_pack_ref: str | None = None
    worker_backend: str | None = None
    intake: TaskIntake | None = None
    last_reason: str | None = None
    updated_at: str | None = None


class TaskQueue(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    version: int = 1
    tasks: list[QueueTask] = []
