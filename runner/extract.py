"""Taking the StepResult out of a round: one rule, strict, never an exception.

The rule (docs/supervisor.md says it the same way):

1. If the round's ``step_result.json`` exists, it is the result. It must decode as a StepResult
   (else ``RESULT_FILE_MALFORMED``; unreadable: ``RESULT_FILE_UNREADABLE``).
2. Else the result is the *last result-like JSON object* in the shim's stdout, which must decode
   as a StepResult (else ``RESULT_MALFORMED``); none at all is ``NO_RESULT``.
3. When both exist, stdout's last result must equal the file's (else ``RESULT_CONFLICT``).
4. A result that names a different task, run or step than the pack is ``RESULT_WRONG_STEP``.

Reading stdout: only its last `SCAN_BYTES` are read (bounded memory whatever the shim printed;
a partial first line is dropped). JSON objects are looked for line by line, so agent JSONL
events, log prefixes (``RESULT: {...}``) and nested braces are fine: on each line, the text from
its first ``{`` to its last ``}``; and a pretty-printed object, from a line that is just ``{``
to the next line that is just ``}`` at the same indentation. An object is *result-like* when it
has a top-level ``verdict`` key, or when it does not decode at all but mentions ``"verdict"``
(a result cut off mid-print): a truncated or invalid final result is reported, not silently
replaced by an earlier draft. Objects without ``verdict`` are noise.
"""

from __future__ import annotations

import errno
import os
import stat
from dataclasses import dataclass
from pathlib import Path
from typing import Any, BinaryIO, Literal

import msgspec

from protocol import (
    ParseFailureReason,
    ProtocolError,
    ResultParseFailure,
    StepResult,
    convert,
    decode,
)

SCAN_BYTES = 8 * 1024 * 1024
MAX_RESULT_FILE_BYTES = 16 * 1024 * 1024
EXCERPT_CHARS = 600
_NOT_JSON = 'a result-like object (it mentions "verdict") that is not valid JSON'

Source = Literal["file", "stdout"]


@dataclass(frozen=True)
class Extraction:
    """Exactly one of `result` and `failure` is set."""

    result: StepResult | None = None
    source: Source | None = None
    failure: ResultParseFailure | None = None


@dataclass(frozen=True)
class _Candidate:
    text: bytes
    result: StepResult | None
    error: str


def extract_result(
    result_file: Path,
    stdout_file: Path,
    *,
    task_id: str | None = None,
    run_id: str | None = None,
    step_id: str | None = None,
    scan_bytes: int = SCAN_BYTES,
) -> Extraction:
    """Apply the rule to a round's files (see the module docstring)."""
    found = _from_stdout(stdout_file, scan_bytes)
    if os.path.lexists(result_file):
        extraction = _from_file(result_file)
        if (
            extraction.result is not None
            and found is not None
            and found.result is not None
            and found.result != extraction.result
        ):
            return _fail(
                ParseFailureReason.RESULT_CONFLICT,
                f"{result_file.name} and the last result on stdout differ",
                found.text,
                "stdout",
            )
    elif found is None:
        return _fail(
            ParseFailureReason.NO_RESULT,
            f"no {result_file.name} and no JSON object with a `verdict` on stdout",
            _tail(stdout_file),
            "stdout",
        )
    elif found.result is None:
        return _fail(ParseFailureReason.RESULT_MALFORMED, found.error, found.text, "stdout")
    else:
        extraction = Extraction(result=found.result, source="stdout")
    if extraction.result is None:
        return extraction
    expected = {"task_id": task_id, "run_id": run_id, "step_id": step_id}
    for name, want in expected.items():
        got = getattr(extraction.result, name)
        if want is not None and got is not None and got != want:
            return _fail(
                ParseFailureReason.RESULT_WRONG_STEP,
                f"the result's {name} is {got!r}, the pack's is {want!r}",
                msgspec.json.encode(extraction.result),
                extraction.source,
            )
    return extraction


def _from_file(path: Path) -> Extraction:
    try:
        with open_regular(path) as f:
            raw = f.read(MAX_RESULT_FILE_BYTES + 1)
    except OSError as exc:
        return _fail(
            ParseFailureReason.RESULT_FILE_UNREADABLE,
            f"cannot read {path.name}: {exc.strerror or exc}",
            b"",
            "file",
        )
    if len(raw) > MAX_RESULT_FILE_BYTES:
        return _fail(
            ParseFailureReason.RESULT_FILE_MALFORMED,
            f"{path.name} is larger than {MAX_RESULT_FILE_BYTES} bytes",
            raw[:EXCERPT_CHARS],
            "file",
        )
    try:
        return Extraction(result=decode(raw, StepResult, source=path.name), source="file")
    except ProtocolError as exc:
        return _fail(ParseFailureReason.RESULT_FILE_MALFORMED, str(exc), raw, "file")


def _from_stdout(path: Path, scan_bytes: int) -> _Candidate | None:
    """The last result-like candidate in the tail window of stdout, or None."""
    try:
        with open_regular(path) as f:
            size = f.seek(0, 2)
            start = max(0, size - scan_bytes)
            f.seek(start)
            window = f.read(scan_bytes)
    except OSError:
        return None
    lines = window.split(b"\n")
    if start > 0:
        lines = lines[1:]  # the window began mid-line
    last: _Candidate | None = None
    i = 0
    while i < len(lines):
        line = lines[i]
        stripped = line.strip()
        if stripped == b"{":
            end = _block_end(lines, i)
            if end is not None:
                is_json, block = _classify(b"\n".join(lines[i : end + 1]))
                if is_json:
                    last = block or last
                    i = end + 1
                    continue
            # Not a JSON block (a stray "{" in a log, a cut-off object): look at its lines.
        first, final = line.find(b"{"), line.rfind(b"}")
        if 0 <= first < final:
            last = _classify(line[first : final + 1])[1] or last
        elif b'"verdict"' in line:
            last = _Candidate(line, None, _NOT_JSON)
        i += 1
    return last


def _block_end(lines: list[bytes], start: int) -> int | None:
    indent = len(lines[start]) - len(lines[start].lstrip())
    for j in range(start + 1, len(lines)):
        line = lines[j]
        if line.strip() in (b"}", b"},") and len(line) - len(line.lstrip()) == indent:
            return j
    return None


def _classify(text: bytes) -> tuple[bool, _Candidate | None]:
    """(is it JSON, the candidate if it is result-like)."""
    try:
        obj: Any = msgspec.json.decode(text)
    except (msgspec.DecodeError, UnicodeDecodeError, RecursionError):
        return False, (_Candidate(text, None, _NOT_JSON) if b'"verdict"' in text else None)
    if not isinstance(obj, dict) or "verdict" not in obj:
        return True, None
    try:
        return True, _Candidate(text, convert(obj, StepResult, source="stdout"), "")
    except ProtocolError as exc:
        return True, _Candidate(text, None, str(exc))


def open_regular(path: Path) -> BinaryIO:
    """`path` opened for reading, if it is a regular file; else `OSError` saying what it is.

    The round directory belongs to the agent as much as to the runner: a FIFO put where a file
    is expected would block an ordinary open for reading forever (no limit applies to the
    runner itself), and a symbolic link would make the runner read, and quote in the record, a
    file of the agent's choosing anywhere. So no link is followed and nothing blocks.
    """
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | os.O_NOFOLLOW | os.O_CLOEXEC)
    except OSError as exc:
        if exc.errno == errno.ELOOP:
            raise OSError(errno.ELOOP, "it is a symbolic link (not followed)") from None
        raise
    try:
        if not stat.S_ISREG(os.fstat(fd).st_mode):
            raise OSError(errno.EINVAL, "it is not a regular file (a FIFO, socket or device)")
        os.set_blocking(fd, True)
        return os.fdopen(fd, "rb")
    except BaseException:
        os.close(fd)
        raise


def _tail(path: Path) -> bytes:
    try:
        with open_regular(path) as f:
            size = f.seek(0, 2)
            f.seek(max(0, size - EXCERPT_CHARS))
            return f.read()
    except OSError:
        return b""


def _fail(
    reason: ParseFailureReason, detail: str, excerpt: bytes, source: Source | None
) -> Extraction:
    text = excerpt.decode("utf-8", "replace")
    if len(text) > EXCERPT_CHARS:
        text = text[: EXCERPT_CHARS // 2] + " ... " + text[-EXCERPT_CHARS // 2 :]
    return Extraction(
        failure=ResultParseFailure(reason=reason, detail=detail, excerpt=text, source=source)
    )
