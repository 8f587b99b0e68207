"""Shared fixtures. Async tests use anyio's own pytest plugin (`@pytest.mark.anyio`)."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
SEED = ROOT / "tests" / "fixtures" / "seed"
SEED_PACKS = sorted((SEED / "step_packs").glob("*.json"))


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


def pytest_addoption(parser: pytest.Parser) -> None:
    parser.addoption(
        "--soak",
        action="store_true",
        default=False,
        help="run the adversarial suite's heavier soak (more seeds and trials; also RUNNER_SOAK=1)",
    )


def pytest_configure(config: pytest.Config) -> None:
    # Test modules read the trial counts when they are imported (parametrize lists), which is
    # after this hook: the environment carries the choice to them.
    if config.getoption("--soak"):
        os.environ["RUNNER_SOAK"] = "1"
