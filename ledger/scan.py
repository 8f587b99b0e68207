"""Checking a chain file in blocks of lines, without Python work per line.

`ChainReader.check` (ledger/chain.py) checks one line at a time and says exactly what is wrong;
verify would spend most of its time in the Python between msgspec's and hashlib's C calls.
`ChainScanner` checks a block of lines (`BLOCK_BYTES`) at once with the same rules, as
whole-block operations that loop in C (`decode_lines`, `map`, joins and comparisons):

1. every line decodes strictly (`TaskLine` / `ProjectLine`: the protocol's body types);
2. the records encode back to exactly the block, line for line: every line is in RFC 8785
   form, checked exactly (members sorted, no duplicates, no whitespace, JCS string escapes and
   integers), and is one record;
3. so every line holds exactly one ``,"event_hash":"`` (the top-level member: strings escape
   their quotes, and no other member has that name); each line is hashed around it, and the
   hashes of the block, as one hex string, must equal the claimed ones, joined;
4. `seq` counts on, each `prev_event_hash` is the hash before it, every `ts` has the fixed
   format, every id is the chain's own.

Any failure sends the block to `ChainReader.check`, line by line, for the file, line and reason;
the lines before the bad one are returned as checked, so callers see them first exactly as they
would line by line (tests/ledger/test_lines.py checks that both find the same line).
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from itertools import repeat
from operator import add, attrgetter, getitem, methodcaller, ne
from pathlib import Path
from typing import Any, Generic, TypeVar, cast

import msgspec

from protocol import is_safe_id
from protocol.ledger_events import ProjectRecord, TaskRecord

from .chain import HASH_MEMBER, ChainReader
from .envelopes import ProjectLine, TaskLine
from .errors import ChainBroken

L = TypeVar("L", ProjectLine, TaskLine)

# Small enough that a block, its records and their encodings stay in the CPU's caches.
BLOCK_BYTES = 64 * 1024
_encode = msgspec.json.Encoder(order="sorted").encode
_sha256: Callable[[bytes], Any] = hashlib.sha256
_update: Callable[[Any, bytes], None] = type(hashlib.sha256()).update
_slice = cast("Callable[[bytes, slice], bytes]", getitem)
_digest = methodcaller("digest")
_find_hash = methodcaller("rfind", HASH_MEMBER)
_HASH_MEMBER_LEN = len(HASH_MEMBER) + 64 + 1  # the member, its 64 hex digits, the quote
_seq = attrgetter("seq")
_prev = attrgetter("prev_event_hash")
_event_hash = attrgetter("event_hash")
_ts = attrgetter("ts")
# A timestamp is `_TS_SHAPE` with each 0 an ASCII digit (and is 27 characters long: the decoder
# enforces that), so a block's worth is checked at once: map the digits to 0 and compare.
_DIGITS_TO_ZERO = str.maketrans("0123456789", "0" * 10)
_TS_SHAPE = "0000-00-00T00:00:00.000000Z"


@dataclass
class Checked(Generic[L]):
    """The outcome of one block: its checked records, in order, and the problem that stopped
    the check (the records are those before it), if any."""

    records: list[L]
    error: ChainBroken | None = None


class ChainScanner(Generic[L]):
    """Checks one chain file's lines in order, a block at a time, in constant memory."""

    def __init__(
        self,
        path: Path,
        record_type: type[ProjectRecord] | type[TaskRecord],
        line_type: type[L],
        identity: dict[str, str],
    ) -> None:
        self.path = path
        self.reader: ChainReader[Any] = ChainReader(path, record_type, identity)
        self._decode_lines: Callable[[bytes], list[L]] = msgspec.json.Decoder(
            line_type
        ).decode_lines
        # The plain-string ids of `TaskLine`/`ProjectLine` are only as safe as the chain's.
        self._fast = all(map(is_safe_id, identity.values()))
        self._identity = [(attrgetter(name), want) for name, want in identity.items()]

    @property
    def seq(self) -> int:
        return self.reader.seq

    @property
    def head(self) -> str:
        return self.reader.head

    def check(self, block: bytes) -> Checked[L]:
        """Check `block`: complete lines joined by ``\\n``, without the last one's newline."""
        checked = self._check_fast(block) if self._fast else None
        if checked is not None:
            self.reader.seq += len(checked.records)
            self.reader.head = checked.records[-1].event_hash
            return checked
        # Something is wrong (or the chain's ids need the strict types): find it line by line.
        seq, head = self.reader.seq, self.reader.head
        lines = block.split(b"\n")
        for index, line in enumerate(lines):
            try:
                self.reader.check(line)
            except ChainBroken as exc:
                self.reader.seq, self.reader.head = seq, head
                good = Checked[L]([])
                if index and self._fast:
                    good = self._check_fast(b"\n".join(lines[:index])) or good
                self.reader.seq += len(good.records)
                if good.records:
                    self.reader.head = good.records[-1].event_hash
                good.error = exc
                return good
        raise ChainBroken(
            self.path, seq + 2, "the block check and the line check disagree (a bug; please "
            "report it): this block was not verified",
        )  # fmt: skip

    def _check_fast(self, block: bytes) -> Checked[L] | None:
        """The block's records if every check passes, else None."""
        try:
            records = self._decode_lines(block)
            lines = list(map(_encode, records))
        except (msgspec.DecodeError, UnicodeError):
            return None
        if b"\n".join(lines) != block:  # not canonical, or not one record per line
            return None
        # Each line is canonical, so its one `,"event_hash":"` is the top-level member: hash
        # what is before and after it. The hashes are compared all at once, as one string.
        at = list(map(_find_hash, lines))
        hashes = list(map(_sha256, map(_slice, lines, map(slice, at))))
        after = map(slice, map(add, at, repeat(_HASH_MEMBER_LEN)), repeat(None))
        for _ in map(_update, hashes, map(_slice, lines, after)):
            pass
        claimed = "".join(map(_event_hash, records))
        if b"".join(map(_digest, hashes)).hex() != claimed:
            return None
        if "".join(map(_prev, records)) != self.reader.head + claimed[:-64]:
            return None
        first = self.reader.seq + 1
        if list(map(_seq, records)) != list(range(first, first + len(records))):
            return None
        if "".join(map(_ts, records)).translate(_DIGITS_TO_ZERO) != _TS_SHAPE * len(records):
            return None
        for get, want in self._identity:
            if any(map(ne, map(get, records), repeat(want))):
                return None
        return Checked(records)


def blocks(path: Path, size: int = BLOCK_BYTES) -> Iterator[tuple[bytes, bool]]:
    """`path` in blocks of whole lines (`(block, True)`: lines joined by ``\\n``, the last
    newline left off), then `(rest, False)` if the file ends in a piece without a newline.
    A missing file has no blocks."""
    try:
        f = path.open("rb", buffering=0)
    except FileNotFoundError:
        return
    with f:
        carry = b""
        while True:
            data = f.read(size)
            if not data:
                break
            if carry:
                data, carry = carry + data, b""
            end = data.rfind(b"\n")
            if end < 0:
                carry = data  # one line longer than a block: read on
                continue
            if end + 1 < len(data):
                f.seek(end + 1 - len(data), 1)  # read the piece again with the next block
            yield data[:end], True
        if carry:
            yield carry, False
