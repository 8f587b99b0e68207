"""Crash recovery: what a writer does on open when the previous one did not shut down cleanly.

The writer acknowledges a batch only after its task lines are on disk (fsynced) and *then* its
project lines (links included) are on disk. A crash can therefore leave, beyond every
acknowledged event:

- a torn last line in any chain file (a write cut short: no newline, or undecodable);
- complete task events whose project links were never written (``project_seq`` past the
  project chain's end).

Both are unacknowledged. Recovery moves exactly those bytes to ``quarantine/`` (fsynced before
the chain file is truncated, so a crash during recovery loses nothing either) and returns one
`RecoveredTornTail` event per file for the project chain. Anything else that is wrong (a bad
line that is not last, a hash mismatch) is damage: recovery raises `LedgerDamaged` and touches
nothing.
"""

from __future__ import annotations

import os
import time
from pathlib import Path
from typing import Literal

import msgspec

from protocol.ledger_events import ProjectRecord, RecoveredTornTail, TaskRecord

from .canonical import sha256_hex
from .chain import ChainReader
from .errors import ChainBroken, LedgerDamaged
from .state import TaskState
from .store import ProjectPaths, fsync_dir, read_tail


class ProjectTail(msgspec.Struct, frozen=True):
    seq: int
    head: str


def _quarantine(
    paths: ProjectPaths,
    path: Path,
    at: int,
    line: int,
    reason: Literal["torn", "unlinked"],
    task_id: str | None,
) -> RecoveredTornTail:
    with path.open("rb") as f:
        f.seek(at)
        data = f.read()
    paths.quarantine.mkdir(exist_ok=True)
    stamp = time.strftime("%Y%m%dT%H%M%SZ", time.gmtime())
    name = f"{stamp}-{task_id or 'project'}-{reason}-{os.getpid()}-{time.monotonic_ns()}.bin"
    target = paths.quarantine / name
    fd = os.open(target, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644)
    try:
        os.write(fd, data)
        os.fsync(fd)
    finally:
        os.close(fd)
    fsync_dir(paths.quarantine)
    fd = os.open(path, os.O_WRONLY)
    try:
        os.ftruncate(fd, at)
        os.fsync(fd)
    finally:
        os.close(fd)
    return RecoveredTornTail(
        file=paths.relative(path),
        line=line,
        lines=data.count(b"\n") + (0 if data.endswith(b"\n") else 1),
        bytes=len(data),
        sha256=sha256_hex(data),
        quarantine_file=paths.relative(target),
        reason=reason,
        task_id=task_id,
    )


def _last_good(
    reader: ChainReader[ProjectRecord] | ChainReader[TaskRecord],
    path: Path,
    dirty: bool,
    paths: ProjectPaths,
    task_id: str | None,
    found: list[RecoveredTornTail],
) -> tuple[ProjectRecord | TaskRecord | None, int]:
    """The last intact record of a chain file and the offset of its line, quarantining a torn
    tail when `dirty`."""
    tail = read_tail(path)
    if tail.torn:
        if not dirty:
            raise LedgerDamaged(ChainBroken(path, 0, "last line is incomplete (no newline)"))
        line = _line_after(reader, tail.last)
        found.append(_quarantine(paths, path, tail.torn_at, line, "torn", task_id))
    last, at = tail.last, tail.last_at
    # After a crash an undecodable last complete line is torn too; the one before it must
    # then be intact, or this is damage.
    for retry in (False, True):
        if not last:
            return None, 0
        try:
            return reader.resume(last), at
        except ChainBroken as exc:
            if not dirty or retry:
                raise LedgerDamaged(exc) from None
        before = read_tail(path, end=at)
        found.append(_quarantine(paths, path, at, _line_after(reader, before.last), "torn",
                                 task_id))  # fmt: skip
        last, at = before.last, before.last_at
    raise AssertionError("unreachable")


def _line_after(reader: ChainReader[ProjectRecord] | ChainReader[TaskRecord], line: bytes) -> int:
    """The 1-based number of the line after `line` (1 when there is none)."""
    return _line_no(reader, line) + 1 if line else 1


def _line_no(reader: ChainReader[ProjectRecord] | ChainReader[TaskRecord], line: bytes) -> int:
    try:
        return int(reader.decoder.decode(line.rstrip(b"\n")).seq) + 1
    except msgspec.DecodeError:
        return 0


def project_tail(
    paths: ProjectPaths, chain_id: str, dirty: bool, found: list[RecoveredTornTail]
) -> ProjectTail:
    reader = ChainReader(paths.events, ProjectRecord, {"project_id": chain_id})
    record, _ = _last_good(reader, paths.events, dirty, paths, None, found)
    if record is None:
        raise LedgerDamaged(ChainBroken(paths.events, 1, "project chain is empty"))
    return ProjectTail(record.seq, record.event_hash)


def task_tail(
    paths: ProjectPaths,
    chain_id: str,
    task_id: str,
    project_seq: int,
    dirty: bool,
    found: list[RecoveredTornTail],
) -> TaskState:
    """A task's state from the end of its chain file (recovering it when `dirty`)."""
    path = paths.task_events(task_id)
    identity = {"project_id": chain_id, "task_id": task_id}
    record, cut = _last_good(ChainReader(path, TaskRecord, identity), path, dirty, paths,
                             task_id, found)  # fmt: skip
    if record is None:
        return TaskState()
    assert isinstance(record, TaskRecord)
    if record.project_seq <= project_seq:
        return TaskState.of(record)
    if not dirty:
        raise LedgerDamaged(
            ChainBroken(path, record.seq + 1, "task event is not linked from the project chain")
        )
    # Walk back over the unlinked suffix (one interrupted batch: a few lines at most).
    last: TaskRecord | None = None
    while cut > 0:
        before = read_tail(path, end=cut)
        try:
            earlier = ChainReader(path, TaskRecord, identity).resume(before.last)
        except ChainBroken as exc:
            raise LedgerDamaged(exc) from None
        if earlier.project_seq <= project_seq:
            last = earlier
            break
        cut = before.last_at
    line = last.seq + 2 if last is not None else 1
    found.append(_quarantine(paths, path, cut, line, "unlinked", task_id))
    return TaskState.of(last) if last is not None else TaskState()


def recover_tasks(
    paths: ProjectPaths, chain_id: str, project_seq: int, found: list[RecoveredTornTail]
) -> dict[str, TaskState]:
    """After an unclean shutdown: check and recover every task's tail (O(tasks) tail reads)."""
    return {
        task_id: task_tail(paths, chain_id, task_id, project_seq, True, found)
        for task_id in paths.task_ids()
    }
