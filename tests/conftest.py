"""Shared fixtures. Async tests use anyio's own pytest plugin (`@pytest.mark.anyio`)."""

from __future__ import annotations

from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
SEED = ROOT / "tests" / "fixtures" / "seed"
SEED_PACKS = sorted((SEED / "step_packs").glob("*.json"))


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"
