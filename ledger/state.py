"""A task's state and the rules an event must meet to extend it.

The writer applies `advance` before it writes an event; verify replays it over every task chain
and checks that each line's recorded state is what the rules give. The R/S rules themselves are
`protocol.classify`; this module adds what the ledger knows beyond one pointer: whether an
attempt is open (started, not yet recorded or interrupted) and whether the task is closed.
"""

from __future__ import annotations

import functools
from typing import Any

import msgspec

from protocol import AttemptOrderError, AttemptPointer, classify
from protocol.ledger_events import (
    Attempt,
    AttemptInterrupted,
    AttemptStarted,
    TaskClosed,
    TaskRecord,
)

from .errors import (
    AttemptOrderRejected,
    AttemptStillOpen,
    EventRejected,
    PointerMismatch,
    TaskAlreadyClosed,
)


class TaskState(msgspec.Struct, frozen=True):
    """What a task's last line says about it: its chain head and its attempt state."""

    seq: int = -1
    head: str = ""
    pointer: AttemptPointer | None = None
    attempt_open: bool = False
    closed: bool = False

    @classmethod
    def of(cls, record: TaskRecord) -> TaskState:
        return cls(
            record.seq, record.event_hash, record.pointer, record.attempt_open, record.closed
        )


# The R/S rules stay in `protocol.classify`; this remembers its answers for the pointer pairs
# seen lately (legal ones only: a refusal raises, and is not remembered), because verify and
# the writer ask about the same few pairs for every task.
_classify = functools.lru_cache(maxsize=4096)(classify)


def event_type(body: Any) -> str:
    tag: str = type(body).__struct_config__.tag
    return tag


def advance(state: TaskState, task_id: str, body: Any) -> TaskState:
    """The state after `body`, or raise the `EventRejected` subclass that says why not.

    `seq` and `head` are left to the caller (they depend on the sealed line). `body` must be
    an instance of one of the task event types exactly (both the writer and verify see to
    that): this runs once per event in both, so it dispatches on `type(body)`.
    """
    if state.closed:
        raise TaskAlreadyClosed(task_id, event_type(body))
    kind = type(body)
    if kind is TaskClosed:
        return TaskState(state.seq, state.head, state.pointer, state.attempt_open, True)
    pointer = state.pointer
    if kind is AttemptStarted or kind is Attempt:
        given = AttemptPointer(body.r, body.s)
        if state.attempt_open:
            if kind is Attempt and given == pointer:
                return TaskState(state.seq, state.head, pointer, False, False)
            assert pointer is not None
            raise AttemptStillOpen(task_id, pointer, given)
        try:
            kind_given = _classify(pointer, given)
        except AttemptOrderError as exc:
            raise AttemptOrderRejected(task_id, exc) from None
        if kind is AttemptStarted and body.kind != kind_given:
            raise EventRejected(task_id, f"{given} is a {kind_given} attempt, not {body.kind}")
        return TaskState(state.seq, state.head, given, kind is AttemptStarted, False)
    if pointer is None or body.r != pointer.r or body.s != pointer.s:
        raise PointerMismatch(task_id, event_type(body), pointer, AttemptPointer(body.r, body.s))
    if kind is AttemptInterrupted:
        if not state.attempt_open:
            raise EventRejected(task_id, f"no open attempt at {pointer} to interrupt")
        return TaskState(state.seq, state.head, pointer, False, False)
    return state
