"""Rollback planning: from a checkpoint and what is on disk now, the changes that restore it.

The runner observes the workspace (each manifest path, its parent directories, and everything
under the checkpointed trees) and hands the observations in; this module decides, without
touching anything, which files to rewrite, recreate, chmod or delete and which directories to
create or remove. A conflict (a directory in the way that rollback has no right to remove)
is reported as data, so the runner can refuse before it changes a single byte.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Literal

import msgspec

from protocol.checkpoint import (
    AbsentEntry,
    CheckpointManifest,
    DirEntry,
    FileEntry,
    LinkEntry,
)

ObservedKind = Literal["file", "link", "dir", "other"]


class Observed(msgspec.Struct, frozen=True):
    """What is at a workspace-relative path now (absent paths are simply not observed).

    `holds_excluded` marks a directory that contains excluded paths: rollback must not remove
    it, since what it holds was never checkpointed.
    """

    path: str
    kind: ObservedKind
    sha256: str | None = None
    mode: int | None = None
    target: str | None = None
    holds_excluded: bool = False


class Conflict(msgspec.Struct, frozen=True):
    path: str
    reason: str


class RollbackPlan(msgspec.Struct, frozen=True):
    """Changes in the order the runner applies them: deletions, directory removals (deepest
    first), directory creations (shallowest first), then file and link writes and chmods."""

    delete: list[str] = []
    remove_dirs: list[str] = []
    make_dirs: list[str] = []
    rewrite: list[FileEntry | LinkEntry] = []
    recreate: list[FileEntry | LinkEntry] = []
    chmod: list[FileEntry] = []
    unchanged: list[str] = []
    conflicts: list[Conflict] = []


def parents(path: str) -> list[str]:
    """The ancestors of a relative path, shallowest first (``a/b/c`` -> ``a``, ``a/b``)."""
    parts = path.split("/")
    return ["/".join(parts[:i]) for i in range(1, len(parts))]


def is_under(path: str, root: str) -> bool:
    """True when `path` is `root` or inside it (``.`` is the workspace root)."""
    return root == "." or path == root or path.startswith(root + "/")


def is_excluded(path: str, exclude: Iterable[str]) -> bool:
    """A bare name excludes that component anywhere; a name with ``/`` a relative prefix."""
    parts = path.split("/")
    for pattern in exclude:
        if "/" in pattern:
            if is_under(path, pattern):
                return True
        elif pattern in parts:
            return True
    return False


def _depth(path: str) -> int:
    return path.count("/")


def plan_rollback(manifest: CheckpointManifest, observed: Mapping[str, Observed]) -> RollbackPlan:
    """Plan the restore of `manifest` given `observed`, keyed by path.

    `observed` must hold every manifest path and its ancestors that exist now and, for the tree
    form, every non-excluded path under each tree. Paths not in `observed` are absent.
    """
    wanted = {entry.path: entry for entry in manifest.entries}
    delete: set[str] = set()
    remove_dirs: set[str] = set()

    # Extras: in a checkpointed tree, whatever the manifest does not list goes, and so does a
    # directory standing where the manifest has something else.
    for path, there in observed.items():
        if path == "." or not any(is_under(path, t) for t in manifest.trees):
            continue
        if is_excluded(path, manifest.exclude):
            continue
        entry = wanted.get(path)
        if entry is not None and (there.kind != "dir" or isinstance(entry, DirEntry)):
            continue
        if there.kind == "dir":
            if not there.holds_excluded:
                remove_dirs.add(path)
        else:
            delete.add(path)

    make_dirs: set[str] = set()
    rewrite: list[FileEntry | LinkEntry] = []
    recreate: list[FileEntry | LinkEntry] = []
    chmod: list[FileEntry] = []
    unchanged: list[str] = []
    conflicts: list[Conflict] = []

    def goes_away(path: str) -> bool:
        return path in delete or path in remove_dirs

    for path, entry in wanted.items():
        seen = observed.get(path)
        if seen is not None and goes_away(path):
            if isinstance(entry, AbsentEntry):
                continue  # the extras pass removes it
            seen = None
        if isinstance(entry, AbsentEntry):
            if seen is None:
                unchanged.append(path)
            elif seen.kind == "dir":
                conflicts.append(
                    Conflict(path, "absent at the checkpoint, now a directory; not removing it")
                )
            else:
                delete.add(path)
            continue

        needs_parent_dirs = False
        if isinstance(entry, DirEntry):
            if seen is None:
                make_dirs.add(path)
                needs_parent_dirs = True
            elif seen.kind == "dir":
                unchanged.append(path)
            else:
                delete.add(path)
                make_dirs.add(path)
                needs_parent_dirs = True
        elif seen is not None and seen.kind == "dir":
            conflicts.append(
                Conflict(path, f"a directory is in the way of the checkpointed {_kind(entry)}")
            )
            continue
        elif seen is None:
            recreate.append(entry)
            needs_parent_dirs = True
        elif _same(entry, seen):
            unchanged.append(path)
        elif isinstance(entry, FileEntry) and seen.kind == "file" and seen.sha256 == entry.sha256:
            chmod.append(entry)
        else:
            rewrite.append(entry)

        if needs_parent_dirs:
            for parent in parents(path):
                above = observed.get(parent)
                if above is None or goes_away(parent):
                    make_dirs.add(parent)
                elif above.kind != "dir":
                    conflicts.append(
                        Conflict(path, f"parent {parent!r} is a {above.kind}, not a directory")
                    )

    # Directories the plan recreates must not also be removed; files under kept paths stay.
    remove_dirs -= make_dirs
    for path in list(make_dirs):
        now = observed.get(path)
        if now is not None and now.kind == "dir" and path not in remove_dirs:
            make_dirs.discard(path)

    return RollbackPlan(
        delete=sorted(delete),
        remove_dirs=sorted(remove_dirs, key=lambda p: (-_depth(p), p)),
        make_dirs=sorted(make_dirs, key=lambda p: (_depth(p), p)),
        rewrite=sorted(rewrite, key=lambda e: e.path),
        recreate=sorted(recreate, key=lambda e: e.path),
        chmod=sorted(chmod, key=lambda e: e.path),
        unchanged=sorted(unchanged),
        conflicts=conflicts,
    )


def _kind(entry: FileEntry | LinkEntry) -> str:
    return "file" if isinstance(entry, FileEntry) else "link"


def _same(entry: FileEntry | LinkEntry, seen: Observed) -> bool:
    if isinstance(entry, FileEntry):
        return seen.kind == "file" and seen.sha256 == entry.sha256 and seen.mode == entry.mode
    return seen.kind == "link" and seen.target == entry.target
