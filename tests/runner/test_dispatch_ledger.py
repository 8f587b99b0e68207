"""`dispatch-step` / `dispatch-rework --log-project-id`: each round recorded as an attempt."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path
from typing import Any

from ledger import ProjectPaths, verify_project
from ledger.render import task_records
from tests.runner.test_mock_shim import (
    AC1,
    AC2,
    CHECK,
    RUNNER,
    dispatch,
    make_pack,
    result_of,
    workspace,
)

__all__ = ["workspace"]  # the fixture, imported for this module's tests


def events(root: Path, task: str = "T-1") -> list[tuple[str, str | None, bool]]:
    """(event type, pointer after it, attempt open after it) for each task event."""
    return [
        (type(r.body).__struct_config__.tag, str(r.pointer) if r.pointer else None, r.attempt_open)
        for r in task_records(ProjectPaths.of(root, "proj"), task)
    ]


def test_step_retry_and_rework_get_managed_pointers(workspace: Path) -> None:
    root = workspace.parent / "workflow"
    log = ("--log-project-id", "proj", "--log-root-dir", str(root))
    code, first = dispatch(workspace, make_pack(mock_scenario="fail_then_pass"), *log)
    assert code == 0
    # A second step dispatch of the same task is a retry: same R, S+1.
    code, second = dispatch(workspace, make_pack(mock_scenario="silent"), *log,
                            "--max-silence-sec", "0.5")  # fmt: skip
    assert code == 1 and second["outcome"]["reason"] == "silence_limit"
    thread = result_of(workspace, first)["thread_id"]
    rework: dict[str, Any] = {
        "task_id": "T-1", "run_id": "T-1_run", "step_id": "S1", "rework_round": 1,
        "reason_code": "AC_NOT_MET", "scope_guard": {"allowed_paths": ["src/**", "README.md"]},
        "rerun_commands": [CHECK, "git status --short"], "acceptance_criteria": [AC1, AC2],
    }  # fmt: skip
    rework_file = workspace.parent / "rework.json"
    rework_file.write_text(json.dumps(rework))
    out = subprocess.run(
        [*RUNNER, "dispatch-rework", "--rework-pack-file", str(rework_file), "--thread-id",
         thread, "--workspace", str(workspace), "--shim-config",
         str(workspace.parent / "shim.json"), *log],
        capture_output=True, text=True, timeout=60, check=False,
    )  # fmt: skip
    assert out.returncode == 0, out.stderr
    assert "recorded T-1 R1/S0 in ledger proj" in out.stderr

    assert events(root) == [
        ("attempt_started", "R0/S0", True),
        ("step_outcome", "R0/S0", True),
        ("attempt", "R0/S0", False),
        ("attempt_started", "R0/S1", True),
        ("step_outcome", "R0/S1", True),
        ("attempt", "R0/S1", False),
        ("attempt_started", "R1/S0", True),
        ("step_outcome", "R1/S0", True),
        ("attempt", "R1/S0", False),
    ]
    records = list(task_records(ProjectPaths.of(root, "proj"), "T-1"))
    fail, silent, passed = records[2].body, records[5].body, records[8].body
    assert (fail.result, silent.result, passed.result) == ("FAIL", "FAIL", "PASS")
    assert silent.reason_code == "SILENCE_LIMIT"
    assert passed.usage is not None and passed.usage.input_tokens > 0
    started = records[0].body
    assert started.refs[0].path.endswith("rounds/R1/logs/command.json")
    assert verify_project(ProjectPaths.of(root, "proj")).ok
