"""`runner review-step` end to end: a real git repository in tmp_path where a simulated
worker really edits files, really runs the pack's commands and writes their output as
evidence, and reports (truthfully or not) in a step_result.json."""

from __future__ import annotations

import json
import shlex
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

import protocol
from protocol import QAReview, ReworkPack, StepResult
from tests.conftest import SEED
from tests.runner.test_git import sh as git

PY = shlex.quote(sys.executable)
RUN_ID = "T-7_20260101T000000Z"
ROUND = f".artifacts/agent_runs/{RUN_ID}/steps/S1/rounds/R1"
AC1 = "AC1: src/report.py mentions json"
AC2 = "AC2: the work stays inside src/ and tests/"
CHECK = f"{PY} -c \"import pathlib, sys; sys.exit(0 if 'json' in pathlib.Path('src/report.py').read_text() else 1)\""  # noqa: E501


def run(*args: str | Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "runner", "--log-level", "warning", *map(str, args)],
        capture_output=True,
        text=True,
        check=False,
    )


def pack_data(**overrides: Any) -> dict[str, Any]:
    data: dict[str, Any] = {
        "task_id": "T-7",
        "run_id": RUN_ID,
        "step_id": "S1",
        "allowed_paths": ["src/**", "tests/**"],
        "forbidden_paths": [".artifacts/**", "pyproject.toml", "src/secrets/**"],
        "commands_to_run": [CHECK, "git status --short"],
        "AC": [AC1, AC2],
        "gates": [
            {
                "gate_id": "G1",
                "owner": "worker",
                "type": "required_command_exit_0",
                "target_ac": ["AC1"],
                "command_index": 0,
                "pass_condition": "the check exits 0",
            },
            {"gate_id": "G2", "owner": "controller", "type": "qa_scope_guard_review"},
            {"gate_id": "G3", "owner": "controller", "type": "qa_evidence_review"},
        ],
        "evidence_required": [
            {
                "id": "E1",
                "path_pattern": f".artifacts/agent_runs/{RUN_ID}/steps/S1/rounds/R*/step_*.json",
            }
        ],
    }
    data.update(overrides)
    return data


class Step:
    """A repository at its base commit, a step pack file, and a simulated worker."""

    def __init__(self, tmp_path: Path, **pack_overrides: Any) -> None:
        self.repo = tmp_path / "repo"
        (self.repo / "src").mkdir(parents=True)
        (self.repo / "src" / "report.py").write_text("print('text')\n")
        (self.repo / "pyproject.toml").write_text("[project]\nname = 'x'\n")
        git(self.repo, "init", "-q", "-b", "main")
        git(self.repo, "add", "-A")
        git(self.repo, "commit", "-qm", "base")
        self.base = git(self.repo, "rev-parse", "HEAD").strip()
        self.pack_file = tmp_path / "pack.json"
        self.pack_file.write_text(json.dumps(pack_data(**pack_overrides)))
        self.result_file = self.repo / ROUND / "step_result.json"
        self.out = tmp_path / "out"

    def work(
        self,
        *,
        edits: dict[str, str] | None = None,
        report: list[str] | None = None,
        claimed_exit: int | None = None,
        **result_overrides: Any,
    ) -> None:
        """Edit files, run the pack's commands writing their output as evidence, write the
        StepResult; `report` overrides files_changed, `claimed_exit` the check's exit code."""
        edits = {"src/report.py": "print('json')\n"} if edits is None else edits
        for name, text in edits.items():
            path = self.repo / name
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_text(text)
        records = []
        for i, command in enumerate([CHECK, "git status --short"]):
            done = subprocess.run(
                command, shell=True, cwd=self.repo, capture_output=True, text=True, check=False
            )
            evidence = f"{ROUND}/cmd_{i}.txt"
            (self.repo / evidence).parent.mkdir(parents=True, exist_ok=True)
            (self.repo / evidence).write_text(done.stdout + done.stderr)
            code = claimed_exit if i == 0 and claimed_exit is not None else done.returncode
            records.append({"command": command, "exit_code": code, "evidence_path": evidence})
        result: dict[str, Any] = {
            "verdict": "PASS",
            "reason_code": "PASS_ALL_CRITERIA",
            "task_id": "T-7",
            "run_id": RUN_ID,
            "step_id": "S1",
            "files_changed": sorted(edits) if report is None else report,
            "commands_executed": records,
            "verification_results": [
                {"ac": AC1, "met": True, "evidence_path": f"{ROUND}/cmd_0.txt"},
                {"ac": AC2, "met": True, "evidence_path": f"{ROUND}/cmd_1.txt"},
            ],
        }
        result.update(result_overrides)
        self.result_file.parent.mkdir(parents=True, exist_ok=True)
        self.result_file.write_text(json.dumps(result))

    def review(
        self, *extra: str | Path, workspace: bool = True
    ) -> subprocess.CompletedProcess[str]:
        args: list[str | Path] = [
            "review-step",
            "--step-pack-file",
            self.pack_file,
            "--step-result-file",
            self.result_file,
            "--write-review-file",
            self.out / "review.json",
            "--write-rework-file",
            self.out / "rework.json",
        ]
        if workspace:
            args += ["--workspace", self.repo]
        return run(*args, *extra)

    def written_review(self) -> QAReview:
        return protocol.read(self.out / "review.json", QAReview)

    def written_rework(self) -> ReworkPack:
        return protocol.read(self.out / "rework.json", ReworkPack)


def test_honest_work_passes_with_exit_0(tmp_path: Path) -> None:
    step = Step(tmp_path)
    step.work()
    done = step.review("--verify-commands")
    assert done.returncode == 0, done.stdout + done.stderr
    assert done.stdout.startswith("PASS T-7/S1 round 1 (PASS_ALL_GATES)")
    assert "no rework: the review passed" in done.stdout
    review = step.written_review()
    assert review.verdict.value == "PASS"
    assert review.unchecked == []
    assert review.base_revision == step.base
    assert [c.rerun_exit_code for c in review.command_checks] == [0, 0]
    assert review.pattern_results[0].matches == [f"{ROUND}/step_result.json"]
    assert not (step.out / "rework.json").exists()


def test_committed_work_is_measured_from_base(tmp_path: Path) -> None:
    step = Step(tmp_path)
    step.work()
    git(step.repo, "add", "src")
    git(step.repo, "commit", "-qm", "work")
    assert step.review().returncode == 1  # against HEAD nothing changed: a claim not made
    assert step.written_review().claimed_not_changed == ["src/report.py"]
    assert step.review("--base", step.base).returncode == 0


def test_a_lie_about_an_exit_code_is_caught_by_the_rerun(tmp_path: Path) -> None:
    step = Step(tmp_path)
    step.work(edits={"src/report.py": "print('still text')\n"}, claimed_exit=0)
    without = step.review()
    assert without.returncode == 0, "without a re-run the claim stands (and the review says so)"
    assert step.written_review().unchecked == ["command_exit_codes"]

    done = step.review("--verify-commands")
    assert done.returncode == 1
    review = step.written_review()
    assert review.reason_codes[0].value == "COMMAND_CLAIM_CONTRADICTED"
    assert "COMMAND_FAILED" in review.reason_codes
    check = review.command_checks[0]
    assert (check.claimed_exit_code, check.rerun_exit_code) == (0, 1)
    rework = step.written_rework()
    assert rework.reason_code.value == "COMMAND_CLAIM_CONTRADICTED"
    assert rework.failed_acceptance_criteria == [AC1]
    assert rework.rerun_commands == [CHECK, "git status --short"]
    assert rework.review_ref == str(step.out / "review.json")
    assert "wrote rework:" in done.stdout


def test_an_unreported_change_is_caught(tmp_path: Path) -> None:
    step = Step(tmp_path)
    step.work(
        edits={"src/report.py": "print('json')\n", "src/helper.py": "x = 1\n"},
        report=["src/report.py"],
    )
    assert step.review().returncode == 1
    review = step.written_review()
    assert review.changed_not_claimed == ["src/helper.py"]
    assert [r.value for r in review.reason_codes] == ["CHANGE_NOT_REPORTED"]
    assert "- CHANGE_NOT_REPORTED [G2]: src/helper.py changed (git)" in step.review().stdout


def test_a_forbidden_change_fails(tmp_path: Path) -> None:
    step = Step(tmp_path)
    step.work(edits={"src/report.py": "print('json')\n", "pyproject.toml": "[project]\n"})
    done = step.review()
    assert done.returncode == 1
    review = step.written_review()
    assert review.verdict.value == "FAIL"
    assert {r.value for r in review.reason_codes} == {
        "SCOPE_FORBIDDEN",
        "DEPENDENCY_POLICY_VIOLATION",
    }
    assert step.written_rework().review_verdict.value == "FAIL"


def test_missing_evidence_is_caught_only_with_a_workspace(tmp_path: Path) -> None:
    step = Step(tmp_path)
    step.work()
    (step.repo / ROUND / "cmd_1.txt").unlink()
    assert step.review().returncode == 1
    assert [r.value for r in step.written_review().reason_codes] == ["EVIDENCE_MISSING"]
    assert step.written_rework().missing_evidence == [f"{ROUND}/cmd_1.txt"]

    claims = step.review(workspace=False)
    assert claims.returncode == 3
    assert "claims only" in claims.stdout
    review = step.written_review()
    assert review.verdict.value == "PASS"
    assert review.unchecked == ["changed_files", "evidence_files", "command_exit_codes"]


def test_claims_only_review_of_a_real_seed_pack(tmp_path: Path) -> None:
    from tests.kernel.qa_cases import seed_case

    case = seed_case("MVP-2_S1")
    result_file = tmp_path / "step_result.json"
    result_file.write_bytes(protocol.encode(case.result))
    pack_file = SEED / "step_packs" / "MVP-2_S1.json"
    args = ["--step-pack-file", pack_file, "--step-result-file", result_file]
    done = run("review-step", *args, "--json")
    assert done.returncode == 3, done.stderr
    review = protocol.decode(done.stdout, QAReview)
    assert review.verdict.value == "PASS"
    assert [g.gate_id for g in review.gates] == [f"G{i}" for i in range(1, 9)]

    lying = protocol.encode(
        StepResult(**{**protocol.to_builtins(case.result), "files_changed": ["scripts/verify.sh"]})
    )
    result_file.write_bytes(lying)
    done = run("review-step", *args)
    assert done.returncode == 1
    assert done.stdout.startswith("FAIL MVP-2/S1 round 1 (SCOPE_FORBIDDEN)")


def test_bad_result_is_exit_2_naming_file_and_field_and_writes_nothing(tmp_path: Path) -> None:
    step = Step(tmp_path)
    step.work(verification_results=[{"ac": AC1, "met": "yes", "evidence_path": "x"}])
    done = step.review()
    assert done.returncode == 2
    assert str(step.result_file) in done.stderr
    assert "$.verification_results[0].met" in done.stderr
    assert "Traceback" not in done.stderr
    assert not step.out.exists()


def test_unusable_glob_is_exit_2_naming_the_field(tmp_path: Path) -> None:
    step = Step(tmp_path, forbidden_paths=["src/[z-a]"])
    step.work()
    done = step.review("--verify-commands")
    assert done.returncode == 2
    assert str(step.pack_file) in done.stderr
    assert "$.forbidden_paths[0]" in done.stderr
    assert "Traceback" not in done.stderr
    assert not step.out.exists()


@pytest.mark.parametrize(
    ("extra", "message"),
    [
        (["--base", "no-such-rev"], "'no-such-rev' is not a commit"),
        (["--workspace", "/"], "not a git work tree"),
    ],
)
def test_bad_workspace_or_base_is_exit_2(tmp_path: Path, extra: list[str], message: str) -> None:
    step = Step(tmp_path)
    step.work()
    if extra[0] == "--workspace":
        done = step.review(*extra, workspace=False)
    else:
        done = step.review(*extra)
    assert done.returncode == 2
    assert message in done.stderr
    assert "Traceback" not in done.stderr
    assert not step.out.exists()


def test_workspace_options_need_a_workspace(tmp_path: Path) -> None:
    step = Step(tmp_path)
    step.work()
    done = step.review("--verify-commands", workspace=False)
    assert done.returncode == 2
    assert "need --workspace" in done.stderr


def test_unwritable_output_is_exit_2(tmp_path: Path) -> None:
    step = Step(tmp_path)
    step.work()
    blocker = tmp_path / "file"
    blocker.write_text("not a directory")
    done = run(
        "review-step",
        "--step-pack-file",
        step.pack_file,
        "--step-result-file",
        step.result_file,
        "--write-review-file",
        blocker / "review.json",
    )
    assert done.returncode == 2
    assert "cannot write the review file" in done.stderr
    assert "Traceback" not in done.stderr
