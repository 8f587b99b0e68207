"""Reading chain tails on open, and crash recovery from the journal.

After a clean shutdown the journal is empty and every chain file ends in a complete, valid
line: open reads the project chain's last line and each task's last line when first used.

After a crash the journals (the old one, if a checkpoint was running, then the current one)
hold every acknowledged line that a chain file may lack (see ledger/journal.py). Recovery:

1. a torn end of a journal (after its last commit line) was never acknowledged and never
   reached a chain file: it is moved to ``quarantine/``;
2. for each chain the journals name, a torn end of the chain file (bytes after its last
   newline, or a last line that does not verify) is moved to ``quarantine/``;
3. the journals' lines that the chain file lacks are appended (each is checked: canonical,
   hashed, continuing its chain), the files fsynced, the journals emptied.

Every quarantine is returned as a `RecoveredTornTail` event for the project chain. Anything
that does not fit (a gap, a hash that differs) is damage: `LedgerDamaged`, nothing touched.
"""

from __future__ import annotations

import os
import time
from pathlib import Path
from typing import Literal

import msgspec

from protocol.ledger_events import (
    GENESIS_HASH,
    ProjectRecord,
    RecoveredTornTail,
    TaskRecord,
)

from .canonical import sha256_hex
from .chain import ChainReader
from .commit_process import COMMIT, write_all
from .errors import ChainBroken, LedgerDamaged
from .state import TaskState
from .store import ProjectPaths, fsync_dir, naming, read_tail
from .verify import Head

AnyReader = ChainReader[ProjectRecord] | ChainReader[TaskRecord]
_record_decoder = msgspec.json.Decoder(ProjectRecord | TaskRecord)


def _quarantine(
    paths: ProjectPaths,
    path: Path,
    at: int,
    line: int,
    reason: Literal["torn"],
    task_id: str | None,
) -> RecoveredTornTail:
    """Move `path`'s bytes from offset `at` to a new quarantine file (fsynced before the
    truncation, so a crash in between loses nothing)."""
    with path.open("rb") as f:
        f.seek(at)
        data = f.read()
    paths.quarantine.mkdir(exist_ok=True)
    stamp = time.strftime("%Y%m%dT%H%M%SZ", time.gmtime())
    name = f"{stamp}-{task_id or path.stem}-{reason}-{os.getpid()}-{time.monotonic_ns()}.bin"
    target = paths.quarantine / name
    _write_durably(target, data, os.O_CREAT | os.O_EXCL)
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
    reader: AnyReader,
    recovering: bool,
    paths: ProjectPaths,
    task_id: str | None,
    found: list[RecoveredTornTail],
) -> ProjectRecord | TaskRecord | None:
    """The last intact record of a chain file. A torn end is damage, unless `recovering`:
    then it is quarantined (the journal still has every acknowledged line)."""
    path = reader.path
    tail = read_tail(path)
    if tail.torn:
        line = reader.line_after(tail.last)
        if not recovering:
            raise LedgerDamaged(ChainBroken(path, line, "last line is incomplete (no newline)"))
        found.append(_quarantine(paths, path, tail.torn_at, line, "torn", task_id))
    last, at = tail.last, tail.last_at
    for retry in (False, True):
        if not last:
            return None
        try:
            return reader.resume(last, at)
        except ChainBroken as exc:
            if not recovering or retry:
                raise LedgerDamaged(exc) from None
        # A complete but bad last line after a crash is torn too; the one before must be good.
        before = read_tail(path, end=at)
        found.append(_quarantine(paths, path, at, reader.line_after(before.last), "torn", task_id))
        last, at = before.last, before.last_at
    raise AssertionError("unreachable")


def project_head(paths: ProjectPaths, chain_id: str) -> Head:
    """The project chain's head after a clean shutdown (O(1): its last line)."""
    reader = ChainReader(paths.events, ProjectRecord, {"project_id": chain_id})
    record = _last_good(reader, False, paths, None, [])
    if record is None:
        raise LedgerDamaged(ChainBroken(paths.events, 1, "project chain is empty"))
    return Head(record.seq, record.event_hash)


def task_tail(paths: ProjectPaths, chain_id: str, task_id: str, project_seq: int) -> TaskState:
    """A task's state from its chain file's last line (O(1)); damage if that line does not
    verify or is not linked from the project chain."""
    path = paths.task_events(task_id)
    reader = ChainReader(path, TaskRecord, {"project_id": chain_id, "task_id": task_id})
    record = _last_good(reader, False, paths, task_id, [])
    if record is None:
        return TaskState()
    assert isinstance(record, TaskRecord)
    if record.project_seq > project_seq:
        raise LedgerDamaged(
            ChainBroken(path, record.seq + 1, "task event is not linked from the project chain")
        )
    return TaskState.of(record)


def _reader_for(paths: ProjectPaths, chain_id: str, task_id: str | None) -> AnyReader:
    if task_id is None:
        return ChainReader(paths.events, ProjectRecord, {"project_id": chain_id})
    identity = {"project_id": chain_id, "task_id": task_id}
    return ChainReader(paths.task_events(task_id), TaskRecord, identity)


def recover(
    paths: ProjectPaths, chain_id: str, found: list[RecoveredTornTail]
) -> tuple[Head, dict[str, TaskState]]:
    """Bring every chain up to the journals (the old one first) after a crash; returns the
    project head and the states of the tasks the journals touched. The caller empties the
    journals afterwards."""
    pending: dict[str | None, list[tuple[Path, int, bytes]]] = {}
    for journal in (paths.old_journal, paths.journal):
        try:
            data = journal.read_bytes()
        except FileNotFoundError:
            continue
        # Only whole batches count: a write cut short may still end on a line boundary.
        end = data.rfind(COMMIT) + len(COMMIT) if COMMIT in data else 0
        if end < len(data):
            found.append(_quarantine(paths, journal, end, data[:end].count(b"\n") + 1,
                                     "torn", None))  # fmt: skip
        for number, line in enumerate(data[:end].splitlines(keepends=True), start=1):
            if line == COMMIT:
                continue
            try:
                record = _record_decoder.decode(line)
            except (msgspec.DecodeError, UnicodeDecodeError) as exc:
                raise LedgerDamaged(ChainBroken(journal, number, f"bad line: {exc}")) from None
            key = record.task_id if isinstance(record, TaskRecord) else None
            pending.setdefault(key, []).append((journal, number, line))
    tasks: dict[str, TaskState] = {}
    head: Head | None = None
    # Task chains first: a project line is only ever written after its task lines.
    for key in sorted(pending, key=lambda k: (k is None, k or "")):
        reader = _reader_for(paths, chain_id, key)
        last = _last_good(reader, True, paths, key, found)
        seq, prev = (last.seq, last.event_hash) if last is not None else (-1, GENESIS_HASH)
        append: list[bytes] = []
        for journal, number, line in pending[key]:
            check = _reader_for(paths, chain_id, key)
            try:
                record = check.resume(line)
            except ChainBroken as exc:
                raise LedgerDamaged(ChainBroken(journal, number, exc.reason)) from None
            if record.seq <= seq:
                if record.seq == seq and record.event_hash != prev:
                    raise LedgerDamaged(ChainBroken(reader.path, seq + 1, "differs from the "
                                        "journal", record.event_hash, prev))  # fmt: skip
                continue
            if (record.seq, record.prev_event_hash) != (seq + 1, prev):
                raise LedgerDamaged(ChainBroken(journal, number, f"does not continue "
                                    f"{paths.relative(reader.path)} at seq {seq}"))  # fmt: skip
            append.append(line)
            seq, prev, last = record.seq, record.event_hash, record
        if append:
            _append_durably(reader.path, b"".join(append))
        if key is None:
            head = Head(seq, prev)
        elif isinstance(last, TaskRecord):
            tasks[key] = TaskState.of(last)
    if head is None:
        head = project_head(paths, chain_id)
    return head, tasks


def _append_durably(path: Path, data: bytes) -> None:
    created = not path.exists()
    if created:
        path.parent.mkdir(parents=True, exist_ok=True)
        (path.parent / "artifacts").mkdir(exist_ok=True)
    _write_durably(path, data, os.O_APPEND | os.O_CREAT)
    if created:
        fsync_dir(path.parent)
        fsync_dir(path.parent.parent)


def _write_durably(path: Path, data: bytes, flags: int) -> None:
    fd = os.open(path, os.O_WRONLY | flags, 0o644)
    try:
        with naming(path):
            write_all(fd, [data])
            os.fsync(fd)
    except OSError:
        if flags & os.O_EXCL:  # a quarantine file of ours, half written: not left behind
            path.unlink(missing_ok=True)
        raise
    finally:
        os.close(fd)
