from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from protocol import (
    FIRST_ATTEMPT,
    AttemptKind,
    AttemptOrderError,
    AttemptPointer,
    classify,
    next_pointers,
)

P = AttemptPointer


@pytest.mark.parametrize(
    ("last", "proposed", "kind"),
    [
        (None, P(0, 0), AttemptKind.FIRST),
        (P(0, 0), P(0, 1), AttemptKind.RETRY),
        (P(0, 1), P(1, 0), AttemptKind.REVISION),
        (P(3, 7), P(3, 8), AttemptKind.RETRY),
        (P(3, 7), P(4, 0), AttemptKind.REVISION),
    ],
)
def test_legal_steps(last: P | None, proposed: P, kind: AttemptKind) -> None:
    assert classify(last, proposed) is kind


@pytest.mark.parametrize(
    ("last", "proposed", "rule"),
    [
        (None, P(0, 1), "first attempt must be R0/S0"),
        (None, P(1, 0), "first attempt must be R0/S0"),
        (P(0, 0), P(0, 0), "retry keeps R and increments S by exactly one"),
        (P(0, 0), P(0, 2), "retry keeps R and increments S by exactly one"),
        (P(1, 3), P(2, 1), "resets S to 0"),
        (P(1, 3), P(0, 4), "only stay the same"),
        (P(1, 3), P(3, 0), "only stay the same"),
    ],
)
def test_illegal_steps_name_rule_and_next_legal(last: P | None, proposed: P, rule: str) -> None:
    with pytest.raises(AttemptOrderError) as info:
        classify(last, proposed)
    assert rule in str(info.value)
    assert info.value.legal == next_pointers(last)
    for legal in info.value.legal:
        assert str(legal) in str(info.value)


def model_is_legal(history: list[P], proposed: P) -> bool:
    """Reference model, written independently: the rules as the original README states them."""
    if not history:
        return proposed.r == 0 and proposed.s == 0
    last = history[-1]
    same_r_next_s = proposed.r == last.r and proposed.s == last.s + 1
    next_r_zero_s = proposed.r == last.r + 1 and proposed.s == 0
    return same_r_next_s or next_r_zero_s


@given(st.lists(st.tuples(st.integers(0, 4), st.integers(0, 4)), max_size=30))
def test_classify_agrees_with_reference_model(proposals: list[tuple[int, int]]) -> None:
    history: list[P] = []
    for r, s in proposals:
        proposed = P(r, s)
        legal = model_is_legal(history, proposed)
        try:
            classify(history[-1] if history else None, proposed)
            accepted = True
        except AttemptOrderError:
            accepted = False
        assert accepted == legal
        if accepted:
            history.append(proposed)
    # Every accepted history starts at R0/S0 and never decreases.
    assert history == sorted(history)
    if history:
        assert history[0] == FIRST_ATTEMPT
