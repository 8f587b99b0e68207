"""The fast paths write and check exactly what the slow, obviously right ones do.

The writer seals lines from templates (ledger/chain.py `seal_*_line`), verify decodes them as
`TaskLine`/`ProjectLine` and checks them in blocks (ledger/scan.py). Each is compared here with
the plain route: encode the protocol record, check a line at a time, or JSON and SHA-256 from
the standard library as docs/FORMAT.md describes.
"""

from __future__ import annotations

import hashlib
import json
import re
import shutil
import typing
from datetime import datetime
from pathlib import Path
from typing import Any

import msgspec
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from ledger.canonical import canonical
from ledger.chain import (
    ChainReader,
    link_json,
    seal,
    seal_links_line,
    seal_project_line,
    seal_task_line,
)
from ledger.envelopes import Link, Links, ProjectLine, TaskLine
from ledger.errors import ChainBroken
from ledger.scan import ChainScanner, blocks
from ledger.store import ProjectPaths
from protocol import AttemptPointer, Verdict
from protocol.ledger_events import (
    GENESIS_HASH,
    MAX_SAFE_INT,
    TASK_EVENT_TYPES,
    Attempt,
    ExecutionStarted,
    ProjectRecord,
    TaskClosed,
    TaskEventLink,
    TaskEventsLinked,
    TaskEventType,
    TaskRecord,
)
from tests.ledger.conftest import PROJECT, populate

safe_ids = st.from_regex(r"\A[A-Za-z0-9][A-Za-z0-9_-]{0,30}\Z")
hashes = st.binary(min_size=32, max_size=32).map(bytes.hex)
counts = st.integers(min_value=0, max_value=MAX_SAFE_INT)
timestamps = st.datetimes(min_value=datetime(1000, 1, 1)).map(
    lambda d: d.strftime("%Y-%m-%dT%H:%M:%S.%fZ")
)
text = st.text(st.characters(exclude_categories=["Cs"]), max_size=40)
bodies = st.one_of(
    st.builds(
        Attempt,
        r=counts,
        s=counts,
        result=st.sampled_from(Verdict),
        reason_code=st.just("X_1"),
        code_content=text,
        executed_files=st.lists(text, max_size=3),
        test_results=text,
    ),
    st.builds(TaskClosed, final_status=st.just("accepted"), summary=text),
)


def _decode(data: bytes, type_: type[Any]) -> Any:
    return msgspec.json.decode(data, type=type_)


@given(
    body=bodies, task_id=safe_ids, project_id=safe_ids, seq=counts, project_seq=counts,
    ts=timestamps, prev=hashes, pointer=st.none() | st.builds(AttemptPointer, counts, counts),
    attempt_open=st.booleans(), closed=st.booleans(),
)  # fmt: skip
def test_task_line_template_is_the_sealed_record(
    body: Any, task_id: str, project_id: str, seq: int, project_seq: int, ts: str, prev: str,
    pointer: AttemptPointer | None, attempt_open: bool, closed: bool,
) -> None:  # fmt: skip
    record = TaskRecord(
        project_id=project_id, task_id=task_id, seq=seq, ts=ts, prev_event_hash=prev,
        project_seq=project_seq, pointer=pointer, attempt_open=attempt_open, closed=closed,
        body=body,
    )  # fmt: skip
    sealed, line = seal(record, msgspec.json.Decoder(TaskRecord))
    assert seal_task_line(
        canonical(body), attempt_open, closed, pointer, prev.encode(), project_id.encode(),
        project_seq, seq, task_id.encode(), ts.encode(),
    ) == (sealed.event_hash, line)  # fmt: skip


links = st.lists(
    st.builds(
        TaskEventLink, task_id=safe_ids, task_seq=counts, task_event_hash=hashes,
        task_event_type=st.sampled_from(["attempt", "attempt_started", "review", "task_closed"]),
    ),
    min_size=1, max_size=5,
)  # fmt: skip


@given(events=links, project_id=safe_ids, seq=counts, ts=timestamps, prev=hashes, detail=text)
def test_project_line_templates_are_the_sealed_records(
    events: list[TaskEventLink], project_id: str, seq: int, ts: str, prev: str, detail: str
) -> None:
    envelope = {"project_id": project_id, "seq": seq, "ts": ts, "prev_event_hash": prev}
    body = TaskEventsLinked(events)
    sealed, line = seal(ProjectRecord(body=body, **envelope), None)  # type: ignore[arg-type]
    members = [
        link_json(e.task_id.encode(), e.task_seq, e.task_event_hash, e.task_event_type.encode())
        for e in events
    ]
    got = seal_links_line(members, prev.encode(), project_id.encode(), seq, ts.encode())
    assert got == (sealed.event_hash, line)
    event = ExecutionStarted(detail=detail)
    sealed, line = seal(ProjectRecord(body=event, **envelope), None)  # type: ignore[arg-type]
    got = seal_project_line(canonical(event), prev.encode(), project_id.encode(), seq, ts.encode())
    assert got == (sealed.event_hash, line)


def _fields(type_: type[Any]) -> set[str]:
    return {f.encode_name for f in msgspec.structs.fields(type_)}


def test_task_event_type_names_every_task_event_and_nothing_else() -> None:
    tags = {t.__struct_config__.tag for t in TASK_EVENT_TYPES}
    assert set(typing.get_args(TaskEventType)) == tags


def test_line_types_have_the_members_of_the_records() -> None:
    assert _fields(TaskLine) == _fields(TaskRecord) | {"chain"}
    assert _fields(ProjectLine) == _fields(ProjectRecord) | {"chain"}
    assert _fields(Link) == _fields(TaskEventLink)
    assert _fields(Links) == _fields(TaskEventsLinked)


@pytest.fixture(scope="module")
def ledger_dir(tmp_path_factory: pytest.TempPathFactory) -> ProjectPaths:
    return populate(tmp_path_factory.mktemp("lines"), tasks=4)


def test_line_types_encode_every_line_back_to_itself(ledger_dir: ProjectPaths) -> None:
    encode = msgspec.json.Encoder(order="sorted").encode
    for path, type_ in [(ledger_dir.events, ProjectLine)] + [
        (p, TaskLine) for p in sorted(ledger_dir.tasks.glob("*/events.jsonl"))
    ]:
        for line in path.read_bytes().splitlines():
            assert encode(_decode(line, type_)) == line


def _slow(path: Path, identity: dict[str, str], type_: Any) -> tuple[int, str, int | None]:
    """(last good seq, head, first bad line) a line at a time."""
    reader = ChainReader(path, type_, identity)
    data = path.read_bytes()
    for number, line in enumerate(data.split(b"\n")[:-1] if data.endswith(b"\n") else [], 1):
        try:
            reader.check(line)
        except ChainBroken as exc:
            assert exc.line == number
            return reader.seq, reader.head, number
    return reader.seq, reader.head, None


def _fast(
    path: Path, identity: dict[str, str], type_: Any, size: int
) -> tuple[int, str, int | None]:
    line_type = TaskLine if type_ is TaskRecord else ProjectLine
    scanner: ChainScanner[Any] = ChainScanner(path, type_, line_type, identity)
    seen = scanner.seq
    for block, whole in blocks(path, size):
        assert whole
        checked = scanner.check(block)
        assert [r.seq for r in checked.records] == list(
            range(seen + 1, seen + 1 + len(checked.records))
        )
        seen = scanner.seq
        if checked.error is not None:
            return scanner.seq, scanner.head, checked.error.line
    return scanner.seq, scanner.head, None


edits = st.one_of(
    st.tuples(st.just("flip"), st.integers(0, 10**6), st.integers(1, 255)),
    st.tuples(st.just("drop"), st.integers(0, 10**6), st.just(0)),
    st.tuples(st.just("swap"), st.integers(0, 10**6), st.just(0)),
)


@settings(
    max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(
    edit=edits,
    which=st.sampled_from(["project", "T-1"]),
    size=st.sampled_from([256, 4096, 1 << 17]),
)
def test_block_check_finds_what_the_line_check_finds(
    ledger_dir: ProjectPaths, tmp_path: Path, edit: tuple[str, int, int], which: str, size: int
) -> None:
    source = ledger_dir.events if which == "project" else ledger_dir.task_events(which)
    identity = {"project_id": PROJECT} | ({} if which == "project" else {"task_id": which})
    type_ = ProjectRecord if which == "project" else TaskRecord
    lines = source.read_bytes().splitlines(keepends=True)
    kind, at, value = edit
    if kind == "flip":
        data = bytearray(b"".join(lines))
        at %= len(data)
        if data[at] == 0x0A or data[at] ^ value == 0x0A:
            return  # a newline moved: a different number of lines, not a line edit
        data[at] ^= value
        mutated = bytes(data)
    elif kind == "drop":
        del lines[at % len(lines)]
        mutated = b"".join(lines)
    else:
        i = at % (len(lines) - 1)
        lines[i], lines[i + 1] = lines[i + 1], lines[i]
        mutated = b"".join(lines)
    path = tmp_path / f"{which}-{kind}-{at}-{value}-{size}.jsonl"
    path.write_bytes(mutated)
    assert _fast(path, identity, type_, size) == _slow(path, identity, type_)


def _reference_accepts(line: bytes) -> bool:
    """docs/FORMAT.md's standard-library check of one line."""
    try:
        obj = json.loads(line)
        text = json.dumps(obj, sort_keys=True, separators=(",", ":"), ensure_ascii=False)
        claimed = obj.pop("event_hash")
        unsealed = json.dumps(obj, sort_keys=True, separators=(",", ":"), ensure_ascii=False)
    except (ValueError, KeyError, AttributeError):
        return False
    digest = hashlib.sha256(unsealed.encode()).hexdigest()
    return text.encode() == line and digest == claimed


def _forge(line: bytes, *edits: tuple[bytes, bytes]) -> bytes:
    """Make `edits` (replace the first `old` by `new`, in turn) and fix `event_hash` over the
    bytes as they now stand, as a forger who does not canonicalize would."""
    edited = line
    for old, new in edits:
        assert old in edited, old
        edited = edited.replace(old, new, 1)
    at = edited.rindex(b',"event_hash":"')
    digest = hashlib.sha256(edited[:at] + edited[at + 80 :]).hexdigest().encode()
    return edited[: at + 15] + digest + edited[at + 79 :]


def _rehash(line: bytes) -> bytes:
    """A consistent forgery: change the record, then seal it properly."""
    record = _decode(line, TaskRecord)
    return seal(record, msgspec.json.Decoder(TaskRecord))[1].rstrip(b"\n")


FORGERIES = {
    "members out of order": lambda ln: _forge(
        ln, (b'{"attempt_open":false,', b"{"), (b',"closed":', b',"attempt_open":false,"closed":')
    ),
    "whitespace": lambda ln: _forge(ln, (b'"seq":', b'"seq": ')),
    "escaped letter": lambda ln: _forge(ln, (b'"result":"PASS"', b'"result":"\\u0050ASS"')),
    "escaped slash": lambda ln: _forge(ln, (b"tasks/x", b"tasks\\/x")),
    "uppercase hex escape": lambda ln: _forge(ln, (b"\\u001f", b"\\u001F")),
    "duplicate member": lambda ln: _forge(ln, (b',"seq":0', b',"seq":0,"seq":0')),
    "escaped non-ASCII": lambda ln: _forge(ln, ("\u00e9".encode(), b"\\u00e9")),
    "leading zero": lambda ln: _forge(ln, (b'"project_seq":1', b'"project_seq":01')),
    "consistent rehash": lambda ln: _rehash(ln.replace(b'"next_action":""', b'"next_action":"x"')),
    "untouched": lambda ln: ln,
}


@pytest.mark.parametrize("name", sorted(FORGERIES))
def test_verify_agrees_with_the_standard_library_on_forged_lines(tmp_path: Path, name: str) -> None:
    from tests.ledger.conftest import attempt

    record = TaskRecord(
        project_id=PROJECT, task_id="x", seq=0, ts="2026-01-01T00:00:00.000000Z",
        prev_event_hash=GENESIS_HASH, project_seq=1, pointer=AttemptPointer(0, 0),
        attempt_open=False, closed=False,
        body=attempt(0, 0, code_content="\x1fé", executed_files=["tasks/x"]),
    )  # fmt: skip
    line = seal(record, msgspec.json.Decoder(TaskRecord))[1].rstrip(b"\n")
    assert _reference_accepts(line)
    forged = FORGERIES[name](line)
    path = tmp_path / "events.jsonl"
    path.write_bytes(forged + b"\n")
    identity = {"project_id": PROJECT, "task_id": "x"}
    ours = _fast(path, identity, TaskRecord, 1 << 17)[2] is None
    assert ours == (_slow(path, identity, TaskRecord)[2] is None)
    assert ours == _reference_accepts(forged), name


def test_a_line_longer_than_a_block_is_read_whole(tmp_path: Path) -> None:
    path = tmp_path / "f"
    path.write_bytes(b"a" * 1000 + b"\n" + b"b" * 10 + b"\n" + b"c" * 5)
    got = list(blocks(path, 64))
    assert [line for block, whole in got if whole for line in block.split(b"\n")] == [
        b"a" * 1000, b"b" * 10,
    ]  # fmt: skip
    assert got[-1] == (b"c" * 5, False)
    shutil.rmtree(tmp_path)
    assert list(blocks(path, 64)) == []


@given(st.text(st.sampled_from("0123456789-T:.Z \u0663x"), min_size=27, max_size=27))
def test_block_timestamp_check_is_the_timestamp_pattern(ts: str) -> None:
    from ledger.scan import _DIGITS_TO_ZERO, _TS_SHAPE
    from protocol.ledger_events import TIMESTAMP_PATTERN

    pattern = re.compile(TIMESTAMP_PATTERN, re.ASCII)
    assert (ts.translate(_DIGITS_TO_ZERO) == _TS_SHAPE) == bool(pattern.match(ts))
    real = "2026-11-25T06:35:19.123456Z"
    assert real.translate(_DIGITS_TO_ZERO) == _TS_SHAPE and pattern.match(real)
