"""Checkpoints of workspace files and rollback to them.

A checkpoint store is a directory::

    <store>/blobs/<sha256[:2]>/<sha256[2:]>     each file content once, read-only
    <store>/manifests/<checkpoint_id>.json      one CheckpointManifest per checkpoint

`create_checkpoint` records listed files (a path that does not exist is recorded as absent,
so rollback deletes it if it appears) and, in the tree form, whole directories. `rollback`
verifies everything before it touches anything (the manifest decodes, every blob hashes to its
name, every path stays inside the workspace, nothing is in the way), then restores: deletions
first, then directories, then file and link writes, each write atomic. It is idempotent: after
an interruption, running it again finishes the job.

Symbolic links are never followed at the leaf: a link is recorded as a link (its target must
stay inside the workspace) and restoring a file over a link replaces the link. Parent
directories may be links, but only to places inside the workspace, checked again at rollback so
that an edited manifest cannot make rollback write elsewhere.

The functions are synchronous (plain file I/O); async callers run them with
``anyio.to_thread.run_sync``.
"""

from __future__ import annotations

import contextlib
import functools
import hashlib
import os
import re
import secrets
import stat
from collections.abc import Callable, Iterable
from datetime import UTC, datetime
from pathlib import Path
from typing import ParamSpec, TypeVar

from kernel.rollback import Observed, RollbackPlan, is_excluded, parents, plan_rollback
from protocol import (
    AbsentEntry,
    CheckpointEntry,
    CheckpointManifest,
    DirEntry,
    FileEntry,
    LinkEntry,
    ProtocolError,
    RollbackReport,
    check_id,
    encode,
    encode_pretty,
    read,
    workspace_path_problem,
)
from runner.files import write_atomic
from runner.log import get_logger

DEFAULT_STORE = Path(".runner") / "checkpoints"
DEFAULT_EXCLUDE = (".git",)
_BLOB_MODE = 0o444
_MANIFEST_MODE = 0o644
_CHUNK = 1 << 20
_DIGEST = re.compile(r"[0-9a-f]{64}")

P = ParamSpec("P")
R = TypeVar("R")

log = get_logger("runner.checkpoint")


class CheckpointError(Exception):
    """Base of every checkpoint and rollback failure; `str()` is the message for people."""


class CheckpointNotFound(CheckpointError):
    def __init__(self, checkpoint_id: str, store: Path) -> None:
        self.checkpoint_id = checkpoint_id
        self.store = store
        super().__init__(f"checkpoint {checkpoint_id!r} not found in {store}")


class CheckpointCorrupt(CheckpointError):
    """The checkpoint cannot be trusted: a bad manifest, or a blob missing or altered."""

    def __init__(self, checkpoint_id: str, reason: str, *, path: str | None = None) -> None:
        self.checkpoint_id = checkpoint_id
        self.reason = reason
        self.path = path
        where = f" ({path})" if path else ""
        super().__init__(
            f"checkpoint {checkpoint_id!r} is corrupt{where}: {reason}; nothing was restored"
        )


class UnsafePath(CheckpointError):
    """A path that would take a checkpoint or a rollback outside the workspace."""

    def __init__(self, path: str, reason: str) -> None:
        self.path = path
        self.reason = reason
        super().__init__(f"unsafe path {path!r}: {reason}")


class WorkspaceMismatch(CheckpointError):
    def __init__(self, checkpoint_id: str, recorded: str, given: Path) -> None:
        self.checkpoint_id = checkpoint_id
        self.recorded = recorded
        self.given = given
        super().__init__(
            f"checkpoint {checkpoint_id!r} was taken of workspace {recorded}, not {given}; "
            "pass --workspace with the workspace it was taken of"
        )


class RollbackConflict(CheckpointError):
    def __init__(self, checkpoint_id: str, conflicts: list[tuple[str, str]]) -> None:
        self.checkpoint_id = checkpoint_id
        self.conflicts = conflicts
        listed = "; ".join(f"{path}: {reason}" for path, reason in conflicts[:5])
        more = f" (and {len(conflicts) - 5} more)" if len(conflicts) > 5 else ""
        super().__init__(
            f"cannot roll back to {checkpoint_id!r}: {listed}{more}; nothing was changed"
        )


class CheckpointStore:
    """Blobs and manifests under one directory (created on first write)."""

    def __init__(self, root: str | os.PathLike[str]) -> None:
        self.root = Path(root).absolute()

    def blob_path(self, sha256: str) -> Path:
        return self.root / "blobs" / sha256[:2] / sha256[2:]

    def manifest_path(self, checkpoint_id: str) -> Path:
        return self.root / "manifests" / f"{check_id('checkpoint id', checkpoint_id)}.json"

    def put_blob(self, data: bytes, sha256: str) -> None:
        """Store `data` under its hash once; an existing blob that no longer matches its name
        is replaced, so a damaged store heals instead of poisoning new checkpoints."""
        path = self.blob_path(sha256)
        with contextlib.suppress(FileNotFoundError):
            if _sha256_of_file(path) == sha256:
                return
        # Not fsynced one by one (that made a 2,000-file tree checkpoint take seconds): a blob
        # lost to a power cut is caught by the hash check before any rollback uses it.
        write_atomic(path, data, mode=_BLOB_MODE, durable=False)

    def read_blob(self, checkpoint_id: str, entry: FileEntry) -> bytes:
        """The blob of `entry`, after checking it still hashes to its name."""
        path = self.blob_path(entry.sha256)
        try:
            data = path.read_bytes()
        except FileNotFoundError:
            raise CheckpointCorrupt(
                checkpoint_id, f"blob {entry.sha256[:12]}... is missing", path=entry.path
            ) from None
        except OSError as exc:
            raise CheckpointCorrupt(
                checkpoint_id, f"cannot read blob: {exc.strerror or exc}", path=entry.path
            ) from None
        found = hashlib.sha256(data).hexdigest()
        if found != entry.sha256 or len(data) != entry.size:
            raise CheckpointCorrupt(
                checkpoint_id,
                f"blob content does not match the manifest (sha256 {found[:12]}..., "
                f"{len(data)} bytes; expected {entry.sha256[:12]}..., {entry.size} bytes)",
                path=entry.path,
            )
        return data

    def save(self, manifest: CheckpointManifest) -> Path:
        return write_atomic(
            self.manifest_path(manifest.checkpoint_id),
            encode_pretty(manifest),
            mode=_MANIFEST_MODE,
        )

    def load(self, checkpoint_id: str) -> CheckpointManifest:
        """Decode a manifest; a missing one is `CheckpointNotFound`, a bad one corrupt."""
        path = self.manifest_path(checkpoint_id)
        if not path.is_file():
            raise CheckpointNotFound(checkpoint_id, self.root)
        try:
            manifest = read(path, CheckpointManifest)
        except ProtocolError as exc:
            raise CheckpointCorrupt(checkpoint_id, f"bad manifest: {exc}") from None
        if manifest.checkpoint_id != checkpoint_id:
            raise CheckpointCorrupt(
                checkpoint_id, f"manifest {path.name} names {manifest.checkpoint_id!r}"
            )
        return manifest

    def list(self) -> tuple[list[CheckpointManifest], list[CheckpointCorrupt]]:
        """Every manifest, oldest first, and the ones that do not decode."""
        good: list[CheckpointManifest] = []
        bad: list[CheckpointCorrupt] = []
        directory = self.root / "manifests"
        names = sorted(p.stem for p in directory.glob("*.json")) if directory.is_dir() else []
        for name in names:
            try:
                good.append(self.load(name))
            except (CheckpointError, ProtocolError) as exc:
                bad.append(
                    exc if isinstance(exc, CheckpointCorrupt) else CheckpointCorrupt(name, str(exc))
                )
        good.sort(key=lambda m: (m.created_at, m.checkpoint_id))
        return good, bad


def _os_errors(doing: str) -> Callable[[Callable[P, R]], Callable[P, R]]:
    """Turn an `OSError` (permissions, a full disk, a file swapped under us) into a
    `CheckpointError` that says what was being done and to which file."""

    def decorate(func: Callable[P, R]) -> Callable[P, R]:
        @functools.wraps(func)
        def wrapper(*args: P.args, **kwargs: P.kwargs) -> R:
            try:
                return func(*args, **kwargs)
            except OSError as exc:
                where = f"{exc.filename}: " if exc.filename else ""
                raise CheckpointError(f"{doing}: {where}{exc.strerror or exc}") from exc

        return wrapper

    return decorate


def manifest_digest(manifest: CheckpointManifest) -> str:
    """SHA-256 of the manifest's canonical JSON: record it (in the ledger) at creation and
    pass it to `rollback` as `expected_digest` to refuse a manifest edited since."""
    return hashlib.sha256(encode(manifest)).hexdigest()


def digest_problem(digest: str) -> str | None:
    """Why `digest` cannot be a `manifest_digest` (64 lowercase hex digits), or None."""
    if _DIGEST.fullmatch(digest):
        return None
    return f"{digest!r} is not a SHA-256 digest (64 lowercase hex digits)"


@_os_errors("cannot checkpoint")
def create_checkpoint(
    workspace: str | os.PathLike[str],
    paths: Iterable[str] = (),
    *,
    task_key: str,
    run_id: str,
    store: CheckpointStore | str | os.PathLike[str],
    trees: Iterable[str] = (),
    exclude: Iterable[str] = DEFAULT_EXCLUDE,
    now: datetime | None = None,
) -> CheckpointManifest:
    """Checkpoint `paths` (files, workspace-relative) and `trees` (directories, ``.`` for the
    whole workspace) of `workspace` into `store`; returns the saved manifest.

    Raises `UnsafePath` for a path that is absolute, climbs out with ``..``, resolves outside
    the workspace, lies inside the store, is a directory given as a file, or is a special file;
    nothing is saved then (blobs already written are harmless: content-addressed, unreferenced).
    """
    if isinstance(paths, str):
        raise TypeError("paths is a list of paths, not one string")
    check_id("task key", task_key)
    check_id("run id", run_id)
    ws = _workspace(workspace)
    store = store if isinstance(store, CheckpointStore) else CheckpointStore(store)
    files = [normalize_path(p) for p in paths]
    roots = [normalize_path(t, root_ok=True) for t in trees]
    excluded = _unique([*(normalize_path(e) for e in exclude), *_store_exclusion(ws, store)])
    if not files and not roots:
        raise CheckpointError("nothing to checkpoint: give at least one file or tree")

    entries: dict[str, CheckpointEntry] = {}
    for rel in files:
        _check_inside(ws, rel, store)
        entries[rel] = _record(ws, rel, store, as_file=True)
    for root in roots:
        _check_inside(ws, root, store)
        target = ws / root
        if root != "." and (target.is_symlink() or not target.is_dir()):
            raise UnsafePath(root, "a tree must be an existing directory (not a link)")
        if root != ".":
            entries[root] = DirEntry(root)
        for rel, _, _ in _walk(ws, root, excluded):
            entries[rel] = _record(ws, rel, store, as_file=False)

    stamp = (now or datetime.now(UTC)).astimezone(UTC)
    for _ in range(8):
        checkpoint_id = check_id(
            "checkpoint id",
            f"{task_key[:80]}_{stamp:%Y%m%dT%H%M%SZ}_{secrets.token_hex(4)}",
        )
        if not store.manifest_path(checkpoint_id).exists():
            break
    else:  # pragma: no cover - 8 collisions of 32 random bits
        raise CheckpointError("could not pick an unused checkpoint id")
    manifest = CheckpointManifest(
        checkpoint_id=checkpoint_id,
        task_key=task_key,
        run_id=run_id,
        created_at=stamp.isoformat().replace("+00:00", "Z"),
        workspace=str(ws),
        entries=sorted(entries.values(), key=lambda e: e.path),
        trees=roots,
        exclude=excluded,
    )
    store.save(manifest)
    log.info(
        "checkpoint.created",
        checkpoint_id=checkpoint_id,
        task_key=task_key,
        run_id=run_id,
        entries=len(manifest.entries),
        bytes=manifest.total_bytes,
        store=str(store.root),
    )
    return manifest


@_os_errors("cannot verify the checkpoint")
def verify_checkpoint(
    checkpoint_id: str,
    *,
    store: CheckpointStore | str | os.PathLike[str],
    expected_digest: str | None = None,
) -> CheckpointManifest:
    """Load the manifest and check every blob against it; raises `CheckpointCorrupt`."""
    if expected_digest is not None and (problem := digest_problem(expected_digest)):
        # Not a digest at all: a usage mistake, not a manifest that changed.
        raise CheckpointError(f"expected digest {problem}")
    store = store if isinstance(store, CheckpointStore) else CheckpointStore(store)
    manifest = store.load(checkpoint_id)
    if expected_digest is not None and manifest_digest(manifest) != expected_digest:
        raise CheckpointCorrupt(
            checkpoint_id, "the manifest changed since it was recorded (digest mismatch)"
        )
    for entry in manifest.files:
        store.read_blob(checkpoint_id, entry)
    return manifest


@_os_errors("cannot roll back (nothing was changed)")
def rollback(
    workspace: str | os.PathLike[str],
    checkpoint_id: str,
    *,
    store: CheckpointStore | str | os.PathLike[str],
    expected_digest: str | None = None,
) -> RollbackReport:
    """Restore `workspace` to checkpoint `checkpoint_id`.

    Verifies first and raises, with the workspace untouched: `CheckpointNotFound`,
    `CheckpointCorrupt` (bad manifest, missing or altered blob, digest mismatch),
    `WorkspaceMismatch`, `UnsafePath` (a path or link target outside the workspace),
    `RollbackConflict` (a directory in the way).
    """
    ws = _workspace(workspace)
    store = store if isinstance(store, CheckpointStore) else CheckpointStore(store)
    manifest = verify_checkpoint(checkpoint_id, store=store, expected_digest=expected_digest)
    if manifest.workspace != str(ws):
        raise WorkspaceMismatch(checkpoint_id, manifest.workspace, ws)
    for entry in manifest.entries:
        if isinstance(entry, LinkEntry):
            _check_link(ws, entry.path, entry.target)

    excluded = _unique([*manifest.exclude, *_store_exclusion(ws, store)])
    plan = plan_rollback(manifest, _observe_for(ws, manifest, excluded))
    if plan.conflicts:
        raise RollbackConflict(checkpoint_id, [(c.path, c.reason) for c in plan.conflicts])
    _check_plan(ws, plan, store)
    report = _apply(ws, store, manifest, plan)
    log.info(
        "checkpoint.rolled_back",
        checkpoint_id=checkpoint_id,
        rewritten=len(report.rewritten),
        recreated=len(report.recreated),
        deleted=len(report.deleted),
        unchanged=report.unchanged,
    )
    return report


def changed_paths(
    workspace: str | os.PathLike[str],
    checkpoint_id: str,
    *,
    store: CheckpointStore | str | os.PathLike[str],
) -> list[str]:
    """Files and links that differ from checkpoint `checkpoint_id`: added, changed, deleted or
    with other permission bits (sorted). What a rollback would touch, without touching it; the
    QA review's "changed files" fact for a workspace without git."""
    ws = _workspace(workspace)
    store = store if isinstance(store, CheckpointStore) else CheckpointStore(store)
    manifest = store.load(checkpoint_id)
    excluded = _unique([*manifest.exclude, *_store_exclusion(ws, store)])
    plan = plan_rollback(manifest, _observe_for(ws, manifest, excluded))
    changed = {*plan.delete, *(e.path for e in (*plan.rewrite, *plan.recreate, *plan.chmod))}
    return sorted(changed)


@_os_errors("rollback stopped part-way; fix the cause and run it again to finish")
def _apply(
    ws: Path, store: CheckpointStore, manifest: CheckpointManifest, plan: RollbackPlan
) -> RollbackReport:
    cid = manifest.checkpoint_id
    for rel in plan.delete:
        _check_inside(ws, rel, store)
        (ws / rel).unlink(missing_ok=True)
    for rel in plan.remove_dirs:
        _check_inside(ws, rel, store)
        (ws / rel).rmdir()
    for rel in plan.make_dirs:
        _check_inside(ws, rel, store)
        (ws / rel).mkdir(exist_ok=True)
    for entry in [*plan.recreate, *plan.rewrite]:
        _check_inside(ws, entry.path, store)
        if isinstance(entry, FileEntry):
            write_atomic(ws / entry.path, store.read_blob(cid, entry), mode=entry.mode)
        else:
            _replace_link(ws / entry.path, entry.target)
    for file in plan.chmod:
        _check_inside(ws, file.path, store)
        (ws / file.path).chmod(file.mode)
    return RollbackReport(
        checkpoint_id=cid,
        workspace=str(ws),
        rewritten=[e.path for e in plan.rewrite],
        recreated=[e.path for e in plan.recreate],
        deleted=plan.delete,
        mode_restored=[e.path for e in plan.chmod],
        dirs_created=plan.make_dirs,
        dirs_removed=plan.remove_dirs,
        unchanged=len(plan.unchanged),
    )


# --- paths ----------------------------------------------------------------------------------


def _workspace(workspace: str | os.PathLike[str]) -> Path:
    path = Path(workspace)
    if not path.is_dir():
        raise CheckpointError(f"workspace {path} is not a directory")
    return path.resolve()


def normalize_path(raw: str, *, root_ok: bool = False) -> str:
    """A user's path as canonical workspace-relative POSIX (``./a//b`` -> ``a/b``); raises
    `UnsafePath` for an empty, absolute or climbing path, and for ``.`` unless `root_ok`."""
    if not raw:
        raise UnsafePath(raw, "empty; give a workspace-relative path")
    if raw.startswith("/"):
        raise UnsafePath(raw, "absolute; checkpoint paths are relative to the workspace")
    rel = "/".join(part for part in raw.split("/") if part not in ("", ".")) or "."
    problem = workspace_path_problem(rel)
    if problem is None and rel == "." and not root_ok:
        problem = "names the workspace itself; checkpoint it as a tree"
    if problem is not None:
        raise UnsafePath(raw, problem)
    return rel


def _check_inside(ws: Path, rel: str, store: CheckpointStore) -> None:
    """`rel`'s parent must resolve inside the workspace, and `rel` must not be in the store.

    The leaf is not resolved: rollback replaces a link at the leaf, it never writes through it.
    """
    if rel == ".":
        return
    problem = workspace_path_problem(rel)
    if problem is not None:
        raise UnsafePath(rel, problem)
    real_parent = Path(os.path.realpath((ws / rel).parent))
    if not real_parent.is_relative_to(ws):
        raise UnsafePath(rel, f"its directory resolves to {real_parent}, outside the workspace")
    if (real_parent / (ws / rel).name).is_relative_to(store.root.resolve()):
        raise UnsafePath(rel, "inside the checkpoint store")


def _check_link(ws: Path, rel: str, target: str) -> None:
    dest = Path(os.path.realpath((ws / rel).parent / target))
    if not dest.is_relative_to(ws):
        raise UnsafePath(rel, f"symbolic link to {target!r} points outside the workspace")


def _store_exclusion(ws: Path, store: CheckpointStore) -> list[str]:
    """The store's own directory, when it lies inside the workspace."""
    real = store.root.resolve()
    return [real.relative_to(ws).as_posix()] if real.is_relative_to(ws) and real != ws else []


def _unique(items: Iterable[str]) -> list[str]:
    return list(dict.fromkeys(items))


# --- reading the workspace ------------------------------------------------------------------


def _record(ws: Path, rel: str, store: CheckpointStore, *, as_file: bool) -> CheckpointEntry:
    """Store what is at `rel` and return its manifest entry."""
    path = ws / rel
    try:
        st = path.lstat()
    except (FileNotFoundError, NotADirectoryError):
        return AbsentEntry(rel)
    if stat.S_ISLNK(st.st_mode):
        target = _link_text(path)
        _check_link(ws, rel, target)
        return LinkEntry(rel, target)
    if stat.S_ISDIR(st.st_mode):
        if as_file:
            raise UnsafePath(rel, "is a directory; checkpoint it as a tree (--tree)")
        return DirEntry(rel)
    if not stat.S_ISREG(st.st_mode):
        raise UnsafePath(
            rel, "a special file (socket, fifo, device) cannot be checkpointed; exclude it"
        )
    fd = os.open(path, os.O_RDONLY | getattr(os, "O_NOFOLLOW", 0))
    with os.fdopen(fd, "rb") as handle:
        mode = stat.S_IMODE(os.fstat(handle.fileno()).st_mode)
        data = handle.read()
    sha256 = hashlib.sha256(data).hexdigest()
    store.put_blob(data, sha256)
    return FileEntry(rel, sha256, len(data), mode)


def _walk(ws: Path, root: str, excluded: list[str]) -> list[tuple[str, str, bool]]:
    """(path, kind, holds_excluded) for everything under `root`, sorted, links not followed,
    excluded paths skipped; `holds_excluded` says a directory (transitively) holds some.

    A root that is missing or is a link is not walked: following a link here could lead
    rollback to delete files outside the workspace.
    """
    out: list[tuple[str, str, bool]] = []

    def visit(directory: str) -> bool:
        holds_excluded = False
        try:
            with os.scandir(ws if directory == "." else ws / directory) as it:
                children = sorted(it, key=lambda e: e.name)
        except OSError as exc:
            raise CheckpointError(f"cannot list {directory}: {exc.strerror or exc}") from None
        for child in children:
            rel = child.name if directory == "." else f"{directory}/{child.name}"
            if is_excluded(rel, excluded):
                holds_excluded = True
                continue
            if child.is_symlink():
                out.append((rel, "link", False))
            elif child.is_dir(follow_symlinks=False):
                index = len(out)
                out.append((rel, "dir", False))
                if visit(rel):
                    out[index] = (rel, "dir", True)
                    holds_excluded = True
            elif child.is_file(follow_symlinks=False):
                out.append((rel, "file", False))
            else:
                out.append((rel, "other", False))
        return holds_excluded

    top = ws / root
    if root == "." or (not top.is_symlink() and top.is_dir()):
        visit(root)
    return out


def _observe(ws: Path, rel: str, *, follow: bool = False) -> Observed | None:
    path = ws / rel
    try:
        st = path.stat() if follow else path.lstat()
    except (FileNotFoundError, NotADirectoryError):
        return None
    if stat.S_ISLNK(st.st_mode):
        return Observed(rel, "link", target=_link_text(path))
    if stat.S_ISDIR(st.st_mode):
        return Observed(rel, "dir")
    if stat.S_ISREG(st.st_mode):
        return Observed(rel, "file", sha256=_sha256_of_file(path), mode=stat.S_IMODE(st.st_mode))
    return Observed(rel, "other")


def _observe_for(
    ws: Path, manifest: CheckpointManifest, excluded: list[str]
) -> dict[str, Observed]:
    """What `plan_rollback` needs: everything under the trees and each entry (links not
    followed), and each entry's ancestors outside the trees (followed: a linked directory is a
    directory; `_check_plan` makes sure it resolves inside the workspace).

    Nothing is observed through an ancestor that is not a directory: if a tree's directory was
    replaced by a link, what lies behind the link is not the workspace's business.
    """
    observed: dict[str, Observed] = {}
    for root in manifest.trees:
        for rel, kind, holds in _walk(ws, root, excluded):
            seen = (
                Observed(rel, "dir", holds_excluded=holds) if kind == "dir" else _observe(ws, rel)
            )
            if seen is not None:
                observed[rel] = seen
    for entry in sorted(manifest.entries, key=lambda e: e.path):
        visible = True
        for parent in parents(entry.path):
            if parent not in observed:
                above = _observe(ws, parent, follow=True)
                if above is None:
                    visible = False
                    break
                observed[parent] = above
            if observed[parent].kind != "dir":
                visible = False
                break
        if visible and entry.path not in observed:
            seen = _observe(ws, entry.path)
            if seen is not None:
                observed[entry.path] = seen
    return observed


def _check_plan(ws: Path, plan: RollbackPlan, store: CheckpointStore) -> None:
    """Every path the plan touches lies, once its new directories exist, inside the workspace
    and outside the store; every link it writes points inside. Checked before any change."""
    made = set(plan.make_dirs)
    writes: list[FileEntry | LinkEntry] = [*plan.recreate, *plan.rewrite, *plan.chmod]
    for rel in [*plan.delete, *plan.remove_dirs, *plan.make_dirs, *(e.path for e in writes)]:
        # The deepest ancestor the plan does not create exists now: resolve it, append the rest.
        parts = rel.split("/")
        keep = max((i for i, p in enumerate(parents(rel), 1) if p not in made), default=0)
        anchor = Path(os.path.realpath(ws.joinpath(*parts[:keep])))
        if not anchor.is_relative_to(ws):
            raise UnsafePath(rel, f"its directory resolves to {anchor}, outside the workspace")
        if anchor.joinpath(*parts[keep:]).is_relative_to(store.root.resolve()):
            raise UnsafePath(rel, "inside the checkpoint store")
    for entry in writes:
        if isinstance(entry, LinkEntry):
            _check_link(ws, entry.path, entry.target)


def _sha256_of_file(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        while chunk := handle.read(_CHUNK):
            digest.update(chunk)
    return digest.hexdigest()


def _link_text(path: Path) -> str:
    # os.readlink, not Path.readlink: a Path would normalise the text (``./x`` -> ``x``),
    # and the target is restored exactly as it was written.
    return os.readlink(path)  # noqa: PTH115


def _replace_link(path: Path, target: str) -> None:
    """Point `path` at `target` atomically: a new link under a temporary name, renamed over."""
    tmp = path.with_name(f".{path.name}.{secrets.token_hex(4)}.tmp")
    tmp.symlink_to(target)
    try:
        tmp.replace(path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
