"""The kernel's exceptions: one base, subclasses that carry the facts a caller reports.

`KernelError` is raised for input the kernel refuses (an invalid intake, an illegal queue
transition, a plan that breaks its own boundary, an unusable glob). Each subclass keeps its facts
as attributes so the CLI can print one clear message and tools can read the details. Every
exception the kernel raises on purpose is declared here, so `except KernelError` catches them all.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING

from protocol import IntakeProblem, TaskStatus

if TYPE_CHECKING:
    from .guard import Violation


class KernelError(Exception):
    """Base of every error the kernel raises on purpose."""


class IntakeInvalid(KernelError):
    """An intake with problems; `problems` lists every one, not just the first."""

    def __init__(self, problems: Sequence[IntakeProblem], *, source: str | None = None) -> None:
        self.problems = tuple(problems)
        self.source = source
        where = f"{source}: " if source else ""
        lines = [f"{where}{p.path}: {p.reason} [{p.code}]" for p in self.problems]
        super().__init__(f"intake has {len(lines)} problem(s):\n  " + "\n  ".join(lines))


class QueueInvalid(KernelError):
    """A queue that cannot be used: duplicate keys, unknown dependencies, dependency cycles."""

    def __init__(self, problems: Sequence[str], *, source: str | None = None) -> None:
        self.problems = tuple(problems)
        self.source = source
        where = f"{source}: " if source else ""
        super().__init__(f"{where}invalid queue:\n  " + "\n  ".join(self.problems))


class UnknownTask(KernelError):
    def __init__(self, key: str, known: Sequence[str]) -> None:
        self.key = key
        self.known = tuple(known)
        shown = ", ".join(self.known[:10]) + (" ..." if len(self.known) > 10 else "")
        super().__init__(f"no task {key!r} in the queue (tasks: {shown or 'none'})")


class DuplicateTask(KernelError):
    def __init__(self, key: str) -> None:
        self.key = key
        super().__init__(f"task {key!r} is already in the queue")


class IllegalTransition(KernelError):
    """A status change the transition table does not allow; `allowed` lists what would be."""

    def __init__(
        self, key: str, current: TaskStatus, wanted: TaskStatus, allowed: Sequence[TaskStatus]
    ) -> None:
        self.key = key
        self.current = current
        self.wanted = wanted
        self.allowed = tuple(allowed)
        shown = ", ".join(s.value for s in self.allowed) or "none (final state)"
        super().__init__(
            f"task {key!r}: {current.value} -> {wanted.value} is not a legal transition; "
            f"from {current.value}: {shown}"
        )


class NotEligible(KernelError):
    """A claim on a task the selection policy would not pick; `reasons` says why."""

    def __init__(self, key: str, reasons: Sequence[str]) -> None:
        self.key = key
        self.reasons = tuple(reasons)
        super().__init__(f"task {key!r} is not eligible: " + "; ".join(self.reasons))


class TemplateInvalid(KernelError):
    """A contract template with placeholders the compiler does not know."""

    def __init__(self, problems: Sequence[str]) -> None:
        self.problems = tuple(problems)
        super().__init__("contract template: " + "; ".join(self.problems))


class RequirementsInvalid(KernelError):
    """A requirements document that cannot be negotiated; every problem with its line."""

    def __init__(self, problems: Sequence[str], *, source: str | None = None) -> None:
        self.problems = tuple(problems)
        self.source = source
        where = f"{source}: " if source else ""
        super().__init__(
            f"{where}requirements have {len(self.problems)} problem(s):\n  "
            + "\n  ".join(self.problems)
        )


class SnapshotTampered(KernelError):
    """A frozen snapshot whose content no longer matches the hash it was frozen with."""

    def __init__(self, what: str, recorded: str, actual: str) -> None:
        self.what = what
        self.recorded = recorded
        self.actual = actual
        super().__init__(
            f"{what} was changed after it was frozen: recorded sha256 {recorded or '(none)'}, "
            f"content hashes to {actual}"
        )


class CannotPlan(KernelError):
    """The auto-planner lacks what it needs to derive a StepPack (no intake, no scope)."""

    def __init__(self, key: str, reason: str) -> None:
        self.key = key
        self.reason = reason
        super().__init__(f"cannot auto-plan task {key!r}: {reason}")


class ScopePatternError(KernelError):
    """A glob that the matcher cannot use; `field` is where it stands (``$.scope.allowed_paths[1]``
    in a step pack), `pattern` the glob and `reason` why."""

    def __init__(self, field: str, pattern: str, reason: str) -> None:
        self.field = field
        self.pattern = pattern
        self.reason = reason
        super().__init__(f"{field}: pattern {pattern!r} is unusable: {reason}")


class GuardRefused(KernelError):
    """A StepPack outside the frozen boundary; `violations` lists every place."""

    def __init__(self, task_id: str, violations: Sequence[Violation], boundary_sha: str) -> None:
        self.task_id = task_id
        self.violations = tuple(violations)
        self.boundary_sha = boundary_sha
        lines = "\n  ".join(str(v) for v in self.violations)
        super().__init__(
            f"step pack for task {task_id!r} steps outside the frozen boundary "
            f"(sha256 {boundary_sha[:12]}):\n  {lines}"
        )


class PackMismatch(KernelError):
    """A referenced StepPack written for another task or run."""

    def __init__(self, field: str, pack_value: str, expected: str) -> None:
        self.field = field
        self.pack_value = pack_value
        self.expected = expected
        super().__init__(
            f"the step pack's {field} is {pack_value!r} but this preparation is for {expected!r}"
        )


class ReworkError(KernelError):
    """A rework that cannot be built for step `task_id`/`step_id`: the review passed, or
    reviews another step, or the round number is not one. `reason` says which."""

    def __init__(self, task_id: str, step_id: str, reason: str) -> None:
        self.task_id = task_id
        self.step_id = step_id
        self.reason = reason
        super().__init__(f"cannot build a rework for {task_id}/{step_id}: {reason}")
