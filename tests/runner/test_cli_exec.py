"""`runner exec` as a real subprocess: outcome JSON, exit codes, files, cancellation."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest

from tests.runner.hostile import FORK_TREE, PY, recorded_pids, survivors, write_script

RUNNER = [sys.executable, "-m", "runner", "--log-level", "warning"]
FAST = ["--poll-interval-sec", "0.05", "--kill-grace-sec", "0.3"]


def runner_exec(*args: str, timeout: float = 30) -> subprocess.CompletedProcess[bytes]:
    return subprocess.run(
        [*RUNNER, "exec", *args], capture_output=True, timeout=timeout, check=False
    )


def last_json(stdout: bytes) -> dict[str, Any]:
    outcome: dict[str, Any] = json.loads(stdout.splitlines()[-1])
    return outcome


def test_output_passes_through_and_outcome_is_the_last_line() -> None:
    result = runner_exec("--", PY, "-c", "import sys; print('hello'); sys.stdout.write('tail')")
    assert result.returncode == 0
    lines = result.stdout.splitlines()
    assert lines[:2] == [b"hello", b"tail"], "the outcome starts on a line of its own"
    outcome = last_json(result.stdout)
    assert outcome["reason"] == "completed" and outcome["exit_code"] == 0
    assert outcome["stdout_bytes"] == 10
    assert {"duration_ms", "peak_memory_bytes", "started_at", "ended_at"} <= set(outcome)


def test_exit_code_is_the_childs() -> None:
    result = runner_exec("--", PY, "-c", "import sys; print('x', file=sys.stderr); exit(7)")
    assert result.returncode == 7
    assert result.stderr.startswith(b"x\n")
    assert last_json(result.stdout)["exit_code"] == 7


def test_files_and_outcome_file(tmp_path: Path) -> None:
    out, err, outcome_file = tmp_path / "o" / "out.txt", tmp_path / "err.txt", tmp_path / "oc.json"
    result = runner_exec(
        "--stdout",
        str(out),
        "--stderr",
        str(err),
        "--outcome-file",
        str(outcome_file),
        "--",
        PY,
        "-c",
        "import sys; print('to file'); print('e', file=sys.stderr)",
    )
    assert result.returncode == 0
    assert result.stdout == b""
    assert out.read_bytes() == b"to file\n"
    assert err.read_bytes() == b"e\n"
    outcome = json.loads(outcome_file.read_bytes())
    assert (outcome["reason"], outcome["stdout_bytes"], outcome["stderr_bytes"]) == (
        "completed",
        8,
        2,
    )


SLEEP = [PY, "-c", "import time; time.sleep(30)"]
HOG = [PY, "-c", "b = bytearray(200 << 20); import time; time.sleep(30)"]


@pytest.mark.parametrize(
    ("args", "code", "reason"),
    [
        (["--max-runtime-sec", "0.4", "--", *SLEEP], 124, "runtime_limit"),
        (["--max-silence-sec", "0.4", "--", *SLEEP], 124, "silence_limit"),
        (["--max-memory-mb", "50", "--", *HOG], 137, "memory_limit"),
        (["--", "/nonexistent/tool"], 127, "spawn_failed"),
        (["--", "/etc"], 126, "spawn_failed"),
        (["--", PY, "-c", "import os; os.kill(os.getpid(), 15)"], 128 + 15, "completed"),
    ],
    ids=["runtime", "silence", "memory", "not-found", "not-executable", "killed-by-signal"],
)
def test_exit_codes(args: list[str], code: int, reason: str) -> None:
    result = runner_exec(*FAST, *args)
    assert result.returncode == code, result.stderr
    assert last_json(result.stdout)["reason"] == reason


@pytest.mark.parametrize(
    ("args", "words"),
    [
        (["--max-runtime-sec", "-1", "--", "true"], "--max-runtime-sec"),
        (["--max-memory-mb", "lots", "--", "true"], "--max-memory-mb"),
        ([], "Missing argument"),
        # nan passes a range check (every comparison is false): no limit, or a crash.
        (["--max-runtime-sec", "nan", "--", "true"], "'nan' is not a finite number"),
        (["--max-silence-sec", "inf", "--", "true"], "--max-silence-sec"),
        (["--poll-interval-sec", "nan", "--", "true"], "--poll-interval-sec"),
        (["--kill-grace-sec", "NaN", "--", "true"], "--kill-grace-sec"),
        (["--stdout", "same", "--outcome-file", "./same", "--", "echo", "hi"],
         "same is also --stdout: the outcome would replace the command's output"),
    ],
)  # fmt: skip
def test_bad_usage_is_exit_2_without_running(
    args: list[str], words: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    result = runner_exec(*args)
    assert result.returncode == 2
    assert words.encode() in result.stderr
    assert b"Traceback" not in result.stderr
    assert list(tmp_path.iterdir()) == []


def test_unwritable_outcome_file_is_exit_125_and_outcome_still_printed(tmp_path: Path) -> None:
    blocker = tmp_path / "file"
    blocker.write_text("")
    result = runner_exec("--outcome-file", str(blocker / "x.json"), "--", "true")
    assert result.returncode == 125
    assert b"cannot write" in result.stderr
    assert last_json(result.stdout)["reason"] == "completed"


@pytest.mark.parametrize(("sig", "code"), [(signal.SIGINT, 130), (signal.SIGTERM, 143)])
def test_signal_to_runner_kills_the_tree_and_reports_cancelled(
    tmp_path: Path, sig: signal.Signals, code: int
) -> None:
    pids_file = tmp_path / "pids"
    script = write_script(tmp_path, "tree", FORK_TREE)
    proc = subprocess.Popen(
        [*RUNNER, "exec", *FAST, "--", PY, str(script), str(pids_file)],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )
    try:
        assert len(recorded_pids(pids_file, expect=4, timeout=10)) == 4
        time.sleep(0.2)
        proc.send_signal(sig)
        stdout, stderr = proc.communicate(timeout=15)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    ended = time.time()
    assert proc.returncode == code, stderr
    outcome = last_json(stdout)
    assert outcome["reason"] == "cancelled"
    assert sig.name in outcome["detail"]
    assert f"cancelled by {sig.name}".encode() in stderr
    assert survivors(recorded_pids(pids_file, expect=4), ended) == []


def test_pass_through_to_a_reader_that_leaves_ends_like_a_pipeline() -> None:
    """`runner exec -- yes | head -2`: the broken pipe reaches the command (SIGPIPE, 141)."""
    proc = subprocess.Popen(
        [*RUNNER, "exec", "--", "yes"], stdout=subprocess.PIPE, stderr=subprocess.PIPE
    )
    assert proc.stdout is not None and proc.stderr is not None
    assert proc.stdout.readline() == b"y\n"
    proc.stdout.close()
    try:
        code = proc.wait(timeout=10)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert code == 128 + signal.SIGPIPE
    assert b"Traceback" not in proc.stderr.read()
