"""Verify a whole project: every chain, and the links between them, streaming.

Memory does not grow with the number of events: lines are read one at a time, and the
cross-check keeps per task only a count and a running SHA-256 of the links (task seq, task
event hash, project seq). The project chain feeds one from its `task_events` links, the task
chain the other from its own events; equal digests mean the two chains agree line for line.
Only when they differ is the pair re-read in step to name the first line that disagrees.

While the journal holds lines (a writer is running, or died), a chain file may lack the
journal's last lines, end in a torn piece of one, or hold task events whose links are still to
be written; the next writer completes them from the journal, so verify reports these as notes,
not damage. With an empty journal they are damage.
"""

from __future__ import annotations

import contextlib
import hashlib
import multiprocessing
import os
import threading
from collections import deque
from collections.abc import Iterator
from concurrent.futures import FIRST_COMPLETED, Future, ProcessPoolExecutor, wait
from dataclasses import dataclass, field
from operator import attrgetter
from pathlib import Path

import msgspec

from protocol import is_safe_id
from protocol.ledger_events import (
    GENESIS_HASH,
    MAX_SAFE_INT,
    TASK_EVENT_TYPES,
    ProjectRecord,
    TaskEventsLinked,
    TaskRecord,
)

from .chain import ChainReader
from .commit_process import die_with_parent
from .envelopes import Link, Links, ProjectLine, TaskLine
from .errors import ChainBroken, EventRejected, LedgerError
from .journal import pending
from .scan import ChainScanner, Checked, L, blocks
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
    keys: list[str] = field(default_factory=list)  # this block's, not yet in `digest`


def _link_key(task_hash: str, event_type: str, project_seq: int) -> str:
    # Task seqs need no place here: both sides already check that they count up from 0. The
    # hash has its fixed length and the type is one of the tags: the key is unambiguous.
    return f"{task_hash}{event_type}\n{project_seq}\n"


# Task chains that hold less than this are checked in one process even when workers are asked
# for: a worker starts in 0.25-0.55 s, the time this process takes to check 40-90 MB, and
# gains nothing on chains that take less than about twice that (docs/performance.md).
PARALLEL_BYTES = 128 << 20
# The least a worker is given at a time (else about a sixteenth of a process's share).
CHUNK_BYTES = 1 << 20

_project_seq = attrgetter("project_seq")
# `state.event_type` as a table: a call per record costs verify 4% (measured).
_TAGS = {t: t.__struct_config__.tag for t in TASK_EVENT_TYPES}
_event_hash = attrgetter("event_hash")


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
    jobs: int = 1,
) -> VerifyReport:
    """Check every chain of the project (or only `task_ids`, still against the project
    chain) and return what was found; raises only when there is no ledger to check.

    With `jobs` above 1, `jobs - 1` worker processes check task chains while this one reads
    the project chain, when the task chains are big enough to gain from it (`PARALLEL_BYTES`);
    the report is the same either way."""
    manifest = read_manifest(paths)
    report = VerifyReport(project_id=paths.project_id)
    dirty = pending(paths)
    given = None if task_ids is None else list(dict.fromkeys(task_ids))
    ahead = paths.task_ids() if given is None else given
    safe = [name for name in ahead if is_safe_id(name)]
    with _TaskChecks(paths, manifest.chain_project_id, safe, dirty, jobs) as checks:
        links = _verify_project_chain(paths, manifest, report, expect_heads, dirty)
        # With the project chain broken, task chains are still checked on their own, but their
        # links cannot be: the problem already reported is the cause of any mismatch.
        cross_check = report.project_head is not None and not report.problems
        if not cross_check:
            report.notes.append("task chains were not cross-checked: the project chain is broken")
        head_seq = report.project_head.seq if cross_check and report.project_head else None
        last_linked = MAX_SAFE_INT if head_seq is None else head_seq
        checks.take_share(last_linked)
        # Listed (again) now, after the project chain: a running writer may have added a task
        # meanwhile, and its first events are in the project chain read.
        for name in paths.task_ids() if given is None else given:
            if not is_safe_id(name):
                report.problems.append(Problem(str(paths.tasks / name), 0, "not a valid task id"))
                continue
            link = links.pop(name, None)
            checked = checks.result(name, last_linked, link, head_seq)
            _merge_task(paths, checked, link, head_seq, report)
    if task_ids is None and cross_check:
        for name, link in sorted(links.items()):
            report.problems.append(
                Problem(str(paths.events), link.first_line,
                        f"links events of task {name!r}, which has no chain file")
            )  # fmt: skip
    return report


def available_cpus() -> int:
    """The CPUs this process may run on (its affinity, where the platform tells)."""
    if hasattr(os, "sched_getaffinity"):
        return len(os.sched_getaffinity(0))
    return os.cpu_count() or 1


class _TaskChecks:
    """The task chains' checks: made here when asked for, or ahead of time in `jobs - 1`
    worker processes, this one taking its share once it has read the project chain.

    The chains are cut into chunks, in name order (the report's). A feeder thread keeps each
    worker one chunk ahead, from the first; this process takes the rest from the last, so a
    worker's start-up (an interpreter and its imports: 0.25 s, 0.55 s under the `runner`
    script, which the worker imports again) is not time lost. Nothing is ever cancelled: on
    Python 3.11.7 a pool that breaks (a worker killed) with a cancelled future leaves the
    other workers running and the interpreter's exit waiting for them (CPython gh-107219).

    A worker checks a chain before the project chain has been read (as if every event were
    linked: `last_linked` is the largest seq). Its check is taken only when it is one this
    process could have made: it found nothing wrong and agrees with the links, event for event
    (an event the project chain does not link, or a running writer's events and links added
    since the worker read the chain, make them differ). Anything else, damage included, is
    checked again here, so that the report is the one a single process makes. A worker that
    fails or dies costs only time."""

    def __init__(
        self, paths: ProjectPaths, chain_id: str, names: list[str], dirty: bool, jobs: int
    ) -> None:
        self.paths = paths
        self.chain_id = chain_id
        self.dirty = dirty
        self.names = names
        self.jobs = jobs
        self.pool: ProcessPoolExecutor | None = None
        self.feeder: threading.Thread | None = None
        self.lock = threading.Lock()  # the feeder's and this thread's: `unsent`, `sent`
        self.unsent: deque[list[str]] = deque()
        self.sent: dict[str, Future[list[_TaskChecked]]] = {}
        self.ready: dict[str, _TaskChecked] = {}  # from workers, not yet asked for
        # Made here once the project head is known, or the error that stopped the check.
        self.here: dict[str, _TaskChecked | Exception] = {}

    def __enter__(self) -> _TaskChecks:
        if self.jobs > 1 and len(self.names) > 1:
            self._start()
        return self

    def __exit__(self, *exc: object) -> None:
        with self.lock:
            self.unsent.clear()
        if self.feeder is not None:
            self.feeder.join()  # once the chunks it sent are done: at most one per worker more
        if self.pool is not None:
            self.pool.shutdown()

    def _start(self) -> None:
        sizes = [_size(self.paths.task_events(name)) for name in self.names]
        total = sum(sizes)
        if total < PARALLEL_BYTES:
            return  # starting the workers would cost more than they save
        target = max(total // (self.jobs * 16), CHUNK_BYTES)
        chunks: list[list[str]] = [[]]
        size = 0
        for name, name_size in zip(self.names, sizes, strict=True):
            if size >= target:
                chunks.append([])
                size = 0
            chunks[-1].append(name)
            size += name_size
        self.unsent.extend(chunks)
        workers = min(self.jobs - 1, len(chunks))
        # `spawn`: a fork of a process with threads (an event loop's, a logger's) may deadlock.
        # The workers die with this process (`die_with_parent`), not live on after a kill.
        self.pool = ProcessPoolExecutor(
            workers,
            mp_context=multiprocessing.get_context("spawn"),
            initializer=die_with_parent,
            initargs=(os.getpid(),),
        )
        # The first chunks go now, before this process reads the project chain.
        in_flight: set[Future[list[_TaskChecked]]] = set()
        self._send(self.pool, workers, in_flight)
        self.feeder = threading.Thread(
            target=self._feed,
            args=(self.pool, workers, in_flight),
            name="verify-feeder",
            daemon=True,
        )
        self.feeder.start()

    def _feed(
        self,
        pool: ProcessPoolExecutor,
        workers: int,
        in_flight: set[Future[list[_TaskChecked]]],
    ) -> None:
        while in_flight:
            _, still = wait(in_flight, return_when=FIRST_COMPLETED)
            in_flight = set(still)
            self._send(pool, workers, in_flight)

    def _send(
        self,
        pool: ProcessPoolExecutor,
        workers: int,
        in_flight: set[Future[list[_TaskChecked]]],
    ) -> None:
        """Send chunks from the first until each worker has one more waiting."""
        root, project_id = str(self.paths.root), self.paths.project_id
        with self.lock:
            while self.unsent and len(in_flight) <= workers:
                chunk = self.unsent.popleft()
                try:
                    future = pool.submit(
                        _check_tasks, root, project_id, self.chain_id, chunk, self.dirty
                    )
                except Exception:  # a broken pool: this process checks the rest
                    self.unsent.appendleft(chunk)
                    return
                in_flight.add(future)
                for name in chunk:
                    self.sent[name] = future

    def take_share(self, last_linked: int) -> None:
        """Check here the chunks no worker has been sent, the last first. An error is kept
        for `result`, which raises it in its turn, as one process would."""
        while True:
            with self.lock:
                if not self.unsent:
                    return
                chunk = self.unsent.pop()
            for name in chunk:
                try:
                    self.here[name] = self._check_here(name, last_linked)
                except Exception as exc:
                    self.here[name] = exc

    def result(
        self, name: str, last_linked: int, links: _Links | None, head_seq: int | None
    ) -> _TaskChecked:
        here = self.here.pop(name, None)
        if isinstance(here, Exception):
            raise here
        if here is not None:
            return here
        with self.lock:
            future = self.sent.pop(name, None)
        if future is not None and name not in self.ready:
            # A worker's error: the chains are checked here, where a real one is raised again.
            with contextlib.suppress(Exception):
                self.ready.update((c.task_id, c) for c in future.result())
        checked = self.ready.pop(name, None)
        # With the head known, agreeing links also mean no event above it: the worker counted
        # every event as linked, and the links end at the head.
        if (
            checked is not None
            and checked.problem is None
            and (head_seq is None or _links_agree(checked, links))
        ):
            return checked
        return self._check_here(name, last_linked)

    def _check_here(self, name: str, last_linked: int) -> _TaskChecked:
        return _check_task(self.paths, self.chain_id, name, last_linked, self.dirty)


def _check_tasks(
    root: str, project_id: str, chain_id: str, names: list[str], dirty: bool
) -> list[_TaskChecked]:
    """A worker process's part (see `_TaskChecks`)."""
    paths = ProjectPaths.of(root, project_id)
    return [_check_task(paths, chain_id, name, MAX_SAFE_INT, dirty) for name in names]


def _size(path: Path) -> int:
    try:
        return path.stat().st_size
    except OSError:
        return 0  # checked, and reported, with the rest


def _walk(scanner: ChainScanner[L], dirty: bool, notes: list[str]) -> Iterator[Checked[L]]:
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


def _verify_project_chain(
    paths: ProjectPaths,
    manifest: ProjectManifest,
    report: VerifyReport,
    expect_heads: tuple[Head, ...],
    dirty: bool,
) -> dict[str, _Links]:
    identity = {"project_id": manifest.chain_project_id}
    scanner = ChainScanner(paths.events, ProjectRecord, ProjectLine, identity)
    expected = {h.seq: h.hash for h in expect_heads}
    links: dict[str, _Links] = {}
    try:
        for checked in _walk(scanner, dirty, report.notes):
            _note_project_events(checked, links, expected, paths)
    except ChainBroken as exc:
        report.problems.append(Problem.of(exc))
        return links
    if scanner.seq < 0:
        report.problems.append(Problem(str(paths.events), 1, "project chain is empty"))
    else:
        report.project_head = Head(scanner.seq, scanner.head)
    report.events += scanner.seq + 1
    for seq in sorted(expected):
        report.problems.append(
            Problem(str(paths.events), scanner.seq + 2,
                    f"chain ends at seq {scanner.seq}, before the expected head {seq}: "
                    "events were cut off", f"{seq}:{expected[seq]}",
                    f"{scanner.seq}:{scanner.head}")
        )  # fmt: skip
    return links


def _note_project_events(
    checked: Checked[ProjectLine],
    links: dict[str, _Links],
    expected: dict[int, str],
    paths: ProjectPaths,
) -> None:
    records = checked.records
    first = records[0].seq
    for seq in [s for s in expected if first <= s < first + len(records)]:
        want, head = expected.pop(seq), records[seq - first].event_hash
        if want != head:
            raise ChainBroken(paths.events, seq + 1, "event differs from the expected head: "
                              "the chain was rewritten", want, head)  # fmt: skip
    touched: list[_Links] = []
    for record in records:
        body = record.body
        if type(body) is not Links:
            continue
        seq = record.seq
        for event in body.events:
            link = links.get(event.task_id)
            if link is None or event.task_seq != link.count:
                link = _check_link(links, event, seq, paths)
            if not link.keys:
                touched.append(link)
            link.count += 1
            # `_link_key`, inline: a call per link costs verify time.
            link.keys.append(f"{event.task_event_hash}{event.task_event_type}\n{seq}\n")
    for link in touched:
        link.digest.update("".join(link.keys).encode())
        link.keys.clear()


def _check_link(links: dict[str, _Links], body: Link, seq: int, paths: ProjectPaths) -> _Links:
    """The links of a task seen for the first time, or the problem with this link."""
    task_id = body.task_id
    link = links.get(task_id)
    if link is None:
        if not is_safe_id(task_id):
            raise ChainBroken(paths.events, seq + 1, f"links to an invalid task id {task_id!r}")
        link = links[task_id] = _Links(first_line=seq + 1)
    if body.task_seq != link.count:
        raise ChainBroken(paths.events, seq + 1, f"link to task {task_id!r} out of "
                          "order", str(link.count), str(body.task_seq))  # fmt: skip
    return link


@dataclass
class _TaskChecked:
    """One task chain checked on its own; `_merge_task` adds it to the report and checks it
    against the project chain's links (in the process that read those)."""

    task_id: str
    notes: list[str]
    problem: Problem | None = None
    events: int = 0
    head: Head | None = None
    linked: int = 0  # events counted into `digest`: those linked from the project chain
    digest: bytes = b""


def _check_task(
    paths: ProjectPaths, chain_id: str, task_id: str, last_linked: int, dirty: bool
) -> _TaskChecked:
    """Check a task chain's lines, its task rules, and digest its links: events with a
    `project_seq` above `last_linked` (the project chain's head) must be an unlinked end."""
    path = paths.task_events(task_id)
    identity = {"project_id": chain_id, "task_id": task_id}
    scanner = ChainScanner(path, TaskRecord, TaskLine, identity)
    result = _TaskChecked(task_id, notes=[])
    digest = hashlib.sha256()
    state = TaskState()
    count = 0
    unlinked_from = 0
    try:
        for checked in _walk(scanner, dirty, result.notes):
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
            tags = [_TAGS[type(record.body)] for record in records]
            digest.update("".join(map(_link_key, hashes, tags, project_seqs)).encode())
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


def _merge_task(
    paths: ProjectPaths,
    checked: _TaskChecked,
    links: _Links | None,
    project_head_seq: int | None,
    report: VerifyReport,
) -> None:
    report.notes.extend(checked.notes)
    if checked.problem is not None:
        report.problems.append(checked.problem)
        return
    report.events += checked.events
    if checked.head is not None:
        report.task_heads[checked.task_id] = checked.head
    if project_head_seq is None:
        return
    if not _links_agree(checked, links):
        report.problems.append(_locate(paths, checked.task_id, checked.linked))


def _links_agree(checked: _TaskChecked, links: _Links | None) -> bool:
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
        (r.seq, event)
        for r in (msgspec.json.decode(line, type=ProjectRecord) for line in _lines(paths.events))
        if isinstance(r.body, TaskEventsLinked)
        for event in r.body.events
        if event.task_id == task_id
    )
    task_records = (msgspec.json.decode(line, type=TaskRecord) for line in _lines(path))
    for index in range(count):
        record = next(task_records)
        link = next(project_links, None)
        if link is None:
            return Problem(str(path), index + 1, "task event is not linked from the project chain")
        project_seq, body = link
        mine = (record.seq, record.event_hash, _TAGS[type(record.body)], record.project_seq)
        theirs = (body.task_seq, body.task_event_hash, body.task_event_type, project_seq)
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


__all__ = [
    "GENESIS_HASH",
    "PARALLEL_BYTES",
    "Head",
    "Problem",
    "VerifyReport",
    "available_cpus",
    "verify_project",
]
