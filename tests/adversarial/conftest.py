"""The adversarial suite: faults, hostile input and tampering (docs/reliability.md).

Every test collected from this directory carries the `adversarial` marker, so
``pytest -m adversarial`` runs the suite alone; it also runs in ``make test``. Trial counts come
from `trials`: the normal count, or the soak count with ``--soak`` (or ``RUNNER_SOAK=1``).
"""

from __future__ import annotations

from pathlib import Path

import pytest

HERE = Path(__file__).resolve().parent


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    # A conftest hook sees every collected item, not only this directory's.
    for item in items:
        if item.path.is_relative_to(HERE):
            item.add_marker(pytest.mark.adversarial)
