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

from collections.abc import Iterator
from pathlib import Path

import msgspec

from protocol import is_safe_id
from protocol.ledger_events import (
    FORMAT_VERSION,
    GENESIS_HASH,
    MAX_SAFE_INT,
    ProjectCreated,
    ProjectRecord,
    TaskEventsLinked,
    TaskRecord,
)

from .chain import ChainReader
from .envelopes import Link, Links, ProjectLine
from .errors import ChainBroken
from .journal import pending
from .report import Head, Problem, VerifyReport
from .scan import ChainScanner, Checked
from .store import ProjectManifest, ProjectPaths, read_manifest, read_tail
from .task_check import TAGS, LinkDigest, TaskChecked, links_agree, walk
from .task_pool import TaskChecks


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
    with TaskChecks(paths, manifest.chain_project_id, safe, dirty, jobs) as checks:
        links, cross_check = _verify_project_chain(paths, manifest, report, expect_heads, dirty)
        # With the project chain broken, task chains are still checked on their own, but their
        # links cannot be: the problem already reported is the cause of any mismatch. (A chain
        # that differs from an expected head is not broken: it is checked, links and all.)
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


def _verify_project_chain(
    paths: ProjectPaths,
    manifest: ProjectManifest,
    report: VerifyReport,
    expect_heads: tuple[Head, ...],
    dirty: bool,
) -> tuple[dict[str, LinkDigest], bool]:
    """The project chain's links per task, and whether the chain is whole (checked to its
    end, not empty) so that task chains can be checked against them."""
    identity = {"project_id": manifest.chain_project_id}
    scanner = ChainScanner(paths.events, ProjectRecord, ProjectLine, identity)
    expected = {h.seq: h.hash for h in expect_heads}
    links: dict[str, LinkDigest] = {}
    try:
        for checked in walk(scanner, dirty, report.notes):
            _note_project_events(checked, links, expected, paths, report)
    except ChainBroken as exc:
        report.problems.append(Problem.of(exc))
        return links, False
    if scanner.seq < 0:
        report.problems.append(Problem(str(paths.events), 1, "project chain is empty"))
        return links, False
    report.project_head = Head(scanner.seq, scanner.head)
    report.events += scanner.seq + 1
    for seq in sorted(expected):
        report.problems.append(
            Problem(str(paths.events), scanner.seq + 2,
                    f"chain ends at seq {scanner.seq}, before the expected head {seq}: "
                    "events were cut off", f"{seq}:{expected[seq]}",
                    f"{scanner.seq}:{scanner.head}")
        )  # fmt: skip
    return links, True


def _note_project_events(
    checked: Checked[ProjectLine],
    links: dict[str, LinkDigest],
    expected: dict[int, str],
    paths: ProjectPaths,
    report: VerifyReport,
) -> None:
    records = checked.records
    first = records[0].seq
    for seq in [s for s in expected if first <= s < first + len(records)]:
        want, head = expected.pop(seq), records[seq - first].event_hash
        if want != head:
            report.problems.append(
                Problem(str(paths.events), seq + 1, "event differs from the expected head: "
                        "the chain was rewritten", want, head)
            )  # fmt: skip
    if first == 0:
        created = records[0].body
        if type(created) is not ProjectCreated:
            raise ChainBroken(paths.events, 1, "project chain does not start with project_created")
        if created.format != FORMAT_VERSION:
            raise ChainBroken(paths.events, 1, "project_created names another format",
                              str(FORMAT_VERSION), str(created.format))  # fmt: skip
    touched: list[LinkDigest] = []
    for record in records:
        body = record.body
        if type(body) is not Links:
            if type(body) is ProjectCreated and record.seq:
                raise ChainBroken(paths.events, record.seq + 1, "project_created after seq 0")
            continue
        seq = record.seq
        for event in body.events:
            link = links.get(event.task_id)
            if link is None or event.task_seq != link.count:
                link = _check_link(links, event, seq, paths)
            if not link.keys:
                touched.append(link)
            link.count += 1
            # `link_key`, inline: a call per link costs verify time.
            link.keys.append(f"{event.task_event_hash}{event.task_event_type}\n{seq}\n")
    for link in touched:
        link.digest.update("".join(link.keys).encode())
        link.keys.clear()


def _check_link(
    links: dict[str, LinkDigest], body: Link, seq: int, paths: ProjectPaths
) -> LinkDigest:
    """The links of a task seen for the first time, or the problem with this link."""
    task_id = body.task_id
    link = links.get(task_id)
    if link is None:
        if not is_safe_id(task_id):
            raise ChainBroken(paths.events, seq + 1, f"links to an invalid task id {task_id!r}")
        link = links[task_id] = LinkDigest(first_line=seq + 1)
    if body.task_seq != link.count:
        raise ChainBroken(paths.events, seq + 1, f"link to task {task_id!r} out of "
                          "order", str(link.count), str(body.task_seq))  # fmt: skip
    return link


def _merge_task(
    paths: ProjectPaths,
    checked: TaskChecked,
    links: LinkDigest | None,
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
    if not links_agree(checked, links):
        report.problems.append(_locate(paths, checked.task_id, checked.linked))


def read_head(reader: ChainReader[ProjectRecord] | ChainReader[TaskRecord]) -> Head:
    """A chain's head from its last complete line, read-only (a torn end is ignored: it was
    never acknowledged). Raises `ChainBroken` if that line does not check out."""
    tail = read_tail(reader.path)
    if not tail.last:
        raise ChainBroken(reader.path, 1, "chain is empty")
    record = reader.resume(tail.last, tail.last_at)
    return Head(record.seq, record.event_hash)


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
        mine = (record.seq, record.event_hash, TAGS[type(record.body)], record.project_seq)
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
    "Head",
    "Problem",
    "VerifyReport",
    "read_head",
    "verify_project",
]
