"""Where a project's files live, the manifest, and reading the end of a chain file.

Layout under ``<root>/<project_id>/`` (see docs/FORMAT.md)::

    manifest/project_manifest.json   ids and creation time
    manifest/schema_version.json     the format version and the hashing rules
    events.jsonl                     the project chain
    tasks/<task_id>/events.jsonl     one chain per task
    tasks/<task_id>/task_log.md      a rendering for people (derived, rebuildable)
    tasks/<task_id>/artifacts/       files the task's events refer to
    quarantine/                      unacknowledged bytes moved aside by crash recovery
    .journal.jsonl                   the writer's redo log; empty after a clean shutdown
    .journal.old.jsonl               the previous redo log while its checkpoint runs
    .lock                            the writer lock
"""

from __future__ import annotations

import contextlib
import os
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import msgspec

from protocol import ProtocolError, check_id, is_safe_id
from protocol.ledger_events import FORMAT_VERSION, GENESIS_HASH

from .commit_process import fsync_dir as fsync_dir  # the one copy (stdlib only)
from .errors import InvalidLedgerId, LedgerError, LedgerNotFound

TAIL_CHUNK = 64 * 1024


class ProjectManifest(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    """`project_id` names the directory; `chain_project_id` is the id every event carries (it
    differs after an import under a new id, which keeps the original events and hashes).
    `format` has no default: a manifest that does not say which format it is, is refused."""

    project_id: str
    chain_project_id: str
    created_at: str
    format: int


class SchemaVersion(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    format: int = FORMAT_VERSION
    canonicalization: str = "RFC 8785 (JSON Canonicalization Scheme)"
    hash: str = "sha256 of the canonical event without event_hash, lowercase hex"
    genesis_prev_event_hash: str = GENESIS_HASH
    spec: str = "docs/FORMAT.md"


@contextlib.contextmanager
def naming(path: Path) -> Iterator[None]:
    """An `OSError` raised inside names `path` when it names no file itself (``os.write``
    errors do not), so that the error a person sees says which file could not be written."""
    try:
        yield
    except OSError as exc:
        if exc.filename is None:
            exc.filename = str(path)
        raise


def safe_id(kind: str, value: str) -> str:
    try:
        return check_id(kind, value)
    except ProtocolError as exc:
        raise InvalidLedgerId(exc.reason) from None


def project_ids(root: Path) -> list[str]:
    """The projects under a ledger root (directories with a project manifest), sorted."""
    try:
        names = sorted(d.name for d in root.iterdir() if d.is_dir())
    except OSError:
        return []
    return [n for n in names if is_safe_id(n) and ProjectPaths.of(root, n).manifest.is_file()]


@dataclass(frozen=True)
class ProjectPaths:
    root: Path
    project_id: str

    @classmethod
    def of(cls, root: str | Path, project_id: str) -> ProjectPaths:
        return cls(Path(root), safe_id("project id", project_id))

    @property
    def dir(self) -> Path:
        return self.root / self.project_id

    @property
    def manifest(self) -> Path:
        return self.dir / "manifest" / "project_manifest.json"

    @property
    def schema_version(self) -> Path:
        return self.dir / "manifest" / "schema_version.json"

    @property
    def events(self) -> Path:
        return self.dir / "events.jsonl"

    @property
    def tasks(self) -> Path:
        return self.dir / "tasks"

    @property
    def lock(self) -> Path:
        return self.dir / ".lock"

    @property
    def journal(self) -> Path:
        return self.dir / ".journal.jsonl"

    @property
    def old_journal(self) -> Path:
        """A journal being checkpointed (see ledger/journal.py)."""
        return self.dir / ".journal.old.jsonl"

    @property
    def quarantine(self) -> Path:
        return self.dir / "quarantine"

    def task_dir(self, task_id: str) -> Path:
        return self.tasks / safe_id("task id", task_id)

    def task_events(self, task_id: str) -> Path:
        return self.task_dir(task_id) / "events.jsonl"

    def task_log(self, task_id: str) -> Path:
        return self.task_dir(task_id) / "task_log.md"

    def task_ids(self) -> list[str]:
        """Task directories present, sorted (names that are not safe ids included, so that
        verify can report them)."""
        if not self.tasks.is_dir():
            return []
        return sorted(p.name for p in self.tasks.iterdir())

    def relative(self, path: Path) -> str:
        return path.relative_to(self.dir).as_posix()


def read_manifest(paths: ProjectPaths) -> ProjectManifest:
    try:
        raw = paths.manifest.read_bytes()
    except FileNotFoundError:
        raise LedgerNotFound(paths.dir) from None
    except OSError as exc:
        raise LedgerError(f"{paths.manifest}: cannot read: {exc.strerror or exc}") from None
    try:
        manifest = msgspec.json.decode(raw, type=ProjectManifest)
    except (msgspec.DecodeError, UnicodeDecodeError) as exc:
        raise LedgerError(f"{paths.manifest}: not a project manifest: {exc}") from None
    if manifest.format != FORMAT_VERSION:
        raise LedgerError(
            f"{paths.manifest}: ledger format {manifest.format}; this runner reads format "
            f"{FORMAT_VERSION} only (docs/FORMAT.md)"
        )
    if manifest.project_id != paths.project_id:
        raise LedgerError(
            f"{paths.manifest}: project_id {manifest.project_id!r} does not match the "
            f"directory {paths.project_id!r}"
        )
    return manifest


def write_file_atomic(path: Path, data: bytes) -> None:
    """Replace `path` durably: temp file in the same directory, fsync, rename, fsync dir."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)
    try:
        os.fchmod(fd, 0o644)
        os.write(fd, data)
        os.fsync(fd)
        os.close(fd)
        fd = -1
        Path(tmp).replace(path)
    except BaseException:
        if fd >= 0:
            os.close(fd)
        with contextlib.suppress(FileNotFoundError):
            Path(tmp).unlink()
        raise
    fsync_dir(path.parent)


@dataclass(frozen=True)
class Tail:
    """The end of a chain file: its last complete line and what follows it.

    `last` is the last ``\\n``-terminated line (empty when there is none) starting at byte
    `last_at`; `torn` is whatever follows the final newline (a write cut short), at `torn_at`.
    """

    last: bytes
    last_at: int
    torn: bytes
    torn_at: int


def read_tail(path: Path, end: int | None = None) -> Tail:
    """Read only the end of `path` (or of its first `end` bytes): O(length of the last line),
    not O(file)."""
    try:
        f = path.open("rb")
    except FileNotFoundError:
        return Tail(b"", 0, b"", 0)
    with f:
        size = f.seek(0, os.SEEK_END) if end is None else end
        buf = b""
        pos = size
        newlines_needed = 2  # the one ending the last line, the one before it
        while pos > 0:
            step = min(TAIL_CHUNK, pos)
            pos -= step
            f.seek(pos)
            buf = f.read(step) + buf
            if buf.count(b"\n") >= newlines_needed:
                break
    base = size - len(buf)
    end = buf.rfind(b"\n")
    if end < 0:
        return Tail(b"", 0, buf, base)
    torn = buf[end + 1 :]
    start = buf.rfind(b"\n", 0, end) + 1
    return Tail(buf[start : end + 1], base + start, torn, base + end + 1)
