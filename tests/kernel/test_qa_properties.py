"""Properties of the reviewer over arbitrary results and facts for the small step: a review
passes if and only if every gate passes and nothing was found, and its parts agree."""

from __future__ import annotations

from hypothesis import event, given, settings

import protocol
from kernel import FAIL_REASONS, WorkspaceFacts, review
from protocol import QAReason, QAReview, ReviewVerdict, StepResult
from tests.kernel.qa_strategies import PACK, cases


@settings(max_examples=400, deadline=None)
@given(cases)
def test_passes_iff_every_gate_passes_and_nothing_was_found(
    case: tuple[StepResult, WorkspaceFacts],
) -> None:
    result, fact = case
    got = review(PACK, result, fact, round_no=1)
    passed = got.verdict is ReviewVerdict.PASS
    event(f"verdict {got.verdict.value}")
    assert passed == (all(g.passed for g in got.gates) and not got.findings)
    assert passed == (got.reason_codes == [QAReason.PASS_ALL_GATES])
    assert (got.verdict is ReviewVerdict.FAIL) == bool(FAIL_REASONS & set(got.reason_codes))
    assert set(got.reason_codes) - {QAReason.PASS_ALL_GATES} == {f.code for f in got.findings}
    for gate in got.gates:
        mine = {f.code for f in got.findings if gate.gate_id in f.gate_ids}
        assert set(gate.findings) == mine
        assert gate.passed == (not mine)
    if passed:
        assert all(c.allowed and not c.forbidden_matches for c in got.scope_checks)
        assert all(p.prefix_ok and p.exists is not False for p in got.paths_checked)
        assert all(c.passed for c in got.command_checks)
        assert not (got.missing_acs or got.unmet_acs or got.unexpected_acs)
        assert not (got.changed_not_claimed or got.claimed_not_changed)


@settings(max_examples=150, deadline=None)
@given(cases)
def test_review_is_deterministic_and_round_trips(case: tuple[StepResult, WorkspaceFacts]) -> None:
    result, fact = case
    first = protocol.encode(review(PACK, result, fact, round_no=3))
    assert protocol.encode(review(PACK, result, fact, round_no=3)) == first
    assert protocol.encode(protocol.decode(first, QAReview)) == first
