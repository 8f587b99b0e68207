"""`runner status` on a real campaign's progress directory: queue, scoreboard and ledger."""

from __future__ import annotations

import subprocess
from pathlib import Path

from tests.runner.engine_fixtures import RUNNER, Project, TaskSpec, child_env


def status(cwd: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [*RUNNER, "status", *args],
        cwd=cwd, capture_output=True, text=True, timeout=60, check=False, env=child_env(),
    )  # fmt: skip


def test_status_finds_a_named_ledger_project_and_reports_damage(tmp_path: Path) -> None:
    p = Project(tmp_path, [TaskSpec("ok1"), TaskSpec("lie", scenario="lie", max_attempts=1)])
    assert status(tmp_path, "--progress-dir", str(p.progress)).stdout.endswith(
        f"ledger: none yet under {p.progress / 'ledger'}\n"
    )
    assert p.run("--project-id", "named").returncode == 1  # one task failed
    out = status(tmp_path, "--progress-dir", str(p.progress))
    assert out.returncode == 0, out.stdout + out.stderr
    lines = out.stdout.splitlines()
    assert lines[0] == "queue: 1 completed, 1 failed"
    assert any(line.startswith("ok1 ") and "completed" in line for line in lines)
    assert lines[-1].startswith("ledger named: ok, ")

    chain = p.progress / "ledger" / "named" / "tasks" / "ok1" / "events.jsonl"
    data = bytearray(chain.read_bytes())
    data[data.index(b'"attempt"')] ^= 0x01  # one flipped bit inside a hashed line
    chain.write_bytes(bytes(data))
    out = status(tmp_path, "--progress-dir", str(p.progress))
    assert out.returncode == 1
    assert "ledger named: DAMAGED" in out.stdout
    assert "tasks/ok1/events.jsonl" in out.stdout

    only = status(tmp_path, "--progress-dir", str(p.progress), "--project-id", "absent")
    assert only.returncode == 0
    assert only.stdout.endswith(f"ledger: none yet at {p.progress / 'ledger'}/absent\n")
