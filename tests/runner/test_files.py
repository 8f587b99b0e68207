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


def test_permission_bits_are_kept_or_follow_the_umask(tmp_path: Path) -> None:
    """Not mkstemp's 0o600: a queue or a report others share stays readable to them."""
    fresh = tmp_path / "fresh.json"
    code = (
        "import os, sys; from runner.files import write_atomic\n"
        "os.umask(0o027); write_atomic(sys.argv[1], b'x')\n"
    )
    subprocess.run([sys.executable, "-c", code, str(fresh)], check=True)
    assert fresh.stat().st_mode & 0o777 == 0o640  # 0o666 less the umask
    shared = tmp_path / "shared.json"
    shared.write_bytes(b"old")
    shared.chmod(0o664)
    write_atomic(shared, b"new")
    assert shared.stat().st_mode & 0o777 == 0o664  # the replaced file's bits
    write_atomic(shared, b"newer", mode=0o600)
    assert shared.stat().st_mode & 0o777 == 0o600  # unless told
