"""When the controller retries and when it revises: the engine's side of the R/S rules.

The rules themselves (first R0/S0, retry R/S+1, revision R+1/S0) live in `protocol.attempts`,
the one implementation the ledger checks its records against. This module decides which of the
two legal next pointers an attempt takes, from why the last one ended:

- **retry** (same R, S+1) after an *infrastructure* failure: the agent was stopped at a runtime,
  silence or memory limit, could not be started, crashed, or produced no StepResult that could
  be parsed. Nothing was judged, so the same instructions are given again.
- **revision** (R+1, S0) after a *review* that asked for rework: the work was judged and found
  wanting, so the next attempt follows a ReworkPack, a new approach.

A retry repeats the instructions of the attempt it retries: a revision that was dispatched with
a ReworkPack is retried with that ReworkPack again (`rework_to_repeat`), not with the StepPack.

A review that says PASS or FAIL ends the step; there is no next attempt (`cause_after_review`
returns None). How many retries and revisions a step may take is the engine's business
(`RetryPolicy.max_attempts`, the queue's `max_attempts`), not this module's.
"""

from __future__ import annotations

import enum
from collections.abc import Iterable

from protocol import (
    FIRST_ATTEMPT,
    AttemptPointer,
    EndReason,
    QAReview,
    ReviewVerdict,
    StepOutcome,
)
from protocol.ledger_events import AttemptStarted, ReworkDispatched


class AttemptCause(enum.StrEnum):
    """Why another attempt is needed."""

    INFRASTRUCTURE = "infrastructure"
    REWORK = "rework"


def next_attempt(last: AttemptPointer | None, cause: AttemptCause) -> AttemptPointer:
    """The pointer of the next attempt: R0/S0 for a task's first attempt (whatever the cause),
    else a retry (infrastructure) or a revision (rework) of `last`."""
    if last is None:
        return FIRST_ATTEMPT
    if cause is AttemptCause.INFRASTRUCTURE:
        return last.retry()
    return last.revise()


def rework_to_repeat(events: Iterable[object], retry: AttemptPointer) -> ReworkDispatched | None:
    """The rework a retry must give the agent again, if any.

    `events` are the bodies of the task's ledger chain, in order. A retry R<r>/S<s> (s > 0)
    repeats the instructions of R<r>/S0: when that revision was dispatched with a ReworkPack,
    the ``rework_dispatched`` recorded right before its ``attempt_started`` (the cycle records
    the one, then starts the other); None when R<r>/S0 started from the StepPack (a first
    attempt, a revision a new cycle began, a conflict rework whose workspace hooks failed before
    anything was dispatched), and for a pointer that is no retry (S0).
    """
    if retry.s == 0:
        return None
    before: object = None
    found: ReworkDispatched | None = None
    for body in events:
        if isinstance(body, AttemptStarted) and (body.r, body.s) == (retry.r, 0):
            found = None
            if isinstance(before, ReworkDispatched) and before.r + 1 == retry.r:
                found = before
        before = body
    return found


_INFRASTRUCTURE_ENDS = frozenset(
    {
        EndReason.RUNTIME_LIMIT,
        EndReason.SILENCE_LIMIT,
        EndReason.MEMORY_LIMIT,
        EndReason.SPAWN_FAILED,
    }
)


def cause_after_outcome(outcome: StepOutcome, *, result_parsed: bool) -> AttemptCause | None:
    """Whether a finished agent run needs a retry before anything can be reviewed.

    A limit breach or a failed start is an infrastructure failure; so is a run that ended on
    its own but left no parsable StepResult (`result_parsed` False), crash or not. None means
    no retry: review the result, or, for a cancelled run (someone stopped it on purpose), stop.
    """
    if outcome.reason is EndReason.CANCELLED:
        return None
    if outcome.reason in _INFRASTRUCTURE_ENDS or not result_parsed:
        return AttemptCause.INFRASTRUCTURE
    return None


def cause_after_review(review: QAReview) -> AttemptCause | None:
    """REWORK asks for a revision; PASS and FAIL end the step (None)."""
    return AttemptCause.REWORK if review.verdict is ReviewVerdict.REWORK else None
