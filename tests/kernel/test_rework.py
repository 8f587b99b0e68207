"""The rework builder: what a ReworkPack quotes, lists and keeps, and that it is byte-stable."""

from __future__ import annotations

import msgspec
import pytest
from hypothesis import given, settings

import protocol
from kernel import (
    CommandRerun,
    ReworkError,
    WorkspaceFacts,
    build_conflict_rework,
    build_rework,
    review,
)
from protocol import QAReason, ReviewVerdict, ReworkPack, Verdict
from tests.conftest import SEED_PACKS
from tests.kernel.qa_cases import AC1, AC2, seed_case, small_case
from tests.kernel.qa_strategies import PACK, cases

R = QAReason
replace = msgspec.structs.replace


def _failing() -> tuple[protocol.StepPack, protocol.QAReview]:
    pack, result, facts = small_case()
    assert facts.changed_files is not None and facts.artifact_files is not None
    bad = replace(
        result,
        verification_results=[replace(result.verification_results[0], met=False)],
        files_changed=[*result.files_changed, "docs/x.md"],
    )
    bad_facts = replace(
        facts,
        changed_files=(*facts.changed_files, "docs/x.md"),
        artifact_files=tuple(a for a in facts.artifact_files if not a.endswith("result.json")),
        command_reruns=(CommandRerun(index=0, command="pytest", exit_code=1),),
    )
    return pack, review(pack, bad, bad_facts, round_no=1)


def test_rework_pack_quotes_failures_and_keeps_the_scope() -> None:
    pack, rv = _failing()
    assert rv.verdict is ReviewVerdict.REWORK
    rework = build_rework(pack, rv, rework_round=1, review_ref="reviews/R1.json")

    assert rework.reason_code is R.COMMAND_CLAIM_CONTRADICTED
    assert rework.review_verdict is ReviewVerdict.REWORK
    assert (rework.task_id, rework.run_id, rework.step_id) == ("T-1", pack.run_id, "S1")
    assert rework.review_ref == "reviews/R1.json"
    # G1 (AC1) failed on the re-run, G3 (AC2) on scope, G4 (AC1, AC2) on evidence and ACs.
    assert [g.gate_id for g in rework.failed_gates] == ["G1", "G3", "G4"]
    g1 = rework.failed_gates[0]
    assert g1.pass_condition == "pytest exits 0"
    assert any("re-run exited 1" in m for m in g1.findings)
    assert rework.failed_acceptance_criteria == [AC1, AC2]  # verbatim, in pack order
    assert rework.acceptance_criteria == [AC1, AC2]
    pattern = pack.view.evidence_required[0]
    assert rework.missing_evidence == [f"{pattern.path_pattern} ({pattern.id})"]
    assert rework.rerun_commands == list(pack.commands_to_run)
    assert rework.scope_guard.allowed_paths == list(pack.view.allowed_paths)
    assert rework.scope_guard.forbidden_paths == list(pack.view.forbidden_paths)
    assert rework.scope_guard.dependency_policy == pack.view.dependency_policy
    fixes = rework.minimal_fix_list
    assert len(fixes) == len(set(fixes)) == len(rv.findings)
    assert any(
        f.startswith("Revert the change outside the allowed paths: docs/x.md") for f in fixes
    )
    assert any(AC2 in f for f in fixes)  # AC2 is missing: quoted in its fix


def test_missing_and_outside_evidence_paths_are_listed_as_given() -> None:
    case = seed_case("MVP-2_S1")
    vrs = list(case.result.verification_results)
    vrs[0] = replace(vrs[0], evidence_path="/tmp/out.txt")
    vrs[1] = replace(vrs[1], evidence_path="")
    assert case.facts.artifact_files is not None
    gone = case.result.commands_executed[2].evidence_path
    facts = replace(
        case.facts, artifact_files=tuple(a for a in case.facts.artifact_files if a != gone)
    )
    rv = review(case.pack, replace(case.result, verification_results=vrs), facts, round_no=1)
    rework = build_rework(case.pack, rv, rework_round=2)
    assert rework.missing_evidence[0] == gone
    assert "/tmp/out.txt" in rework.missing_evidence
    assert any("no evidence path" in m for m in rework.missing_evidence)
    assert len(rework.missing_evidence) == len(set(rework.missing_evidence))
    assert any(f"{case.pack.view.run_dir}/" in fix for fix in rework.minimal_fix_list)


def test_fail_review_gives_a_pack_marked_fail() -> None:
    pack, result, facts = small_case()
    rv = review(pack, replace(result, verdict=Verdict.BLOCKED), facts, round_no=1)
    rework = build_rework(pack, rv, rework_round=1)
    assert rework.review_verdict is ReviewVerdict.FAIL
    assert rework.reason_code is R.WORKER_BLOCKED
    assert rework.failed_gates == []


def test_passing_review_has_nothing_to_rework() -> None:
    pack, result, facts = small_case()
    with pytest.raises(ReworkError, match="nothing to rework"):
        build_rework(pack, review(pack, result, facts, round_no=1), rework_round=1)


def test_review_of_another_step_is_refused() -> None:
    _, rv = _failing()
    case = seed_case("MVP-2_S1")
    with pytest.raises(ReworkError, match="not of this pack"):
        build_rework(case.pack, rv, rework_round=1)


def test_rework_round_counts_from_one() -> None:
    pack, rv = _failing()
    with pytest.raises(ReworkError, match="from 1"):
        build_rework(pack, rv, rework_round=0)


def test_rework_pack_is_a_valid_payload() -> None:
    pack, rv = _failing()
    raw = protocol.encode_pretty(build_rework(pack, rv, rework_round=1))
    name, decoded = protocol.decode_kind(raw)
    assert name == "rework-pack"
    assert isinstance(decoded, ReworkPack)


@settings(max_examples=150, deadline=None)
@given(cases)
def test_rework_packs_are_byte_stable(case: tuple[protocol.StepResult, WorkspaceFacts]) -> None:
    """Same review, same bytes; and a review that went through JSON gives the same bytes."""
    result, fact = case
    rv = review(PACK, result, fact, round_no=1)
    if rv.verdict is ReviewVerdict.PASS:
        return
    first = protocol.encode(build_rework(PACK, rv, rework_round=1))
    assert protocol.encode(build_rework(PACK, rv, rework_round=1)) == first
    again = protocol.decode(protocol.encode(rv), protocol.QAReview)
    reloaded = protocol.decode(protocol.encode(PACK), protocol.StepPack)
    assert protocol.encode(build_rework(reloaded, again, rework_round=1)) == first


def test_conflict_rework_names_files_and_is_deterministic() -> None:
    pack = protocol.read(SEED_PACKS[2], protocol.StepPack)
    one = build_conflict_rework(pack, ["kit/README.md", "kit/README.md", "a.txt"], rework_round=2)
    two = build_conflict_rework(pack, ["a.txt", "kit/README.md"], rework_round=2)
    assert protocol.encode(one) == protocol.encode(two)
    assert one.reason_code is QAReason.MERGE_CONFLICT
    assert one.rework_round == 2
    assert "a.txt, kit/README.md" in one.minimal_fix_list[0]
    assert one.rerun_commands == list(pack.view.commands_to_run)
    assert one.scope_guard.allowed_paths == list(pack.view.allowed_paths)
    with pytest.raises(ReworkError):
        build_conflict_rework(pack, [], rework_round=0)
