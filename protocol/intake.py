"""Task intake: a task as a person (or a planner) states it, before routing.

Every field of `TaskIntake` has a default on purpose: decoding only checks types, and the
kernel's intake validator reports *every* missing or weak field at once instead of stopping at
the first. The routing rules (`TierRules`) are data too, so a project can tune them in a file
and the decision (`TierDecision`) records which rule sent a task where.
"""

from __future__ import annotations

import enum
from typing import Literal

import msgspec

from .scalars import PosInt

Tier = Literal["tier2", "tier3"]


class RiskFlag(enum.StrEnum):
    """Declared risks; any of them routes the task to tier3 under the default rules."""

    DESTRUCTIVE = "destructive"
    SECURITY_SENSITIVE = "security_sensitive"
    DATA_MIGRATION = "data_migration"
    PUBLIC_API_CHANGE = "public_api_change"
    DEPENDENCY_CHANGE = "dependency_change"
    PRODUCTION_CONFIG = "production_config"


class TaskIntake(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    """A task before it is routed: what, where, how, and how we will know it is done."""

    task_title: str = ""
    target: str = ""
    execution_route: list[str] = []
    acceptance_criteria: list[str] = []
    task_id: str | None = None
    description: str = ""
    allowed_paths: list[str] = []
    forbidden_paths: list[str] = []
    commands_to_run: list[str] = []
    risk_flags: list[RiskFlag] = []
    tier_override: Tier | None = None
    worker_backend: str | None = None


class IntakeProblemCode(enum.StrEnum):
    """Why an intake field is not ready for dispatch (a closed set, so tools can count them)."""

    MISSING = "missing"
    BLANK_ITEM = "blank_item"
    DUPLICATE = "duplicate"
    DUPLICATE_AC_ID = "duplicate_ac_id"
    BAD_PATH = "bad_path"
    PATH_CONFLICT = "path_conflict"
    BAD_ID = "bad_id"
    ID_MISMATCH = "id_mismatch"


class IntakeProblem(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    """One problem: the JSON path of the field (``$.acceptance_criteria[2]``), a code, a reason."""

    path: str
    code: IntakeProblemCode
    reason: str


class RoutingRule(enum.StrEnum):
    """The rules that route a task; each `TierReason` names the one that fired."""

    OVERRIDE = "override"
    RISK_FLAG = "risk_flag"
    STEP_COUNT = "step_count"
    PATH_COUNT = "path_count"
    PATH_BREADTH = "path_breadth"
    DESTRUCTIVE_WORK = "destructive_work"
    SECURITY_SENSITIVE_WORK = "security_sensitive_work"
    WITHIN_TIER2_LIMITS = "within_tier2_limits"


class TierReason(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    rule: RoutingRule
    tier: Tier
    detail: str


class TierDecision(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    """The tier and every reason for it. `rules_tier` is what the rules alone chose; it differs
    from `tier` only when an explicit override was honoured."""

    tier: Tier
    rules_tier: Tier
    reasons: list[TierReason]


_DESTRUCTIVE_PHRASES = [
    "rm -rf",
    "drop table",
    "drop database",
    "drop schema",
    "truncate table",
    "delete from",
    "git push --force",
    "git push -f",
    "force push",
    "force-push",
    "git reset --hard",
    "git clean -fd",
    "wipe",
    "purge",
    "destroy",
    "irreversible",
]
_SECURITY_PHRASES = [
    "auth",
    "authentication",
    "authorization",
    "login",
    "password",
    "secret",
    "credential",
    "token",
    "api key",
    "private key",
    "encryption",
    "decrypt",
    "permission",
    "sudo",
    "chmod",
    "csrf",
    "xss",
    "sql injection",
    "tls",
    "certificate",
]


class TierRules(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    """The routing rules as data (load a project's own from JSON; every field has a default).

    A task goes to tier3 when any rule fires: a declared risk flag in `tier3_risk_flags`; more
    than `max_tier2_steps` route steps; more than `max_tier2_paths` allowed paths or more than
    `max_tier2_top_dirs` top-level directories among them; an allowed path in
    `broad_path_patterns` (or starting with ``**``); a phrase of `destructive_phrases` or
    `security_phrases` in the task's text (whole words, case-insensitive, a trailing ``s``
    allowed). `tier_override` wins when `honour_override` is true; to tier2 only when
    `allow_override_to_tier2` is also true, so a risky task cannot be waved through by default.
    """

    tier3_risk_flags: list[RiskFlag] = msgspec.field(default_factory=lambda: list(RiskFlag))
    max_tier2_steps: PosInt = 3
    max_tier2_paths: PosInt = 5
    max_tier2_top_dirs: PosInt = 2
    broad_path_patterns: list[str] = msgspec.field(
        default_factory=lambda: ["*", "**", "**/*", "./**", "."]
    )
    destructive_phrases: list[str] = msgspec.field(
        default_factory=lambda: list(_DESTRUCTIVE_PHRASES)
    )
    security_phrases: list[str] = msgspec.field(default_factory=lambda: list(_SECURITY_PHRASES))
    honour_override: bool = True
    allow_override_to_tier2: bool = False
