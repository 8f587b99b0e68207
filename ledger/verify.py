"""Verify a whole project: every chain, and the links between them, streaming.

Memory does not grow with the number of events: lines are read one at a time, and the
cross-check keeps per task only a count and a running SHA-256 of the links (task seq, task
event hash, project seq). The project chain feeds one from its `task_event` links, the task
chain the other from its own events; equal digests mean the two chains agree line for line.
Only when they differ is the pair re-read in step to name the first line that disagrees.

While the journal holds lines (a writer is running, or died), a chain file may lack the
journal's last lines, end in a torn piece of one, or hold task events whose links are still to
be written; the next writer completes them from the journal, so verify reports these as notes,
not damage. With an empty journal they are damage.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import msgspec

from protocol import is_safe_id
from protocol.ledger_events import (
    GENESIS_HASH,
    ProjectRecord,
    TaskEventLinked,
    TaskRecord,
)

from .chain import ChainReader, R
from .errors import ChainBroken, EventRejected, LedgerError
from .journal import pending
from .state import TaskState, advance
from .store import ProjectManifest, ProjectPaths, read_manifest, read_tail


class Problem(msgspec.Struct, frozen=True):
    path: str
    line: int
    reason: str
    expected: str | None = None
    found: str | None = None

    @classmethod
    def of(cls, err: ChainBroken) -> Problem:
        return cls(str(err.path), err.line, err.reason, err.expected, err.found)

    def __str__(self) -> str:
        detail = f" (expected {self.expected}, found {self.found})" if self.expected else ""
        return f"{self.path}:{self.line}: {self.reason}{detail}"


class Head(msgspec.Struct, frozen=True):
    seq: int
    hash: str

    def __str__(self) -> str:
        return f"{self.seq}:{self.hash}"

    @classmethod
    def parse(cls, text: str) -> Head:
        seq, sep, digest = text.partition(":")
        if not (sep and seq.isdigit() and len(digest) == 64 and _is_hex(digest)):
            raise LedgerError(f"--expect-head {text!r}: expected SEQ:HASH (HASH 64 hex digits)")
        return cls(int(seq), digest)


class VerifyReport(msgspec.Struct):
    project_id: str
    project_head: Head | None = None
    task_heads: dict[str, Head] = {}
    events: int = 0
    problems: list[Problem] = []
    notes: list[str] = []

    @property
    def ok(self) -> bool:
        return not self.problems


def _is_hex(text: str) -> bool:
    return all(c in "0123456789abcdef" for c in text)


@dataclass
class _Links:
    first_line: int
    count: int = 0
    digest: hashlib._Hash = field(default_factory=hashlib.sha256)


def _link_key(task_hash: str, project_seq: int) -> bytes:
    # Task seqs need no place here: both sides already check that they count up from 0.
    return f"{task_hash}{project_seq}\n".encode()


def _lines(path: Path) -> Iterator[bytes]:
    try:
        f = path.open("rb")
    except FileNotFoundError:
        return
    with f:
        yield from f


def verify_project(
    paths: ProjectPaths,
    *,
    expect_heads: tuple[Head, ...] = (),
    task_ids: tuple[str, ...] | None = None,
) -> VerifyReport:
    """Check every chain of the project (or only `task_ids`, still against the project
    chain) and return what was found; raises only when there is no ledger to check."""
    manifest = read_manifest(paths)
    report = VerifyReport(project_id=paths.project_id)
    dirty = pending(paths.journal)
    links = _verify_project_chain(paths, manifest, report, expect_heads, dirty)
    # With the project chain broken, task chains are still checked on their own, but their
    # links cannot be: the problem already reported is the cause of any mismatch.
    cross_check = report.project_head is not None and not report.problems
    if not cross_check:
        report.notes.append("task chains were not cross-checked: the project chain is broken")
    head_seq = report.project_head.seq if cross_check and report.project_head else None
    present = paths.task_ids()
    for name in present if task_ids is None else task_ids:
        if not is_safe_id(name):
            report.problems.append(Problem(str(paths.tasks / name), 0, "not a valid task id"))
            continue
        _verify_task(paths, manifest, name, links.pop(name, None), head_seq, dirty, report)
    if task_ids is None and cross_check:
        for name, link in sorted(links.items()):
            report.problems.append(
                Problem(str(paths.events), link.first_line,
                        f"links events of task {name!r}, which has no chain file")
            )  # fmt: skip
    return report


def _walk(reader: ChainReader[R], path: Path, dirty: bool, report: VerifyReport) -> Iterator[R]:
    """The records of one chain file, checked; a torn or bad *last* line after an unclean
    shutdown ends the walk with a note instead of an error."""
    for line in _lines(path):
        try:
            if not line.endswith(b"\n"):
                raise ChainBroken(path, reader.seq + 2, "last line is incomplete (no newline)")
            record = reader.check(line)
        except ChainBroken as exc:
            if dirty and _is_last_line(path, exc.line):
                report.notes.append(f"{exc} (unacknowledged tail, recovered on next open)")
                return
            raise
        yield record


def _verify_project_chain(
    paths: ProjectPaths,
    manifest: ProjectManifest,
    report: VerifyReport,
    expect_heads: tuple[Head, ...],
    dirty: bool,
) -> dict[str, _Links]:
    reader = ChainReader(paths.events, ProjectRecord, {"project_id": manifest.chain_project_id})
    expected = {h.seq: h.hash for h in expect_heads}
    links: dict[str, _Links] = {}
    try:
        for record in _walk(reader, paths.events, dirty, report):
            _note_project_event(record, links, expected, paths)
    except ChainBroken as exc:
        report.problems.append(Problem.of(exc))
        return links
    if reader.seq < 0:
        report.problems.append(Problem(str(paths.events), 1, "project chain is empty"))
    else:
        report.project_head = Head(reader.seq, reader.head)
    report.events += reader.seq + 1
    for seq in sorted(expected):
        report.problems.append(
            Problem(str(paths.events), reader.seq + 2,
                    f"chain ends at seq {reader.seq}, before the expected head {seq}: "
                    "events were cut off", f"{seq}:{expected[seq]}", f"{reader.seq}:{reader.head}")
        )  # fmt: skip
    return links


def _note_project_event(
    record: ProjectRecord, links: dict[str, _Links], expected: dict[int, str], paths: ProjectPaths
) -> None:
    seq, head = record.seq, record.event_hash
    want = expected.pop(seq, None)
    if want is not None and want != head:
        raise ChainBroken(paths.events, seq + 1, "event differs from the expected head: the "
                          "chain was rewritten", want, head)  # fmt: skip
    body = record.body
    if isinstance(body, TaskEventLinked):
        link = links.get(body.task_id)
        if link is None:
            link = links[body.task_id] = _Links(first_line=seq + 1)
        if body.task_seq != link.count:
            raise ChainBroken(paths.events, seq + 1, f"link to task {body.task_id!r} out of "
                              "order", str(link.count), str(body.task_seq))  # fmt: skip
        link.count += 1
        link.digest.update(_link_key(body.task_event_hash, seq))


def _verify_task(
    paths: ProjectPaths,
    manifest: ProjectManifest,
    task_id: str,
    links: _Links | None,
    project_head_seq: int | None,
    dirty: bool,
    report: VerifyReport,
) -> None:
    path = paths.task_events(task_id)
    identity = {"project_id": manifest.chain_project_id, "task_id": task_id}
    reader = ChainReader(path, TaskRecord, identity)
    digest = hashlib.sha256()
    state = TaskState()
    count = 0
    unlinked_from = 0
    try:
        for record in _walk(reader, path, dirty, report):
            lineno = record.seq + 1
            if project_head_seq is not None and record.project_seq > project_head_seq:
                if not dirty:
                    raise ChainBroken(path, lineno, "task event is not linked from the project "
                                      "chain (project chain cut short?)")  # fmt: skip
                unlinked_from = unlinked_from or lineno
                continue
            if unlinked_from:
                raise ChainBroken(path, lineno, "linked event after an unlinked one")
            try:
                state = advance(state, task_id, record.body)
            except EventRejected as exc:
                raise ChainBroken(path, lineno, f"breaks the task rules: {exc}") from None
            recorded = (record.pointer, record.attempt_open, record.closed)
            if recorded != (state.pointer, state.attempt_open, state.closed):
                raise ChainBroken(
                    path, lineno, "recorded task state differs from the replayed one",
                    str((state.pointer, state.attempt_open, state.closed)), str(recorded),
                )  # fmt: skip
            digest.update(_link_key(record.event_hash, record.project_seq))
            count += 1
    except ChainBroken as exc:
        report.problems.append(Problem.of(exc))
        return
    if unlinked_from:
        report.notes.append(
            f"{path}:{unlinked_from}: task events from here were never linked from the project "
            "chain (unacknowledged; moved to quarantine on next open)"
        )
    report.events += reader.seq + 1
    if reader.seq >= 0:
        report.task_heads[task_id] = Head(reader.seq, reader.head)
    if project_head_seq is None:
        return
    linked = links.count if links else 0
    if linked == count and (links is None or links.digest.digest() == digest.digest()):
        return
    report.problems.append(_locate(paths, task_id, count))


def read_head(reader: ChainReader[ProjectRecord] | ChainReader[TaskRecord]) -> Head:
    """A chain's head from its last complete line, read-only (a torn end is ignored: it was
    never acknowledged). Raises `ChainBroken` if that line does not check out."""
    tail = read_tail(reader.path)
    if not tail.last:
        raise ChainBroken(reader.path, 1, "chain is empty")
    record = reader.resume(tail.last)
    return Head(record.seq, record.event_hash)


def _is_last_line(path: Path, line: int) -> bool:
    with path.open("rb") as f:
        return sum(1 for _ in f) == line


def _locate(paths: ProjectPaths, task_id: str, count: int) -> Problem:
    """The first line where a task chain and the project chain's links to it disagree."""
    path = paths.task_events(task_id)
    project_links = (
        (r.seq, r.body)
        for r in (msgspec.json.decode(line, type=ProjectRecord) for line in _lines(paths.events))
        if isinstance(r.body, TaskEventLinked) and r.body.task_id == task_id
    )
    task_records = (msgspec.json.decode(line, type=TaskRecord) for line in _lines(path))
    for index in range(count):
        record = next(task_records)
        link = next(project_links, None)
        if link is None:
            return Problem(str(path), index + 1, "task event is not linked from the project chain")
        project_seq, body = link
        mine = (record.seq, record.event_hash, record.project_seq)
        theirs = (body.task_seq, body.task_event_hash, project_seq)
        if mine != theirs:
            return Problem(
                str(path), index + 1,
                f"task event differs from its link at {paths.events}:{project_seq + 1}",
                str(theirs), str(mine),
            )  # fmt: skip
    link = next(project_links, None)
    assert link is not None, "digests differ, so the chains differ somewhere"
    return Problem(
        str(path), count + 1,
        f"task chain ends here but {paths.events}:{link[0] + 1} links its seq {link[1].task_seq}",
    )  # fmt: skip


__all__ = ["GENESIS_HASH", "Head", "Problem", "VerifyReport", "verify_project"]
