"""Freezing by content hash: a snapshot carries the SHA-256 of its own content.

The hash covers the canonical JSON of the snapshot with `content_sha256` set to ``""`` (fields
in declaration order, compact), so anyone can recompute it. A snapshot edited after freezing no
longer matches and is refused (`SnapshotTampered`) instead of silently widening a boundary.
"""

from __future__ import annotations

import hashlib
from typing import TypeVar

import msgspec

from protocol import BoundarySnapshot, PlanSnapshot, encode

from .errors import SnapshotTampered

Frozen = TypeVar("Frozen", PlanSnapshot, BoundarySnapshot)


def content_sha256(snapshot: PlanSnapshot | BoundarySnapshot) -> str:
    unhashed = msgspec.structs.replace(snapshot, content_sha256="")
    return hashlib.sha256(encode(unhashed)).hexdigest()


def freeze(snapshot: Frozen) -> Frozen:
    """`snapshot` with its content hash filled in."""
    return msgspec.structs.replace(snapshot, content_sha256=content_sha256(snapshot))


def verify(snapshot: Frozen, what: str) -> Frozen:
    """Return `snapshot` if its recorded hash matches its content, else raise."""
    actual = content_sha256(snapshot)
    if snapshot.content_sha256 != actual:
        raise SnapshotTampered(what, snapshot.content_sha256, actual)
    return snapshot


def verify_boundary(boundary: BoundarySnapshot) -> BoundarySnapshot:
    return verify(boundary, "boundary snapshot")


def verify_plan(plan: PlanSnapshot) -> PlanSnapshot:
    return verify(plan, "plan snapshot")
