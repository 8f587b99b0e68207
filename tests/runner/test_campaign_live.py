"""What a person watching `runner campaign` sees: on a terminal, a live board of running tasks
(elapsed time, last line of the agent's output) and a summary table at the end."""

from __future__ import annotations

import os
import pty
import re
import subprocess
import time
from pathlib import Path

from runner.live import Board, last_line
from tests.runner.engine_fixtures import Project, TaskSpec, child_env


def run_on_a_terminal(argv: list[str], timeout: float = 60) -> tuple[int, str]:
    """Run `argv` with stdout and stderr on a pseudo-terminal; its exit code and output."""
    master, slave = pty.openpty()
    proc = subprocess.Popen(
        argv, stdin=subprocess.DEVNULL, stdout=slave, stderr=slave, env=child_env()
    )
    os.close(slave)
    chunks = []
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            data = os.read(master, 65536)
        except OSError:  # EIO: every writer has closed the terminal
            break
        if not data:
            break
        chunks.append(data)
    os.close(master)
    return proc.wait(timeout=10), b"".join(chunks).decode("utf-8", "replace")


def test_a_terminal_shows_a_live_board_and_a_summary_table(tmp_path: Path) -> None:
    specs = [
        TaskSpec("slow_one", commands=["sleep 1.5"]),
        TaskSpec("quick", scenario="fail_then_pass", commands=["sleep 0.6"]),
    ]
    p = Project(tmp_path, specs, config={"limits": {"max_silence_sec": 20}})
    argv = [a for a in p.argv("campaign", "--max-parallel-steps", "2") if a != "json"]
    argv.remove("--log-format")
    code, out = run_on_a_terminal(argv)
    assert code == 0, out[-3000:]
    assert "running 2" in out  # the board, while both ran
    assert "slow_one" in out and "round 1" in out
    assert '{"type":"thread.started"' in out  # the last line of an agent's output
    assert "\x1b[F\x1b[2K" in out  # redrawn in place
    # Info log lines would break the redraw: only the board (and warnings) are written.
    assert "workspace.created" not in out and "dispatch.started" not in out
    # The summary table at the end, one row per task.
    lines = re.sub(r"\x1b\[[0-9;]*[A-Za-z]", "", out).splitlines()
    header = next(i for i, line in enumerate(lines) if line.startswith("task "))
    table = "\n".join(lines[header : header + 5])
    assert "slow_one" in table and "quick" in table and "completed" in table


def test_without_a_terminal_there_is_no_board_only_json_lines(tmp_path: Path) -> None:
    p = Project(tmp_path, [TaskSpec("t1")])
    result = p.run()
    assert result.returncode == 0
    assert "\x1b[" not in result.stderr + result.stdout
    assert all(line.startswith("{") for line in result.stderr.splitlines() if line)


def test_the_board_follows_the_events_and_shows_the_last_line(tmp_path: Path) -> None:
    out = tmp_path / "stdout.txt"
    out.write_bytes(b"first\n" + b"x" * 10000 + b"\nlast line \x07here\n\n")
    board = Board(quiet_log=True)
    board.emit("task.claimed", "t1")
    board.emit("step.dispatched", "t1", round=2, stdout=str(out))
    board.emit("task.claimed", "t2")
    board.emit("task.finished", "t2", status="failed", reason="SILENCE_LIMIT")
    lines = board.render(120)
    assert lines[0].startswith("done 0  failed 1  running 1")
    assert "t1" in lines[1] and "round 2" in lines[1] and "last line ?here" in lines[1]
    assert len(lines) == 2
    assert any("t2" in row and "failed" in row for row in board.summary())
    assert last_line(tmp_path / "missing.txt") == ""
