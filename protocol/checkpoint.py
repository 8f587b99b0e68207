"""Checkpoint manifests and rollback reports.

A checkpoint is a manifest (this module) plus content-addressed blobs (the runner's store): each
entry names a workspace-relative path and what was there at checkpoint time: a regular file (its
SHA-256, size and permission bits), a symbolic link (its target), a directory (in the tree form)
or nothing at all (`absent`, so that rollback deletes what appeared later).

Paths are checked here, at the wire boundary, because a manifest is a file anyone can edit: an
absolute path, a ``..`` component or a non-canonical spelling (``a//b``, ``./a``) never decodes,
so a tampered manifest cannot even name a place outside the workspace. The runner checks the
filesystem side (symlinked parents) again before it writes.
"""

from __future__ import annotations

from typing import Annotated

import msgspec

from .ids import SafeId
from .scalars import NonNegInt, Sha256

FileMode = Annotated[
    int, msgspec.Meta(ge=0, le=0o7777, description="Permission bits (st_mode & 0o7777).")
]


def workspace_path_problem(path: str) -> str | None:
    """Why `path` is not a canonical workspace-relative POSIX path, or None.

    Canonical means: relative, components joined by single ``/``, no ``.`` or ``..`` component,
    no NUL or newline, no trailing slash. ``.`` alone names the workspace root (tree roots only).
    """
    if path == ".":
        return None
    if not path:
        return "empty path"
    if "\x00" in path or "\n" in path or "\r" in path:
        return "path contains a NUL or line break"
    if path.startswith("/") or (len(path) > 1 and path[1] == ":" and path[0].isalpha()):
        return f"path {path!r} is absolute; checkpoint paths are relative to the workspace"
    parts = path.split("/")
    if ".." in parts:
        return f"path {path!r} climbs out of the workspace with '..'"
    if any(part in ("", ".") for part in parts):
        return f"path {path!r} is not canonical (empty or '.' component); write it as a/b"
    return None


def _check_path(path: str) -> None:
    problem = workspace_path_problem(path)
    if problem is None and path == ".":
        problem = "the workspace root itself is not a file entry"
    if problem is not None:
        raise ValueError(f"{problem} - at `$.path`")


class FileEntry(
    msgspec.Struct, frozen=True, forbid_unknown_fields=True, tag_field="state", tag="file"
):
    """A regular file: its bytes are the blob named by `sha256`."""

    path: str
    sha256: Sha256
    size: NonNegInt
    mode: FileMode

    def __post_init__(self) -> None:
        _check_path(self.path)


class LinkEntry(
    msgspec.Struct, frozen=True, forbid_unknown_fields=True, tag_field="state", tag="link"
):
    """A symbolic link, recorded (never followed) with its target text."""

    path: str
    target: str

    def __post_init__(self) -> None:
        _check_path(self.path)
        if not self.target or "\x00" in self.target:
            raise ValueError("link target is empty or contains a NUL - at `$.target`")


class DirEntry(
    msgspec.Struct, frozen=True, forbid_unknown_fields=True, tag_field="state", tag="dir"
):
    """A directory inside a checkpointed tree (so rollback can recreate empty ones)."""

    path: str

    def __post_init__(self) -> None:
        _check_path(self.path)


class AbsentEntry(
    msgspec.Struct, frozen=True, forbid_unknown_fields=True, tag_field="state", tag="absent"
):
    """A listed path that did not exist at checkpoint time: rollback deletes it."""

    path: str

    def __post_init__(self) -> None:
        _check_path(self.path)


CheckpointEntry = FileEntry | LinkEntry | DirEntry | AbsentEntry


class CheckpointManifest(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    """What one checkpoint holds. Stored as ``manifests/<checkpoint_id>.json`` in the store.

    `trees` are the directories checkpointed whole (``.`` for the workspace): on rollback
    anything found under them that the manifest does not list is deleted, except paths matching
    `exclude` (a bare name matches that component anywhere, ``a/b`` a workspace-relative
    prefix). `workspace` is the absolute workspace path at creation, checked at rollback so a
    checkpoint is never restored over another directory.
    """

    checkpoint_id: SafeId
    task_key: SafeId
    run_id: SafeId
    created_at: str
    workspace: str
    entries: list[CheckpointEntry]
    trees: list[str] = []
    exclude: list[str] = []
    format: Annotated[int, msgspec.Meta(ge=1, le=1)] = 1

    def __post_init__(self) -> None:
        seen: set[str] = set()
        for index, entry in enumerate(self.entries):
            if entry.path in seen:
                raise ValueError(f"path {entry.path!r} listed twice - at `$.entries[{index}]`")
            seen.add(entry.path)
        for index, tree in enumerate(self.trees):
            problem = workspace_path_problem(tree)
            if problem is not None:
                raise ValueError(f"{problem} - at `$.trees[{index}]`")
        for index, pattern in enumerate(self.exclude):
            problem = workspace_path_problem(pattern)
            if problem is not None or pattern == ".":
                reason = problem or "excluding '.' would exclude everything"
                raise ValueError(f"{reason} - at `$.exclude[{index}]`")

    @property
    def files(self) -> list[FileEntry]:
        return [e for e in self.entries if isinstance(e, FileEntry)]

    @property
    def total_bytes(self) -> int:
        return sum(e.size for e in self.files)


class RollbackReport(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    """What a rollback did, path by path (for the CLI, the log and the ledger)."""

    checkpoint_id: SafeId
    workspace: str
    rewritten: list[str] = []
    recreated: list[str] = []
    deleted: list[str] = []
    mode_restored: list[str] = []
    dirs_created: list[str] = []
    dirs_removed: list[str] = []
    unchanged: NonNegInt = 0

    @property
    def changed(self) -> int:
        return sum(
            len(paths)
            for paths in (
                self.rewritten,
                self.recreated,
                self.deleted,
                self.mode_restored,
                self.dirs_created,
                self.dirs_removed,
            )
        )
