"""StepResult: what a worker reports back after one round of a step.

The controller treats it as a claim, not a fact: the QA review checks it against what git,
the filesystem and re-run commands say. Evidence paths are relative to the workspace root and
are expected under the round's ``.artifacts/agent_runs/<run_id>/...`` directory.
"""

from __future__ import annotations

import enum
from typing import Annotated, Any

import msgspec

from .ids import SafeId
from .scalars import NonNegInt

ReasonCode = Annotated[
    str,
    msgspec.Meta(
        pattern=r"^[A-Z][A-Z0-9_]{0,63}$",
        description="UPPER_SNAKE_CASE reason, e.g. PASS_ALL_CRITERIA, COMMAND_FAILED.",
    ),
]


class Verdict(enum.StrEnum):
    """The worker's own verdict on its round."""

    PASS = "PASS"
    FAIL = "FAIL"
    REWORK = "REWORK"
    BLOCKED = "BLOCKED"


class CommandRecord(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    """One command the worker ran, its exit code and where its output is."""

    command: str
    exit_code: int
    evidence_path: str
    duration_ms: NonNegInt | None = None


class VerificationResult(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    """The worker's answer for one acceptance criterion; `ac` quotes the AC text exactly."""

    ac: str
    met: bool
    evidence_path: str
    notes: str = ""


class Usage(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    """Token use and cost the agent reported for the round, when it reports any."""

    input_tokens: NonNegInt = 0
    output_tokens: NonNegInt = 0
    cost_usd: Annotated[float, msgspec.Meta(ge=0)] | None = None
    model: str | None = None

    @property
    def cost_micro_usd(self) -> int | None:
        """Cost as an integer (millionths of a dollar): the ledger stores no floats."""
        return None if self.cost_usd is None else round(self.cost_usd * 1_000_000)


class StepResult(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    """Worker to controller: the verdict and the evidence behind it."""

    verdict: Verdict
    reason_code: ReasonCode
    task_id: SafeId | None = None
    run_id: SafeId | None = None
    step_id: SafeId | None = None
    files_changed: list[str] = []
    commands_executed: list[CommandRecord] = []
    verification_results: list[VerificationResult] = []
    evidence_map: dict[str, list[str]] = {}
    summary: str = ""
    thread_id: str | None = None
    usage: Usage | None = None
    blockers: list[str] = []
    metadata: dict[str, Any] = {}
