"""Export and import: round trips, and hostile archives refused with nothing written."""

from __future__ import annotations

import hashlib
import io
import json
import stat
import tarfile
import zipfile
from collections.abc import Callable, Iterator
from pathlib import Path

import msgspec
import pytest

from ledger.archive import MANIFEST_NAME, import_project
from ledger.errors import LedgerError, LedgerExists, UnsafeArchive
from ledger.store import ProjectPaths
from ledger.sync import WorkflowLogger
from ledger.verify import verify_project
from protocol.ledger_events import ProjectImported, ProjectRecord
from tests.ledger.conftest import PROJECT, listing

Entries = dict[str, bytes]


@pytest.fixture
def exported(project: ProjectPaths, tmp_path: Path) -> Path:
    return WorkflowLogger(project.root, PROJECT).export_project(tmp_path / "out" / "p.zip")


def entries_of(archive: Path) -> Entries:
    with zipfile.ZipFile(archive) as z:
        return {name: z.read(name) for name in z.namelist()}


def remanifest(entries: Entries) -> Entries:
    """Make the manifest tell the truth about `entries` again (a careful forger)."""
    manifest = json.loads(entries[MANIFEST_NAME])
    manifest["files"] = [
        {"path": n, "size": len(d), "sha256": hashlib.sha256(d).hexdigest()}
        for n, d in entries.items()
        if n != MANIFEST_NAME
    ]
    return {**entries, MANIFEST_NAME: json.dumps(manifest).encode()}


def write_zip(path: Path, entries: list[tuple[str, bytes, int]]) -> Path:
    with zipfile.ZipFile(path, "w") as z:
        for name, data, mode in entries:
            info = zipfile.ZipInfo(name)
            info.external_attr = mode << 16
            z.writestr(info, data)
    return path


def write_tar(path: Path, members: list[tarfile.TarInfo], data: Entries) -> Path:
    with tarfile.open(path, "w:gz") as t:
        for m in members:
            t.addfile(m, io.BytesIO(data[m.name]) if m.isreg() else None)
    return path


def regular(name: str, data: bytes) -> tarfile.TarInfo:
    info = tarfile.TarInfo(name)
    info.size = len(data)
    return info


@pytest.fixture
def root(tmp_path: Path) -> Path:
    r = tmp_path / "import-root"
    r.mkdir()
    (r / "other").mkdir()  # an unrelated project that must stay untouched
    return r


def test_round_trip_under_a_new_id_verifies_and_records_its_origin(
    exported: Path, root: Path, project: ProjectPaths
) -> None:
    source_head = verify_project(project).project_head
    imported = WorkflowLogger.import_project(root, exported, "migrated")
    assert imported.project_id == "migrated"
    head = imported.head
    paths = ProjectPaths.of(root, "migrated")
    report = verify_project(paths)
    assert report.ok and report.project_head == head
    last = msgspec.json.decode(paths.events.read_bytes().splitlines()[-1], type=ProjectRecord)
    assert isinstance(last.body, ProjectImported)
    assert last.body.source_project_id == PROJECT
    assert last.body.archive_sha256 == hashlib.sha256(exported.read_bytes()).hexdigest()
    assert source_head is not None and last.body.source_head_hash == source_head.hash
    # Task chains are byte-identical: the original hashes still stand.
    for task in ("T-0", "T-1", "T-2"):
        assert paths.task_events(task).read_bytes() == project.task_events(task).read_bytes()
    assert paths.task_log("T-0").exists()
    # The imported project takes appends like any other.
    WorkflowLogger(root, "migrated").close_task("T-1", "accepted", "after the move")
    assert verify_project(paths).ok


def test_tar_round_trip(project: ProjectPaths, tmp_path: Path, root: Path) -> None:
    archive = WorkflowLogger(project.root, PROJECT).export_project(tmp_path / "p.tar.gz")
    import_project(root, archive)
    assert verify_project(ProjectPaths.of(root, PROJECT)).ok


def test_existing_target_is_refused(exported: Path, root: Path) -> None:
    import_project(root, exported, "x")
    before = listing(root)
    with pytest.raises(LedgerExists):
        import_project(root, exported, "x")
    assert listing(root) == before


def hostile_zips(exported: Path) -> dict[str, Callable[[Path], Path]]:
    good = entries_of(exported)
    plain = [(n, d, stat.S_IFREG | 0o644) for n, d in good.items()]
    events = good["events.jsonl"]

    def with_extra(name: str, data: bytes, mode: int = stat.S_IFREG | 0o644) -> Callable[..., Path]:
        def build(path: Path) -> Path:
            listed = remanifest({**good, name: data})
            return write_zip(path, [(n, d, stat.S_IFREG | 0o644) for n, d in listed.items()
                                    if n != name] + [(name, data, mode)])  # fmt: skip

        return build

    def lying_sha(path: Path) -> Path:
        m = json.loads(good[MANIFEST_NAME])
        m["files"][0]["sha256"] = "0" * 64
        return write_zip(path, [(n, json.dumps(m).encode() if n == MANIFEST_NAME else d, md)
                                for n, d, md in plain])  # fmt: skip

    def lying_size(path: Path) -> Path:
        m = json.loads(good[MANIFEST_NAME])
        m["files"][0]["size"] += 1
        return write_zip(path, [(n, json.dumps(m).encode() if n == MANIFEST_NAME else d, md)
                                for n, d, md in plain])  # fmt: skip

    def not_listed(path: Path) -> Path:
        return write_zip(path, [*plain, ("tasks/T-0/artifacts/x.txt", b"x", stat.S_IFREG)])

    def missing(path: Path) -> Path:
        return write_zip(path, [e for e in plain if e[0] != "tasks/T-1/events.jsonl"])

    def duplicate(path: Path) -> Path:
        with pytest.warns(UserWarning):
            return write_zip(path, [*plain, ("events.jsonl", events, stat.S_IFREG | 0o644)])

    def bomb(path: Path) -> Path:
        return with_extra("tasks/T-0/artifacts/zeros.bin", b"\0" * (3 * 1024 * 1024))(path)

    def edited_chain(path: Path) -> Path:
        edited = dict(good)
        edited["tasks/T-0/events.jsonl"] = good["tasks/T-0/events.jsonl"].replace(
            b'"result":"PASS"', b'"result":"FAIL"', 1
        )
        return write_zip(path, [(n, d, stat.S_IFREG) for n, d in remanifest(edited).items()])

    def no_manifest(path: Path) -> Path:
        return write_zip(path, [e for e in plain if e[0] != MANIFEST_NAME])

    return {
        "traversal": with_extra("../escaped.txt", b"x"),
        "nested-traversal": with_extra("tasks/../../escaped.txt", b"x"),
        "absolute": with_extra("/tmp/absolute-escape.txt", b"x"),
        "backslash": with_extra("tasks\\..\\x", b"x"),
        "symlink": with_extra("tasks/T-0/artifacts/link", b"/etc/passwd", stat.S_IFLNK | 0o777),
        "fifo": with_extra("tasks/T-0/artifacts/fifo", b"", stat.S_IFIFO | 0o644),
        "not-listed": not_listed,
        "missing-file": missing,
        "lying-sha": lying_sha,
        "lying-size": lying_size,
        "duplicate": duplicate,
        "bomb": bomb,
        "edited-chain": edited_chain,
        "no-manifest": no_manifest,
        "not-an-archive": lambda p: (p.write_bytes(b"hello"), p)[1],
    }


CASES = {
    "traversal": "climbs out",
    "nested-traversal": "climbs out",
    "absolute": "absolute",
    "backslash": "malformed",
    "symlink": "symlinks are not allowed",
    "fifo": "special files",
    "not-listed": "not in the manifest",
    "missing-file": "lists a missing file",
    "lying-sha": "sha256 differs",
    "lying-size": "size differs",
    "duplicate": "duplicate name",
    "bomb": "unpacks to more than",
    "edited-chain": "tasks/T-0/events.jsonl:1: event_hash does not match",
    "no-manifest": "no ledger-archive.json",
    "not-an-archive": "not a zip or tar",
}


@pytest.mark.parametrize(("case", "reason"), CASES.items())
def test_hostile_zip_is_refused_and_nothing_is_written(
    case: str, reason: str, exported: Path, root: Path, tmp_path: Path
) -> None:
    archive = hostile_zips(exported)[case](tmp_path / f"{case}.zip")
    before, around = listing(root), listing(tmp_path)
    with pytest.raises(UnsafeArchive) as refused:
        import_project(root, archive, "target", max_unpacked_bytes=2 * 1024 * 1024)
    assert reason in str(refused.value)
    assert listing(root) == before
    assert listing(tmp_path) == around
    assert not Path("/tmp/absolute-escape.txt").exists()


@pytest.mark.parametrize("kind", ["symlink", "hardlink", "traversal", "device"])
def test_hostile_tar_is_refused_and_nothing_is_written(
    kind: str, exported: Path, root: Path, tmp_path: Path
) -> None:
    good = entries_of(exported)
    members = [regular(n, d) for n, d in good.items()]
    bad = tarfile.TarInfo({"traversal": "../../evil"}.get(kind, "tasks/T-0/artifacts/bad"))
    if kind == "symlink":
        bad.type, bad.linkname = tarfile.SYMTYPE, "/etc/passwd"
    elif kind == "hardlink":
        bad.type, bad.linkname = tarfile.LNKTYPE, "events.jsonl"
    elif kind == "device":
        bad.type = tarfile.CHRTYPE
    else:
        good = {**good, bad.name: b"x"}
        bad.size = 1
    archive = write_tar(tmp_path / f"{kind}.tar.gz", [*members, bad], good)
    before = listing(root)
    with pytest.raises(UnsafeArchive) as refused:
        import_project(root, archive, "target")
    assert {"traversal": "climbs out", "device": "special"}.get(kind, kind) in str(refused.value)
    assert listing(root) == before


def test_missing_root_is_not_left_behind(exported: Path, tmp_path: Path) -> None:
    archive = hostile_zips(exported)["lying-sha"](tmp_path / "bad.zip")
    with pytest.raises(UnsafeArchive):
        import_project(tmp_path / "fresh-root", archive)
    assert not (tmp_path / "fresh-root").exists()


def test_export_refuses_a_damaged_ledger(project: ProjectPaths, tmp_path: Path) -> None:
    path = project.task_events("T-0")
    path.write_bytes(path.read_bytes().replace(b'"result":"PASS"', b'"result":"FAIL"', 1))
    with pytest.raises(LedgerError, match="damaged"):
        WorkflowLogger(project.root, PROJECT).export_project(tmp_path / "d.zip")
    assert not (tmp_path / "d.zip").exists()


def test_task_logs_are_rendered_on_import_not_taken_from_the_archive(
    exported: Path, root: Path, tmp_path: Path
) -> None:
    # A forger's task_log.md, with a manifest that tells the truth about it: the chains still
    # verify, and the log is derived, so import renders it again from the chain.
    entries = entries_of(exported)
    entries["tasks/T-0/task_log.md"] = b"# Task T-0\n\nAll tests passed, trust me.\n"
    forged = write_zip(
        tmp_path / "forged.zip", [(n, d, stat.S_IFREG) for n, d in remanifest(entries).items()]
    )
    WorkflowLogger.import_project(root, forged, "copy")
    log = ProjectPaths.of(root, "copy").task_log("T-0").read_text()
    assert "trust me" not in log and "### 0. attempt" in log


def damaged_copies(archive: Path, out: Path) -> Iterator[Path]:
    """`archive` with one byte flipped at 48 places spread over it (headers, data, central
    directory, trailer), and cut short at five lengths."""
    data = archive.read_bytes()
    places = sorted({round(i * (len(data) - 1) / 47) for i in range(48)})
    for n, at in enumerate(places):
        path = out / f"flip-{n}-{archive.name}"
        path.write_bytes(data[:at] + bytes([data[at] ^ 0x5A]) + data[at + 1 :])
        yield path
    for cut in (1, len(data) // 4, len(data) // 2, len(data) * 3 // 4, len(data) - 1):
        path = out / f"cut-{cut}-{archive.name}"
        path.write_bytes(data[:cut])
        yield path


@pytest.mark.parametrize("name", ["p.zip", "p.tar", "p.tar.gz"])
def test_a_damaged_archive_is_refused_as_such_or_imports_whole(
    name: str, project: ProjectPaths, tmp_path: Path, root: Path
) -> None:
    """A byte flipped or a cut anywhere: import raises a `LedgerError` that names the archive
    (zlib's, gzip's, zipfile's and tarfile's own errors included) and writes nothing, or the
    damage was in bytes no check depends on (a timestamp, padding) and what it imported
    verifies."""
    archive = WorkflowLogger(project.root, PROJECT).export_project(tmp_path / name)
    (tmp_path / "damaged").mkdir()
    refused = 0
    for n, copy in enumerate(damaged_copies(archive, tmp_path / "damaged")):
        before = listing(root)
        try:
            import_project(root, copy, f"t-{n}")
        except LedgerError as exc:
            assert str(copy) in str(exc), exc
            assert listing(root) == before, copy
            refused += 1
        else:
            assert verify_project(ProjectPaths.of(root, f"t-{n}")).ok, copy
    assert refused >= 40, refused  # most bytes matter
