"""Record envelopes shaped for speed: as the writer seals them and as verify reads them.

`protocol.ledger_events.TaskRecord` and `ProjectRecord` define a line. The Structs here have
exactly the same members and encode to exactly the same bytes (tests/ledger/test_envelopes.py
checks both), but each is cut for one hot loop:

- `TaskEnvelope` / `ProjectEnvelope` are what the writer encodes: the record without
  `event_hash`, its body as `msgspec.Raw`. The writer validates a body once, from the canonical
  bytes it encoded, and then places those same bytes in the envelope: no second encode of the
  body, no decode of the whole record.
- `TaskLine` / `ProjectLine` are what verify decodes in bulk. `chain` is a plain member, not a
  union tag (a tag that sorts after `body` would make msgspec scan the body twice), and the
  ids carry no pattern: verify compares every line's ids with its chain's own, which it has
  checked once. Bodies keep their full protocol types, so every event's shape is still checked.
  A `task_event` link's `task_id` is the one exception ( `Link`): verify checks it once per task
  it names.
"""

from __future__ import annotations

from typing import Literal

import msgspec

from protocol import AttemptPointer
from protocol.ledger_events import (
    CampaignFinished,
    CampaignStarted,
    Count,
    ExecutionBlockedUnapproved,
    ExecutionStarted,
    ProjectCreated,
    ProjectImported,
    RecoveredTornTail,
    TaskEvent,
    Timestamp,
)


class TaskEnvelope(msgspec.Struct, frozen=True, gc=False):
    """A task record without `event_hash`, around a body's canonical bytes."""

    attempt_open: bool
    body: msgspec.Raw
    chain: Literal["task"]
    closed: bool
    pointer: AttemptPointer | None
    prev_event_hash: str
    project_id: str
    project_seq: int
    seq: int
    task_id: str
    ts: str


class ProjectEnvelope(msgspec.Struct, frozen=True, gc=False):
    """A project record without `event_hash`, around a body's canonical bytes."""

    body: msgspec.Raw
    chain: Literal["project"]
    prev_event_hash: str
    project_id: str
    seq: int
    ts: str


class Link(
    msgspec.Struct, frozen=True, forbid_unknown_fields=True, tag_field="type", tag="task_event"
):
    """`protocol.ledger_events.TaskEventLinked` with `task_id` unchecked (see the module doc)."""

    task_id: str
    task_seq: Count
    task_event_hash: str
    task_event_type: str


ProjectBody = (
    ProjectCreated
    | Link
    | RecoveredTornTail
    | ProjectImported
    | ExecutionStarted
    | ExecutionBlockedUnapproved
    | CampaignStarted
    | CampaignFinished
)


class TaskLine(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    attempt_open: bool
    body: TaskEvent
    chain: Literal["task"]
    closed: bool
    event_hash: str
    pointer: AttemptPointer | None
    prev_event_hash: str
    project_id: str
    project_seq: Count
    seq: Count
    task_id: str
    ts: Timestamp


class ProjectLine(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    body: ProjectBody
    chain: Literal["project"]
    event_hash: str
    prev_event_hash: str
    project_id: str
    seq: Count
    ts: Timestamp
