from __future__ import annotations

import json

import pytest

from protocol import (
    AbsentEntry,
    CheckpointManifest,
    FileEntry,
    FreezeMeta,
    LinkEntry,
    ProtocolError,
    decode,
    decode_kind,
    encode,
    workspace_path_problem,
)

SHA = "0" * 64


def manifest_doc(**overrides: object) -> dict[str, object]:
    doc: dict[str, object] = {
        "checkpoint_id": "T-1_20260101T000000Z_abcd1234",
        "task_key": "T-1",
        "run_id": "R1",
        "created_at": "2026-01-01T00:00:00Z",
        "workspace": "/ws",
        "entries": [
            {"state": "file", "path": "src/a.py", "sha256": SHA, "size": 3, "mode": 420},
            {"state": "absent", "path": "src/new.py"},
            {"state": "link", "path": "l", "target": "src/a.py"},
            {"state": "dir", "path": "src"},
        ],
    }
    doc.update(overrides)
    return doc


@pytest.mark.parametrize("path", ["a", "a/b.py", ".github/x", "a..b/c", "..a"])
def test_canonical_paths(path: str) -> None:
    assert workspace_path_problem(path) is None


@pytest.mark.parametrize(
    ("path", "reason"),
    [
        ("", "empty"),
        ("/etc/passwd", "absolute"),
        ("C:/x", "absolute"),
        ("..", "climbs out"),
        ("a/../../b", "climbs out"),
        ("./a", "not canonical"),
        ("a//b", "not canonical"),
        ("a/", "not canonical"),
        ("a\x00b", "NUL"),
        ("a\nb", "line break"),
    ],
)
def test_non_canonical_paths(path: str, reason: str) -> None:
    problem = workspace_path_problem(path)
    assert problem is not None and reason in problem


def test_manifest_round_trips_with_tagged_entries() -> None:
    manifest = decode(json.dumps(manifest_doc()), CheckpointManifest)
    kinds = [type(e) for e in manifest.entries]
    assert kinds[:3] == [FileEntry, AbsentEntry, LinkEntry]
    assert manifest.total_bytes == 3
    assert decode(encode(manifest), CheckpointManifest) == manifest
    assert decode_kind(encode(manifest))[0] == "checkpoint-manifest"


@pytest.mark.parametrize(
    ("entry", "where"),
    [
        ({"state": "file", "path": "../x", "sha256": SHA, "size": 1, "mode": 420}, "path"),
        ({"state": "file", "path": "x", "sha256": "ABC", "size": 1, "mode": 420}, "sha256"),
        ({"state": "file", "path": "x", "sha256": SHA, "size": -1, "mode": 420}, "size"),
        ({"state": "file", "path": "x", "sha256": SHA, "size": 1, "mode": 65536}, "mode"),
        ({"state": "absent", "path": "/abs"}, "path"),
        ({"state": "link", "path": "l", "target": ""}, "target"),
        ({"state": "socket", "path": "s"}, "state"),
        ({"state": "absent", "path": "a", "extra": 1}, ""),
    ],
)
def test_bad_entries_name_the_field(entry: dict[str, object], where: str) -> None:
    with pytest.raises(ProtocolError) as caught:
        decode(json.dumps(manifest_doc(entries=[entry])), CheckpointManifest, source="m.json")
    assert caught.value.path.startswith("$.entries[0]")
    assert caught.value.path.endswith(where)
    assert str(caught.value).startswith("m.json: ")


def test_duplicate_paths_and_bad_trees_are_rejected() -> None:
    twice = [{"state": "absent", "path": "a"}, {"state": "absent", "path": "a"}]
    with pytest.raises(ProtocolError, match="listed twice"):
        decode(json.dumps(manifest_doc(entries=twice)), CheckpointManifest)
    with pytest.raises(ProtocolError) as caught:
        decode(json.dumps(manifest_doc(trees=["../up"])), CheckpointManifest)
    assert caught.value.path == "$.trees[0]"
    with pytest.raises(ProtocolError) as caught:
        decode(json.dumps(manifest_doc(exclude=["."])), CheckpointManifest)
    assert caught.value.path == "$.exclude[0]"
    with pytest.raises(ProtocolError):
        decode(json.dumps(manifest_doc(checkpoint_id="../x")), CheckpointManifest)


def test_freeze_meta_approval_is_all_or_nothing() -> None:
    base = {"version": 1, "sha256": SHA, "source_draft_sha256": SHA, "frozen_at": "t"}
    assert not decode(json.dumps(base), FreezeMeta).approved
    with pytest.raises(ProtocolError, match="names approved_by"):
        decode(json.dumps({**base, "approved": True}), FreezeMeta)
    with pytest.raises(ProtocolError, match="approved is false"):
        decode(json.dumps({**base, "approved_by": "Ann"}), FreezeMeta)
    with pytest.raises(ProtocolError):
        decode(json.dumps({**base, "version": 0}), FreezeMeta)
    approved = {**base, "approved": True, "approved_by": "Ann", "approved_at": "t"}
    assert decode_kind(json.dumps(approved).encode())[0] == "freeze-meta"
