"""Tree checkpoint and rollback time on a synthetic source tree.

Builds FILES files of SIZE bytes in DIRS directories in a temporary directory, checkpoints the
whole tree, changes a tenth of the files, deletes a tenth and adds a tenth, rolls back, and
prints each phase's wall time. The baseline in the same run is `shutil.copytree` of the same
tree (a plain copy, no hashing, no verification), the naive way to back a workspace up.

    .venv/bin/python bench/checkpoint.py [--files 2000] [--size 4096] [--dirs 40]
"""

from __future__ import annotations

import argparse
import shutil
import sys
import tempfile
import time
from pathlib import Path

# bench/protocol.py would shadow the `protocol` package: keep this directory off the path.
if sys.path and Path(sys.path[0]).resolve() == Path(__file__).resolve().parent:
    sys.path.pop(0)

from runner.checkpoint import CheckpointStore, create_checkpoint, rollback
from runner.log import configure_logging


def build(root: Path, files: int, size: int, dirs: int) -> list[Path]:
    paths = []
    for i in range(files):
        path = root / f"pkg{i % dirs}" / f"module_{i}.py"
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes((f"# file {i}\n".encode() * (size // 10 + 1))[:size])
        paths.append(path)
    return paths


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--files", type=int, default=2000)
    parser.add_argument("--size", type=int, default=4096)
    parser.add_argument("--dirs", type=int, default=40)
    args = parser.parse_args()
    configure_logging("warning")

    with tempfile.TemporaryDirectory() as tmp:
        base = Path(tmp)
        ws = base / "ws"
        paths = build(ws, args.files, args.size, args.dirs)
        store = CheckpointStore(base / "store")

        started = time.perf_counter()
        shutil.copytree(ws, base / "copy")
        copy_s = time.perf_counter() - started

        started = time.perf_counter()
        manifest = create_checkpoint(ws, trees=["."], task_key="B", run_id="B", store=store)
        create_s = time.perf_counter() - started

        tenth = max(1, args.files // 10)
        for path in paths[:tenth]:
            path.write_bytes(b"changed\n")
        for path in paths[tenth : 2 * tenth]:
            path.unlink()
        for i in range(tenth):
            (ws / f"pkg{i % args.dirs}" / f"new_{i}.py").write_bytes(b"new\n")

        started = time.perf_counter()
        report = rollback(ws, manifest.checkpoint_id, store=store)
        rollback_s = time.perf_counter() - started

        again = time.perf_counter()
        rollback(ws, manifest.checkpoint_id, store=store)
        noop_s = time.perf_counter() - again

    mib = args.files * args.size / 2**20
    print(f"tree: {args.files} files x {args.size} B in {args.dirs} dirs ({mib:.1f} MiB)")
    print(f"shutil.copytree (baseline)   {copy_s * 1000:8.0f} ms")
    print(f"create_checkpoint (tree)     {create_s * 1000:8.0f} ms")
    print(
        f"rollback ({report.changed} changes)      {rollback_s * 1000:8.0f} ms"
        f"  (rewritten {len(report.rewritten)}, recreated {len(report.recreated)}, "
        f"deleted {len(report.deleted)})"
    )
    print(f"rollback (nothing to do)     {noop_s * 1000:8.0f} ms")
    print(f"checkpoint / copytree        {create_s / copy_s:8.1f}x")


if __name__ == "__main__":
    sys.exit(main())
