"""`runner demo` (what `make demo` runs) through the CLI: every task ends as the demo says it
will, the ledger verifies, and the same holds with the steps on Dask workers."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from ledger import ProjectPaths, verify_project
from runner import demo

RUNNER = [sys.executable, "-m", "runner", "--log-format", "json"]


def run_demo(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [*RUNNER, "demo", *args], capture_output=True, text=True, timeout=180, check=False
    )


def rows(stdout: str) -> dict[str, tuple[str, str]]:
    """The result table: task key to (expected, got)."""
    keys = {t.key for t in demo.TASKS}
    table = {}
    for line in stdout.splitlines():
        parts = line.split()
        if parts and parts[0] in keys:
            table[parts[0]] = (parts[1], parts[2])
    return table


@pytest.mark.parametrize("executor", ["local", "dask-local"])
def test_the_demo_ends_as_it_says_and_its_ledger_verifies(tmp_path: Path, executor: str) -> None:
    if executor != "local":
        pytest.importorskip("distributed")
    out = run_demo("--dir", str(tmp_path / "d"), "--executor", executor)
    assert out.returncode == 0, out.stdout + out.stderr[-3000:]
    table = rows(out.stdout)
    assert set(table) == {t.key for t in demo.TASKS}
    assert {k: got for k, (_, got) in table.items()} == {t.key: t.expected for t in demo.TASKS}
    assert "ledger: ok: " in out.stdout
    # The directory is kept with --dir, and its ledger verifies on its own; the head printed
    # is whole, for `verify --expect-head`.
    report = verify_project(ProjectPaths.of(tmp_path / "d" / "progress" / "ledger", "demo"))
    assert report.ok, report.problems
    assert f"head {report.project_head}\n" in out.stdout
    # Every task has its log to read, those that failed (left open in the ledger) included.
    tasks = tmp_path / "d" / "progress" / "ledger" / "demo" / "tasks"
    assert {p.parent.name for p in tasks.glob("*/task_log.md")} == {t.key for t in demo.TASKS}
    worktrees = tmp_path / "d" / "progress" / "worktrees"
    assert not worktrees.exists() or not any(worktrees.rglob("*")), "worktrees left behind"


def test_bad_demo_options_exit_2_before_anything_is_written(tmp_path: Path) -> None:
    out = run_demo("--dir", str(tmp_path / "d"), "--workers", "2")
    assert out.returncode == 2
    assert "--workers is for --executor dask-local" in out.stderr
    assert not (tmp_path / "d").exists()
    (tmp_path / "d").mkdir()
    (tmp_path / "d" / "mine.txt").write_text("keep me\n")
    out = run_demo("--dir", str(tmp_path / "d"))
    assert out.returncode == 2, out.stderr
    assert f"Invalid value for --dir: {tmp_path / 'd'}: exists already" in out.stderr
    assert "Traceback" not in out.stderr
    assert [p.name for p in (tmp_path / "d").iterdir()] == ["mine.txt"]
