"""The original's blocking API, over the async core."""

from __future__ import annotations

from pathlib import Path

import pytest

from ledger.errors import AttemptOrderRejected, ChainBroken, LedgerError, TaskAlreadyClosed
from ledger.sync import WorkflowLogger
from protocol import AttemptPointer
from protocol.ledger_events import AttemptUsage


def test_seed_readme_example(tmp_path: Path) -> None:
    logger = WorkflowLogger(root_dir=tmp_path / "workflow", project_id="ford-ai-flow")
    logger.log_attempt(
        task_id="T-013",
        r=0,
        s=0,
        acceptance_snapshot=["AC-1: python -m unittest returns 0", "AC-2: no out-of-scope files"],
        code_change_summary="Fix parser edge case and add test coverage.",
        code_artifact_ref="artifacts/T-013/R0/S0/patch.diff",
        code_content="def parse_label(raw): ...",
        executed_files=["src/parser.py", "tests/test_parser.py"],
        executed_commands=["python -m unittest tests.test_parser"],
        test_results="0 failed, 8 passed",
        result="PASS",
        reason_code="PASS_ALL_CRITERIA",
        reason_detail="All acceptance criteria are satisfied.",
        next_action="Close task.",
        usage=AttemptUsage(input_tokens=1200, output_tokens=300, cost_micro_usd=4100),
    )
    logger.close_task(task_id="T-013", final_status="accepted", summary="Accepted.")
    report = logger.verify_task_chain("T-013")
    assert report.ok and report.task_heads["T-013"].seq == 1
    assert logger.head() == report.project_head
    assert "Accepted." in logger.task_log("T-013")
    archive = logger.export_project(archive_path=tmp_path / "ford-ai-flow.zip")
    head = WorkflowLogger.import_project(
        root_dir=tmp_path / "workflow", archive_path=archive, project_id="ford-ai-flow-migrated"
    ).head
    migrated = WorkflowLogger(tmp_path / "workflow", "ford-ai-flow-migrated")
    assert migrated.verify().ok and migrated.head() == head


def test_rules_and_errors_surface_unwrapped(tmp_path: Path) -> None:
    logger = WorkflowLogger(tmp_path, "p", mode="buffered")
    with pytest.raises(AttemptOrderRejected) as err:
        logger.log_attempt("T", 1, 0, result="FAIL", reason_code="X")
    assert err.value.legal == (AttemptPointer(0, 0),)
    logger.log_attempt("T", 0, 0, result="FAIL", reason_code="X")
    with pytest.raises(LedgerError, match="invalid final status"):
        logger.close_task("T", "done")
    logger.close_task("T", "failed")
    with pytest.raises(TaskAlreadyClosed):
        logger.log_attempt("T", 0, 1, result="PASS", reason_code="X")
    with pytest.raises(LedgerError, match="has no events"):
        logger.verify_task_chain("U")


def test_verify_task_chain_raises_chain_broken_with_the_line(tmp_path: Path) -> None:
    logger = WorkflowLogger(tmp_path, "p", mode="buffered")
    for s in range(3):
        logger.log_attempt("T", 0, s, result="FAIL", reason_code="X", test_results="1 failed")
    path = logger.paths.task_events("T")
    lines = path.read_bytes().splitlines(keepends=True)
    lines[1] = lines[1].replace(b"1 failed", b"0 failed")
    path.write_bytes(b"".join(lines))
    with pytest.raises(ChainBroken) as err:
        logger.verify_task_chain("T")
    assert (err.value.path, err.value.line) == (path, 2)


def test_cli_style_logger_does_not_create_projects(tmp_path: Path) -> None:
    logger = WorkflowLogger(tmp_path, "typo", create=False)
    with pytest.raises(LedgerError, match="no ledger"):
        logger.log_attempt("T", 0, 0, result="PASS", reason_code="X")
    assert list(tmp_path.iterdir()) == []
