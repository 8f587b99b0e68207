"""Exponential backoff for infrastructure retries.

A limit breach, a crash or an unparsable result is retried (same R, S+1), but not at once: a
flapping backend or a machine under memory pressure needs time. The delay doubles with each
consecutive retry of the same task, capped, with optional jitter supplied by the caller (the
kernel owns no randomness, so a seeded run is reproducible).
"""

from __future__ import annotations

from protocol import BackoffPolicy


def retry_delay(
    consecutive_retries: int, policy: BackoffPolicy, *, unit_random: float = 0.5
) -> float:
    """Seconds to wait before retry number `consecutive_retries` (1 for the first retry).

    `unit_random` in [0, 1) spreads the delay by +/- `policy.jitter` of itself; 0.5 is no spread.
    """
    if consecutive_retries <= 0:
        return 0.0
    try:
        grown = policy.base_sec * policy.factor ** (consecutive_retries - 1)
    except OverflowError:
        grown = policy.max_sec
    delay = min(grown, policy.max_sec)
    spread = policy.jitter * delay * (2 * unit_random - 1)
    return max(0.0, min(policy.max_sec, delay + spread))
