"""Export a project to an archive and import one, with file-level SHA-256 verification.

An archive (zip, or tar optionally gzip-compressed, chosen by the file name) holds the
project's files under their paths relative to the project directory, plus
``ledger-archive.json``: the source ids, the project chain's head, and every file's path, size
and SHA-256.

Import trusts nothing in the archive. It refuses absolute names, ``..``, backslashes, links of
any kind, special files, duplicate names, entries the manifest does not list (and listed files
that are missing), sizes or hashes that differ from the manifest, and unpacked sizes beyond a
limit, all while extracting into a private directory under the root. It then verifies every
chain against the manifest's head, records a `project_imported` event, and renames the
directory into place. On any refusal the private directory is removed: nothing is left under
the root.
"""

from __future__ import annotations

import contextlib
import functools
import hashlib
import lzma
import os
import shutil
import stat
import tarfile
import tempfile
import zipfile
import zlib
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Literal, NamedTuple

import anyio
import msgspec

from protocol.ledger_events import ProjectImported

from .errors import ChainBroken, LedgerDamaged, LedgerError, LedgerExists, UnsafeArchive
from .render import write_task_log
from .store import (
    ProjectManifest,
    ProjectPaths,
    fsync_dir,
    read_manifest,
    safe_id,
    write_file_atomic,
)
from .verify import Head, verify_project
from .writer import Ledger, open_ledger

MANIFEST_NAME = "ledger-archive.json"
MAX_MANIFEST_BYTES = 16 * 1024 * 1024
MAX_UNPACKED_BYTES = 4 * 1024**3
CHUNK = 1024 * 1024
Kind = Literal["zip", "tar", "tar.gz"]


class Imported(NamedTuple):
    project_id: str
    head: Head


class ArchivedFile(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    path: str
    size: int
    sha256: str


class ArchiveManifest(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    format: int
    project_id: str
    chain_project_id: str
    head: Head
    files: list[ArchivedFile]


def _kind_of(path: Path) -> Kind:
    name = path.name.lower()
    if name.endswith(".zip"):
        return "zip"
    if name.endswith((".tar.gz", ".tgz")):
        return "tar.gz"
    if name.endswith(".tar"):
        return "tar"
    raise LedgerError(f"{path}: archive name must end in .zip, .tar, .tar.gz or .tgz")


# --- export ---------------------------------------------------------------------------------


def _project_files(paths: ProjectPaths) -> list[Path]:
    files = []
    for path in sorted(paths.dir.rglob("*")):
        rel = paths.relative(path)
        if path.is_symlink():
            raise LedgerError(f"{path}: refusing to export a symbolic link")
        if path.is_dir() or rel == ".lock" or path.name.startswith("."):
            continue
        files.append(path)
    return files


def _sha256_file(path: Path) -> tuple[int, str]:
    h = hashlib.sha256()
    size = 0
    with path.open("rb") as f:
        while chunk := f.read(CHUNK):
            h.update(chunk)
            size += len(chunk)
    return size, h.hexdigest()


def write_archive(paths: ProjectPaths, head: Head, archive: Path, *, jobs: int = 1) -> Path:
    """Write the archive of a project whose writer lock the caller holds (verifying it first,
    with `jobs` processes: see `verify_project`)."""
    kind = _kind_of(archive)
    report = verify_project(paths, expect_heads=(head,), jobs=jobs)
    if not report.ok:
        first = report.problems[0]
        cause = ChainBroken(Path(first.path), first.line, first.reason, first.expected, first.found)
        raise LedgerDamaged(cause, "export refused")
    for task_id in paths.task_ids():
        write_task_log(paths, task_id)
    manifest = read_manifest(paths)
    files = _project_files(paths)
    entries = []
    for path in files:
        size, digest = _sha256_file(path)
        entries.append(ArchivedFile(paths.relative(path), size, digest))
    doc = ArchiveManifest(1, manifest.project_id, manifest.chain_project_id, head, entries)
    raw = msgspec.json.format(msgspec.json.encode(doc), indent=2) + b"\n"
    archive.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{archive.name}.", dir=archive.parent)
    os.close(fd)
    try:
        if kind == "zip":
            with zipfile.ZipFile(tmp, "w", zipfile.ZIP_DEFLATED) as z:
                z.writestr(MANIFEST_NAME, raw)
                for path, entry in zip(files, entries, strict=True):
                    z.write(path, entry.path)
        else:
            with tarfile.open(tmp, "w:gz" if kind == "tar.gz" else "w") as t:
                info = tarfile.TarInfo(MANIFEST_NAME)
                info.size = len(raw)
                t.addfile(info, _BytesReader(raw))
                for path, entry in zip(files, entries, strict=True):
                    t.add(path, entry.path, recursive=False)
        with Path(tmp).open("rb") as f:
            os.fsync(f.fileno())
        Path(tmp).replace(archive)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            Path(tmp).unlink()
        raise
    fsync_dir(archive.parent)
    return archive


class _BytesReader:
    def __init__(self, data: bytes) -> None:
        self.data = data
        self.at = 0

    def read(self, n: int = -1) -> bytes:
        end = len(self.data) if n < 0 else self.at + n
        out = self.data[self.at : end]
        self.at += len(out)
        return out


async def export_project(ledger: Ledger, archive: Path, *, jobs: int = 1) -> Path:
    """Export the project of an open ledger (its lock keeps writers out meanwhile)."""
    await ledger.flush()
    return await anyio.to_thread.run_sync(
        functools.partial(write_archive, ledger.paths, ledger.head, archive, jobs=jobs)
    )


# --- import ---------------------------------------------------------------------------------


@dataclass(frozen=True)
class _Entry:
    name: str
    kind: Literal["file", "dir", "symlink", "hardlink", "other"]
    size: int
    open: object  # a zero-argument callable returning a binary file


def _entries(archive: Path, opened: zipfile.ZipFile | tarfile.TarFile) -> Iterator[_Entry]:
    if isinstance(opened, zipfile.ZipFile):
        for info in opened.infolist():
            mode = info.external_attr >> 16
            kind: Literal["file", "dir", "symlink", "hardlink", "other"]
            if stat.S_ISLNK(mode):
                kind = "symlink"
            elif info.is_dir():
                kind = "dir"
            elif stat.S_IFMT(mode) == 0 or stat.S_ISREG(mode):
                kind = "file"
            else:
                kind = "other"
            yield _Entry(info.filename, kind, info.file_size, lambda i=info: opened.open(i))
        return
    for member in opened:
        if member.issym():
            kind = "symlink"
        elif member.islnk():
            kind = "hardlink"
        elif member.isdir():
            kind = "dir"
        elif member.isreg():
            kind = "file"
        else:
            kind = "other"
        yield _Entry(member.name, kind, member.size, lambda m=member: opened.extractfile(m))


def _check_name(archive: Path, name: str) -> str:
    if not name or "\\" in name or "\x00" in name or name.startswith("/") or ":" in name:
        raise UnsafeArchive(archive, "absolute or malformed name", name)
    parts = name.rstrip("/").split("/")
    if any(part in ("", ".", "..") for part in parts):
        raise UnsafeArchive(archive, "name climbs out or is not normalised", name)
    return "/".join(parts)


# What reading a damaged archive raises: the containers' own errors, a compressed stream's
# (zlib, gzip's BadGzipFile is an OSError, bz2's OSError, lzma; tarfile opens all three), a
# stream cut short, and zipfile's refusals of what it cannot read (an unknown compression
# method, an encrypted entry).
_READ_ERRORS = (
    OSError,
    EOFError,
    zlib.error,
    lzma.LZMAError,
    zipfile.BadZipFile,
    tarfile.TarError,
    NotImplementedError,
    RuntimeError,
)


def _open_archive(archive: Path) -> zipfile.ZipFile | tarfile.TarFile:
    if zipfile.is_zipfile(archive):
        return zipfile.ZipFile(archive)
    if tarfile.is_tarfile(str(archive)):
        return tarfile.open(archive)
    raise UnsafeArchive(archive, "not a zip or tar archive")


@contextlib.contextmanager
def _writing(path: Path) -> Iterator[None]:
    """An `OSError` writing the staging copy is this machine's problem, not the archive's."""
    try:
        yield
    except OSError as exc:
        raise LedgerError(f"{path}: cannot write: {exc.strerror or exc}") from None


def _copy_capped(
    src: IO[bytes], dst: int, target: Path, limit: int, archive: Path, name: str
) -> str:
    h = hashlib.sha256()
    total = 0
    while chunk := src.read(CHUNK):
        total += len(chunk)
        if total > limit:
            raise UnsafeArchive(archive, "entry is larger than it claims", name)
        h.update(chunk)
        view = memoryview(chunk)
        with _writing(target):
            while view:
                view = view[os.write(dst, view) :]
    return h.hexdigest()


def _extract(archive: Path, into: Path, max_unpacked: int) -> ArchiveManifest:
    """Extract and check every entry; returns the manifest every file matched. A damaged
    archive (a corrupt or cut-short stream anywhere) is an `UnsafeArchive`, never another
    exception."""
    reading: list[str | None] = [None]  # the entry being read, to name it
    try:
        return _extract_checked(archive, into, max_unpacked, reading)
    except _READ_ERRORS as exc:
        reason = f"damaged or unreadable archive: {type(exc).__name__}: {exc}".rstrip(": ")
        raise UnsafeArchive(archive, reason, reading[0]) from None


def _extract_checked(
    archive: Path, into: Path, max_unpacked: int, reading: list[str | None]
) -> ArchiveManifest:
    with _open_archive(archive) as opened:
        entries = list(_entries(archive, opened))
        seen: set[str] = set()
        for entry in entries:
            name = _check_name(archive, entry.name)
            if name in seen:
                raise UnsafeArchive(archive, "duplicate name", entry.name)
            seen.add(name)
            if entry.kind in ("symlink", "hardlink"):
                raise UnsafeArchive(archive, f"{entry.kind}s are not allowed", entry.name)
            if entry.kind == "other":
                raise UnsafeArchive(archive, "special files are not allowed", entry.name)
        manifest_entry = next((e for e in entries if e.name == MANIFEST_NAME), None)
        if manifest_entry is None or manifest_entry.kind != "file":
            raise UnsafeArchive(archive, f"no {MANIFEST_NAME}")
        if manifest_entry.size > MAX_MANIFEST_BYTES:
            raise UnsafeArchive(archive, "manifest too large", MANIFEST_NAME)
        reading[0] = MANIFEST_NAME
        with manifest_entry.open() as f:  # type: ignore[operator]
            raw = f.read(MAX_MANIFEST_BYTES + 1)
        reading[0] = None
        try:
            manifest = msgspec.json.decode(raw, type=ArchiveManifest)
        except (msgspec.DecodeError, UnicodeDecodeError) as exc:
            raise UnsafeArchive(archive, f"bad manifest: {exc}", MANIFEST_NAME) from None
        listed = {}
        for item in manifest.files:
            path = _check_name(archive, item.path)
            if path in listed or path == MANIFEST_NAME:
                raise UnsafeArchive(archive, "manifest lists a path twice", item.path)
            listed[path] = item
        if sum(item.size for item in manifest.files) > max_unpacked:
            raise UnsafeArchive(archive, f"unpacks to more than {max_unpacked} bytes")
        files = [e for e in entries if e.kind == "file" and e.name != MANIFEST_NAME]
        for entry in files:
            if entry.name not in listed:
                raise UnsafeArchive(archive, "entry not in the manifest", entry.name)
            item = listed[entry.name]
            if entry.size != item.size:
                raise UnsafeArchive(archive, "size differs from the manifest", entry.name)
        missing = set(listed) - {e.name for e in files}
        if missing:
            raise UnsafeArchive(archive, "manifest lists a missing file", sorted(missing)[0])
        for entry in files:
            item = listed[entry.name]
            target = into.joinpath(*entry.name.split("/"))
            with _writing(target):
                target.parent.mkdir(parents=True, exist_ok=True)
                fd = os.open(target, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, 0o644)
            try:
                reading[0] = entry.name
                with entry.open() as src:  # type: ignore[operator]
                    digest = _copy_capped(src, fd, target, item.size, archive, entry.name)
                reading[0] = None
                if digest != item.sha256:
                    raise UnsafeArchive(archive, "sha256 differs from the manifest", entry.name)
                with _writing(target):
                    os.fsync(fd)
            finally:
                os.close(fd)
    return manifest


def _file_sha256(path: Path) -> str:
    return _sha256_file(path)[1]


def import_project(
    root: Path,
    archive: Path,
    project_id: str | None = None,
    *,
    max_unpacked_bytes: int = MAX_UNPACKED_BYTES,
    jobs: int = 1,
) -> Imported:
    """Import `archive` under `root` (as `project_id`, default the archive's), verifying it
    with `jobs` processes (see `verify_project`); returns the project's id and its new chain
    head (its `project_imported` event)."""
    if not archive.is_file():
        raise LedgerError(f"{archive}: no such archive")
    if project_id is not None:
        safe_id("project id", project_id)
    created_root = not root.exists()
    root.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=".import-", dir=root))
    try:
        imported = _import_into(root, staging, archive, project_id, max_unpacked_bytes, jobs)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        if created_root:
            with contextlib.suppress(OSError):
                root.rmdir()
        raise
    shutil.rmtree(staging, ignore_errors=True)
    return imported


def _import_into(
    root: Path, staging: Path, archive: Path, project_id: str | None, max_unpacked: int, jobs: int
) -> Imported:
    unpacked = staging / "unpacked"
    unpacked.mkdir()
    manifest = _extract(archive, unpacked, max_unpacked)
    target = project_id or manifest.project_id
    safe_id("project id", target)
    final = root / target
    if final.exists():
        raise LedgerExists(final)
    staged = staging / target
    unpacked.rename(staged)
    paths = ProjectPaths.of(staging, target)
    try:
        source = msgspec.json.decode(paths.manifest.read_bytes(), type=ProjectManifest)
    except (OSError, msgspec.DecodeError) as exc:
        raise UnsafeArchive(archive, f"bad project manifest: {exc}") from None
    if (source.project_id, source.chain_project_id) != (
        manifest.project_id,
        manifest.chain_project_id,
    ):
        raise UnsafeArchive(archive, "project manifest and archive manifest disagree")
    write_file_atomic(paths.manifest, _pretty(msgspec.structs.replace(source, project_id=target)))
    report = verify_project(paths, expect_heads=(manifest.head,), jobs=jobs)
    if not report.ok or report.project_head != manifest.head:
        first = "head differs from the manifest"
        if report.problems:
            p = report.problems[0]
            where = Path(p.path).relative_to(paths.dir) if p.path else "?"
            first = f"{where}:{p.line}: {p.reason}"
        raise UnsafeArchive(archive, f"ledger does not verify: {first}")
    for task_id in paths.task_ids():  # derived files are rendered here, never taken on trust
        write_task_log(paths, task_id)
    event = ProjectImported(
        source_project_id=safe_id("project id", manifest.project_id),
        archive_sha256=_file_sha256(archive),
        source_head_seq=manifest.head.seq,
        source_head_hash=manifest.head.hash,
        target_project_id=target,
    )
    head = anyio.run(_record_import, paths, event)
    staged.rename(final)
    fsync_dir(root)
    return Imported(target, head)


async def _record_import(paths: ProjectPaths, event: ProjectImported) -> Head:
    async with open_ledger(paths.root, paths.project_id) as ledger:
        await ledger.append_project_event(event)
        return ledger.head


def _pretty(obj: object) -> bytes:
    return msgspec.json.format(msgspec.json.encode(obj), indent=2) + b"\n"
