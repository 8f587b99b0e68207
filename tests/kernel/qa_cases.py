"""Inputs for the QA reviewer's tests: the original's PASS reviews rebuilt as StepResult and
facts, and a small synthetic step with a result that passes, to mutate."""

from __future__ import annotations

import json
from typing import Any, NamedTuple

import protocol
from kernel import WorkspaceFacts
from protocol import CommandRecord, StepPack, StepResult, Verdict, VerificationResult
from tests.conftest import SEED


class Case(NamedTuple):
    pack: StepPack
    result: StepResult
    facts: WorkspaceFacts
    original: dict[str, Any]


# review file, step pack file, scope section, evidence section, the commit's files
SEED_REVIEWS = {
    "MVP-1_S1": ("MVP-1_S1_g7_g8_review", "S1", "g7_scope", "g8_evidence", "commit_files"),
    "MVP-2_S1": ("MVP-2_S1_g7_g8_review", "MVP-2_S1", "g7_scope", "g8_evidence", "commit_files"),
    "MVP-3_S1": (
        "MVP-3_S1_g8_g9_review",
        "MVP-3_S1",
        "g8_scope",
        "g9_evidence",
        "source_commit_files",
    ),
}


def seed_case(label: str) -> Case:
    """The StepResult and facts behind one of the original's PASS reviews.

    Everything comes from the review JSON: the files the worker reported and the files the
    commit holds, each command record and AC answer with its evidence path (the review lists
    them by section and index), the evidence map, and the evidence files the controller found.
    Exit codes are not in the reviews; a PASS under `required_command_exit_0` gates means 0.
    """
    review_name, pack_name, scope_key, evidence_key, commit_key = SEED_REVIEWS[label]
    original = json.loads((SEED / "qa_reviews" / f"{review_name}.json").read_text("utf-8"))
    pack = protocol.read(SEED / "step_packs" / f"{pack_name}.json", StepPack)
    scope, evidence = original[scope_key], original[evidence_key]
    checked = sorted(evidence["paths_checked"], key=lambda p: (p["section"], p["index"]))
    result = StepResult(
        verdict=Verdict.PASS,
        reason_code="PASS",
        task_id=pack.task_id,
        run_id=pack.run_id,
        step_id=pack.step_id,
        files_changed=list(scope["step_result_files"]),
        commands_executed=[
            CommandRecord(command=p["label"], exit_code=0, evidence_path=p["evidence_path"])
            for p in checked
            if p["section"] == "commands_executed"
        ],
        verification_results=[
            VerificationResult(ac=p["label"], met=True, evidence_path=p["evidence_path"])
            for p in checked
            if p["section"] == "verification_results"
        ],
        evidence_map={
            ac: [entry["path"] for entry in entries]
            for ac, entries in evidence["evidence_map_checks"].items()
        },
    )
    existing = {p["evidence_path"] for p in checked if p["exists"]}
    existing |= {e["path"] for entries in evidence["evidence_map_checks"].values() for e in entries}
    existing |= {m for r in evidence["pattern_results"] for m in r["matches"]}
    facts = WorkspaceFacts(
        changed_files=tuple(scope[commit_key]),
        artifact_files=tuple(sorted(existing)),
        base=original.get("commit") or original.get("source_worker_commit"),
    )
    return Case(pack, result, facts, original)


RUN_ID = "T-1_20260101T000000Z"
ROUND_DIR = f".artifacts/agent_runs/{RUN_ID}/steps/S1/rounds/R1"
AC1 = "AC1: `report --json` prints valid JSON"
AC2 = "AC2: the change stays inside src/report/ and tests/"


def small_pack(**overrides: Any) -> StepPack:
    """A step with two commands (one exit-0 gate, one evidence-only gate), two ACs, all three
    controller gates and two evidence requirements."""
    raw: dict[str, Any] = {
        "task_id": "T-1",
        "run_id": RUN_ID,
        "step_id": "S1",
        "step_title": "Add --json to report",
        "objective": "report --json prints the report as JSON",
        "allowed_paths": ["src/report/**", "tests/**", ".github/workflows/report.yml"],
        "forbidden_paths": ["tests/fixtures/**", ".artifacts/**", "pyproject.toml"],
        "dependency_policy": {"mode": "no-new-dependencies"},
        "commands_to_run": ["python -m pytest -q tests/test_report.py", "git status --short"],
        "AC": [AC1, AC2],
        "gates": [
            {
                "gate_id": "G1",
                "owner": "worker",
                "type": "required_command_exit_0",
                "target_ac": ["AC1"],
                "command_index": 0,
                "pass_condition": "pytest exits 0",
            },
            {
                "gate_id": "G2",
                "owner": "worker",
                "type": "required_command_evidence_only",
                "target_ac": ["AC2"],
                "command_index": 1,
                "pass_condition": "git status output is recorded",
            },
            {
                "gate_id": "G3",
                "owner": "controller",
                "type": "qa_scope_guard_review",
                "target_ac": ["AC2"],
                "pass_condition": "changed files inside allowed_paths, none forbidden",
            },
            {
                "gate_id": "G4",
                "owner": "controller",
                "type": "qa_evidence_review",
                "target_ac": ["AC1", "AC2"],
                "pass_condition": "evidence under the run's artifacts, existing",
            },
        ],
        "evidence_required": [
            {
                "id": "E1_result",
                "path_pattern": f".artifacts/agent_runs/{RUN_ID}/steps/S1/rounds/R*/result.json",
                "required_for": ["AC1"],
            },
            {
                "id": "E2_records",
                "path_pattern": "step_result.json::commands_executed[*]",
                "required_for": ["AC2"],
            },
        ],
    }
    raw.update(overrides)
    return protocol.convert(raw, StepPack)


def small_case() -> tuple[StepPack, StepResult, WorkspaceFacts]:
    """`small_pack` with a result and facts that pass."""
    pack = small_pack()
    out0, out1 = f"{ROUND_DIR}/cmd_0.txt", f"{ROUND_DIR}/cmd_1.txt"
    result = StepResult(
        verdict=Verdict.PASS,
        reason_code="PASS_ALL_CRITERIA",
        task_id="T-1",
        run_id=RUN_ID,
        step_id="S1",
        files_changed=["src/report/cli.py", "tests/test_report.py"],
        commands_executed=[
            CommandRecord(command=pack.commands_to_run[0], exit_code=0, evidence_path=out0),
            CommandRecord(command=pack.commands_to_run[1], exit_code=0, evidence_path=out1),
        ],
        verification_results=[
            VerificationResult(ac=AC1, met=True, evidence_path=out0),
            VerificationResult(ac=AC2, met=True, evidence_path=out1),
        ],
        evidence_map={"AC1": [out0]},
    )
    facts = WorkspaceFacts(
        changed_files=("src/report/cli.py", "tests/test_report.py", f"{ROUND_DIR}/cmd_0.txt"),
        artifact_files=(out0, out1, f"{ROUND_DIR}/result.json"),
        base="0" * 40,
    )
    return pack, result, facts
