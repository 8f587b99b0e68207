"""What `verify_project` reports: the problems found, the heads it saw, and the events it
counted; and `Head`, a chain's last seq and hash, which `--expect-head` takes back."""

from __future__ import annotations

import msgspec

from .errors import ChainBroken, LedgerError


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


__all__ = ["Head", "Problem", "VerifyReport"]
