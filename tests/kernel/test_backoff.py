from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from kernel.backoff import retry_delay
from protocol import BackoffPolicy


@pytest.mark.parametrize(
    ("n", "expected"), [(0, 0.0), (1, 1.0), (2, 2.0), (3, 4.0), (6, 32.0), (7, 60.0), (50, 60.0)]
)
def test_delay_doubles_and_caps(n: int, expected: float) -> None:
    assert retry_delay(n, BackoffPolicy()) == expected


@given(
    st.integers(0, 5000),
    st.floats(0, 10),
    st.floats(1, 4),
    st.floats(0, 120),
    st.floats(0, 1),
    st.floats(0, 0.999),
)
def test_delay_is_bounded_and_monotonic_without_jitter(
    n: int, base: float, factor: float, cap: float, jitter: float, r: float
) -> None:
    policy = BackoffPolicy(base_sec=base, factor=factor, max_sec=cap, jitter=jitter)
    assert 0.0 <= retry_delay(n, policy, unit_random=r) <= cap
    plain = BackoffPolicy(base_sec=base, factor=factor, max_sec=cap)
    assert retry_delay(n, plain) <= retry_delay(n + 1, plain)
