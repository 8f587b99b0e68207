"""Hypothesis strategies for the reviewer's and the rework builder's property tests:
arbitrary results and facts for `qa_cases.small_pack`, half of them small damage to a passing
round so that PASS is not a rare corner."""

from __future__ import annotations

from typing import Any

import msgspec
from hypothesis import strategies as st

from kernel import CommandRerun, WorkspaceFacts
from protocol import CommandRecord, StepResult, Verdict, VerificationResult
from tests.kernel.qa_cases import AC1, AC2, ROUND_DIR, RUN_ID, small_case, small_pack

PACK = small_pack()
COMMANDS = [*PACK.commands_to_run, "ruff check ."]
FILES = [
    "src/report/cli.py",
    "tests/test_report.py",
    "tests/fixtures/x.json",
    "docs/notes.md",
    "pyproject.toml",
    "uv.lock",
    ".github/workflows/report.yml",
    "../escape.py",
    f"{ROUND_DIR}/cmd_0.txt",
]
EVIDENCE = [
    f"{ROUND_DIR}/cmd_0.txt",
    f"{ROUND_DIR}/cmd_1.txt",
    f"{ROUND_DIR}/result.json",
    f".artifacts/agent_runs/{RUN_ID}/../x",
    ".artifacts/agent_runs/OTHER/x.txt",
    "/abs/x.txt",
    "",
]

records = st.builds(
    CommandRecord,
    command=st.sampled_from(COMMANDS),
    exit_code=st.sampled_from([0, 0, 0, 1, 2]),
    evidence_path=st.sampled_from(EVIDENCE),
)
answers = st.builds(
    VerificationResult,
    ac=st.sampled_from([AC1, AC2, "AC1: something else", "AC7: unknown"]),
    met=st.booleans(),
    evidence_path=st.sampled_from(EVIDENCE),
)
results = st.builds(
    StepResult,
    verdict=st.sampled_from(list(Verdict)),
    reason_code=st.just("X"),
    task_id=st.sampled_from([None, "T-1", "T-2"]),
    run_id=st.just(RUN_ID),
    step_id=st.just("S1"),
    files_changed=st.lists(st.sampled_from(FILES), max_size=4, unique=True),
    commands_executed=st.lists(records, max_size=4),
    verification_results=st.lists(answers, max_size=4),
    evidence_map=st.dictionaries(
        st.sampled_from(["AC1", "AC2", "AC9"]), st.lists(st.sampled_from(EVIDENCE), max_size=2)
    ),
)
reruns = st.lists(
    st.builds(
        CommandRerun,
        index=st.sampled_from([0, 1]),
        command=st.just("c"),
        exit_code=st.sampled_from([None, 0, 1]),
        timed_out=st.booleans(),
    ),
    max_size=2,
)
facts = st.builds(
    WorkspaceFacts,
    changed_files=st.none() | st.lists(st.sampled_from(FILES), max_size=4, unique=True).map(tuple),
    artifact_files=st.none()
    | st.lists(st.sampled_from([e for e in EVIDENCE if e]), unique=True).map(tuple),
    command_reruns=st.none() | reruns.map(tuple),
)


def _near_pass(result: StepResult, fact: WorkspaceFacts) -> tuple[StepResult, WorkspaceFacts]:
    """Half the examples start from a passing round, so PASS is not a rare corner."""
    _, good, good_facts = small_case()
    return good, good_facts


cases = st.one_of(
    st.tuples(results, facts),
    st.tuples(results, facts).map(lambda t: _near_pass(*t)),
    st.tuples(results, facts).flatmap(
        lambda t: st.tuples(
            st.just(_near_pass(*t)[0]),
            st.just(_near_pass(*t)[1]),
            st.sampled_from(["verdict", "files", "facts", "records", "answers"]),
            st.just(t),
        ).map(_splice)
    ),
)


def _splice(parts: tuple[Any, ...]) -> tuple[StepResult, WorkspaceFacts]:
    """A passing round with one part taken from a random one: small, realistic damage."""
    good, good_facts, which, (rand, rand_facts) = parts
    replace = msgspec.structs.replace
    if which == "verdict":
        return replace(good, verdict=rand.verdict), good_facts
    if which == "files":
        return replace(good, files_changed=rand.files_changed), good_facts
    if which == "facts":
        return good, rand_facts
    if which == "records":
        return replace(good, commands_executed=rand.commands_executed), good_facts
    return replace(good, verification_results=rand.verification_results), good_facts
