"""Records as verify decodes them in bulk: same members, same bytes, cheaper to decode.

`protocol.ledger_events.TaskRecord` and `ProjectRecord` define a line. `TaskLine` and
`ProjectLine` have exactly the same members and encode to exactly the same bytes
(tests/ledger/test_lines.py checks both), but:

- `chain` is a plain member, not a union tag (a tag that sorts after `body` would make msgspec
  scan the body twice to find it);
- the ids carry no pattern: verify compares every line's ids with its chain's own, which it
  checks once (ledger/scan.py); a link's `task_id` (`Link`) is checked once per task it
  names (ledger/verify.py);
- `event_hash` is required (the protocol types default it to empty for sealing).

Bodies keep their full protocol types, so every event's shape is still checked strictly.
"""

from __future__ import annotations

from typing import Annotated, Literal

import msgspec

from protocol import AttemptPointer
from protocol.ledger_events import (
    CampaignFinished,
    CampaignStarted,
    Count,
    ExecutionBlockedUnapproved,
    ExecutionStarted,
    LinkedHash,
    ProjectCreated,
    ProjectImported,
    RecoveredTornTail,
    TaskEvent,
    TaskEventType,
    Timestamp,
)


class Link(msgspec.Struct, frozen=True, forbid_unknown_fields=True, gc=False):
    """`protocol.ledger_events.TaskEventLink` with `task_id` unchecked (see the module doc)."""

    task_id: str
    task_seq: Count
    task_event_hash: LinkedHash
    task_event_type: TaskEventType


class Links(
    msgspec.Struct, frozen=True, forbid_unknown_fields=True, tag_field="type", tag="task_events"
):
    """`protocol.ledger_events.TaskEventsLinked` with `Link`s."""

    events: Annotated[list[Link], msgspec.Meta(min_length=1)]


ProjectBody = (
    ProjectCreated
    | Links
    | RecoveredTornTail
    | ProjectImported
    | ExecutionStarted
    | ExecutionBlockedUnapproved
    | CampaignStarted
    | CampaignFinished
)


class TaskLine(msgspec.Struct, frozen=True, forbid_unknown_fields=True, gc=False):
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


class ProjectLine(msgspec.Struct, frozen=True, forbid_unknown_fields=True, gc=False):
    body: ProjectBody
    chain: Literal["project"]
    event_hash: str
    prev_event_hash: str
    project_id: str
    seq: Count
    ts: Timestamp
