"""Retry or revise: the pointer of the next attempt, checked against the shared R/S rules."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from kernel import AttemptCause, cause_after_outcome, cause_after_review, next_attempt
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
