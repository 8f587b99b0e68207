"""The original's real QA reviews are PASS cases: our reviewer must agree, check the same
things, and turn each kind of damage to them into the right reason code."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import msgspec
import pytest

from kernel import CommandRerun, WorkspaceFacts, review
from protocol import (
    CommandRecord,
    QAReason,
    ReviewVerdict,
    StepPack,
    StepResult,
    Verdict,
    VerificationResult,
    to_builtins,
)
from tests.kernel.qa_cases import SEED_REVIEWS, seed_case

R = QAReason
replace = msgspec.structs.replace


@pytest.mark.parametrize("label", sorted(SEED_REVIEWS))
def test_seed_review_passes(label: str) -> None:
    case = seed_case(label)
    got = review(case.pack, case.result, case.facts, round_no=1)
    assert got.findings == []
    assert got.verdict is ReviewVerdict.PASS
    assert got.reason_codes == [R.PASS_ALL_GATES]
    assert all(g.passed for g in got.gates)
    assert [g.gate_id for g in got.gates] == [g.gate_id for g in case.pack.view.gates]
    assert got.unchecked == ["command_exit_codes"]


@pytest.mark.parametrize("label", sorted(SEED_REVIEWS))
def test_seed_review_checks_what_the_original_checked(label: str) -> None:
    """Same scope checks, same evidence path checks, same pattern results as the original."""
    case = seed_case(label)
    _, _, scope_key, evidence_key, _ = SEED_REVIEWS[label]
    got = to_builtins(review(case.pack, case.result, case.facts, round_no=1))
    scope, evidence = case.original[scope_key], case.original[evidence_key]

    assert sorted(got["scope_checks"], key=lambda c: c["file"]) == sorted(
        scope["scope_checks"], key=lambda c: c["file"]
    )
    ours = [p for p in got["paths_checked"] if p["section"] != "evidence_map"]
    key = lambda p: (p["section"], p["index"])  # noqa: E731
    assert sorted(ours, key=key) == sorted(evidence["paths_checked"], key=key)
    theirs = {r["id"]: r for r in evidence["pattern_results"]}
    for pattern in got["pattern_results"]:
        if pattern["id"] in theirs:
            assert {k: pattern[k] for k in ("id", "pattern", "count", "matches")} == theirs[
                pattern["id"]
            ]
    assert got["missing_acs"] == evidence["missing_acs"] == []
    assert got["unmet_acs"] == evidence["unmet_acs"] == []


Mutation = Callable[[StepPack, StepResult, WorkspaceFacts], tuple[StepResult, WorkspaceFacts]]


def _drop_ac(p: StepPack, r: StepResult, f: WorkspaceFacts) -> tuple[StepResult, WorkspaceFacts]:
    return replace(r, verification_results=r.verification_results[1:]), f


def _unmet_ac(p: StepPack, r: StepResult, f: WorkspaceFacts) -> tuple[StepResult, WorkspaceFacts]:
    vrs = list(r.verification_results)
    vrs[2] = replace(vrs[2], met=False)
    return replace(r, verification_results=vrs), f


def _reworded_ac(
    p: StepPack, r: StepResult, f: WorkspaceFacts
) -> tuple[StepResult, WorkspaceFacts]:
    vrs = list(r.verification_results)
    vrs[0] = replace(vrs[0], ac=vrs[0].ac.rstrip(".") + " (done)")
    return replace(r, verification_results=vrs), f


def _twice_answered(
    p: StepPack, r: StepResult, f: WorkspaceFacts
) -> tuple[StepResult, WorkspaceFacts]:
    return replace(r, verification_results=[*r.verification_results, r.verification_results[0]]), f


def _out_of_scope(
    p: StepPack, r: StepResult, f: WorkspaceFacts
) -> tuple[StepResult, WorkspaceFacts]:
    assert f.changed_files is not None
    return (
        replace(r, files_changed=[*r.files_changed, "docs/extra.md"]),
        replace(f, changed_files=(*f.changed_files, "docs/extra.md")),
    )


def _forbidden(p: StepPack, r: StepResult, f: WorkspaceFacts) -> tuple[StepResult, WorkspaceFacts]:
    assert f.changed_files is not None
    return (
        replace(r, files_changed=[*r.files_changed, "tests/test_sneaky.py"]),
        replace(f, changed_files=(*f.changed_files, "tests/test_sneaky.py")),
    )


def _lockfile(p: StepPack, r: StepResult, f: WorkspaceFacts) -> tuple[StepResult, WorkspaceFacts]:
    assert f.changed_files is not None
    return (
        replace(r, files_changed=[*r.files_changed, "uv.lock"]),
        replace(f, changed_files=(*f.changed_files, "uv.lock")),
    )


def _unreported(p: StepPack, r: StepResult, f: WorkspaceFacts) -> tuple[StepResult, WorkspaceFacts]:
    return replace(r, files_changed=r.files_changed[1:]), f


def _not_made(p: StepPack, r: StepResult, f: WorkspaceFacts) -> tuple[StepResult, WorkspaceFacts]:
    assert f.changed_files is not None
    return r, replace(f, changed_files=f.changed_files[1:])


def _exit_code_lie(
    p: StepPack, r: StepResult, f: WorkspaceFacts
) -> tuple[StepResult, WorkspaceFacts]:
    reruns = tuple(
        CommandRerun(index=i, command=c, exit_code=1 if i == 1 else 0)
        for i, c in enumerate(p.view.commands_to_run)
    )
    return r, replace(f, command_reruns=reruns)


def _claimed_failure(
    p: StepPack, r: StepResult, f: WorkspaceFacts
) -> tuple[StepResult, WorkspaceFacts]:
    records = list(r.commands_executed)
    records[1] = replace(records[1], exit_code=1)
    return replace(r, commands_executed=records), f


def _dropped_command(
    p: StepPack, r: StepResult, f: WorkspaceFacts
) -> tuple[StepResult, WorkspaceFacts]:
    return replace(r, commands_executed=r.commands_executed[:-1]), f


def _evidence_path(path: str) -> Mutation:
    def mutate(p: StepPack, r: StepResult, f: WorkspaceFacts) -> tuple[StepResult, WorkspaceFacts]:
        vrs = list(r.verification_results)
        vrs[0] = replace(vrs[0], evidence_path=path.format(run=p.run_id))
        return replace(r, verification_results=vrs), f

    return mutate


def _evidence_deleted(
    p: StepPack, r: StepResult, f: WorkspaceFacts
) -> tuple[StepResult, WorkspaceFacts]:
    gone = r.commands_executed[0].evidence_path
    assert f.artifact_files is not None
    return r, replace(f, artifact_files=tuple(a for a in f.artifact_files if a != gone))


def _no_shim_stdout(
    p: StepPack, r: StepResult, f: WorkspaceFacts
) -> tuple[StepResult, WorkspaceFacts]:
    assert f.artifact_files is not None
    kept = tuple(a for a in f.artifact_files if not a.endswith("shim_stdout.txt"))
    return r, replace(f, artifact_files=kept)


def _verdict(v: Verdict) -> Mutation:
    def mutate(p: StepPack, r: StepResult, f: WorkspaceFacts) -> tuple[StepResult, WorkspaceFacts]:
        return replace(r, verdict=v, blockers=["scripts/verify.sh is missing"]), f

    return mutate


def _other_run(p: StepPack, r: StepResult, f: WorkspaceFacts) -> tuple[StepResult, WorkspaceFacts]:
    return replace(r, run_id="MVP-9_20260101T000000Z_ctrl"), f


def _no_records(p: StepPack, r: StepResult, f: WorkspaceFacts) -> tuple[StepResult, WorkspaceFacts]:
    return replace(r, commands_executed=[]), f


def _unknown_map_key(
    p: StepPack, r: StepResult, f: WorkspaceFacts
) -> tuple[StepResult, WorkspaceFacts]:
    return replace(r, evidence_map={**r.evidence_map, "AC99": []}), f


def _extra_record_outside(
    p: StepPack, r: StepResult, f: WorkspaceFacts
) -> tuple[StepResult, WorkspaceFacts]:
    extra = CommandRecord(command="ls", exit_code=0, evidence_path="/tmp/ls.txt")
    return replace(r, commands_executed=[*r.commands_executed, extra]), f


def _empty_evidence(
    p: StepPack, r: StepResult, f: WorkspaceFacts
) -> tuple[StepResult, WorkspaceFacts]:
    vr = VerificationResult(ac=r.verification_results[0].ac, met=True, evidence_path="")
    return replace(r, verification_results=[vr, *r.verification_results[1:]]), f


# name, mutation, reason codes expected (exactly), verdict, gates expected to fail (MVP-2_S1:
# G1-G5 exit-0 command gates for commands 0-4, G6 evidence-only for command 5, G7 scope, G8
# evidence; command 6 `git status --short` has no gate of its own)
MUTATIONS: list[tuple[str, Mutation, set[QAReason], ReviewVerdict, set[str]]] = [
    ("drop an AC", _drop_ac, {R.AC_MISSING}, ReviewVerdict.REWORK, {"G8"}),
    ("AC not met", _unmet_ac, {R.AC_NOT_MET}, ReviewVerdict.REWORK, {"G8"}),
    (
        "AC reworded",
        _reworded_ac,
        {R.AC_UNEXPECTED, R.AC_MISSING},
        ReviewVerdict.REWORK,
        {"G8"},
    ),
    ("AC answered twice", _twice_answered, {R.AC_DUPLICATE}, ReviewVerdict.REWORK, {"G8"}),
    ("out-of-scope file", _out_of_scope, {R.SCOPE_NOT_ALLOWED}, ReviewVerdict.REWORK, {"G7"}),
    ("forbidden file", _forbidden, {R.SCOPE_FORBIDDEN}, ReviewVerdict.FAIL, {"G7"}),
    (
        "lockfile changed",
        _lockfile,
        {R.SCOPE_FORBIDDEN, R.DEPENDENCY_POLICY_VIOLATION},
        ReviewVerdict.FAIL,
        {"G7"},
    ),
    ("unreported change", _unreported, {R.CHANGE_NOT_REPORTED}, ReviewVerdict.REWORK, {"G7"}),
    (
        "change claimed, not made",
        _not_made,
        {R.CHANGE_CLAIMED_NOT_MADE},
        ReviewVerdict.REWORK,
        {"G7"},
    ),
    (
        "lie about exit code",
        _exit_code_lie,
        {R.COMMAND_CLAIM_CONTRADICTED, R.COMMAND_FAILED},
        ReviewVerdict.REWORK,
        {"G2"},
    ),
    ("claimed exit 1", _claimed_failure, {R.COMMAND_FAILED}, ReviewVerdict.REWORK, {"G2"}),
    (
        "ungated command dropped",
        _dropped_command,
        {R.COMMAND_MISSING},
        ReviewVerdict.REWORK,
        {"G8"},
    ),
    (
        "evidence in another run",
        _evidence_path(".artifacts/agent_runs/OTHER/steps/S1/rounds/R1/x.txt"),
        {R.EVIDENCE_OUTSIDE_ARTIFACTS},
        ReviewVerdict.REWORK,
        {"G8"},
    ),
    (
        "evidence climbs with ..",
        _evidence_path(".artifacts/agent_runs/{run}/../../../etc/passwd"),
        {R.EVIDENCE_OUTSIDE_ARTIFACTS},
        ReviewVerdict.REWORK,
        {"G8"},
    ),
    (
        "absolute evidence",
        _evidence_path("/etc/passwd"),
        {R.EVIDENCE_OUTSIDE_ARTIFACTS},
        ReviewVerdict.REWORK,
        {"G8"},
    ),
    ("empty evidence path", _empty_evidence, {R.EVIDENCE_MISSING}, ReviewVerdict.REWORK, {"G8"}),
    (
        "evidence file deleted",
        _evidence_deleted,
        {R.EVIDENCE_MISSING},
        ReviewVerdict.REWORK,
        {"G8"},
    ),
    (
        "required evidence missing",
        _no_shim_stdout,
        {R.EVIDENCE_PATTERN_UNMATCHED, R.EVIDENCE_MISSING},
        ReviewVerdict.REWORK,
        {"G8"},
    ),
    ("worker BLOCKED", _verdict(Verdict.BLOCKED), {R.WORKER_BLOCKED}, ReviewVerdict.FAIL, set()),
    ("worker FAIL", _verdict(Verdict.FAIL), {R.WORKER_FAILED}, ReviewVerdict.REWORK, set()),
    (
        "worker REWORK",
        _verdict(Verdict.REWORK),
        {R.WORKER_VERDICT_NOT_PASS},
        ReviewVerdict.REWORK,
        set(),
    ),
    ("result of another run", _other_run, {R.RESULT_FOR_OTHER_STEP}, ReviewVerdict.FAIL, set()),
    (
        "no command records",
        _no_records,
        {R.COMMAND_MISSING, R.EVIDENCE_PATTERN_UNMATCHED},
        ReviewVerdict.REWORK,
        {"G1", "G2", "G3", "G4", "G5", "G6", "G8"},
    ),
    (
        "evidence_map names no AC",
        _unknown_map_key,
        {R.AC_UNEXPECTED},
        ReviewVerdict.REWORK,
        {"G8"},
    ),
    (
        "extra record with absolute evidence",
        _extra_record_outside,
        {R.EVIDENCE_OUTSIDE_ARTIFACTS},
        ReviewVerdict.REWORK,
        {"G8"},
    ),
]


@pytest.mark.parametrize(
    ("mutation", "codes", "verdict", "failed_gates"),
    [pytest.param(*m[1:], id=m[0]) for m in MUTATIONS],
)
def test_mutated_seed_review_gives_the_right_reason(
    mutation: Mutation,
    codes: set[QAReason],
    verdict: ReviewVerdict,
    failed_gates: set[str],
) -> None:
    case = seed_case("MVP-2_S1")
    result, facts = mutation(case.pack, case.result, case.facts)
    got = review(case.pack, result, facts, round_no=1)
    assert set(got.reason_codes) == codes
    assert got.verdict is verdict
    assert {g.gate_id for g in got.gates if not g.passed} == failed_gates
    assert all(f.message for f in got.findings)


def test_ci_workflow_in_scope_is_allowed_only_by_its_flag() -> None:
    """MVP-1 adds a CI workflow under `allow_ci_workflow_changes_in_scope`; without the flag
    the same change breaks the dependency policy."""
    case = seed_case("MVP-1_S1")
    assert review(case.pack, case.result, case.facts, round_no=1).verdict is ReviewVerdict.PASS
    raw: dict[str, Any] = to_builtins(case.pack)
    for holder in (raw, raw["scope"]):
        del holder["dependency_policy"]["allow_ci_workflow_changes_in_scope"]
    strict = msgspec.convert(raw, StepPack)
    got = review(strict, case.result, case.facts, round_no=1)
    assert got.reason_codes == [R.DEPENDENCY_POLICY_VIOLATION]
    assert got.dependency_violations == [
        ".github/workflows/control-plane-bootstrap.yml: CI configuration changed; the policy "
        "allows no CI changes"
    ]
