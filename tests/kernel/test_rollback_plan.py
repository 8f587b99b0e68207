from __future__ import annotations

import pytest

from kernel.rollback import Observed, is_excluded, parents, plan_rollback
from protocol import (
    AbsentEntry,
    CheckpointEntry,
    CheckpointManifest,
    DirEntry,
    FileEntry,
    LinkEntry,
)

SHA_A = "a" * 64
SHA_B = "b" * 64


def manifest(*entries: CheckpointEntry, trees: list[str] | None = None) -> CheckpointManifest:
    return CheckpointManifest(
        checkpoint_id="C",
        task_key="T",
        run_id="R",
        created_at="2026-01-01T00:00:00Z",
        workspace="/ws",
        entries=list(entries),
        trees=trees or [],
        exclude=[".git"],
    )


def seen(*items: Observed) -> dict[str, Observed]:
    return {o.path: o for o in items}


def file(path: str, sha: str = SHA_A, mode: int = 0o644) -> Observed:
    return Observed(path, "file", sha256=sha, mode=mode)


def test_parents_and_exclusion() -> None:
    assert parents("a/b/c") == ["a", "a/b"]
    assert parents("a") == []
    assert is_excluded("x/.git/HEAD", [".git"])
    assert not is_excluded("x/.github/a", [".git"])
    assert is_excluded("build/cache/a", ["build/cache"])
    assert not is_excluded("src/build/cache", ["build/cache"])


@pytest.mark.parametrize(
    ("entry", "observed", "bucket"),
    [
        (FileEntry("f", SHA_A, 1, 0o644), file("f"), "unchanged"),
        (FileEntry("f", SHA_A, 1, 0o755), file("f"), "chmod"),
        (FileEntry("f", SHA_A, 1, 0o644), file("f", SHA_B), "rewrite"),
        (FileEntry("f", SHA_A, 1, 0o644), Observed("f", "link", target="x"), "rewrite"),
        (FileEntry("f", SHA_A, 1, 0o644), Observed("f", "other"), "rewrite"),
        (FileEntry("f", SHA_A, 1, 0o644), None, "recreate"),
        (LinkEntry("f", "x"), Observed("f", "link", target="x"), "unchanged"),
        (LinkEntry("f", "x"), Observed("f", "link", target="y"), "rewrite"),
        (LinkEntry("f", "x"), None, "recreate"),
        (AbsentEntry("f"), None, "unchanged"),
        (AbsentEntry("f"), file("f"), "delete"),
        (AbsentEntry("f"), Observed("f", "link", target="x"), "delete"),
    ],
)
def test_file_form_table(entry: CheckpointEntry, observed: Observed | None, bucket: str) -> None:
    plan = plan_rollback(manifest(entry), seen(observed) if observed else {})
    buckets = {
        "unchanged": plan.unchanged,
        "chmod": [e.path for e in plan.chmod],
        "rewrite": [e.path for e in plan.rewrite],
        "recreate": [e.path for e in plan.recreate],
        "delete": plan.delete,
    }
    assert buckets.pop(bucket) == ["f"]
    assert all(not paths for paths in buckets.values())
    assert plan.conflicts == []


def test_missing_parents_are_created_shallowest_first() -> None:
    plan = plan_rollback(manifest(FileEntry("a/b/c.txt", SHA_A, 1, 0o644)), {})
    assert plan.make_dirs == ["a", "a/b"]
    assert [e.path for e in plan.recreate] == ["a/b/c.txt"]


@pytest.mark.parametrize(
    ("entry", "observed", "reason"),
    [
        (FileEntry("f", SHA_A, 1, 0o644), Observed("f", "dir"), "directory is in the way"),
        (AbsentEntry("f"), Observed("f", "dir"), "now a directory"),
    ],
)
def test_file_form_conflicts(entry: CheckpointEntry, observed: Observed, reason: str) -> None:
    plan = plan_rollback(manifest(entry), seen(observed))
    assert [c.path for c in plan.conflicts] == ["f"]
    assert reason in plan.conflicts[0].reason


def test_a_file_where_a_parent_directory_should_be_is_a_conflict_outside_trees() -> None:
    plan = plan_rollback(manifest(FileEntry("a/b", SHA_A, 1, 0o644)), seen(file("a")))
    assert plan.conflicts and "parent 'a' is a file" in plan.conflicts[0].reason


def test_tree_extras_are_deleted_deepest_directory_first() -> None:
    m = manifest(DirEntry("src"), FileEntry("src/a.py", SHA_A, 1, 0o644), trees=["."])
    observed = seen(
        Observed("src", "dir"),
        file("src/a.py"),
        Observed("build", "dir"),
        Observed("build/out", "dir"),
        file("build/out/x.o"),
        file("new.txt"),
        Observed(".git", "dir"),  # excluded: never touched
    )
    plan = plan_rollback(m, observed)
    assert plan.delete == ["build/out/x.o", "new.txt"]
    assert plan.remove_dirs == ["build/out", "build"]
    assert plan.unchanged == ["src", "src/a.py"]


def test_tree_directory_holding_excluded_paths_is_kept() -> None:
    m = manifest(trees=["."])
    observed = seen(Observed("vendor", "dir", holds_excluded=True), file("vendor/a"))
    plan = plan_rollback(m, observed)
    assert plan.delete == ["vendor/a"] and plan.remove_dirs == []


def test_tree_directory_in_the_way_of_a_file_is_replaced() -> None:
    m = manifest(FileEntry("a", SHA_A, 1, 0o644), trees=["."])
    plan = plan_rollback(m, seen(Observed("a", "dir"), file("a/inner")))
    assert plan.delete == ["a/inner"] and plan.remove_dirs == ["a"]
    assert [e.path for e in plan.recreate] == ["a"]
    assert plan.conflicts == []


def test_tree_file_or_link_where_a_directory_was_is_replaced() -> None:
    m = manifest(DirEntry("d"), FileEntry("d/x", SHA_A, 1, 0o644), trees=["."])
    plan = plan_rollback(m, seen(Observed("d", "link", target="/elsewhere")))
    assert plan.delete == ["d"]
    assert plan.make_dirs == ["d"]
    assert [e.path for e in plan.recreate] == ["d/x"]


def test_files_outside_the_trees_are_not_extras() -> None:
    m = manifest(DirEntry("src"), trees=["src"])
    plan = plan_rollback(m, seen(Observed("src", "dir"), file("README.md"), file("src/new")))
    assert plan.delete == ["src/new"]
