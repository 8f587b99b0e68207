from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
from click.testing import CliRunner

from runner import __version__
from runner.cli import main
from tests.conftest import SEED_PACKS


def run(*args: str, input: str | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "runner", *args],
        capture_output=True,
        text=True,
        input=input,
        check=False,
    )


def test_version_and_help() -> None:
    result = run("--version")
    assert result.returncode == 0
    assert __version__ in result.stdout
    result = run("--help")
    assert result.returncode == 0
    assert "validate" in result.stdout and "schema" in result.stdout


@pytest.mark.parametrize("path", SEED_PACKS, ids=lambda p: p.name)
def test_validate_accepts_real_packs(path: Path) -> None:
    result = run("validate", str(path))
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "ok: step-pack"


def test_validate_rejects_edited_copy_naming_both_fields(tmp_path: Path) -> None:
    data = json.loads(SEED_PACKS[0].read_text(encoding="utf-8"))
    data["scope_guard"]["allowed_paths"].append("scripts/**")
    bad = tmp_path / "edited.json"
    bad.write_text(json.dumps(data))
    result = run("validate", str(bad))
    assert result.returncode == 2
    assert str(bad) in result.stderr
    assert "`$.allowed_paths`" in result.stderr
    assert "`$.scope_guard.allowed_paths`" in result.stderr
    assert "Traceback" not in result.stderr


def test_validate_with_kind_and_stdin() -> None:
    doc = json.dumps({"verdict": "PASS", "reason_code": "PASS_ALL_CRITERIA"})
    result = run("validate", "-", "--kind", "step-result", input=doc)
    assert (result.returncode, result.stdout.strip()) == (0, "ok: step-result")


@pytest.mark.parametrize(
    ("content", "words"),
    [
        (b"\xff\xfe garbage", "not valid JSON"),
        (b'{"verdict": "MAYBE", "reason_code": "X"}', "$.verdict"),
        (b"[1, 2]", "Expected `object`"),
        (b'{"neither": 1}', "pass --kind"),
    ],
)
def test_validate_rejects_bad_files(tmp_path: Path, content: bytes, words: str) -> None:
    bad = tmp_path / "bad.json"
    bad.write_bytes(content)
    result = CliRunner().invoke(main, ["validate", str(bad)])
    assert result.exit_code == 2
    assert words in result.output


def test_validate_missing_file_is_exit_2(tmp_path: Path) -> None:
    result = run("validate", str(tmp_path / "nope.json"))
    assert result.returncode == 2
    assert "nope.json" in result.stderr


def test_schema_lists_and_prints_kinds() -> None:
    listing = CliRunner().invoke(main, ["schema"])
    kinds = listing.output.split()
    assert {"step-pack", "rework-pack", "step-result", "qa-review", "task-queue"} <= set(kinds)
    for kind in kinds:
        result = CliRunner().invoke(main, ["schema", kind])
        assert result.exit_code == 0, kind
        doc = json.loads(result.output)
        assert "$defs" in doc or "type" in doc


def test_step_pack_schema_declares_required_ids() -> None:
    doc = json.loads(CliRunner().invoke(main, ["schema", "step-pack"]).output)
    pack = doc["$defs"]["StepPack"]
    assert {"task_id", "run_id", "step_id"} <= set(pack["required"])
    assert pack["additionalProperties"] is False


def test_json_logs_when_not_a_terminal() -> None:
    code = (
        "from runner.log import configure_logging, get_logger;"
        "configure_logging('info', 'auto');"
        "get_logger('t').info('step.finished', task_id='T-1', duration_ms=5)"
    )
    result = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True
    )
    event = json.loads(result.stderr.strip().splitlines()[-1])
    assert event["event"] == "step.finished"
    assert event["task_id"] == "T-1" and event["level"] == "info"
