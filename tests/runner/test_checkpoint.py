from __future__ import annotations

import json
import os
import stat
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from protocol import AbsentEntry, DirEntry, FileEntry, LinkEntry
from runner.checkpoint import (
    CheckpointCorrupt,
    CheckpointError,
    CheckpointNotFound,
    CheckpointStore,
    RollbackConflict,
    UnsafePath,
    WorkspaceMismatch,
    create_checkpoint,
    manifest_digest,
    rollback,
    verify_checkpoint,
)

Snapshot = dict[str, tuple[object, ...]]


def snapshot(ws: Path, skip: str = ".runner") -> Snapshot:
    """Everything under `ws` (links not followed), except the store."""
    out: Snapshot = {}
    for dirpath, dirnames, filenames in os.walk(ws):
        base = Path(dirpath)
        for name in sorted(dirnames + filenames):
            path = base / name
            rel = path.relative_to(ws).as_posix()
            if rel == skip or rel.startswith(skip + "/"):
                continue
            st_ = path.lstat()
            if stat.S_ISLNK(st_.st_mode):
                out[rel] = ("link", os.readlink(path))
            elif stat.S_ISDIR(st_.st_mode):
                out[rel] = ("dir",)
            else:
                out[rel] = ("file", path.read_bytes(), stat.S_IMODE(st_.st_mode))
        dirnames[:] = [d for d in dirnames if not (base / d).is_symlink()]
    return out


@pytest.fixture
def ws(tmp_path: Path) -> Path:
    root = tmp_path / "ws"
    (root / "src" / "pkg").mkdir(parents=True)
    (root / "src" / "pkg" / "mod.py").write_text("print('v1')\n")
    (root / "README.md").write_text("readme v1\n")
    run = root / "run.sh"
    run.write_text("#!/bin/sh\necho hi\n")
    run.chmod(0o755)
    (root / "empty").mkdir()
    os.symlink("src/pkg/mod.py", root / "mod-link")
    return root


@pytest.fixture
def store(tmp_path: Path) -> CheckpointStore:
    return CheckpointStore(tmp_path / "store")


def test_file_checkpoint_restores_changed_and_deleted_files_and_deletes_new_ones(
    ws: Path, store: CheckpointStore
) -> None:
    manifest = create_checkpoint(
        ws,
        ["README.md", "src/pkg/mod.py", "run.sh", "src/new.py"],
        task_key="T-1",
        run_id="T-1_run",
        store=store,
    )
    by_path = {e.path: e for e in manifest.entries}
    assert isinstance(by_path["src/new.py"], AbsentEntry)
    assert isinstance(by_path["run.sh"], FileEntry) and by_path["run.sh"].mode == 0o755
    before = snapshot(ws)

    (ws / "README.md").write_text("readme v2\n")
    (ws / "src" / "pkg" / "mod.py").unlink()
    (ws / "run.sh").chmod(0o600)
    (ws / "src" / "new.py").write_text("new\n")

    report = rollback(ws, manifest.checkpoint_id, store=store)

    assert snapshot(ws) == before
    assert report.rewritten == ["README.md"]
    assert report.recreated == ["src/pkg/mod.py"]
    assert report.deleted == ["src/new.py"]
    assert report.mode_restored == ["run.sh"]
    assert report.unchanged == 0


def test_blobs_are_content_addressed_and_stored_once(ws: Path, store: CheckpointStore) -> None:
    (ws / "copy.md").write_text("readme v1\n")
    first = create_checkpoint(ws, ["README.md", "copy.md"], task_key="T", run_id="R", store=store)
    second = create_checkpoint(ws, ["README.md"], task_key="T", run_id="R", store=store)
    blobs = [p for p in (store.root / "blobs").rglob("*") if p.is_file()]
    assert len(blobs) == 1
    sha = first.files[0].sha256
    assert blobs[0] == store.blob_path(sha)
    assert blobs[0].read_bytes() == b"readme v1\n"
    assert first.checkpoint_id != second.checkpoint_id
    assert first.checkpoint_id.startswith("T_")


def test_tree_checkpoint_restores_the_whole_tree(ws: Path, store: CheckpointStore) -> None:
    manifest = create_checkpoint(ws, trees=["."], task_key="T", run_id="R", store=store)
    kinds = {e.path: type(e) for e in manifest.entries}
    assert kinds["empty"] is DirEntry and kinds["mod-link"] is LinkEntry
    before = snapshot(ws)

    (ws / "README.md").unlink()
    (ws / "empty").rmdir()
    (ws / "src" / "pkg" / "mod.py").write_text("print('v2')\n")
    (ws / "build" / "out").mkdir(parents=True)
    (ws / "build" / "out" / "a.o").write_bytes(b"\x00\x01")
    (ws / "mod-link").unlink()
    os.symlink("README.md", ws / "mod-link")
    (ws / "src" / "pkg").rename(ws / "src" / "pkg2")

    report = rollback(ws, manifest.checkpoint_id, store=store)

    assert snapshot(ws) == before
    assert set(report.dirs_removed) == {"build", "build/out", "src/pkg2"}
    assert "build/out/a.o" in report.deleted
    assert set(report.dirs_created) >= {"empty", "src/pkg"}
    # Idempotent: a second rollback finds nothing to do.
    again = rollback(ws, manifest.checkpoint_id, store=store)
    assert again.changed == 0


def test_tree_rollback_keeps_excluded_paths_and_the_store_inside_the_workspace(
    ws: Path,
) -> None:
    (ws / ".git").mkdir()
    (ws / ".git" / "HEAD").write_text("ref\n")
    store = CheckpointStore(ws / ".runner" / "checkpoints")
    manifest = create_checkpoint(ws, trees=["."], task_key="T", run_id="R", store=store)
    assert ".git" in manifest.exclude and ".runner/checkpoints" in manifest.exclude
    assert not any(e.path.startswith(".git") for e in manifest.entries)

    (ws / ".git" / "HEAD").write_text("ref2\n")
    (ws / "new.txt").write_text("x")
    rollback(ws, manifest.checkpoint_id, store=store)

    assert (ws / ".git" / "HEAD").read_text() == "ref2\n"
    assert not (ws / "new.txt").exists()
    assert store.manifest_path(manifest.checkpoint_id).exists()


def test_subtree_checkpoint_leaves_the_rest_alone(ws: Path, store: CheckpointStore) -> None:
    manifest = create_checkpoint(ws, trees=["src"], task_key="T", run_id="R", store=store)
    (ws / "src" / "extra.py").write_text("x")
    (ws / "outside.txt").write_text("keep me")
    rollback(ws, manifest.checkpoint_id, store=store)
    assert not (ws / "src" / "extra.py").exists()
    assert (ws / "outside.txt").read_text() == "keep me"


def test_tampered_blob_is_refused_and_nothing_is_touched(ws: Path, store: CheckpointStore) -> None:
    manifest = create_checkpoint(ws, ["README.md", "run.sh"], task_key="T", run_id="R", store=store)
    blob = store.blob_path(manifest.files[1].sha256)
    blob.chmod(0o644)
    blob.write_bytes(b"evil\n")
    (ws / "README.md").write_text("work in progress\n")
    before = snapshot(ws)

    with pytest.raises(CheckpointCorrupt) as caught:
        rollback(ws, manifest.checkpoint_id, store=store)

    assert caught.value.path == manifest.files[1].path
    assert "does not match" in str(caught.value) and "nothing was restored" in str(caught.value)
    assert snapshot(ws) == before


def test_missing_blob_is_refused(ws: Path, store: CheckpointStore) -> None:
    manifest = create_checkpoint(ws, ["README.md"], task_key="T", run_id="R", store=store)
    store.blob_path(manifest.files[0].sha256).unlink()
    with pytest.raises(CheckpointCorrupt, match="missing"):
        verify_checkpoint(manifest.checkpoint_id, store=store)


def test_a_damaged_blob_is_healed_by_the_next_checkpoint(ws: Path, store: CheckpointStore) -> None:
    first = create_checkpoint(ws, ["README.md"], task_key="T", run_id="R", store=store)
    blob = store.blob_path(first.files[0].sha256)
    blob.chmod(0o644)
    blob.write_bytes(b"rot")
    create_checkpoint(ws, ["README.md"], task_key="T", run_id="R", store=store)
    assert verify_checkpoint(first.checkpoint_id, store=store) == first


def _tamper(
    store: CheckpointStore, checkpoint_id: str, path: str, target: str | None = None
) -> None:
    manifest_path = store.manifest_path(checkpoint_id)
    doc = json.loads(manifest_path.read_text())
    doc["entries"][0]["path"] = path
    if target is not None:
        doc["entries"][0] = {"state": "link", "path": path, "target": target}
    manifest_path.write_text(json.dumps(doc))


@pytest.mark.parametrize(
    "bad_path", ["../x", "/tmp/x", "a/../../x", "./README.md", "a//b", "", "."]
)
def test_tampered_manifest_path_is_refused(
    tmp_path: Path, ws: Path, store: CheckpointStore, bad_path: str
) -> None:
    manifest = create_checkpoint(ws, ["README.md"], task_key="T", run_id="R", store=store)
    _tamper(store, manifest.checkpoint_id, bad_path)
    (ws / "README.md").write_text("edited\n")
    before = snapshot(tmp_path, skip="store")

    with pytest.raises(CheckpointCorrupt) as caught:
        rollback(ws, manifest.checkpoint_id, store=store)

    assert "$.entries[0].path" in str(caught.value)
    assert snapshot(tmp_path, skip="store") == before
    assert not (tmp_path / "x").exists()


def test_tampered_manifest_through_a_symlinked_directory_is_refused(
    tmp_path: Path, ws: Path, store: CheckpointStore
) -> None:
    outside = tmp_path / "outside"
    outside.mkdir()
    manifest = create_checkpoint(ws, ["README.md"], task_key="T", run_id="R", store=store)
    os.symlink(outside, ws / "escape")
    _tamper(store, manifest.checkpoint_id, "escape/README.md")

    with pytest.raises(UnsafePath, match="outside the workspace"):
        rollback(ws, manifest.checkpoint_id, store=store)
    assert list(outside.iterdir()) == []


def test_tampered_link_target_outside_is_refused(ws: Path, store: CheckpointStore) -> None:
    manifest = create_checkpoint(ws, ["README.md"], task_key="T", run_id="R", store=store)
    _tamper(store, manifest.checkpoint_id, "README.md", target="../../etc/passwd")
    with pytest.raises(UnsafePath, match="points outside"):
        rollback(ws, manifest.checkpoint_id, store=store)
    assert (ws / "README.md").read_text() == "readme v1\n"


def test_tree_rollback_never_walks_a_root_that_became_a_link(
    tmp_path: Path, ws: Path, store: CheckpointStore
) -> None:
    outside = tmp_path / "outside"
    outside.mkdir()
    (outside / "precious.txt").write_text("keep")
    manifest = create_checkpoint(ws, trees=["src"], task_key="T", run_id="R", store=store)
    (ws / "src").rename(ws / "src-moved")
    os.symlink(outside, ws / "src")

    rollback(ws, manifest.checkpoint_id, store=store)

    assert (outside / "precious.txt").read_text() == "keep"
    assert not (ws / "src").is_symlink()
    assert (ws / "src" / "pkg" / "mod.py").read_text() == "print('v1')\n"


@pytest.mark.parametrize(
    ("paths", "message"),
    [
        (["/etc/passwd"], "absolute"),
        (["../x"], "climbs out"),
        (["src"], "is a directory"),
        (["."], "workspace itself"),
        ([""], "empty"),
    ],
)
def test_create_rejects_unsafe_paths(
    ws: Path, store: CheckpointStore, paths: list[str], message: str
) -> None:
    with pytest.raises(UnsafePath, match=message):
        create_checkpoint(ws, paths, task_key="T", run_id="R", store=store)
    assert not (store.root / "manifests").exists()


def test_create_rejects_symlinks_escaping_the_workspace(
    tmp_path: Path, ws: Path, store: CheckpointStore
) -> None:
    (tmp_path / "secret").mkdir()
    (tmp_path / "secret" / "key").write_text("k")
    os.symlink(tmp_path / "secret", ws / "linked-dir")
    with pytest.raises(UnsafePath, match="outside the workspace"):
        create_checkpoint(ws, ["linked-dir/key"], task_key="T", run_id="R", store=store)
    os.symlink(tmp_path / "secret" / "key", ws / "key-link")
    with pytest.raises(UnsafePath, match="points outside"):
        create_checkpoint(ws, ["key-link"], task_key="T", run_id="R", store=store)
    with pytest.raises(UnsafePath, match="points outside"):
        create_checkpoint(ws, trees=["."], task_key="T", run_id="R", store=store)
    # Excluded, the tree checkpoint goes through.
    create_checkpoint(
        ws, trees=["."], exclude=["linked-dir", "key-link"], task_key="T", run_id="R", store=store
    )


def test_create_rejects_files_inside_the_store(ws: Path) -> None:
    store = CheckpointStore(ws / ".runner" / "checkpoints")
    first = create_checkpoint(ws, ["README.md"], task_key="T", run_id="R", store=store)
    inside = store.manifest_path(first.checkpoint_id).relative_to(ws).as_posix()
    with pytest.raises(UnsafePath, match="inside the checkpoint store"):
        create_checkpoint(ws, [inside], task_key="T", run_id="R", store=store)


def test_create_rejects_unsafe_ids(ws: Path, store: CheckpointStore) -> None:
    from protocol import ProtocolError

    with pytest.raises(ProtocolError, match="invalid task key"):
        create_checkpoint(ws, ["README.md"], task_key="../T", run_id="R", store=store)


def test_rollback_into_another_workspace_is_refused(
    tmp_path: Path, ws: Path, store: CheckpointStore
) -> None:
    manifest = create_checkpoint(ws, trees=["."], task_key="T", run_id="R", store=store)
    other = tmp_path / "other"
    other.mkdir()
    (other / "important.txt").write_text("x")
    with pytest.raises(WorkspaceMismatch):
        rollback(other, manifest.checkpoint_id, store=store)
    assert (other / "important.txt").exists()


def test_digest_pins_the_manifest(ws: Path, store: CheckpointStore) -> None:
    manifest = create_checkpoint(ws, ["README.md", "run.sh"], task_key="T", run_id="R", store=store)
    digest = manifest_digest(manifest)
    assert verify_checkpoint(manifest.checkpoint_id, store=store, expected_digest=digest)
    # Drop an entry: still a valid manifest, but not the one that was recorded.
    path = store.manifest_path(manifest.checkpoint_id)
    doc = json.loads(path.read_text())
    doc["entries"] = doc["entries"][:1]
    path.write_text(json.dumps(doc))
    with pytest.raises(CheckpointCorrupt, match="digest"):
        rollback(ws, manifest.checkpoint_id, store=store, expected_digest=digest)


def test_empty_tree_or_exclude_is_refused_not_taken_for_the_workspace(
    ws: Path, store: CheckpointStore
) -> None:
    with pytest.raises(UnsafePath, match="empty"):
        create_checkpoint(ws, trees=[""], task_key="T", run_id="R", store=store)
    with pytest.raises(UnsafePath, match="empty"):
        create_checkpoint(ws, trees=["src"], exclude=[""], task_key="T", run_id="R", store=store)
    assert not (store.root / "manifests").exists()


@pytest.mark.parametrize("digest", ["zz", "", "A" * 64, "0" * 65])
def test_malformed_digest_is_an_error_not_a_changed_manifest(
    ws: Path, store: CheckpointStore, digest: str
) -> None:
    manifest = create_checkpoint(ws, ["README.md"], task_key="T", run_id="R", store=store)
    (ws / "README.md").write_text("edited\n")
    for call in (
        lambda: verify_checkpoint(manifest.checkpoint_id, store=store, expected_digest=digest),
        lambda: rollback(ws, manifest.checkpoint_id, store=store, expected_digest=digest),
    ):
        with pytest.raises(CheckpointError, match="not a SHA-256 digest") as caught:
            call()
        assert not isinstance(caught.value, CheckpointCorrupt)
    assert (ws / "README.md").read_text() == "edited\n"


def test_unknown_and_renamed_checkpoints(ws: Path, store: CheckpointStore) -> None:
    with pytest.raises(CheckpointNotFound):
        rollback(ws, "T_nope", store=store)
    manifest = create_checkpoint(ws, ["README.md"], task_key="T", run_id="R", store=store)
    store.manifest_path(manifest.checkpoint_id).rename(store.manifest_path("T_other"))
    with pytest.raises(CheckpointCorrupt, match="names"):
        rollback(ws, "T_other", store=store)


def test_conflict_is_refused_before_anything_changes(ws: Path, store: CheckpointStore) -> None:
    manifest = create_checkpoint(
        ws, ["README.md", "notes.txt"], task_key="T", run_id="R", store=store
    )
    (ws / "README.md").write_text("edited\n")
    (ws / "notes.txt").mkdir()  # absent at the checkpoint, now a directory
    before = snapshot(ws)
    with pytest.raises(RollbackConflict, match=r"notes\.txt"):
        rollback(ws, manifest.checkpoint_id, store=store)
    assert snapshot(ws) == before


def test_file_restored_over_a_link_replaces_the_link(
    tmp_path: Path, ws: Path, store: CheckpointStore
) -> None:
    manifest = create_checkpoint(ws, ["README.md"], task_key="T", run_id="R", store=store)
    target = ws / "src" / "pkg" / "mod.py"
    (ws / "README.md").unlink()
    os.symlink("src/pkg/mod.py", ws / "README.md")
    rollback(ws, manifest.checkpoint_id, store=store)
    assert not (ws / "README.md").is_symlink()
    assert (ws / "README.md").read_text() == "readme v1\n"
    assert target.read_text() == "print('v1')\n"


def test_nothing_to_checkpoint_and_missing_workspace(
    tmp_path: Path, store: CheckpointStore
) -> None:
    with pytest.raises(CheckpointError, match="nothing to checkpoint"):
        create_checkpoint(tmp_path, [], task_key="T", run_id="R", store=store)
    with pytest.raises(CheckpointError, match="not a directory"):
        create_checkpoint(tmp_path / "nope", ["a"], task_key="T", run_id="R", store=store)


def test_list_reports_bad_manifests_without_failing(ws: Path, store: CheckpointStore) -> None:
    good = create_checkpoint(ws, ["README.md"], task_key="T", run_id="R", store=store)
    (store.root / "manifests" / "T_broken.json").write_text("{not json")
    manifests, bad = store.list()
    assert [m.checkpoint_id for m in manifests] == [good.checkpoint_id]
    assert [b.checkpoint_id for b in bad] == ["T_broken"]


_NAMES = st.sampled_from(["a", "b", "c.txt", "d/e", "d/f.py", "g/h/i"])
_ACTIONS = st.lists(
    st.tuples(
        st.sampled_from(["write", "delete", "chmod", "mkdir", "link"]),
        _NAMES,
        st.binary(max_size=64),
    ),
    max_size=12,
)


def _mutate(ws: Path, actions: list[tuple[str, str, bytes]]) -> None:
    for action, name, data in actions:
        path = ws / name
        try:
            if action == "write":
                path.parent.mkdir(parents=True, exist_ok=True)
                if path.is_dir() and not path.is_symlink():
                    continue
                path.unlink(missing_ok=True)
                path.write_bytes(data)
            elif action == "delete":
                if path.is_symlink() or path.is_file():
                    path.unlink()
            elif action == "chmod" and path.is_file() and not path.is_symlink():
                path.chmod(0o700 if data[:1] == b"x" else 0o640)
            elif action == "mkdir":
                path.mkdir(parents=True, exist_ok=True)
            elif action == "link" and not path.exists() and not path.is_symlink():
                path.parent.mkdir(parents=True, exist_ok=True)
                os.symlink("a", path)
        except (NotADirectoryError, FileExistsError, IsADirectoryError):
            continue  # a parent is a file: the action does not apply


def _workspace_after(
    factory: pytest.TempPathFactory, actions: list[tuple[str, str, bytes]]
) -> tuple[Path, CheckpointStore]:
    base = factory.mktemp("prop")
    ws = base / "ws"
    ws.mkdir()
    _mutate(ws, actions)
    return ws, CheckpointStore(base / "store")


_PROPERTY = settings(
    max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)


@_PROPERTY
@given(setup=_ACTIONS, change=_ACTIONS)
def test_tree_rollback_restores_any_state_exactly(
    tmp_path_factory: pytest.TempPathFactory,
    setup: list[tuple[str, str, bytes]],
    change: list[tuple[str, str, bytes]],
) -> None:
    ws, store = _workspace_after(tmp_path_factory, setup)
    before = snapshot(ws)
    manifest = create_checkpoint(ws, trees=["."], task_key="T", run_id="R", store=store)
    _mutate(ws, change)
    rollback(ws, manifest.checkpoint_id, store=store)
    assert snapshot(ws) == before


def test_os_errors_become_checkpoint_errors(tmp_path: Path, ws: Path) -> None:
    blocker = tmp_path / "store-is-a-file"
    blocker.write_text("not a directory")
    with pytest.raises(CheckpointError, match=r"cannot checkpoint: .*store-is-a-file"):
        create_checkpoint(
            ws, ["README.md"], task_key="T", run_id="R", store=CheckpointStore(blocker)
        )


@_PROPERTY
@given(
    setup=_ACTIONS,
    change=_ACTIONS,
    listed=st.lists(_NAMES, min_size=1, max_size=6, unique=True),
)
def test_file_rollback_restores_the_listed_paths_exactly(
    tmp_path_factory: pytest.TempPathFactory,
    setup: list[tuple[str, str, bytes]],
    change: list[tuple[str, str, bytes]],
    listed: list[str],
) -> None:
    ws, store = _workspace_after(tmp_path_factory, setup)
    before = snapshot(ws)
    # Listed paths that are directories now cannot be file entries: leave them out.
    files = [p for p in listed if before.get(p, ("file",))[0] != "dir"]
    if not files:
        return
    manifest = create_checkpoint(ws, files, task_key="T", run_id="R", store=store)
    _mutate(ws, change)
    try:
        rollback(ws, manifest.checkpoint_id, store=store)
    except RollbackConflict:
        # Only when a directory now stands where a listed path must go.
        now = snapshot(ws)
        assert any(
            now.get(p, ("",))[0] == "dir" or any(now.get(a, ("dir",))[0] != "dir"
                                                 for a in _ancestors(p))
            for p in files
        )  # fmt: skip
        return
    after = snapshot(ws)
    for path in files:
        assert after.get(path) == before.get(path), path


def _ancestors(path: str) -> list[str]:
    parts = path.split("/")
    return ["/".join(parts[:i]) for i in range(1, len(parts))]
