"""One task chain checked on its own: its lines, its task rules, and a digest of the links the
project chain must hold for it.

The digest is what lets verify cross-check the two chains in constant memory: the project
chain's `task_events` lines feed a `LinkDigest` per task, the task chain feeds `check_task`'s,
and equal digests mean the two agree line for line (ledger/verify.py). A task chain needs
nothing from the project chain but the last project seq it may link to, so worker processes
can check task chains before the project chain is read (ledger/task_pool.py).
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterator
from dataclasses import dataclass, field
from operator import attrgetter
from pathlib import Path

from protocol.ledger_events import TASK_EVENT_TYPES, TaskRecord

from .envelopes import TaskLine
from .errors import ChainBroken, EventRejected
from .report import Head, Problem
from .scan import ChainScanner, Checked, L, blocks
from .state import TaskState, advance
from .store import ProjectPaths

_project_seq = attrgetter("project_seq")
# `state.event_type` as a table: a call per record costs verify 4% (measured).
TAGS = {t: t.__struct_config__.tag for t in TASK_EVENT_TYPES}
_event_hash = attrgetter("event_hash")


@dataclass
class LinkDigest:
    first_line: int
    count: int = 0
    digest: hashlib._Hash = field(default_factory=hashlib.sha256)
    keys: list[str] = field(default_factory=list)  # this block's, not yet in `digest`


def link_key(task_hash: str, event_type: str, project_seq: int) -> str:
    # Task seqs need no place here: both sides already check that they count up from 0. The
    # hash has its fixed length and the type is one of the tags: the key is unambiguous.
    return f"{task_hash}{event_type}\n{project_seq}\n"


def walk(scanner: ChainScanner[L], dirty: bool, notes: list[str]) -> Iterator[Checked[L]]:
    """The checked blocks of one chain file; a torn or bad *last* line after an unclean
    shutdown ends the walk with a note instead of an error."""
    path = scanner.path
    for block, whole in blocks(path):
        if whole:
            checked = scanner.check(block)
            error = checked.error
            if checked.records:
                yield checked
        else:
            error = ChainBroken(path, scanner.seq + 2, "last line is incomplete (no newline)")
        if error is not None:
            if dirty and _is_last_line(path, error.line):
                notes.append(f"{error} (unacknowledged tail, recovered on next open)")
                return
            raise error


def _is_last_line(path: Path, line: int) -> bool:
    with path.open("rb") as f:
        return sum(1 for _ in f) == line


@dataclass
class TaskChecked:
    """One task chain checked on its own; verify adds it to the report and checks it
    against the project chain's links (in the process that read those)."""

    task_id: str
    notes: list[str]
    problem: Problem | None = None
    events: int = 0
    head: Head | None = None
    linked: int = 0  # events counted into `digest`: those linked from the project chain
    digest: bytes = b""


def check_task(
    paths: ProjectPaths, chain_id: str, task_id: str, last_linked: int, dirty: bool
) -> TaskChecked:
    """Check a task chain's lines, its task rules, and digest its links: events with a
    `project_seq` above `last_linked` (the project chain's head) must be an unlinked end."""
    path = paths.task_events(task_id)
    identity = {"project_id": chain_id, "task_id": task_id}
    scanner = ChainScanner(path, TaskRecord, TaskLine, identity)
    result = TaskChecked(task_id, notes=[])
    digest = hashlib.sha256()
    state = TaskState()
    count = 0
    unlinked_from = 0
    try:
        for checked in walk(scanner, dirty, result.notes):
            records = checked.records
            project_seqs = list(map(_project_seq, records))
            error = None
            if unlinked_from or max(project_seqs) > last_linked:
                linked, error = _split_linked(records, path, last_linked, dirty, unlinked_from)
                if linked < len(records):
                    unlinked_from = unlinked_from or records[linked].seq + 1
                    records = records[:linked]
                    project_seqs = project_seqs[:linked]
            state = _replay(records, state, task_id, path)
            hashes = map(_event_hash, records)
            tags = [TAGS[type(record.body)] for record in records]
            digest.update("".join(map(link_key, hashes, tags, project_seqs)).encode())
            count += len(records)
            if error is not None:
                raise error
    except ChainBroken as exc:
        result.problem = Problem.of(exc)
        return result
    if unlinked_from:
        result.notes.append(
            f"{path}:{unlinked_from}: task events from here were never linked from the project "
            "chain (unacknowledged; moved to quarantine on next open)"
        )
    result.events = scanner.seq + 1
    if scanner.seq >= 0:
        result.head = Head(scanner.seq, scanner.head)
    result.linked = count
    result.digest = digest.digest()
    return result


def links_agree(checked: TaskChecked, links: LinkDigest | None) -> bool:
    """Whether a task chain and the project chain's links to it agree, event for event."""
    linked = links.count if links else 0
    return linked == checked.linked and (links is None or links.digest.digest() == checked.digest)


def _split_linked(
    records: list[TaskLine], path: Path, last_linked: int, dirty: bool, unlinked_before: int
) -> tuple[int, ChainBroken | None]:
    """How many of `records` are linked from the project chain, and the problem with the rest
    if any: only the end of a chain may be unlinked, and only while the journal holds lines."""
    linked = 0
    if not unlinked_before:
        while linked < len(records) and records[linked].project_seq <= last_linked:
            linked += 1
    for record in records[linked:]:
        lineno = record.seq + 1
        if record.project_seq <= last_linked:
            return linked, ChainBroken(path, lineno, "linked event after an unlinked one")
        if not dirty:
            return linked, ChainBroken(path, lineno, "task event is not linked from the project "
                                       "chain (project chain cut short?)")  # fmt: skip
    return linked, None


def _replay(records: list[TaskLine], state: TaskState, task_id: str, path: Path) -> TaskState:
    """Replay the task rules over `records`: each must be allowed, and its recorded state
    (`pointer`, `attempt_open`, `closed`) must be the replayed one."""
    for record in records:
        try:
            state = advance(state, task_id, record.body)
        except EventRejected as exc:
            raise ChainBroken(path, record.seq + 1, f"breaks the task rules: {exc}") from None
        if (
            record.pointer != state.pointer
            or record.attempt_open is not state.attempt_open
            or record.closed is not state.closed
        ):
            raise ChainBroken(
                path, record.seq + 1, "recorded task state differs from the replayed one",
                str((state.pointer, state.attempt_open, state.closed)),
                str((record.pointer, record.attempt_open, record.closed)),
            )  # fmt: skip
    return state
