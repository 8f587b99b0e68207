"""Hostile archives given to `runner ledger import`, as zip and as tar.gz: path traversal,
absolute names, symbolic and hard links, special files, entries not in the manifest, a manifest
that lies, duplicate names, decompression bombs. Each is refused (exit 2, the reason, the
entry) with nothing written: not under the import root, not where the entry pointed."""

from __future__ import annotations

import hashlib
import io
import json
import stat
import struct
import tarfile
import uuid
import warnings
import zipfile
from collections.abc import Callable
from pathlib import Path

import pytest
from click.testing import CliRunner

from ledger.archive import MANIFEST_NAME, import_project
from ledger.errors import UnsafeArchive
from ledger.sync import WorkflowLogger
from runner.cli import main
from tests.ledger.conftest import PROJECT, listing, populate
from tests.ledger.test_archive import remanifest

Entry = tuple[str, bytes, str, str]  # name, data, kind (file/symlink/hardlink/fifo/device), link
ESCAPE = f"/tmp/adv-archive-escape-{uuid.uuid4().hex}.txt"


@pytest.fixture(scope="module")
def good(tmp_path_factory: pytest.TempPathFactory) -> dict[str, bytes]:
    """The entries of a real export (manifest included)."""
    root = tmp_path_factory.mktemp("archive-source")
    populate(root, tasks=2)
    archive = WorkflowLogger(root, PROJECT).export_project(root / "p.zip")
    with zipfile.ZipFile(archive) as z:
        return {name: z.read(name) for name in z.namelist()}


def plain(entries: dict[str, bytes]) -> list[Entry]:
    return [(n, d, "file", "") for n, d in entries.items()]


def write(path: Path, entries: list[Entry]) -> Path:
    """`entries` as a zip or a tar.gz (by the name of `path`), exactly as given."""
    if path.suffix == ".zip":
        modes = {"file": stat.S_IFREG | 0o644, "symlink": stat.S_IFLNK | 0o777,
                 "fifo": stat.S_IFIFO | 0o644, "device": stat.S_IFCHR | 0o644}  # fmt: skip
        with zipfile.ZipFile(path, "w", zipfile.ZIP_DEFLATED) as z, warnings.catch_warnings():
            warnings.simplefilter("ignore")  # "Duplicate name": that is the point
            for name, data, kind, link in entries:
                info = zipfile.ZipInfo(name)
                info.external_attr = modes[kind] << 16
                info.compress_type = zipfile.ZIP_DEFLATED
                z.writestr(info, link.encode() if kind == "symlink" else data)
        return path
    types = {"file": tarfile.REGTYPE, "symlink": tarfile.SYMTYPE, "hardlink": tarfile.LNKTYPE,
             "fifo": tarfile.FIFOTYPE, "device": tarfile.CHRTYPE}  # fmt: skip
    with tarfile.open(path, "w:gz") as t:
        for name, data, kind, link in entries:
            info = tarfile.TarInfo(name)
            info.type, info.linkname = types[kind], link
            info.size = len(data) if kind == "file" else 0
            t.addfile(info, io.BytesIO(data) if kind == "file" else None)
    return path


def manifest_edit(good: dict[str, bytes], edit: Callable[[dict[str, object]], None]) -> list[Entry]:
    doc = json.loads(good[MANIFEST_NAME])
    edit(doc)
    return plain({**good, MANIFEST_NAME: json.dumps(doc).encode()})


def extra(good: dict[str, bytes], name: str, data: bytes, kind: str, link: str = "") -> list[Entry]:
    """A hostile entry, listed in an otherwise truthful manifest (files only: a link has no
    content to list)."""
    listed = remanifest({**good, name: data}) if kind == "file" else dict(good)
    return [*plain({n: d for n, d in listed.items() if n != name}), (name, data, kind, link)]


CASES: dict[str, tuple[Callable[[dict[str, bytes]], list[Entry]], str, set[str]]] = {
    # name: (entries, the reason printed, formats)
    "traversal": (lambda g: extra(g, "../escaped.txt", b"x", "file"), "climbs out", {"zip", "tgz"}),
    "nested-traversal": (
        lambda g: extra(g, "tasks/../../escaped.txt", b"x", "file"),
        "climbs out",
        {"zip", "tgz"},
    ),
    "absolute": (lambda g: extra(g, ESCAPE, b"x", "file"), "absolute", {"zip", "tgz"}),
    "backslash": (
        lambda g: extra(g, "tasks\\..\\..\\x", b"x", "file"),
        "malformed",
        {"zip", "tgz"},
    ),
    "symlink": (
        lambda g: extra(g, "tasks/T-0/artifacts/link", b"", "symlink", "/etc/passwd"),
        "symlinks are not allowed",
        {"zip", "tgz"},
    ),
    "file-through-symlink": (
        lambda g: [
            *extra(g, "tasks/T-0/artifacts/d", b"", "symlink", "/tmp"),
            ("tasks/T-0/artifacts/d/planted.txt", b"planted\n", "file", ""),
        ],
        "symlinks are not allowed",
        {"zip", "tgz"},
    ),
    "hardlink": (
        lambda g: extra(g, "tasks/T-0/artifacts/hard", b"", "hardlink", "/etc/passwd"),
        "hardlinks are not allowed",
        {"tgz"},
    ),
    "fifo": (
        lambda g: extra(g, "tasks/T-0/artifacts/f", b"", "fifo"),
        "special files",
        {"zip", "tgz"},
    ),
    "device": (
        lambda g: extra(g, "tasks/T-0/artifacts/c", b"", "device"),
        "special files",
        {"zip", "tgz"},
    ),
    "not-listed": (
        lambda g: [*plain(g), ("tasks/T-0/artifacts/x.txt", b"x", "file", "")],
        "not in the manifest",
        {"zip", "tgz"},
    ),
    "listed-missing": (
        lambda g: [e for e in plain(g) if e[0] != "tasks/T-1/events.jsonl"],
        "lists a missing file",
        {"zip", "tgz"},
    ),
    "lying-sha256": (
        lambda g: manifest_edit(g, lambda d: d["files"][0].update(sha256="0" * 64)),  # type: ignore[index]
        "sha256 differs",
        {"zip", "tgz"},
    ),
    "lying-size": (
        lambda g: manifest_edit(g, lambda d: d["files"][0].update(size=1)),  # type: ignore[index]
        "size differs",
        {"zip", "tgz"},
    ),
    "lying-path": (
        lambda g: manifest_edit(g, lambda d: d["files"][0].update(path="../../x")),  # type: ignore[index]
        "climbs out",
        {"zip", "tgz"},
    ),
    "listed-twice": (
        lambda g: manifest_edit(g, lambda d: d["files"].append(d["files"][0])),  # type: ignore[attr-defined,index]
        "lists a path twice",
        {"zip", "tgz"},
    ),
    "duplicate-name": (
        lambda g: [*plain(g), ("events.jsonl", g["events.jsonl"], "file", "")],
        "duplicate name",
        {"zip", "tgz"},
    ),
    "claims-a-bomb": (
        lambda g: manifest_edit(g, lambda d: d["files"][0].update(size=5 * 1024**3)),  # type: ignore[index]
        "unpacks to more than",
        {"zip", "tgz"},
    ),
    "edited-chain": (
        lambda g: plain(
            remanifest({**g, "events.jsonl": g["events.jsonl"].replace(b'"c1"', b'"c2"', 1)})
        ),
        "does not verify",
        {"zip", "tgz"},
    ),
    "no-manifest": (
        lambda g: [e for e in plain(g) if e[0] != MANIFEST_NAME],
        "no ledger-archive.json",
        {"zip", "tgz"},
    ),
}


def refused_via_cli(archive: Path, root: Path) -> str:
    result = CliRunner().invoke(
        main,
        ["ledger", "--root-dir", str(root), "import", "--archive", str(archive),
         "--target-project-id", "target"],
        catch_exceptions=False,
    )  # fmt: skip
    assert result.exit_code == 2, result.output
    return result.output


@pytest.mark.parametrize(
    ("case", "fmt"), [(case, fmt) for case, (_, _, formats) in CASES.items() for fmt in formats]
)
def test_a_hostile_archive_is_refused_with_nothing_written(
    good: dict[str, bytes], tmp_path: Path, case: str, fmt: str
) -> None:
    build, reason, _ = CASES[case]
    archive = write(tmp_path / f"{case}.{'zip' if fmt == 'zip' else 'tar.gz'}", build(good))
    root = tmp_path / "root"
    (root / "other").mkdir(parents=True)
    before, around = listing(root), listing(tmp_path)
    out = refused_via_cli(archive, root)
    assert reason in out, out
    assert listing(root) == before
    assert listing(tmp_path) == around
    assert not Path(ESCAPE).exists()
    assert not Path("/tmp/planted.txt").exists()


BOMB_MB = 64
LIMIT = 8 * 1024 * 1024


def zeros_entry(good: dict[str, bytes], claimed: int) -> tuple[dict[str, bytes], bytes]:
    data = b"\0" * (BOMB_MB * 1024 * 1024)
    entries = remanifest({**good, "tasks/T-0/artifacts/zeros.bin": data})
    doc = json.loads(entries[MANIFEST_NAME])
    for item in doc["files"]:
        if item["path"].endswith("zeros.bin"):
            item["size"] = claimed
    return {**entries, MANIFEST_NAME: json.dumps(doc).encode()}, data


def patch_zip_sizes(path: Path, name: str, size: int) -> None:
    """Make the zip's own headers (local and central) claim `size` for `name`."""
    raw = bytearray(path.read_bytes())
    encoded = name.encode()
    for sig, size_at, name_len_at, name_at in (
        (b"PK\x03\x04", 22, 26, 30),
        (b"PK\x01\x02", 24, 28, 46),
    ):
        at = raw.find(sig)
        while at >= 0:
            n = struct.unpack_from("<H", raw, at + name_len_at)[0]
            if raw[at + name_at : at + name_at + n] == encoded:
                struct.pack_into("<I", raw, at + size_at, size)
            at = raw.find(sig, at + 4)
    path.write_bytes(bytes(raw))


@pytest.mark.parametrize("lie", ["manifest-honest", "manifest-lies", "headers-lie"])
def test_a_decompression_bomb_is_refused_with_nothing_written(
    good: dict[str, bytes], tmp_path: Path, lie: str
) -> None:
    """64 MiB of zeros compress to 64 KiB. Refused before unpacking when the manifest says
    so; refused at the first byte past the claimed size when the manifest, and even the zip's
    own headers, lie."""
    claimed = {"manifest-honest": BOMB_MB * 1024 * 1024}.get(lie, 1024)
    entries, _ = zeros_entry(good, claimed)
    archive = write(tmp_path / "bomb.zip", plain(entries))
    assert archive.stat().st_size < 2 * 1024 * 1024
    if lie == "headers-lie":
        patch_zip_sizes(archive, "tasks/T-0/artifacts/zeros.bin", claimed)
    root = tmp_path / "root"
    root.mkdir()
    with pytest.raises(UnsafeArchive) as refused:
        import_project(root, archive, "target", max_unpacked_bytes=LIMIT)
    expected = {
        "manifest-honest": "unpacks to more than",
        "manifest-lies": "size differs",
        "headers-lie": ("larger than it claims", "damaged or unreadable archive"),
    }[lie]
    assert any(
        e in str(refused.value) for e in (expected if isinstance(expected, tuple) else (expected,))
    ), refused.value
    assert listing(root) == []


def test_sha256_of_entries_is_what_the_manifest_promises(good: dict[str, bytes]) -> None:
    """The fixture is a truthful export (so every refusal above is the attack's doing)."""
    doc = json.loads(good[MANIFEST_NAME])
    for item in doc["files"]:
        assert hashlib.sha256(good[item["path"]]).hexdigest() == item["sha256"]
