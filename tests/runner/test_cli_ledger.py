"""`runner ledger ...` end to end: the original CLI's workflow, errors and exit codes."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import anyio
import pytest
from click.testing import CliRunner, Result

from ledger import open_ledger
from protocol import Verdict
from protocol.ledger_events import Attempt
from runner.cli import main


def ledger(root: Path, *args: str, project: str | None = "ford") -> Result:
    base = ["ledger", "--root-dir", str(root), "--mode", "buffered"]
    if project is not None:
        base += ["--project-id", project]
    return CliRunner().invoke(main, [*base, *args], catch_exceptions=False)


ATTEMPT = [
    "attempt", "--task-id", "T-013", "--r", "0", "--s", "0",
    "--acceptance", "AC-1: tests pass",
    "--code-change-summary", "Implement API + tests",
    "--code-content", "def handler(): return {'ok': True}",
    "--executed-file", "src/api.py", "--executed-file", "tests/test_api.py",
    "--executed-command", "python -m unittest tests.test_api",
    "--test-results", "0 failed, 12 passed", "--result", "PASS",
    "--reason-code", "PASS_ALL_CRITERIA", "--reason-detail", "Acceptance reached.",
    "--next-action", "Close task",
]  # fmt: skip


def test_the_original_workflow(tmp_path: Path) -> None:
    assert ledger(tmp_path, "init").exit_code == 0
    out = ledger(tmp_path, *ATTEMPT)
    assert out.exit_code == 0 and "T-013 R0/S0" in out.output
    retry = [*ATTEMPT[:5], "--s", "1", *ATTEMPT[7:]]
    assert ledger(tmp_path, *retry).exit_code == 0
    closed = ledger(tmp_path, "close", "--task-id", "T-013", "--final-status", "accepted",
                    "--summary", "Task completed and archived.")  # fmt: skip
    assert closed.exit_code == 0
    assert (tmp_path / "ford" / "tasks" / "T-013" / "task_log.md").exists()
    verified = ledger(tmp_path, "verify", "--task-id", "T-013")
    assert verified.exit_code == 0 and verified.output.startswith("ok:")
    head = ledger(tmp_path, "head", "--json")
    heads = json.loads(head.output)
    assert set(heads["tasks"]) == {"T-013"}
    assert ledger(tmp_path, "verify", "--expect-head", heads["project"]).exit_code == 0
    task_log = tmp_path / "ford" / "tasks" / "T-013" / "task_log.md"
    task_log.unlink()
    rendered = ledger(tmp_path, "render")
    assert rendered.exit_code == 0 and rendered.output == f"{task_log}\n"
    assert "final status: accepted" in task_log.read_text()
    shown = ledger(tmp_path, "show", "--task-id", "T-013").output
    assert "final status: accepted" in shown and "def handler()" in shown
    archive = tmp_path / "ford-ai-flow.zip"
    assert ledger(tmp_path, "export", "--archive", str(archive)).exit_code == 0
    imported = ledger(tmp_path, "import", "--archive", str(archive), "--target-project-id",
                      "ford-migrated", project=None)  # fmt: skip
    assert imported.exit_code == 0, imported.output
    assert f"imported {archive} as project ford-migrated under {tmp_path}" in imported.output
    assert ledger(tmp_path, "verify", project="ford-migrated").exit_code == 0


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["attempt", "--task-id", "T", "--r", "0", "--s", "2", "--result", "PASS",
          "--reason-code", "X"], "first attempt must be R0/S0; next legal: R0/S0"),
        (["attempt", "--task-id", "T", "--r", "0", "--s", "0", "--result", "MAYBE",
          "--reason-code", "X"], "Invalid value for '--result': 'MAYBE' is not one of 'PASS'"),
        (["attempt", "--task-id", "../T", "--r", "0", "--s", "0", "--result", "PASS",
          "--reason-code", "X"], "invalid task id"),
        (["close", "--task-id", "T", "--final-status", "done"], "Invalid value"),
        (["verify", "--expect-head", "12"], "expected SEQ:HASH"),
        (["verify", "--jobs", "0"], "Invalid value for '--jobs'"),
        (["show", "--task-id", "NOPE"], "has no events"),
        (["verify", "--task-id", "NOPE"], "has no events"),
        (["render", "--task-id", "NOPE"], "has no events"),
        (["render", "--task-id", "../x"], "invalid task id"),
    ],
)  # fmt: skip
def test_bad_input_exits_2_with_a_clear_message(
    tmp_path: Path, args: list[str], message: str
) -> None:
    ledger(tmp_path, "init")
    result = CliRunner().invoke(
        main, ["ledger", "--root-dir", str(tmp_path), "--project-id", "ford", *args]
    )
    assert result.exit_code == 2, result.output
    assert message in result.output
    assert result.exception is None or isinstance(result.exception, SystemExit)


@pytest.mark.parametrize(
    "command",
    [["verify"], ["verify", "--task-id", "T"], ["head"], ["show"], ["show", "--task-id", "T"],
     ["render"], ["render", "--task-id", "T"], ["export", "--archive", "x.zip"]],
)  # fmt: skip
def test_unknown_project_and_missing_project_id(tmp_path: Path, command: list[str]) -> None:
    result = CliRunner().invoke(main, ["ledger", "--root-dir", str(tmp_path), "--project-id",
                                       "nope", *command])  # fmt: skip
    assert result.exit_code == 2 and "no ledger at" in result.output, result.output
    result = CliRunner().invoke(main, ["ledger", "--root-dir", str(tmp_path), "verify"])
    assert result.exit_code == 2 and "--project-id is required" in result.output
    assert not (tmp_path / "nope").exists()


def test_damage_exits_1_with_file_and_line(tmp_path: Path) -> None:
    ledger(tmp_path, "init")
    ledger(tmp_path, *ATTEMPT)
    ledger(tmp_path, ATTEMPT[0], "--task-id", "T-014", *ATTEMPT[3:])
    path = tmp_path / "ford" / "tasks" / "T-013" / "events.jsonl"
    path.write_bytes(path.read_bytes().replace(b"12 passed", b"13 passed"))
    result = CliRunner().invoke(
        main, ["ledger", "--root-dir", str(tmp_path), "--project-id", "ford", "verify"]
    )
    assert result.exit_code == 1
    assert f"damage: {path}:1: event_hash does not match" in result.output
    # Nor is a changed event shown or rendered as recorded.
    for command in (["show", "--task-id", "T-013"], ["render"]):
        result = CliRunner().invoke(
            main, ["ledger", "--root-dir", str(tmp_path), "--project-id", "ford", *command]
        )
        assert result.exit_code == 1
        assert f"{path}:1: event_hash does not match" in result.output
    assert not (path.parent / "task_log.md").exists()
    # The other tasks are rendered all the same.
    other = tmp_path / "ford" / "tasks" / "T-014" / "task_log.md"
    assert f"\n{other}\n" in result.output and other.exists()
    # Nor exported: damage, exit 1, and no archive.
    archive = tmp_path / "d.zip"
    result = CliRunner().invoke(main, ["ledger", "--root-dir", str(tmp_path), "--project-id",
                                       "ford", "export", "--archive", str(archive)])  # fmt: skip
    assert result.exit_code == 1
    assert f"export refused: {path}:1: event_hash does not match" in result.output
    assert not archive.exists()


def test_head_notes_a_torn_project_chain(tmp_path: Path) -> None:
    ledger(tmp_path, "init")
    ledger(tmp_path, *ATTEMPT)
    before = ledger(tmp_path, "head")
    assert before.exit_code == 0 and "note:" not in before.output
    with (tmp_path / "ford" / "events.jsonl").open("ab") as f:
        f.write(b'{"body":{"ty')
    after = ledger(tmp_path, "head")
    assert after.exit_code == 0
    assert after.stdout == before.stdout  # the head is the last acknowledged event's
    assert "ends in an incomplete line after this head" in after.stderr


def test_a_damaged_archive_is_refused_in_one_line(tmp_path: Path) -> None:
    ledger(tmp_path, "init")
    ledger(tmp_path, *ATTEMPT)
    archive = tmp_path / "p.tar.gz"
    assert ledger(tmp_path, "export", "--archive", str(archive)).exit_code == 0
    data = archive.read_bytes()
    cut = tmp_path / "cut.tar.gz"
    cut.write_bytes(data[: len(data) // 2])  # gzip's EOFError, which click calls "Aborted!"
    result = CliRunner().invoke(main, ["ledger", "--root-dir", str(tmp_path / "in"),
                                       "import", "--archive", str(cut)])  # fmt: skip
    assert result.exit_code == 2, result.output
    assert result.output.startswith(f"error: {cut}: damaged or unreadable archive: EOFError")
    assert not (tmp_path / "in").exists()


# The CLI with the parallel threshold at 0 and a chunk per chain, counting the chains checked
# in its own process. Spawned workers import this script again, as `__mp_main__`.
WORKERS_CLI = """
import sys
import ledger.task_pool as task_pool

task_pool.PARALLEL_BYTES = task_pool.CHUNK_BYTES = 0
here = []
check = task_pool.check_task


def counting(paths, chain_id, task_id, *rest):
    here.append(task_id)
    return check(paths, chain_id, task_id, *rest)


task_pool.check_task = counting
if __name__ == "__main__":
    from runner.cli import main

    try:
        main(sys.argv[1:], prog_name="runner")
    finally:
        print("checked here:", len(here), file=sys.stderr)
"""


def test_verify_with_worker_processes_in_a_real_process(tmp_path: Path) -> None:
    async def fill() -> None:
        async with open_ledger(tmp_path, "ford", create=True, mode="buffered") as log:
            for n in range(4):
                for s in range(3):
                    body = Attempt(r=0, s=s, result=Verdict.FAIL, reason_code="TESTS_FAILED")
                    await log.append_task_event(f"T-{n}", body)

    anyio.run(fill)
    script = tmp_path / "cli.py"
    script.write_text(WORKERS_CLI)
    cmd = [sys.executable, str(script), "ledger", "--root-dir", str(tmp_path),
           "--project-id", "ford", "verify", "--jobs", "2"]  # fmt: skip
    ok = subprocess.run(cmd, capture_output=True, text=True, check=False)
    assert ok.returncode == 0, ok.stderr
    assert ok.stdout.startswith("ok: project ford: 25 events in 5 chains")
    # The worker was sent T-0 and T-1 before the project chain was read.
    here = int(ok.stderr.rsplit("checked here: ", 1)[1])
    assert here <= 2, ok.stderr
    path = tmp_path / "ford" / "tasks" / "T-0" / "events.jsonl"
    path.write_bytes(path.read_bytes().replace(b'"s":1', b'"s":2', 1))
    damaged = subprocess.run(cmd, capture_output=True, text=True, check=False)
    assert damaged.returncode == 1
    assert f"damage: {path}:2: event_hash does not match" in damaged.stderr


def test_locked_project_exits_3_in_a_real_process(tmp_path: Path) -> None:
    ledger(tmp_path, "init")
    holder = subprocess.Popen(
        [sys.executable, "-c",
         "import sys, anyio\nfrom ledger import open_ledger\n"
         "async def m():\n async with open_ledger(sys.argv[1], 'ford'):\n"
         "  print('locked', flush=True)\n  await anyio.sleep(30)\nanyio.run(m)", str(tmp_path)],
        stdout=subprocess.PIPE, text=True,
    )  # fmt: skip
    try:
        assert holder.stdout is not None and holder.stdout.readline() == "locked\n"
        cmd = [sys.executable, "-m", "runner", "ledger", "--root-dir", str(tmp_path),
               "--project-id", "ford", "--lock-timeout", "0.3", *ATTEMPT]  # fmt: skip
        result = subprocess.run(cmd, capture_output=True, text=True, check=False)
        assert result.returncode == 3
        assert "locked by another writer (waited 0.3s" in result.stderr
        assert "Traceback" not in result.stderr
    finally:
        holder.kill()
        holder.wait()
    # The holder was killed: the next writer recovers and appends.
    result = subprocess.run(cmd, capture_output=True, text=True, check=False)
    assert result.returncode == 0, result.stderr
