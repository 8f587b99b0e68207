"""The registry of payload kinds: names for the CLI (`runner validate`, `runner schema`)."""

from __future__ import annotations

from typing import Any

import msgspec

from .campaign import CampaignConfig
from .checkpoint import CheckpointManifest, RollbackReport
from .codec import decode
from .contract import ConformanceReport
from .errors import ProtocolError
from .freeze import ControllerProfile, FreezeCheck, FreezeMeta
from .intake import TaskIntake, TierDecision, TierRules
from .ledger_events import LEDGER_RECORD
from .outcome import StepOutcome
from .progress import BoundarySnapshot, PlanSnapshot, Preparation, Scoreboard, Trends
from .qa_review import QAReview
from .queue import QueueTask, TaskQueue
from .rework_pack import ReworkPack
from .step_pack import StepPack
from .step_result import StepResult

KINDS: dict[str, type[Any]] = {
    "campaign-config": CampaignConfig,
    "step-pack": StepPack,
    "rework-pack": ReworkPack,
    "step-result": StepResult,
    "task-intake": TaskIntake,
    "qa-review": QAReview,
    "task-queue": TaskQueue,
    "queue-task": QueueTask,
    "step-outcome": StepOutcome,
    "tier-rules": TierRules,
    "tier-decision": TierDecision,
    "conformance-report": ConformanceReport,
    "scoreboard": Scoreboard,
    "trends": Trends,
    "plan-snapshot": PlanSnapshot,
    "boundary-snapshot": BoundarySnapshot,
    "preparation": Preparation,
    "checkpoint-manifest": CheckpointManifest,
    "rollback-report": RollbackReport,
    "freeze-meta": FreezeMeta,
    "freeze-check": FreezeCheck,
    "controller-profile": ControllerProfile,
    "ledger-event": LEDGER_RECORD,
}


def register_kind(name: str, type_: type[Any]) -> None:
    """Add a payload kind (packages that define more wire shapes call this on import)."""
    KINDS[name] = type_


def schema(kind: str) -> dict[str, Any]:
    """JSON Schema (2020-12) of a payload kind."""
    return msgspec.json.schema(_type_of(kind))


def detect_kind(raw: bytes, *, source: str | None = None) -> str:
    """Guess the kind of a JSON document from its distinctive keys."""
    obj = decode(raw, dict[str, Any], source=source)
    keys = set(obj)
    task_kind = obj.get("task_kind")
    guesses = [
        ("rework-pack", task_kind == "rework"),
        ("step-pack", task_kind == "step" or ({"step_id", "AC"} & keys and "run_id" in keys)),
        ("qa-review", "reason_codes" in keys),
        ("step-result", {"verdict", "reason_code"} <= keys),
        ("plan-snapshot", {"goal", "tasks"} <= keys),
        ("task-queue", "tasks" in keys),
        ("step-outcome", {"reason", "duration_ms"} <= keys),
        ("task-intake", "task_title" in keys),
        ("ledger-event", "event_hash" in keys),
        ("queue-task", {"key", "title"} <= keys),
        ("boundary-snapshot", "allowed_commands" in keys),
        ("scoreboard", {"counts", "last_selected"} <= keys),
        ("trends", "points" in keys),
        ("conformance-report", {"headings", "conformant"} <= keys),
        ("preparation", {"decision", "files"} <= keys),
        ("checkpoint-manifest", {"checkpoint_id", "entries"} <= keys),
        ("rollback-report", {"checkpoint_id", "unchanged"} <= keys),
        ("freeze-meta", "source_draft_sha256" in keys),
        ("freeze-check", {"decision", "reason"} <= keys),
        ("controller-profile", {"backend", "dialogue_sha256"} <= keys),
    ]
    for name, hit in guesses:
        if hit and name in KINDS:
            return name
    raise ProtocolError(
        f"cannot tell which payload this is (keys: {', '.join(sorted(keys)[:8])}); "
        f"pass --kind, one of: {', '.join(KINDS)}",
        source=source,
    )


def decode_kind(
    raw: bytes, kind: str | None = None, *, source: str | None = None
) -> tuple[str, Any]:
    """Decode `raw` as `kind` (detected when None); returns (kind, decoded Struct)."""
    name = kind or detect_kind(raw, source=source)
    return name, decode(raw, _type_of(name), source=source)


def _type_of(kind: str) -> type[Any]:
    try:
        return KINDS[kind]
    except KeyError:
        raise ProtocolError(f"unknown payload kind {kind!r}; one of: {', '.join(KINDS)}") from None
