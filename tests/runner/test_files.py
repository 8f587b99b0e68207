from __future__ import annotations

import os
import signal
import subprocess
import sys
from pathlib import Path

from runner.files import write_atomic


def test_write_atomic_creates_parents_and_replaces(tmp_path: Path) -> None:
    target = tmp_path / "a" / "b" / "queue.json"
    write_atomic(target, b"one")
    write_atomic(target, b"two")
    assert target.read_bytes() == b"two"
    assert [p.name for p in target.parent.iterdir()] == ["queue.json"]


def test_killed_writer_leaves_old_or_new_content_never_torn(tmp_path: Path) -> None:
    target = tmp_path / "state.json"
    write_atomic(target, b"old" * 1000)
    code = (
        "import sys; from runner.files import write_atomic\n"
        "i = 0\n"
        "while True:\n"
        "    write_atomic(sys.argv[1], (b'new%d' % i) * 200_000); i += 1\n"
    )
    proc = subprocess.Popen([sys.executable, "-c", code, str(target)])
    try:
        for _ in range(20):
            data = target.read_bytes()
            assert data == b"old" * 1000 or (data.startswith(b"new") and len(data) > 600_000)
    finally:
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait()
    data = target.read_bytes()
    assert data == b"old" * 1000 or data.startswith(b"new")
