"""Table tests for the reviewer's rules, on a small synthetic step (see qa_cases.small_case)."""

from __future__ import annotations

from typing import Any

import msgspec
import pytest

import protocol
from kernel import CLAIMS_ONLY, CommandRerun, ScopePatternError, WorkspaceFacts, review, verdict_for
from protocol import (
    CommandRecord,
    QAReason,
    QAReview,
    ReviewVerdict,
    StepPack,
    Verdict,
    VerificationResult,
)
from tests.kernel.qa_cases import AC1, ROUND_DIR, RUN_ID, small_case, small_pack

R = QAReason
replace = msgspec.structs.replace


def _review_change(pack: StepPack, path: str) -> QAReview:
    """Review the small case with `path` as the one file changed, and reported."""
    _, result, facts = small_case()
    changed = replace(result, files_changed=[path])
    return review(pack, changed, replace(facts, changed_files=(path,)), round_no=1)


def test_small_case_passes() -> None:
    pack, result, facts = small_case()
    got = review(pack, result, facts, round_no=1)
    assert got.verdict is ReviewVerdict.PASS
    assert got.reason_codes == [R.PASS_ALL_GATES]
    assert [c.passed for c in got.command_checks] == [True, True]
    assert got.round == 1
    assert got.base_revision == "0" * 40


def test_run_artifacts_are_evidence_not_work() -> None:
    """An evidence file git sees as untracked is neither an unreported change nor a scope
    breach, even though `.artifacts/**` is forbidden; another run's directory is."""
    pack, result, facts = small_case()
    assert facts.changed_files is not None and any(".artifacts" in p for p in facts.changed_files)
    assert review(pack, result, facts, round_no=1).verdict is ReviewVerdict.PASS
    other = ".artifacts/agent_runs/OTHER/x.txt"
    got = review(
        pack, result, replace(facts, changed_files=(*facts.changed_files, other)), round_no=1
    )
    assert set(got.reason_codes) == {R.CHANGE_NOT_REPORTED, R.SCOPE_FORBIDDEN}
    assert got.verdict is ReviewVerdict.FAIL


@pytest.mark.parametrize(
    ("path", "allowed", "forbidden"),
    [
        ("src/report/cli.py", True, []),
        ("src/report/deep/er/x.py", True, []),
        ("src/other.py", False, []),
        ("tests/test_report.py", True, []),
        ("tests/fixtures/data.json", True, ["tests/fixtures/**"]),
        ("pyproject.toml", False, ["pyproject.toml"]),
        ("sub/pyproject.toml", False, []),  # anchored: the root file only
        ("src/report", False, []),  # `src/report/**` names what is inside, not the name
    ],
)
def test_scope_check_per_file(path: str, allowed: bool, forbidden: list[str]) -> None:
    got = _review_change(small_pack(), path)
    (check,) = got.scope_checks
    assert (check.file, check.allowed, check.forbidden_matches) == (path, allowed, forbidden)
    expected = R.SCOPE_FORBIDDEN if forbidden else (None if allowed else R.SCOPE_NOT_ALLOWED)
    assert (expected in got.reason_codes) if expected else got.verdict is ReviewVerdict.PASS


def test_forbidden_wins_over_allowed() -> None:
    got = _review_change(small_pack(), "tests/fixtures/big.json")
    assert got.reason_codes == [R.SCOPE_FORBIDDEN]
    assert got.verdict is ReviewVerdict.FAIL


@pytest.mark.parametrize(
    ("policy", "path", "violation"),
    [
        ({}, "requirements-dev.txt", "dependency manifest"),
        ({}, "web/package.json", "dependency manifest"),
        ({}, "poetry.lock", "lockfile"),
        ({}, "web/pnpm-lock.yaml", "lockfile"),
        ({}, ".github/workflows/report.yml", "CI configuration changed; the policy"),
        ({}, ".gitlab-ci.yml", "CI configuration"),
        ({}, "src/report/cli.py", None),
        ({}, "docs/.github/workflows/x.yml", None),  # CI files count at the root only
        ({"allow_dependency_manifest_changes": True}, "requirements.txt", None),
        ({"allow_dependency_manifest_changes": True}, "uv.lock", "lockfile"),
        ({"allow_lockfile_changes": True}, "uv.lock", None),
        ({"allow_new_dependencies": True}, "package.json", None),
        ({"mode": "allow-new-dependencies"}, "Cargo.lock", None),
        ({"allow_ci_changes": True}, ".github/workflows/any.yml", None),
        ({"allow_ci_changes": False}, ".github/workflows/report.yml", "CI configuration"),
        ({"allow_ci_workflow_changes_in_scope": True}, ".github/workflows/report.yml", None),
        (
            {"allow_ci_workflow_changes_in_scope": True},
            ".github/workflows/other.yml",
            "outside the allowed paths",
        ),
    ],
)
def test_dependency_policy(policy: dict[str, Any], path: str, violation: str | None) -> None:
    pack = small_pack(
        dependency_policy={"mode": "no-new-dependencies", **policy},
        allowed_paths=["**"],
        forbidden_paths=[],
    )
    if path == ".github/workflows/other.yml":
        pack = small_pack(dependency_policy=policy, forbidden_paths=[])
    got = _review_change(pack, path)
    if violation is None:
        assert got.dependency_violations == []
        assert R.DEPENDENCY_POLICY_VIOLATION not in got.reason_codes
    else:
        (message,) = got.dependency_violations
        assert message.startswith(f"{path}: ") and violation in message
        assert got.verdict is ReviewVerdict.FAIL


def test_dependency_findings_go_to_the_dependency_gate_when_declared() -> None:
    gate = {
        "gate_id": "G9",
        "owner": "controller",
        "type": "qa_dependency_policy_review",
        "pass_condition": "no dependency changes",
    }
    base = small_pack()
    pack = small_pack(gates=[*msgspec.to_builtins(base.view.gates), gate])
    _, result, facts = small_case()
    got = review(
        pack,
        replace(result, files_changed=["src/report/requirements.txt"]),
        replace(facts, changed_files=("src/report/requirements.txt",)),
        round_no=1,
    )
    assert got.reason_codes == [R.DEPENDENCY_POLICY_VIOLATION]
    assert {g.gate_id for g in got.gates if not g.passed} == {"G9"}


def test_evidence_only_gate_accepts_any_exit_code_but_needs_evidence() -> None:
    pack, result, facts = small_case()
    records = [result.commands_executed[0], replace(result.commands_executed[1], exit_code=128)]
    got = review(pack, replace(result, commands_executed=records), facts, round_no=1)
    assert got.verdict is ReviewVerdict.PASS
    assert facts.artifact_files is not None
    gone = result.commands_executed[1].evidence_path
    kept = tuple(a for a in facts.artifact_files if a != gone)
    got = review(pack, result, replace(facts, artifact_files=kept), round_no=1)
    assert got.reason_codes == [R.EVIDENCE_MISSING]
    assert {g.gate_id for g in got.gates if not g.passed} == {"G2", "G4"}
    assert [c.passed for c in got.command_checks] == [True, False]


def test_exit_zero_gate_fails_on_nonzero_claim() -> None:
    pack, result, facts = small_case()
    records = [replace(result.commands_executed[0], exit_code=2), result.commands_executed[1]]
    got = review(pack, replace(result, commands_executed=records), facts, round_no=1)
    assert got.reason_codes == [R.COMMAND_FAILED]
    assert {g.gate_id for g in got.gates if not g.passed} == {"G1"}
    assert got.command_checks[0].claimed_exit_code == 2


def test_the_last_record_of_a_command_counts() -> None:
    pack, result, facts = small_case()
    first = replace(result.commands_executed[0], exit_code=1)
    records = [first, *result.commands_executed]
    assert review(pack, replace(result, commands_executed=records), facts, round_no=1).verdict is (
        ReviewVerdict.PASS
    )
    records = [*result.commands_executed, first]
    got = review(pack, replace(result, commands_executed=records), facts, round_no=1)
    assert got.reason_codes == [R.COMMAND_FAILED]


@pytest.mark.parametrize(
    ("claimed", "rerun", "codes"),
    [
        (0, CommandRerun(index=0, command="c", exit_code=0), set()),
        (
            0,
            CommandRerun(index=0, command="c", exit_code=3),
            {R.COMMAND_CLAIM_CONTRADICTED, R.COMMAND_FAILED},
        ),
        # The worker said it failed, the re-run passes: still a false record.
        (1, CommandRerun(index=0, command="c", exit_code=0), {R.COMMAND_CLAIM_CONTRADICTED}),
        (
            0,
            CommandRerun(index=0, command="c", exit_code=None, timed_out=True),
            {R.COMMAND_FAILED},
        ),
        # The re-run could not start: nothing to weigh the claim against.
        (0, CommandRerun(index=0, command="c", exit_code=None, detail="no sh"), set()),
    ],
)
def test_rerun_facts_beat_claims(claimed: int, rerun: CommandRerun, codes: set[QAReason]) -> None:
    pack, result, facts = small_case()
    records = [replace(result.commands_executed[0], exit_code=claimed), result.commands_executed[1]]
    got = review(
        pack,
        replace(result, commands_executed=records),
        replace(facts, command_reruns=(rerun,)),
        round_no=1,
    )
    assert set(got.reason_codes) - {R.PASS_ALL_GATES} == codes
    check = got.command_checks[0]
    assert (check.rerun_exit_code, check.rerun_timed_out) == (rerun.exit_code, rerun.timed_out)
    assert got.unchecked == []


def test_contradiction_on_an_ungated_command_blocks_a_pass() -> None:
    pack = small_pack(gates=[])
    _, result, facts = small_case()
    rerun = CommandRerun(index=1, command="git status --short", exit_code=128)
    got = review(pack, result, replace(facts, command_reruns=(rerun,)), round_no=1)
    assert got.reason_codes == [R.COMMAND_CLAIM_CONTRADICTED]
    assert got.gates == []
    assert got.findings[0].gate_ids == []
    assert got.verdict is ReviewVerdict.REWORK


def test_claims_only_review_says_what_it_did_not_check() -> None:
    """Without facts the changed files are the claims, evidence existence is unknown (None,
    not False) and patterns are unchecked; none of that is a finding."""
    pack, result, _ = small_case()
    got = review(pack, result, CLAIMS_ONLY, round_no=2)
    assert got.verdict is ReviewVerdict.PASS
    assert got.unchecked == ["changed_files", "evidence_files", "command_exit_codes"]
    assert got.changed_files == []
    assert [c.file for c in got.scope_checks] == ["src/report/cli.py", "tests/test_report.py"]
    assert {p.exists for p in got.paths_checked} == {None}
    assert [p.checked for p in got.pattern_results] == [False, True]


def test_claims_only_still_judges_claimed_scope_and_evidence_prefix() -> None:
    pack, result, _ = small_case()
    bad = replace(
        result,
        files_changed=["pyproject.toml", "../outside.py"],
        verification_results=[
            VerificationResult(ac=AC1, met=True, evidence_path="notes/ac1.txt"),
            result.verification_results[1],
        ],
    )
    got = review(pack, bad, CLAIMS_ONLY, round_no=1)
    assert set(got.reason_codes) == {
        R.SCOPE_FORBIDDEN,
        R.DEPENDENCY_POLICY_VIOLATION,
        R.SCOPE_NOT_ALLOWED,
        R.EVIDENCE_OUTSIDE_ARTIFACTS,
    }


def test_unsafe_claimed_path_is_a_change_not_made() -> None:
    pack, result, facts = small_case()
    claims = [*result.files_changed, "/etc/passwd"]
    got = review(pack, replace(result, files_changed=claims), facts, round_no=1)
    assert got.reason_codes == [R.CHANGE_CLAIMED_NOT_MADE]
    assert got.claimed_not_changed == ["/etc/passwd"]


@pytest.mark.parametrize(
    ("path", "prefix_ok"),
    [
        (f"{ROUND_DIR}/cmd_0.txt", True),
        (f"./{ROUND_DIR}//cmd_0.txt", True),  # normalised, then found
        (f".artifacts/agent_runs/{RUN_ID}", False),  # the directory itself is no evidence file
        (f".artifacts/agent_runs/{RUN_ID}/../{RUN_ID}/steps/S1/rounds/R1/cmd_0.txt", False),
        (f".artifacts/agent_runs/{RUN_ID}x/cmd_0.txt", False),
        ("C:/work/.artifacts/agent_runs/x.txt", False),
        ("\\\\server\\share\\x.txt", False),
        ("src/report/cli.py", False),
    ],
)
def test_evidence_prefix(path: str, prefix_ok: bool) -> None:
    pack, result, facts = small_case()
    vrs = [
        replace(result.verification_results[0], evidence_path=path),
        result.verification_results[1],
    ]
    got = review(pack, replace(result, verification_results=vrs), facts, round_no=1)
    check = next(p for p in got.paths_checked if p.section == "verification_results")
    assert check.prefix_ok is prefix_ok
    if prefix_ok:
        assert check.exists is True
        assert got.verdict is ReviewVerdict.PASS
    else:
        assert check.exists is None  # never looked up
        assert got.reason_codes == [R.EVIDENCE_OUTSIDE_ARTIFACTS]


def test_evidence_pattern_outside_the_run_is_unmatched_and_says_why() -> None:
    base = small_pack()
    reqs = [{"id": "E9", "path_pattern": "docs/evidence/*.md", "required_for": ["AC1"]}]
    pack = small_pack(evidence_required=reqs)
    _, result, facts = small_case()
    assert base.view.evidence_required != pack.view.evidence_required
    got = review(pack, result, facts, round_no=1)
    assert got.reason_codes == [R.EVIDENCE_PATTERN_UNMATCHED]
    assert "outside" in got.findings[0].message


def test_unknown_result_section_in_pattern_is_unmatched() -> None:
    reqs = [{"id": "E9", "path_pattern": "step_result.json::nonsense[*]"}]
    pack = small_pack(evidence_required=reqs)
    _, result, facts = small_case()
    got = review(pack, result, facts, round_no=1)
    assert got.reason_codes == [R.EVIDENCE_PATTERN_UNMATCHED]


@pytest.mark.parametrize(
    ("field", "overrides"),
    [
        ("$.allowed_paths[1]", {"allowed_paths": ["src/**", "src/a\\"]}),
        ("$.forbidden_paths[0]", {"forbidden_paths": ["[z-a]"]}),
        (
            "$.evidence_required[0].path_pattern",
            {"evidence_required": [{"id": "E", "path_pattern": "a\\"}]},
        ),
    ],
)
def test_unusable_glob_is_an_error_naming_the_field(field: str, overrides: dict[str, Any]) -> None:
    pack = small_pack(**overrides)
    _, result, facts = small_case()
    with pytest.raises(ScopePatternError) as err:
        review(pack, result, facts, round_no=1)
    assert err.value.field == field
    assert field in str(err.value)


def test_acceptance_gate_takes_ac_findings_when_declared() -> None:
    gate = {"gate_id": "GA", "owner": "controller", "type": "qa_acceptance_review"}
    base = small_pack()
    pack = small_pack(gates=[*msgspec.to_builtins(base.view.gates), gate])
    _, result, facts = small_case()
    got = review(pack, replace(result, verification_results=[]), facts, round_no=1)
    assert set(got.reason_codes) == {R.AC_MISSING}
    assert {g.gate_id for g in got.gates if not g.passed} == {"GA"}


def test_reworded_ac_names_the_criterion_it_meant() -> None:
    pack, result, facts = small_case()
    vrs = [
        replace(result.verification_results[0], ac="AC1: prints JSON"),
        result.verification_results[1],
    ]
    got = review(pack, replace(result, verification_results=vrs), facts, round_no=1)
    unexpected = next(f for f in got.findings if f.code is R.AC_UNEXPECTED)
    assert AC1 in unexpected.message
    assert got.missing_acs == [AC1]
    assert got.unexpected_acs == ["AC1: prints JSON"]


def test_extra_commands_are_allowed_but_their_evidence_is_checked() -> None:
    pack, result, facts = small_case()
    extra = CommandRecord(command="ruff check .", exit_code=1, evidence_path=f"{ROUND_DIR}/nope")
    got = review(
        pack,
        replace(result, commands_executed=[*result.commands_executed, extra]),
        facts,
        round_no=1,
    )
    assert got.reason_codes == [R.EVIDENCE_MISSING]


def test_blocked_worker_fails_and_quotes_blockers() -> None:
    pack, result, facts = small_case()
    blocked = replace(result, verdict=Verdict.BLOCKED, blockers=["need a database URL"])
    got = review(pack, blocked, facts, round_no=1)
    assert got.verdict is ReviewVerdict.FAIL
    assert "need a database URL" in got.findings[0].message


@pytest.mark.parametrize(
    ("codes", "verdict"),
    [
        ([], ReviewVerdict.PASS),
        ([R.PASS_ALL_GATES], ReviewVerdict.PASS),
        ([R.AC_NOT_MET], ReviewVerdict.REWORK),
        ([R.AC_NOT_MET, R.SCOPE_FORBIDDEN], ReviewVerdict.FAIL),
        ([R.WORKER_BLOCKED], ReviewVerdict.FAIL),
        ([R.RESULT_FOR_OTHER_STEP], ReviewVerdict.FAIL),
        ([R.DEPENDENCY_POLICY_VIOLATION], ReviewVerdict.FAIL),
        ([R.COMMAND_CLAIM_CONTRADICTED], ReviewVerdict.REWORK),
    ],
)
def test_verdict_for(codes: list[QAReason], verdict: ReviewVerdict) -> None:
    assert verdict_for(codes) is verdict


def test_reason_codes_are_in_priority_order_without_repeats() -> None:
    pack, result, facts = small_case()
    bad = replace(result, verdict=Verdict.FAIL, verification_results=[], commands_executed=[])
    got = review(pack, bad, facts, round_no=1)
    order = list(QAReason)
    assert got.reason_codes == sorted(set(got.reason_codes), key=order.index)
    assert got.reason_codes[0] is R.COMMAND_MISSING


def test_facts_round_trip_as_json() -> None:
    """The engine can store the facts a review rested on next to the review."""
    _, _, facts = small_case()
    facts = replace(
        facts, command_reruns=(CommandRerun(index=0, command="c", exit_code=1, detail="x"),)
    )
    again = protocol.decode(protocol.encode(facts), WorkspaceFacts)
    assert again == facts
    assert facts.command_reruns is not None
    assert again.rerun(0) == facts.command_reruns[0]
    assert again.rerun(1) is None
