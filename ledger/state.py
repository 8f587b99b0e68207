"""A task's state and the rules an event must meet to extend it.

The writer applies `advance` before it writes an event; verify replays it over every task chain
and checks that each line's recorded state is what the rules give. The R/S rules themselves are
`protocol.classify`; this module adds what the ledger knows beyond one pointer: whether an
attempt is open (started, not yet recorded or interrupted) and whether the task is closed.
"""

from __future__ import annotations

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


def event_type(body: Any) -> str:
    tag: str = type(body).__struct_config__.tag
    return tag


def advance(state: TaskState, task_id: str, body: Any) -> TaskState:
    """The state after `body`, or raise the `EventRejected` subclass that says why not.

    `seq` and `head` are left to the caller (they depend on the sealed line).
    """
    kind = event_type(body)
    if state.closed:
        raise TaskAlreadyClosed(task_id, kind)
    if isinstance(body, TaskClosed):
        return msgspec.structs.replace(state, closed=True)
    given = AttemptPointer(body.r, body.s)
    if isinstance(body, AttemptStarted | Attempt):
        if state.attempt_open:
            if isinstance(body, Attempt) and given == state.pointer:
                return msgspec.structs.replace(state, attempt_open=False)
            assert state.pointer is not None
            raise AttemptStillOpen(task_id, state.pointer, given)
        try:
            kind_given = classify(state.pointer, given)
        except AttemptOrderError as exc:
            raise AttemptOrderRejected(task_id, exc) from None
        if isinstance(body, AttemptStarted) and body.kind != kind_given:
            raise EventRejected(task_id, f"{given} is a {kind_given} attempt, not {body.kind}")
        return msgspec.structs.replace(
            state, pointer=given, attempt_open=isinstance(body, AttemptStarted)
        )
    if given != state.pointer:
        raise PointerMismatch(task_id, kind, state.pointer, given)
    if isinstance(body, AttemptInterrupted):
        if not state.attempt_open:
            raise EventRejected(task_id, f"no open attempt at {given} to interrupt")
        return msgspec.structs.replace(state, attempt_open=False)
    return state
