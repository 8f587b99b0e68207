"""The progress directory's files besides the queue, and the negotiated snapshots.

``scoreboard.json`` (counters now), ``trends.json`` (a bounded series of snapshots),
``plan_snapshot.json`` and ``boundary_snapshot.json`` (what negotiation froze, each carrying the
SHA-256 of its own content), and ``preparation.json`` (what `runner prepare` decided).
"""

from __future__ import annotations

import msgspec

from .ids import SafeId
from .intake import TaskIntake, TierDecision
from .scalars import NonNegInt, PosInt, Rate, Sha256
from .step_pack import DependencyPolicy


class StatusCounts(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    """Number of tasks in each queue status (one field per `TaskStatus` value)."""

    pending: NonNegInt = 0
    in_progress: NonNegInt = 0
    completed: NonNegInt = 0
    failed: NonNegInt = 0
    blocked: NonNegInt = 0
    cancelled: NonNegInt = 0


class LastSelected(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    key: SafeId
    run_id: SafeId
    at: str


class Scoreboard(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    """Counters over the queue. `pass_rate` = completed / (completed + failed), None before any
    task finished; cost in millionths of a dollar, None when no attempt reported one."""

    version: int = 1
    updated_at: str | None = None
    total: NonNegInt = 0
    counts: StatusCounts = msgspec.field(default_factory=StatusCounts)
    attempts: NonNegInt = 0
    reworks: NonNegInt = 0
    pass_rate: Rate | None = None
    last_selected: LastSelected | None = None
    input_tokens: NonNegInt = 0
    output_tokens: NonNegInt = 0
    cost_micro_usd: NonNegInt | None = None


class TrendPoint(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    at: str
    total: NonNegInt
    counts: StatusCounts
    attempts: NonNegInt
    reworks: NonNegInt
    pass_rate: Rate | None = None
    selected: SafeId | None = None


class Trends(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    """Snapshots in time order, oldest first; bounded (the oldest are dropped)."""

    version: int = 1
    points: list[TrendPoint] = []


class PlannedTask(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    """A task as negotiated from the requirements: queue fields plus its intake."""

    key: SafeId
    title: str
    priority: int = 0
    depends_on: list[SafeId] = []
    max_attempts: PosInt = 3
    worker_backend: str | None = None
    intake: TaskIntake = msgspec.field(default_factory=TaskIntake)


class PlanSnapshot(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    """The frozen plan. `content_sha256` covers every other field (see `kernel.negotiation`)."""

    title: str
    goal: str
    source_sha256: Sha256
    tasks: list[PlannedTask]
    content_sha256: str = ""
    version: int = 1


class BoundarySnapshot(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    """The frozen boundary every StepPack must stay inside.

    Paths are gitignore-style globs relative to the workspace. `allowed_commands` are exact
    commands or ``fnmatch`` patterns (``python -m pytest *``); an empty list allows none.
    """

    source_sha256: Sha256
    allowed_paths: list[str]
    forbidden_paths: list[str] = []
    allowed_commands: list[str] = []
    dependency_policy: DependencyPolicy = msgspec.field(default_factory=DependencyPolicy)
    content_sha256: str = ""
    version: int = 1


class PreparedFile(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    name: str
    sha256: Sha256


class Preparation(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    """What preparing a task decided and produced (``preparation.json``)."""

    task_id: SafeId
    run_id: SafeId
    decision: TierDecision
    files: list[PreparedFile] = []
    auto_planned: bool = False
    step_pack_ref: str | None = None
