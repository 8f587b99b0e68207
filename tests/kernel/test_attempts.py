"""Retry or revise: the pointer of the next attempt, checked against the shared R/S rules."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from kernel import (
    AttemptCause,
    cause_after_outcome,
    cause_after_review,
    next_attempt,
    rework_to_repeat,
)
from protocol import (
    AttemptKind,
    AttemptPointer,
    EndReason,
    QAReason,
    QAReview,
    ReviewVerdict,
    StepOutcome,
    Verdict,
    classify,
)
from protocol.ledger_events import (
    Attempt,
    AttemptInterrupted,
    AttemptStarted,
    FileRef,
    ReviewRecorded,
    ReworkDispatched,
    StepOutcomeRecorded,
)


def test_first_attempt_is_r0_s0_whatever_the_cause() -> None:
    for cause in AttemptCause:
        assert next_attempt(None, cause) == AttemptPointer(0, 0)


def test_infrastructure_failure_retries_and_rework_revises() -> None:
    last = AttemptPointer(2, 3)
    assert next_attempt(last, AttemptCause.INFRASTRUCTURE) == AttemptPointer(2, 4)
    assert next_attempt(last, AttemptCause.REWORK) == AttemptPointer(3, 0)


@given(
    st.lists(st.sampled_from(list(AttemptCause)), min_size=1, max_size=30),
)
def test_every_sequence_of_causes_obeys_the_ledger_rules(causes: list[AttemptCause]) -> None:
    """Whatever happens, the pointers the engine asks for are the ones the ledger accepts."""
    last: AttemptPointer | None = None
    for cause in causes:
        proposed = next_attempt(last, cause)
        kind = classify(last, proposed)  # raises AttemptOrderError on a broken rule
        if last is None:
            assert kind is AttemptKind.FIRST
        else:
            expected = (
                AttemptKind.RETRY if cause is AttemptCause.INFRASTRUCTURE else AttemptKind.REVISION
            )
            assert kind is expected
        last = proposed


def _outcome(reason: EndReason, exit_code: int | None = 0) -> StepOutcome:
    return StepOutcome(
        reason=reason,
        exit_code=exit_code,
        started_at="2026-01-01T00:00:00Z",
        ended_at="2026-01-01T00:00:01Z",
        duration_ms=1000,
    )


@pytest.mark.parametrize(
    ("reason", "parsed", "cause"),
    [
        (EndReason.RUNTIME_LIMIT, True, AttemptCause.INFRASTRUCTURE),
        (EndReason.SILENCE_LIMIT, False, AttemptCause.INFRASTRUCTURE),
        (EndReason.MEMORY_LIMIT, True, AttemptCause.INFRASTRUCTURE),
        (EndReason.SPAWN_FAILED, False, AttemptCause.INFRASTRUCTURE),
        (EndReason.COMPLETED, False, AttemptCause.INFRASTRUCTURE),  # crash or garbage output
        (EndReason.COMPLETED, True, None),  # review it
        (EndReason.CANCELLED, False, None),  # stopped on purpose: no retry
    ],
)
def test_cause_after_outcome(reason: EndReason, parsed: bool, cause: AttemptCause | None) -> None:
    assert cause_after_outcome(_outcome(reason), result_parsed=parsed) is cause


@pytest.mark.parametrize(
    ("verdict", "cause"),
    [
        (ReviewVerdict.REWORK, AttemptCause.REWORK),
        (ReviewVerdict.PASS, None),
        (ReviewVerdict.FAIL, None),
    ],
)
def test_cause_after_review(verdict: ReviewVerdict, cause: AttemptCause | None) -> None:
    review = QAReview(
        task_id="T",
        run_id="R",
        step_id="S",
        round=1,
        verdict=verdict,
        reason_codes=[QAReason.PASS_ALL_GATES],
        worker_verdict=Verdict.PASS,
        worker_reason_code="X",
    )
    assert cause_after_review(review) is cause


# -- what a retry repeats ---------------------------------------------------------------------


def started(r: int, s: int, kind: AttemptKind) -> AttemptStarted:
    return AttemptStarted(r=r, s=s, kind=kind, worker_backend="mock")


def closed(r: int, s: int, result: Verdict = Verdict.FAIL) -> Attempt:
    return Attempt(r=r, s=s, result=result, reason_code="X")


def rework(r: int, s: int, name: str) -> ReworkDispatched:
    return ReworkDispatched(r=r, s=s, rework_pack=FileRef(path=name, sha256="0" * 64))


def test_a_retry_of_a_rework_round_repeats_its_rework_pack() -> None:
    events = [
        started(0, 0, AttemptKind.FIRST),
        closed(0, 0, Verdict.REWORK),
        rework(0, 0, "first.json"),
        started(1, 0, AttemptKind.REVISION),
        AttemptInterrupted(r=1, s=0, reason="stopped"),
    ]
    assert rework_to_repeat(events, AttemptPointer(1, 1)) == events[2]
    # ... and so does every later retry of the same revision.
    events += [started(1, 1, AttemptKind.RETRY), closed(1, 1)]
    assert rework_to_repeat(events, AttemptPointer(1, 2)) == events[2]


def test_a_retry_of_a_round_from_the_step_pack_repeats_no_rework() -> None:
    first = [started(0, 0, AttemptKind.FIRST), AttemptInterrupted(r=0, s=0, reason="stopped")]
    assert rework_to_repeat(first, AttemptPointer(0, 1)) is None
    # A revision a new cycle began (after FAIL, or REWORK with no rounds left) starts from
    # the StepPack, even when an earlier revision had a rework.
    events = [
        started(0, 0, AttemptKind.FIRST),
        closed(0, 0, Verdict.REWORK),
        rework(0, 0, "first.json"),
        started(1, 0, AttemptKind.REVISION),
        closed(1, 0, Verdict.REWORK),
        started(2, 0, AttemptKind.REVISION),
        StepOutcomeRecorded(
            r=2,
            s=0,
            reason=EndReason.SILENCE_LIMIT,
            exit_code=None,
            started_at="t",
            ended_at="t",
            duration_ms=1,
        ),
        closed(2, 0),
    ]
    assert rework_to_repeat(events, AttemptPointer(2, 1)) is None
    assert rework_to_repeat(events, AttemptPointer(1, 1)) == events[2]
    # A conflict rework whose workspace hooks failed: started, nothing dispatched.
    hooks = [started(0, 0, AttemptKind.FIRST), closed(0, 0, Verdict.PASS)]
    hooks += [started(1, 0, AttemptKind.REVISION), closed(1, 0)]
    assert rework_to_repeat(hooks, AttemptPointer(1, 1)) is None


def test_only_a_retry_repeats_anything() -> None:
    events = [
        started(0, 0, AttemptKind.FIRST),
        ReviewRecorded(
            r=0,
            s=0,
            verdict=ReviewVerdict.REWORK,
            reason_codes=[QAReason.AC_NOT_MET],
            review=FileRef(path="review.json", sha256="1" * 64),
        ),
        closed(0, 0, Verdict.REWORK),
        rework(0, 0, "first.json"),
        started(1, 0, AttemptKind.REVISION),
    ]
    assert rework_to_repeat(events, AttemptPointer(1, 0)) is None
    assert rework_to_repeat([], AttemptPointer(0, 1)) is None
