"""How many times each fault or attack is tried: the normal count in ``make test``, the soak count
with ``pytest --soak`` or ``RUNNER_SOAK=1``. docs/reliability.md quotes both."""

from __future__ import annotations

import os

SOAK = os.environ.get("RUNNER_SOAK", "") not in ("", "0")


def trials(normal: int, soak: int) -> int:
    return soak if SOAK else normal


def seeds(name: str, normal: int, soak: int) -> list[str]:
    """Seed labels for a parametrized test: stable, so a failing trial is rerun by its id."""
    return [f"{name}-{i}" for i in range(trials(normal, soak))]
