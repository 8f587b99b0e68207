"""Hash linking: sealing a record into its line, and checking a line against its chain.

A line is the canonical form of the whole record, `event_hash` included, plus ``\\n``. The hash
is over the canonical form *without* `event_hash`. Both chains use the same rules; the genesis
event's `prev_event_hash` is 64 zeros.
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Callable
from pathlib import Path
from typing import Generic, TypeVar

import msgspec

from protocol import AttemptPointer
from protocol.ledger_events import GENESIS_HASH, TIMESTAMP_PATTERN, ProjectRecord, TaskRecord

from .canonical import canonical, sha256_hex
from .errors import ChainBroken, InvalidEvent
from .store import read_tail

R = TypeVar("R", ProjectRecord, TaskRecord)

HASH_MEMBER = b',"event_hash":"'
# `,"event_hash":"` + 64 hex digits + closing quote.
_HASH_MEMBER_LEN = len(HASH_MEMBER) + 64 + 1
# ASCII digits only: `\d` alone would also take other scripts' digits.
_TS = re.compile(TIMESTAMP_PATTERN, re.ASCII)
# The member that follows `event_hash` in each record's canonical form.
_POINTER_MEMBER = b',"pointer":'
_PREV_MEMBER = b',"prev_event_hash":"'
_encode = msgspec.json.Encoder(order="sorted").encode  # canonical(), without its wrapper


def seal(record: R, decoder: msgspec.json.Decoder[R] | None) -> tuple[R, bytes]:
    """The record with its `event_hash` filled in, and its line (canonical bytes + newline).

    With a `decoder` (the record's strict type), the unsealed bytes are decoded once first:
    Structs built in Python skip msgspec's checks, and no line verify would refuse may be
    written (a negative seq, an unsafe id, a lone surrogate). Raises `InvalidEvent`.

    The plain route, for the genesis line and as the reference the writer's `seal_*_line`
    templates are tested against.
    """
    if record.event_hash:
        record = msgspec.structs.replace(record, event_hash="")
    unsealed = canonical(record)  # an empty `event_hash` is omitted
    if decoder is not None:
        try:
            decoder.decode(unsealed)
        except (msgspec.DecodeError, UnicodeDecodeError) as exc:
            raise InvalidEvent(f"invalid event: {exc}") from None
    digest, line = _insert_hash(unsealed, isinstance(record, TaskRecord))
    return msgspec.structs.replace(record, event_hash=digest), line


def seal_task_line(
    body: bytes,
    attempt_open: bool,
    closed: bool,
    pointer: AttemptPointer | None,
    prev_event_hash: bytes,
    project_id: bytes,
    project_seq: int,
    seq: int,
    task_id: bytes,
    ts: bytes,
) -> tuple[str, bytes]:
    """The `event_hash` and the line of a task record, written straight from its members.

    The writer's hot path: exactly `canonical(TaskRecord(...))` (tests/ledger/test_lines.py
    checks it) without building and encoding the record, because every member but `body` is
    of a kind whose JSON needs no escaping: safe ids, hex hashes, the fixed timestamp (all
    passed as ASCII bytes), integers and booleans the writer made or a strict decode produced.
    `body` is the canonical bytes of a body that was decoded strictly.
    """
    head = _OPEN if attempt_open else _NOT_OPEN
    middle = _CLOSED if closed else _NOT_CLOSED
    where = b"null" if pointer is None else b'{"r":%d,"s":%d}' % (pointer.r, pointer.s)
    tail = _TASK_TAIL % (where, prev_event_hash, project_id, project_seq, seq, task_id, ts)
    h = hashlib.sha256(head)
    h.update(body)
    h.update(middle)
    h.update(tail)
    digest = h.hexdigest()
    line = b"".join((head, body, middle, HASH_MEMBER, digest.encode(), b'"', tail, b"\n"))
    return digest, line


def seal_project_line(
    body: bytes, prev_event_hash: bytes, project_id: bytes, seq: int, ts: bytes
) -> tuple[str, bytes]:
    """`seal_task_line` for a project record."""
    return _join_sealed(b"".join((b'{"body":', body, b',"chain":"project"')),
                        _PROJECT_TAIL % (prev_event_hash, project_id, seq, ts))  # fmt: skip


def link_json(task_id: bytes, task_seq: int, task_event_hash: str, task_event_type: bytes) -> bytes:
    """One member of a `task_events` line's `events`, canonical (the same safe kinds of
    value as in `seal_task_line`; an event type is a tag of ours)."""
    return _LINK % (task_event_hash.encode(), task_event_type, task_id, task_seq)


def seal_links_line(
    links: list[bytes], prev_event_hash: bytes, project_id: bytes, seq: int, ts: bytes
) -> tuple[str, bytes]:
    """`seal_project_line` for a `task_events` line of `link_json` members, in order."""
    head = b"".join((_LINKS_HEAD, b",".join(links), _LINKS_END))
    return _join_sealed(head, _PROJECT_TAIL % (prev_event_hash, project_id, seq, ts))


_OPEN = b'{"attempt_open":true,"body":'
_NOT_OPEN = b'{"attempt_open":false,"body":'
_CLOSED = b',"chain":"task","closed":true'
_NOT_CLOSED = b',"chain":"task","closed":false'
_TASK_TAIL = (
    b',"pointer":%s,"prev_event_hash":"%s","project_id":"%s","project_seq":%d,"seq":%d,'
    b'"task_id":"%s","ts":"%s"}'
)
_PROJECT_TAIL = b',"prev_event_hash":"%s","project_id":"%s","seq":%d,"ts":"%s"}'
_LINK = b'{"task_event_hash":"%s","task_event_type":"%s","task_id":"%s","task_seq":%d}'
_LINKS_HEAD = b'{"body":{"events":['
_LINKS_END = b'],"type":"task_events"},"chain":"project"'


def _join_sealed(head: bytes, tail: bytes) -> tuple[str, bytes]:
    """The record is `head + tail`; its line has `event_hash` between them."""
    h = hashlib.sha256(head)
    h.update(tail)
    digest = h.hexdigest()
    return digest, b"".join((head, HASH_MEMBER, digest.encode(), b'"', tail, b"\n"))


def _insert_hash(unsealed: bytes, task: bool) -> tuple[str, bytes]:
    digest = sha256_hex(unsealed)
    # `event_hash` sorts just before `pointer` (task records) or `prev_event_hash` (project
    # records). The last occurrence of that member is the top-level one: every top-level member
    # after it (hashes, ids, integers, the pointer, the timestamp) is from a character set that
    # cannot spell it, and inside the body a string escapes its quotes.
    at = unsealed.rfind(_POINTER_MEMBER if task else _PREV_MEMBER)
    line = b"".join((unsealed[:at], HASH_MEMBER, digest.encode(), b'"', unsealed[at:], b"\n"))
    return digest, line


class ChainReader(Generic[R]):
    """Checks the lines of one chain file in order, in constant memory.

    `check` raises `ChainBroken` with the file and 1-based line number for the first problem:
    undecodable or not canonical, wrong seq, wrong `prev_event_hash`, wrong `event_hash`, a
    record from another chain.
    """

    def __init__(self, path: Path, type_: type[R], identity: dict[str, str]) -> None:
        self.path = path
        self.decoder: msgspec.json.Decoder[R] = msgspec.json.Decoder(type_)
        self._decode: Callable[[bytes], R] = self.decoder.decode
        self.identity = identity
        self._identity = tuple(identity.items())
        self.seq = -1
        self.head = GENESIS_HASH

    def resume(self, line: bytes, at: int | None = None) -> R:
        """Check `line` as a chain's last line, without the lines before it (O(1) open). `at`,
        where the line starts in the file, lets an undecodable line be numbered (from the
        line before it) instead of reported as line 0."""
        try:
            peek = self.decoder.decode(line.rstrip(b"\n"))
        except (msgspec.DecodeError, UnicodeDecodeError) as exc:
            lineno = 0 if at is None else self.line_after(read_tail(self.path, end=at).last)
            reason = f"last line is not a valid record: {exc}"
            raise ChainBroken(self.path, lineno, reason) from None
        self.seq = peek.seq - 1
        self.head = peek.prev_event_hash
        return self.check(line)

    def line_after(self, line: bytes) -> int:
        """The 1-based number of the line after `line` (1 when there is none, 0 when `line`
        does not decode)."""
        if not line:
            return 1
        try:
            return int(self.decoder.decode(line.rstrip(b"\n")).seq) + 2
        except (msgspec.DecodeError, UnicodeDecodeError):
            return 0

    def check(self, line: bytes) -> R:
        # The hot loop of verify: kept flat on purpose.
        lineno = self.seq + 2
        body = line[:-1] if line[-1:] == b"\n" else line
        try:
            record = self._decode(body)
        except (msgspec.DecodeError, UnicodeDecodeError) as exc:
            raise ChainBroken(self.path, lineno, f"not a valid record: {exc}") from None
        try:
            again = _encode(record)
        except UnicodeEncodeError as exc:
            raise ChainBroken(
                self.path, lineno, f"string that is not valid Unicode: {exc}"
            ) from None
        if again != body:
            raise ChainBroken(self.path, lineno, "line is not in canonical form (RFC 8785)")
        if record.seq != self.seq + 1:
            raise ChainBroken(
                self.path, lineno, "seq out of order", str(self.seq + 1), str(record.seq)
            )
        if record.prev_event_hash != self.head:
            raise ChainBroken(
                self.path, lineno, "prev_event_hash does not match the previous event",
                self.head, record.prev_event_hash,
            )  # fmt: skip
        at = body.rfind(HASH_MEMBER)
        h = hashlib.sha256(body[:at])
        h.update(body[at + _HASH_MEMBER_LEN :])
        digest = h.hexdigest()
        if record.event_hash != digest:
            raise ChainBroken(self.path, lineno, "event_hash does not match the event",
                              digest, record.event_hash)  # fmt: skip
        if not _TS.match(record.ts):
            raise ChainBroken(self.path, lineno, f"ts {record.ts!r} is not RFC 3339 UTC with µs")
        for name, want in self._identity:
            got = getattr(record, name)
            if got != want:
                raise ChainBroken(self.path, lineno, f"{name} is not this chain's", want, got)
        self.seq = record.seq
        self.head = record.event_hash
        return record
