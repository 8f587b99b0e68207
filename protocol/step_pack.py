"""StepPack: what the controller hands a worker for one bounded step.

Packs written by hand (and by the original system) repeat the same data in several places:
`allowed_paths`, `scope.allowed_paths` and `scope_guard.allowed_paths`; `AC`, `acceptance.AC`
and `acceptance_criteria`; `gates` and `acceptance.gates`; and so on. Every form is accepted so
that real packs decode unchanged, but the copies must agree: a pack in which one copy of the
scope was edited and the other was not is exactly the kind of mistake that lets a worker write
where it should not. `StepPack.view` is the one normalised reading the rest of the system uses.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from functools import cached_property
from typing import Annotated, Any, Literal

import msgspec
from msgspec import UNSET, UnsetType

from .ids import SafeId
from .scalars import NonNegInt, PosInt

GateId = Annotated[str, msgspec.Meta(pattern=r"^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$")]

GateType = Literal[
    "required_command_exit_0",
    "required_command_evidence_only",
    "qa_scope_guard_review",
    "qa_evidence_review",
    "qa_dependency_policy_review",
    "qa_acceptance_review",
]
COMMAND_GATE_TYPES: frozenset[str] = frozenset(
    {"required_command_exit_0", "required_command_evidence_only"}
)
DependencyMode = Literal["no-new-dependencies", "allow-new-dependencies"]

ARTIFACTS_ROOT = ".artifacts/agent_runs"

_ABSOLUTE = re.compile(r"^(?:[/\\]|[A-Za-z]:)")
_AC_ID = re.compile(r"^\s*(AC[-_ ]?\d+[A-Za-z]?)\s*[:.)\]-]")


class DependencyPolicy(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    """What the step may do to dependency manifests, lockfiles and CI."""

    mode: DependencyMode = "no-new-dependencies"
    allow_new_dependencies: bool = False
    allow_lockfile_changes: bool = False
    allow_dependency_manifest_changes: bool = False
    allow_ci_changes: bool | UnsetType = UNSET
    allow_ci_workflow_changes_in_scope: bool | UnsetType = UNSET
    change_order_required: list[str] = []


class Gate(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    """One acceptance gate. Command gates point at `commands_to_run[command_index]`."""

    gate_id: GateId
    owner: Literal["worker", "controller"]
    type: GateType
    target_ac: list[str] = []
    command_index: NonNegInt | None = None
    pass_condition: str = ""

    def __post_init__(self) -> None:
        if self.type in COMMAND_GATE_TYPES and self.command_index is None:
            raise ValueError(
                f"gate type `{self.type}` needs a command_index - at `$.command_index`"
            )
        if self.type not in COMMAND_GATE_TYPES and self.command_index is not None:
            raise ValueError(
                f"gate type `{self.type}` takes no command_index - at `$.command_index`"
            )


class EvidenceRequirement(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    """A file (glob) or record the worker must produce. `path_pattern` may name a StepResult
    section (``step_result.json::commands_executed[*]``) instead of a file."""

    id: str
    path_pattern: str
    required_for: list[str] = []
    notes: str = ""


class Precondition(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    id: str
    description: str
    worker_instruction: str = ""
    controller_expected_if_missing: str = ""


class RetryPolicy(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    max_attempts: PosInt = 1
    retry_on: list[str] = []
    requires_rework_pack_after_failed_attempts: bool = False


class RuntimePolicy(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    """Limits for the step. `timeout_sec` is wall clock, `no_output_timeout_sec` silence."""

    timeout_sec: PosInt | None = None
    no_output_timeout_sec: PosInt | None = None
    max_memory_mb: PosInt | None = None
    retry: RetryPolicy = msgspec.field(default_factory=RetryPolicy)
    autonomy_level: str | UnsetType = UNSET
    boundary_level: str | UnsetType = UNSET


class Scope(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    """A nested copy of the pack's scope, as real packs carry it under both `scope` and
    `scope_guard`: one shape for both, each copy checked against the others."""

    allowed_paths: list[str] | UnsetType = UNSET
    forbidden_paths: list[str] | UnsetType = UNSET
    dependency_policy: DependencyPolicy | UnsetType = UNSET


class Acceptance(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    AC: list[str] | UnsetType = UNSET
    gates: list[Gate] | UnsetType = UNSET
    evidence_required: list[EvidenceRequirement] | UnsetType = UNSET


class Criterion(msgspec.Struct, frozen=True):
    """One acceptance criterion: its id (``AC3``, taken from the text's prefix, or its 1-based
    position when the text has none) and its full text, quoted verbatim in reviews."""

    id: str
    text: str


class StepPackView(msgspec.Struct, frozen=True):
    """The normalised reading of a StepPack: one value per concept, whatever form it came in."""

    task_id: str
    run_id: str
    step_id: str
    title: str
    objective: str
    allowed_paths: tuple[str, ...]
    forbidden_paths: tuple[str, ...]
    dependency_policy: DependencyPolicy
    commands_to_run: tuple[str, ...]
    criteria: tuple[Criterion, ...]
    gates: tuple[Gate, ...]
    evidence_required: tuple[EvidenceRequirement, ...]
    runtime_policy: RuntimePolicy
    # Where each repeated field was read (its first present copy), for messages that must name
    # the JSON path the pack itself used: ``$.scope.allowed_paths`` rather than a guess.
    allowed_paths_at: str = "$.allowed_paths"
    forbidden_paths_at: str = "$.forbidden_paths"
    dependency_policy_at: str = "$.dependency_policy"
    evidence_required_at: str = "$.evidence_required"

    @property
    def run_dir(self) -> str:
        """Where this run's evidence lives, relative to the workspace."""
        return f"{ARTIFACTS_ROOT}/{self.run_id}"

    def round_dir(self, round_no: int) -> str:
        """Evidence directory of one round (``R<n>``) of this step."""
        return f"{self.run_dir}/steps/{self.step_id}/rounds/R{round_no}"

    def criterion(self, ac_id: str) -> Criterion | None:
        return next((c for c in self.criteria if c.id == ac_id), None)


class StepPack(msgspec.Struct, frozen=True, forbid_unknown_fields=True, dict=True):
    """Controller to worker: one step, its scope, commands, acceptance and limits."""

    task_id: SafeId
    run_id: SafeId
    step_id: SafeId
    task_kind: Literal["step"] = "step"
    step_title: str = ""
    step_description: str = ""
    objective: str = ""
    phase: str = ""
    step_pack_version: str = "1.0"
    controller_role: str = ""
    source_of_s2_requirements: dict[str, Any] | UnsetType = UNSET
    allowed_paths: list[str] | UnsetType = UNSET
    forbidden_paths: list[str] | UnsetType = UNSET
    dependency_policy: DependencyPolicy | UnsetType = UNSET
    scope: Scope | UnsetType = UNSET
    scope_guard: Scope | UnsetType = UNSET
    preconditions: list[Precondition] = []
    commands: list[str] = []
    commands_to_run: list[str] = []
    AC: list[str] | UnsetType = UNSET
    acceptance: Acceptance | UnsetType = UNSET
    acceptance_criteria: list[str] | UnsetType = UNSET
    gates: list[Gate] | UnsetType = UNSET
    evidence_required: list[EvidenceRequirement] | UnsetType = UNSET
    runtime_policy: RuntimePolicy = msgspec.field(default_factory=RuntimePolicy)
    expected_outputs: list[str] = []
    evidence_requirement: str = ""
    context: dict[str, Any] = {}
    allowed_actions: list[str] = []
    worker_backend: str | None = None
    auto_planned: bool = False

    def __post_init__(self) -> None:
        # Normalising is validating: compute the view once, so a bad pack never decodes.
        _ = self.view

    @cached_property
    def view(self) -> StepPackView:
        acc = self.acceptance if isinstance(self.acceptance, Acceptance) else Acceptance()
        scope = self.scope if isinstance(self.scope, Scope) else Scope()
        guard = self.scope_guard if isinstance(self.scope_guard, Scope) else Scope()

        allowed_at, allowed = _agree(
            "allowed_paths",
            [
                ("$.allowed_paths", self.allowed_paths),
                ("$.scope.allowed_paths", scope.allowed_paths),
                ("$.scope_guard.allowed_paths", guard.allowed_paths),
            ],
            key=_as_set,
            required=True,
        )
        forbidden_at, forbidden = _agree(
            "forbidden_paths",
            [
                ("$.forbidden_paths", self.forbidden_paths),
                ("$.scope.forbidden_paths", scope.forbidden_paths),
                ("$.scope_guard.forbidden_paths", guard.forbidden_paths),
            ],
            key=_as_set,
        )
        policy_at, policy = _agree(
            "dependency_policy",
            [
                ("$.dependency_policy", self.dependency_policy),
                ("$.scope.dependency_policy", scope.dependency_policy),
                ("$.scope_guard.dependency_policy", guard.dependency_policy),
            ],
        )
        ac_at, acs = _agree(
            "acceptance criteria",
            [
                ("$.AC", self.AC),
                ("$.acceptance.AC", acc.AC),
                ("$.acceptance_criteria", self.acceptance_criteria),
            ],
            required=True,
        )
        gates_at, gates = _agree(
            "gates", [("$.gates", self.gates), ("$.acceptance.gates", acc.gates)]
        )
        evidence_at, evidence = _agree(
            "evidence_required",
            [
                ("$.evidence_required", self.evidence_required),
                ("$.acceptance.evidence_required", acc.evidence_required),
            ],
        )

        for field_at, paths in ((allowed_at, allowed), (forbidden_at, forbidden)):
            for i, pattern in enumerate(paths or ()):
                problem = scope_pattern_problem(pattern)
                if problem:
                    raise ValueError(f"{problem} - at `{field_at}[{i}]`")

        criteria = _criteria(acs or [], ac_at)
        known = {c.id for c in criteria}
        gate_list: list[Gate] = list(gates or [])
        seen_gates: dict[str, int] = {}
        for i, gate in enumerate(gate_list):
            if gate.gate_id in seen_gates:
                raise ValueError(
                    f"duplicate gate id `{gate.gate_id}` (first at "
                    f"`{gates_at}[{seen_gates[gate.gate_id]}]`) - at `{gates_at}[{i}].gate_id`"
                )
            seen_gates[gate.gate_id] = i
            for j, ac_id in enumerate(gate.target_ac):
                if ac_id not in known:
                    raise ValueError(
                        f"gate `{gate.gate_id}` names unknown AC `{ac_id}` (known: "
                        f"{', '.join(sorted(known))}) - at `{gates_at}[{i}].target_ac[{j}]`"
                    )
            if gate.command_index is not None and gate.command_index >= len(self.commands_to_run):
                raise ValueError(
                    f"gate `{gate.gate_id}` command_index {gate.command_index} is past the end "
                    f"of commands_to_run ({len(self.commands_to_run)} commands)"
                    f" - at `{gates_at}[{i}].command_index`"
                )
        evidence_list: list[EvidenceRequirement] = list(evidence or [])
        for i, req in enumerate(evidence_list):
            for j, ac_id in enumerate(req.required_for):
                if ac_id not in known:
                    raise ValueError(
                        f"evidence `{req.id}` names unknown AC `{ac_id}`"
                        f" - at `{evidence_at}[{i}].required_for[{j}]`"
                    )

        return StepPackView(
            task_id=self.task_id,
            run_id=self.run_id,
            step_id=self.step_id,
            title=self.step_title,
            objective=self.objective,
            allowed_paths=tuple(allowed or ()),
            forbidden_paths=tuple(forbidden or ()),
            dependency_policy=policy
            if isinstance(policy, DependencyPolicy)
            else DependencyPolicy(),
            commands_to_run=tuple(self.commands_to_run),
            criteria=tuple(criteria),
            gates=tuple(gate_list),
            evidence_required=tuple(evidence_list),
            runtime_policy=self.runtime_policy,
            allowed_paths_at=allowed_at,
            forbidden_paths_at=forbidden_at,
            dependency_policy_at=policy_at,
            evidence_required_at=evidence_at,
        )


def scope_pattern_problem(pattern: str) -> str | None:
    """Why a scope glob is unusable, or None; a usable glob is already in canonical form.

    Globs are relative to the workspace root and written as git prints paths: ``/``-separated,
    no ``.`` or empty components (``./src/**`` and ``src//x`` can never match a path git
    prints, so they are errors rather than silent non-matches). One trailing ``/`` is allowed:
    it names a directory. The kernel adds what only its matcher knows (`kernel.scope`).
    """
    if not pattern.strip():
        return "empty path pattern"
    if "\x00" in pattern or "\n" in pattern:
        return "path pattern contains a NUL or newline"
    if _ABSOLUTE.match(pattern):
        return f"path pattern {pattern!r} is absolute; scope paths are relative to the workspace"
    body = pattern.removesuffix("/")
    if ".." in re.split(r"[\\/]", body):
        return f"path pattern {pattern!r} climbs out of the workspace with '..'"
    if any(c in ("", ".") for c in body.split("/")):
        return (
            f"path pattern {pattern!r} has an empty or '.' component; write it as git prints "
            "paths (src/**, not ./src/** or src//**)"
        )
    return None


def ac_id_of(text: str, position: int) -> str:
    """The id an AC text declares (``AC3: ...`` gives ``AC3``), else ``AC<position>``."""
    match = _AC_ID.match(text)
    if match:
        return re.sub(r"[-_ ]", "", match.group(1)).upper()
    return f"AC{position}"


def _criteria(texts: Sequence[str], at: str) -> list[Criterion]:
    if not texts:
        raise ValueError(f"acceptance criteria are empty; a step needs at least one - at `{at}`")
    out: list[Criterion] = []
    first: dict[str, int] = {}
    for i, text in enumerate(texts):
        if not text.strip():
            raise ValueError(f"empty acceptance criterion - at `{at}[{i}]`")
        ac_id = ac_id_of(text, i + 1)
        if ac_id in first:
            raise ValueError(
                f"duplicate AC id `{ac_id}` (first at `{at}[{first[ac_id]}]`) - at `{at}[{i}]`"
            )
        first[ac_id] = i
        out.append(Criterion(id=ac_id, text=text))
    return out


def _as_set(value: Any) -> Any:
    return sorted(value)


def _agree(
    what: str,
    copies: list[tuple[str, Any]],
    *,
    key: Any = None,
    required: bool = False,
) -> tuple[str, Any]:
    """Check that every present copy of a repeated field holds the same value.

    Returns (location of the first present copy, its value); UNSET copies are absent.
    """
    present = [(at, value) for at, value in copies if value is not UNSET]
    if not present:
        if required:
            names = ", ".join(f"`{at}`" for at, _ in copies)
            raise ValueError(f"missing {what}: give one of {names} - at `{copies[0][0]}`")
        return copies[0][0], None
    first_at, first = present[0]
    norm = key or (lambda v: v)
    for at, value in present[1:]:
        if norm(value) != norm(first):
            raise ValueError(
                f"`{first_at}` and `{at}` disagree: {_difference(first, value)} - at `{at}`"
            )
    return first_at, first


def _difference(a: Any, b: Any) -> str:
    if isinstance(a, list) and isinstance(b, list) and all(isinstance(x, str) for x in a + b):
        only_a = [x for x in a if x not in b]
        only_b = [x for x in b if x not in a]
        parts = []
        if only_a:
            parts.append(f"only in the first: {only_a}")
        if only_b:
            parts.append(f"only in the second: {only_b}")
        return "; ".join(parts) or "same entries in a different order or count"
    return f"{msgspec.to_builtins(a)!r} != {msgspec.to_builtins(b)!r}"
