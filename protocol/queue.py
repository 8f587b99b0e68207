"""The triage queue file (``progress/task_queue.json``) and its tasks.

The shape only; the rules (legal transitions, eligibility, selection order, dependency checks)
are the kernel's (`kernel.triage`), so that every writer of the queue applies the same ones.
"""

from __future__ import annotations

import enum
from typing import Literal

import msgspec

from .ids import SafeId
from .intake import TaskIntake
from .scalars import NonNegInt, PosInt


class TaskStatus(enum.StrEnum):
    PENDING = "pending"
    IN_PROGRESS = "in_progress"
    COMPLETED = "completed"
    FAILED = "failed"
    BLOCKED = "blocked"
    CANCELLED = "cancelled"


class Spend(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    """What a task's attempts cost so far, summed from the agents' usage reports.

    Cost is an integer in millionths of a dollar (the ledger stores no floats); None when no
    attempt reported a cost.
    """

    input_tokens: NonNegInt = 0
    output_tokens: NonNegInt = 0
    cost_micro_usd: NonNegInt | None = None


class QueueTask(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    """One task in the queue. Its position in `TaskQueue.tasks` is its insertion order.

    `priority`: lower runs first (0 is the most urgent, as in P0, P1, ...). `attempts` counts
    attempts started (counted when the task is claimed; an attempt the runner itself abandoned,
    killed or interrupted, is given back when the runner resumes). `reworks` counts rework
    rounds inside those attempts. `resume_as` says how the next attempt continues the last:
    ``retry`` (same R, S+1) after an infrastructure failure, ``revision`` (R+1, S0) after a
    failing review; None before the first attempt.
    """

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
    spend: Spend | None = None
    resume_as: Literal["retry", "revision"] | None = None


class TaskQueue(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    version: int = 1
    tasks: list[QueueTask] = []
