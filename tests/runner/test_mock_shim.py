"""Every mock-shim scenario, dispatched end to end through `runner dispatch-step` in a real git
workspace; hostile scenarios checked with psutil for survivors and zombies."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest

from protocol import encode_pretty
from tests.runner.hostile import recorded_pids, survivors

PY = sys.executable
RUNNER = [PY, "-m", "runner", "--log-level", "warning"]
MOCK = [PY, "-m", "runner.mock_shim"]
IDS = [
    "--backend={backend}",
    "--run-id",
    "{run_id}",
    "--task-id",
    "{task_id}",
    "--step-id",
    "{step_id}",
]
CONFIG = {
    "default_backend": "mock",
    "backends": {
        "mock": {
            "create": [*MOCK, "create", "{prompt}", *IDS],
            "resume": [*MOCK, "resume", "{prompt}", "{thread_id}", *IDS],
        }
    },
}
CHECK = (
    f'{PY} -c "import pathlib, sys; '
    "sys.exit(0 if 'hello' in pathlib.Path('src/greet.txt').read_text() else 1)\""
)
AC1 = "AC1: src/greet.txt says hello."
AC2 = "AC2: the workspace status can be listed (git status)."


def make_pack(**context: Any) -> dict[str, Any]:
    return {
        "task_id": "T-1",
        "run_id": "T-1_run",
        "step_id": "S1",
        "objective": "Write the greeting.",
        "allowed_paths": ["src/**", "README.md"],
        "forbidden_paths": ["secrets/**", "pyproject.toml"],
        "commands_to_run": [CHECK, "git status --short"],
        "acceptance_criteria": [AC1, AC2],
        "gates": [
            {
                "gate_id": "G1",
                "owner": "worker",
                "type": "required_command_exit_0",
                "target_ac": ["AC1"],
                "command_index": 0,
            },
            {
                "gate_id": "G2",
                "owner": "worker",
                "type": "required_command_exit_0",
                "target_ac": ["AC2"],
                "command_index": 1,
            },
        ],
        "context": {"mock_files": {"src/greet.txt": "hello\n", "README.md": "# demo\n"}, **context},
    }


@pytest.fixture
def workspace(tmp_path: Path) -> Path:
    ws = tmp_path / "ws"
    ws.mkdir()
    (ws / "README.md").write_text("# start\n")
    git = ["git", "-C", str(ws), "-c", "user.name=t", "-c", "user.email=t@t"]
    subprocess.run([*git, "init", "-q"], check=True)
    subprocess.run([*git, "add", "."], check=True)
    subprocess.run([*git, "commit", "-qm", "start"], check=True)
    (tmp_path / "shim.json").write_text(json.dumps(CONFIG))
    return ws


def dispatch_argv(workspace: Path, pack_file: Path, *args: str) -> list[str]:
    config = workspace.parent / "shim.json"
    return [
        *RUNNER, "dispatch-step", "--step-pack-file", str(pack_file), "--workspace",
        str(workspace), "--shim-config", str(config), "--kill-grace-sec", "0.3", *args,
    ]  # fmt: skip


def dispatch(
    workspace: Path,
    pack: dict[str, Any] | None = None,
    *args: str,
    scenario: str | None = None,
    env: dict[str, str] | None = None,
) -> tuple[int, dict[str, Any]]:
    pack_file = workspace.parent / "pack.json"
    pack_file.write_bytes(encode_pretty(pack or make_pack()))
    run_env = {**os.environ, **(env or {})}
    if scenario:
        run_env["RUNNER_MOCK_SCENARIO"] = scenario
    result = subprocess.run(
        dispatch_argv(workspace, pack_file, "--poll-interval-sec", "0.05", *args),
        capture_output=True,
        env=run_env,
        timeout=60,
        check=False,
    )
    assert b"Traceback" not in result.stderr, result.stderr.decode()
    return result.returncode, json.loads(result.stdout.splitlines()[-1])


def round_dir(workspace: Path, record: dict[str, Any]) -> Path:
    return workspace / record["round_dir"]


def result_of(workspace: Path, record: dict[str, Any]) -> dict[str, Any]:
    doc: dict[str, Any] = json.loads(
        (round_dir(workspace, record) / "step_result.json").read_text()
    )
    return doc


def test_pass_does_the_work_and_reports_it_truthfully(workspace: Path) -> None:
    code, record = dispatch(workspace)
    assert code == 0, record
    assert (record["verdict"], record["result_source"]) == ("PASS", "file")
    assert record["outcome"]["reason"] == "completed"
    rd = round_dir(workspace, record)
    assert record["round_dir"] == ".artifacts/agent_runs/T-1_run/steps/S1/rounds/R1"
    for name in (
        "shim_stdout.txt",
        "shim_stderr.txt",
        "step_result.json",
        "subagent_output.md",
        "logs/command.json",
        "logs/prompt.md",
        "logs/step_pack.json",
        "outputs/cmd_0.txt",
    ):
        assert (rd / name).is_file(), name
    assert (workspace / "src" / "greet.txt").read_text() == "hello\n"
    status = subprocess.run(
        ["git", "-C", str(workspace), "status", "--short"], capture_output=True, text=True
    ).stdout
    assert "src/" in status and "README.md" in status
    result = result_of(workspace, record)
    assert result["files_changed"] == ["README.md", "src/greet.txt"]
    assert [c["exit_code"] for c in result["commands_executed"]] == [0, 0]
    assert [c["command"] for c in result["commands_executed"]] == [CHECK, "git status --short"]
    for c in result["commands_executed"]:
        assert (workspace / c["evidence_path"]).is_file()
        assert c["evidence_path"].startswith(record["round_dir"] + "/outputs/")
    assert [v["ac"] for v in result["verification_results"]] == [AC1, AC2]
    assert all(v["met"] for v in result["verification_results"])
    assert set(result["evidence_map"]) == {"AC1", "AC2"}
    assert result["usage"]["model"] == "mock-1" and result["usage"]["input_tokens"] > 100
    assert result["thread_id"].startswith("mock-pass-")
    stdout_last = (rd / "shim_stdout.txt").read_text().splitlines()[-1]
    assert json.loads(stdout_last) == result, "the printed result is the written one"
    command_log = json.loads((rd / "logs" / "command.json").read_text())
    assert command_log["outcome"]["reason"] == "completed"
    assert command_log["argv"][:3] == [*MOCK[:2], "runner.mock_shim"][:3]


def test_second_dispatch_gets_the_next_round(workspace: Path) -> None:
    dispatch(workspace)
    code, record = dispatch(workspace)
    assert (code, record["round"]) == (0, 2)


def test_fail_ac_reports_the_last_criterion_unmet(workspace: Path) -> None:
    code, record = dispatch(workspace, scenario="fail_ac")
    assert code == 0, "a FAIL verdict is still a parsed result"
    result = result_of(workspace, record)
    assert result["verdict"] == "FAIL"
    assert [v["met"] for v in result["verification_results"]] == [True, False]


def test_out_of_scope_edits_a_forbidden_path(workspace: Path) -> None:
    _, record = dispatch(workspace, scenario="out_of_scope")
    result = result_of(workspace, record)
    assert "secrets/mock_S1.txt" in result["files_changed"]
    assert (workspace / "secrets" / "mock_S1.txt").is_file()


def test_lie_claims_changes_and_passes_it_did_not_make(workspace: Path) -> None:
    _, record = dispatch(workspace, scenario="lie")
    result = result_of(workspace, record)
    assert result["verdict"] == "PASS"
    assert "src/greet.txt" in result["files_changed"]
    assert not (workspace / "src" / "greet.txt").exists(), "claimed, never written"
    assert result["commands_executed"][0]["exit_code"] == 0
    rerun = subprocess.run(CHECK, shell=True, cwd=workspace, capture_output=True, check=False)
    assert rerun.returncode != 0, "the command it claims passed fails"


def test_scenario_from_the_pack_context(workspace: Path) -> None:
    _, record = dispatch(workspace, make_pack(mock_scenario="fail_ac"))
    assert result_of(workspace, record)["verdict"] == "FAIL"


@pytest.mark.parametrize(
    ("scenario", "args", "reason", "expect_pids"),
    [
        ("hang", ["--max-runtime-sec", "1"], "runtime_limit", 1),
        ("silent", ["--max-silence-sec", "0.6"], "silence_limit", 1),
        ("eat_memory", ["--max-memory-mb", "120"], "memory_limit", 1),
        ("fork_tree", ["--max-runtime-sec", "1.5"], "runtime_limit", 6),
    ],
)
def test_hostile_scenarios_are_stopped_and_leave_nothing(
    workspace: Path, scenario: str, args: list[str], reason: str, expect_pids: int
) -> None:
    code, record = dispatch(workspace, None, *args, scenario=scenario)
    ended = time.time()
    assert code == 1
    assert record["outcome"]["reason"] == reason
    assert record["parse_failure"]["reason"] == "NO_RESULT"
    pids = recorded_pids(
        round_dir(workspace, record) / "logs" / "mock_pids.txt", expect=expect_pids
    )
    assert len(pids) == expect_pids
    assert survivors(pids, ended) == []


def test_garbage_is_a_parse_failure_with_an_excerpt(workspace: Path) -> None:
    code, record = dispatch(workspace, scenario="garbage")
    assert code == 1
    assert record["outcome"]["reason"] == "completed" and record["outcome"]["exit_code"] == 0
    assert record["parse_failure"]["reason"] == "NO_RESULT"
    assert "no result here" in record["parse_failure"]["excerpt"]


def test_crash_is_a_malformed_result(workspace: Path) -> None:
    code, record = dispatch(workspace, scenario="crash")
    assert code == 1
    assert record["outcome"]["exit_code"] == 1
    assert record["parse_failure"]["reason"] == "RESULT_MALFORMED"
    stderr = (round_dir(workspace, record) / "shim_stderr.txt").read_text()
    assert "mock agent crashed" in stderr


def test_flood_is_streamed_to_the_evidence_file(workspace: Path) -> None:
    code, record = dispatch(workspace, scenario="flood", env={"RUNNER_MOCK_FLOOD_MB": "24"})
    assert code == 0
    assert record["verdict"] == "PASS"
    size = (round_dir(workspace, record) / "shim_stdout.txt").stat().st_size
    assert size == record["outcome"]["stdout_bytes"] > 24 * 1024 * 1024


def test_fail_then_pass_passes_on_resume(workspace: Path) -> None:
    _, first = dispatch(workspace, make_pack(mock_scenario="fail_then_pass"))
    result = result_of(workspace, first)
    assert result["verdict"] == "FAIL"
    rework = {
        "task_id": "T-1",
        "run_id": "T-1_run",
        "step_id": "S1",
        "rework_round": 1,
        "reason_code": "AC_NOT_MET",
        "scope_guard": {"allowed_paths": ["src/**", "README.md"]},
        "failed_acceptance_criteria": [AC2],
        "rerun_commands": [CHECK, "git status --short"],
        "acceptance_criteria": [AC1, AC2],
    }
    rework_file = workspace.parent / "rework.json"
    rework_file.write_text(json.dumps(rework))
    out = subprocess.run(
        [
            *RUNNER,
            "dispatch-rework",
            "--rework-pack-file",
            str(rework_file),
            "--thread-id",
            result["thread_id"],
            "--workspace",
            str(workspace),
            "--shim-config",
            str(workspace.parent / "shim.json"),
        ],
        capture_output=True,
        timeout=60,
        check=False,
    )
    assert out.returncode == 0, out.stderr.decode()
    second = json.loads(out.stdout.splitlines()[-1])
    assert (second["kind"], second["round"], second["verdict"]) == ("rework", 2, "PASS")
    assert second["result_thread_id"] == result["thread_id"]
    assert second["argv"][3:5] == ["resume", second["argv"][4]]
    assert result["thread_id"] in second["argv"]


def test_sigint_to_dispatch_kills_the_agent_tree(workspace: Path) -> None:
    pack_file = workspace.parent / "pack.json"
    pack_file.write_bytes(encode_pretty(make_pack(mock_scenario="fork_tree")))
    proc = subprocess.Popen(
        dispatch_argv(workspace, pack_file),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )
    pids_file = workspace / ".artifacts/agent_runs/T-1_run/steps/S1/rounds/R1/logs/mock_pids.txt"
    try:
        assert len(recorded_pids(pids_file, expect=6, timeout=15)) == 6
        time.sleep(0.2)
        proc.send_signal(signal.SIGINT)
        stdout, stderr = proc.communicate(timeout=15)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert proc.returncode == 130, stderr
    record = json.loads(stdout.splitlines()[-1])
    assert record["outcome"]["reason"] == "cancelled"
    assert b"cancelled by SIGINT" in stderr
    assert survivors(recorded_pids(pids_file, expect=6), time.time()) == []


def test_mock_without_runner_environment_says_what_is_missing(tmp_path: Path) -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith("RUNNER_")}
    out = subprocess.run(
        [*MOCK, "create", "hi"], capture_output=True, env=env, cwd=tmp_path, check=False
    )
    assert out.returncode == 2
    assert b"RUNNER_PACK_FILE" in out.stderr
