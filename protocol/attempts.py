"""The R/S attempt protocol, in one place for the ledger and the kernel.

An attempt is addressed by a pointer ``R<r>/S<s>``: R counts revisions (a new approach after a
failing review), S counts retries within a revision (the same approach again after an
infrastructure failure: a limit breach, a crash, a result that could not be parsed).

- a task's first attempt is R0/S0;
- a retry is the same R and S+1;
- a revision is R+1 and S0;
- anything else is refused, with the rule that was broken and the legal next pointers.
"""

from __future__ import annotations

import enum

import msgspec

from .errors import ProtocolError
from .scalars import NonNegInt


class AttemptPointer(msgspec.Struct, frozen=True, order=True):
    r: NonNegInt
    s: NonNegInt

    def __str__(self) -> str:
        return f"R{self.r}/S{self.s}"

    def retry(self) -> AttemptPointer:
        return AttemptPointer(self.r, self.s + 1)

    def revise(self) -> AttemptPointer:
        return AttemptPointer(self.r + 1, 0)


FIRST_ATTEMPT = AttemptPointer(0, 0)


class AttemptKind(enum.StrEnum):
    FIRST = "first"
    RETRY = "retry"
    REVISION = "revision"


class AttemptOrderError(ProtocolError):
    """A proposed pointer that breaks the R/S rules. `legal` lists what would be accepted."""

    def __init__(
        self,
        rule: str,
        last: AttemptPointer | None,
        proposed: AttemptPointer,
        legal: tuple[AttemptPointer, ...],
    ) -> None:
        self.rule = rule
        self.last = last
        self.proposed = proposed
        self.legal = legal
        shown = " or ".join(str(p) for p in legal)
        after = f"after {last}" if last is not None else "as the first attempt"
        super().__init__(f"{proposed} {after} breaks the rule: {rule}; next legal: {shown}")


def next_pointers(last: AttemptPointer | None) -> tuple[AttemptPointer, ...]:
    """The pointers a new attempt may take: (retry, revision), or (R0/S0,) for a new task."""
    if last is None:
        return (FIRST_ATTEMPT,)
    return (last.retry(), last.revise())


def classify(last: AttemptPointer | None, proposed: AttemptPointer) -> AttemptKind:
    """Say what `proposed` is relative to `last`, or raise `AttemptOrderError`."""
    legal = next_pointers(last)
    if last is None:
        if proposed == FIRST_ATTEMPT:
            return AttemptKind.FIRST
        raise AttemptOrderError("a task's first attempt must be R0/S0", last, proposed, legal)
    if proposed == last.retry():
        return AttemptKind.RETRY
    if proposed == last.revise():
        return AttemptKind.REVISION
    if proposed.r == last.r:
        rule = "a retry keeps R and increments S by exactly one"
    elif proposed.r == last.r + 1:
        rule = "a new revision increments R by one and resets S to 0"
    else:
        rule = "R may only stay the same (retry) or increase by one (revision)"
    raise AttemptOrderError(rule, last, proposed, legal)
