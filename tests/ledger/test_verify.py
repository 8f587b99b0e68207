"""Verify finds every kind of tampering, naming the file and the line."""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import msgspec
import pytest

from ledger.chain import seal
from ledger.store import ProjectPaths
from ledger.verify import Head, VerifyReport, verify_project
from protocol.ledger_events import GENESIS_HASH, ProjectRecord, TaskRecord
from tests.ledger.conftest import attempt, crash_image

Line = bytes


def read_lines(path: Path) -> list[Line]:
    return path.read_bytes().splitlines(keepends=True)


def write_lines(path: Path, lines: list[Line]) -> None:
    path.write_bytes(b"".join(lines))


def rechain(lines: list[Line], type_: type[ProjectRecord] | type[TaskRecord]) -> list[Line]:
    """Recompute seq, prev_event_hash and event_hash of every line, as a forger would."""
    decoder = msgspec.json.Decoder(type_)
    out, head = [], GENESIS_HASH
    for seq, line in enumerate(lines):
        record = msgspec.structs.replace(decoder.decode(line), seq=seq, prev_event_hash=head)
        sealed, new_line = seal(record, decoder)
        head = sealed.event_hash
        out.append(new_line)
    return out


def only_problem(report: VerifyReport) -> tuple[str, int, str]:
    assert len(report.problems) == 1, report.problems
    p = report.problems[0]
    return p.path, p.line, p.reason


def test_untouched_project_verifies(project: ProjectPaths) -> None:
    report = verify_project(project)
    assert report.ok, report.problems
    assert report.project_head is not None
    assert set(report.task_heads) == {"T-0", "T-1", "T-2"}
    assert report.events == report.project_head.seq + 1 + sum(
        h.seq + 1 for h in report.task_heads.values()
    )


def format_snippet() -> dict[str, Any]:
    """The standard-library checker docs/FORMAT.md gives, run as written there."""
    doc = (Path(__file__).parents[2] / "docs" / "FORMAT.md").read_text()
    code = doc.split("```python\n", 1)[1].split("```", 1)[0]
    assert "def check_chain" in code
    namespace: dict[str, Any] = {}
    exec(compile(code, "docs/FORMAT.md", "exec"), namespace)
    return namespace


def test_lines_verify_with_the_standard_library_alone(project: ProjectPaths) -> None:
    """What docs/FORMAT.md promises: json + sha256 suffice, with the snippet it gives."""
    snippet = format_snippet()
    for path in [project.events, *sorted(project.tasks.glob("*/events.jsonl"))]:
        snippet["check_chain"](path)
    line = read_lines(project.task_events("T-0"))[1]
    record = snippet["check_line"](line)
    assert record["task_id"] == "T-0"
    for bad in (
        line.replace(b'"seq":1', b'"seq":1.0'),  # a float
        line.replace(b'"seq":1', b'"seq":1,"seq":1'),  # a duplicate member
        line.replace(b'"seq":1', b'"seq": 1'),  # whitespace
        line.replace(b'"body":{', b'"body":{"x":9007199254740992,'),  # beyond 2^53 - 1
        line[:-1],  # no newline
        line.replace(record["event_hash"].encode(), b"0" * 64),  # another hash
    ):
        with pytest.raises(ValueError):
            snippet["check_line"](bad)


@pytest.mark.parametrize("which", ["project", "task"])
def test_flipped_byte_is_found_at_its_line(project: ProjectPaths, which: str) -> None:
    path = project.events if which == "project" else project.task_events("T-1")
    lines = read_lines(path)
    lines[3] = lines[3][:20] + bytes([lines[3][20] ^ 0x01]) + lines[3][21:]
    write_lines(path, lines)
    assert only_problem(verify_project(project))[:2] == (str(path), 4)


def test_changed_value_with_a_valid_shape_breaks_the_hash(project: ProjectPaths) -> None:
    path = project.task_events("T-0")
    lines = read_lines(path)
    lines[1] = lines[1].replace(b'"result":"PASS"', b'"result":"FAIL"')
    write_lines(path, lines)
    _, line, reason = only_problem(verify_project(project))
    assert line == 2 and "event_hash does not match" in reason


@pytest.mark.parametrize(
    ("edit", "line"),
    [
        (lambda ls: ls[:2] + ls[3:], 3),  # delete
        (lambda ls: [*ls[:3], ls[2], *ls[3:]], 4),  # duplicate
        (lambda ls: [*ls[:2], ls[3], ls[2], *ls[4:]], 3),  # reorder
        (lambda ls: [*ls[:2], ls[1], *ls[2:]], 3),  # insert (a copy of an earlier line)
    ],
    ids=["delete", "duplicate", "reorder", "insert"],
)
@pytest.mark.parametrize("which", ["project", "task"])
def test_structural_edits_are_found_at_their_line(
    project: ProjectPaths, edit: object, line: int, which: str
) -> None:
    path = project.events if which == "project" else project.task_events("T-2")
    write_lines(path, edit(read_lines(path)))  # type: ignore[operator]
    assert only_problem(verify_project(project))[:2] == (str(path), line)


def test_task_chain_truncated_by_whole_lines(project: ProjectPaths) -> None:
    path = project.task_events("T-1")
    write_lines(path, read_lines(path)[:3])
    path_s, line, reason = only_problem(verify_project(project))
    assert (path_s, line) == (str(path), 4) and "task chain ends here" in reason


def test_project_chain_truncated_is_found(project: ProjectPaths) -> None:
    head = verify_project(project).project_head
    assert head is not None
    write_lines(project.events, read_lines(project.events)[:-3])
    report = verify_project(project)
    assert not report.ok
    # The task events linked from the cut lines are now unlinked: named at their own lines.
    assert any("not linked" in p.reason for p in report.problems)
    cut = verify_project(project, expect_heads=(head,))
    assert any(p.path == str(project.events) and "cut off" in p.reason for p in cut.problems)


def test_task_chain_edited_alone_and_rehashed_is_found_by_the_project_links(
    project: ProjectPaths,
) -> None:
    path = project.task_events("T-0")
    lines = read_lines(path)
    lines[2] = lines[2].replace(b'"worker_backend":"mock"', b'"worker_backend":"evil"')
    write_lines(path, rechain(lines, TaskRecord))
    path_s, line, reason = only_problem(verify_project(project))
    assert (path_s, line) == (str(path), 3)
    assert "differs from its link" in reason


def test_rewritten_tail_with_recomputed_chains_needs_the_expected_head(
    project: ProjectPaths,
) -> None:
    before = verify_project(project).project_head
    assert before is not None
    lines = read_lines(project.events)
    # A forger rewrites a run-level event and re-hashes everything after it.
    lines[1] = lines[1].replace(b'"campaign_id":"c1"', b'"campaign_id":"c2"')
    write_lines(project.events, rechain(lines, ProjectRecord))
    # Task events carry no project hashes, so this forgery is internally consistent...
    assert verify_project(project).ok
    # ...and only a head kept elsewhere exposes it, at the line of that head.
    report = verify_project(project, expect_heads=(before,))
    path_s, line, reason = only_problem(report)
    assert (path_s, line) == (str(project.events), before.seq + 1)
    assert "rewritten" in reason


def test_a_head_mismatch_does_not_stop_the_other_checks(project: ProjectPaths) -> None:
    """A chain that differs from a kept head is not broken: the task chains are still checked
    against its links, and their damage reported beside the mismatch."""
    before = verify_project(project).project_head
    assert before is not None
    lines = read_lines(project.events)
    lines[1] = lines[1].replace(b'"campaign_id":"c1"', b'"campaign_id":"c2"')
    write_lines(project.events, rechain(lines, ProjectRecord))
    task = project.task_events("T-1")
    task_lines = read_lines(task)
    task_lines[1] = task_lines[1].replace(b'"r":0', b'"r":9', 1)
    write_lines(task, task_lines)
    report = verify_project(project, expect_heads=(before,))
    assert [(p.path, p.line) for p in report.problems] == [
        (str(project.events), before.seq + 1),
        (str(task), 2),
    ]
    assert not any("cross-checked" in note for note in report.notes)


@pytest.mark.parametrize(
    ("edit", "line", "reason"),
    [
        (lambda lines: lines[1:], 1, "does not start with project_created"),
        (lambda lines: [*lines, lines[0]], None, "project_created after seq 0"),
        (lambda lines: [lines[0].replace(b'"format":2', b'"format":3'), *lines[1:]], 1,
         "project_created names another format"),
    ],
)  # fmt: skip
def test_project_created_is_the_first_event_and_only_there(
    project: ProjectPaths, edit: Callable[[list[Line]], list[Line]], line: int | None, reason: str
) -> None:
    """Rehashed as a forger would, so that only this rule can find it."""
    lines = edit(read_lines(project.events))
    write_lines(project.events, rechain(lines, ProjectRecord))
    path_s, at, found = only_problem(verify_project(project))
    assert (path_s, at) == (str(project.events), line or len(lines))
    assert reason in found


def test_expect_head_parse_rejects_garbage() -> None:
    from ledger.errors import LedgerError

    assert Head.parse("3:" + "a" * 64) == Head(3, "a" * 64)
    for bad in ["3", "x:" + "a" * 64, "3:abc", "3:" + "A" * 64]:
        with pytest.raises(LedgerError):
            Head.parse(bad)


def test_torn_tail_is_damage_after_clean_shutdown_and_a_note_after_a_crash(
    project: ProjectPaths, tmp_path: Path
) -> None:
    with project.task_events("T-1").open("ab") as f:
        f.write(b'{"attempt_open":false,"bo')
    assert not project.journal.exists() or project.journal.stat().st_size == 0
    report = verify_project(project)
    assert only_problem(report)[:2] == (str(project.task_events("T-1")), 6)
    # A crash image: the journal holds the last batch, the chain file ends in a torn piece.
    project.task_events("T-1").write_bytes(b"".join(read_lines(project.task_events("T-1"))[:5]))
    image = crash_image(project.root, tmp_path / "image", [("T-1", attempt(2, 0))])
    # The kill landed in the task line (so its link, written after it, never was).
    lines = read_lines(image.task_events("T-1"))
    write_lines(image.task_events("T-1"), [*lines[:-1], lines[-1][:40]])
    write_lines(image.events, read_lines(image.events)[:-1])
    report = verify_project(image)
    assert report.ok and any("unacknowledged" in n for n in report.notes), report


def test_task_without_links_and_links_without_task(project: ProjectPaths) -> None:
    (project.task_events("T-2")).rename(project.tasks / "T-2" / "moved.jsonl")
    report = verify_project(project)
    assert any("T-2" in p.reason or "T-2" in p.path for p in report.problems)


def test_invalid_utf8_is_a_problem_at_its_line_not_a_crash(project: ProjectPaths) -> None:
    path = project.task_events("T-1")
    lines = read_lines(path)
    lines[2] = lines[2].replace(b'"attempt_open"', b'"\xe2ttempt_open"', 1)
    write_lines(path, lines)
    path_s, line, reason = only_problem(verify_project(project))
    assert (path_s, line) == (str(path), 3) and "not a valid record" in reason


def test_timestamp_with_digits_of_another_script_is_found(project: ProjectPaths) -> None:
    path = project.task_events("T-0")
    lines = read_lines(path)
    record = msgspec.json.decode(lines[1], type=TaskRecord)
    odd = record.ts[:3] + "\u0663" + record.ts[4:]  # ARABIC-INDIC DIGIT THREE: still 27 chars
    lines[1] = lines[1].replace(record.ts.encode(), odd.encode())
    write_lines(path, rechain(lines, TaskRecord))
    path_s, line, reason = only_problem(verify_project(project))
    assert (path_s, line) == (str(path), 2) and "RFC 3339" in reason


def test_link_to_an_unsafe_task_id_is_found_at_its_line(project: ProjectPaths) -> None:
    lines = read_lines(project.events)
    at = next(i for i, ln in enumerate(lines) if b'"task_id":"T-1"' in ln)
    lines[at] = lines[at].replace(b'"task_id":"T-1"', b'"task_id":"../T-1"')
    # A forger's tools need not refuse what our types do: re-hash with json and sha256 alone.
    head = GENESIS_HASH
    for i, line in enumerate(lines):
        obj = json.loads(line)
        obj.pop("event_hash")
        obj["prev_event_hash"] = head
        text = json.dumps(obj, sort_keys=True, separators=(",", ":"), ensure_ascii=False)
        obj["event_hash"] = head = hashlib.sha256(text.encode()).hexdigest()
        lines[i] = json.dumps(obj, sort_keys=True, separators=(",", ":")).encode() + b"\n"
    write_lines(project.events, lines)
    report = verify_project(project)
    assert report.problems[0].path == str(project.events)
    assert report.problems[0].line == at + 1


@pytest.mark.parametrize("extra", [b"\n", b" \n", b"{}\n"], ids=["empty", "blank", "object"])
def test_a_stray_line_is_found_at_its_line(project: ProjectPaths, extra: bytes) -> None:
    path = project.task_events("T-2")
    lines = read_lines(path)
    write_lines(path, [*lines[:2], extra, *lines[2:]])
    assert only_problem(verify_project(project))[:2] == (str(path), 3)


def test_a_task_named_twice_is_checked_once(project: ProjectPaths) -> None:
    report = verify_project(project, task_ids=("T-1", "T-1"))
    assert report.ok and set(report.task_heads) == {"T-1"}
