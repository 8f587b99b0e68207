"""Task intake: a task as a person (or a planner) states it, before routing.

Every field has a default on purpose: decoding only checks types, and the kernel's intake
validator reports *every* missing or weak field at once instead of stopping at the first.
"""

from __future__ import annotations

import enum
from typing import Literal

import msgspec

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
