"""The README's two commands are the ones the Makefile provides and CI runs."""

from __future__ import annotations

import re

from tests.conftest import ROOT


def test_readme_opens_with_the_two_commands() -> None:
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    blocks = re.findall(r"```(?:sh|bash|console)?\n(.*?)```", readme, re.DOTALL)
    assert blocks, "README has no command block"
    first = [line.strip() for line in blocks[0].splitlines() if line.strip()]
    assert first == ["make demo", "make test"]


def test_makefile_has_demo_and_test_targets() -> None:
    makefile = (ROOT / "Makefile").read_text(encoding="utf-8")
    assert re.search(r"^test:", makefile, re.MULTILINE)
    assert re.search(r"^demo:", makefile, re.MULTILINE)
    # Each creates the venv and installs the dev extra (and the distributed one, whose tests
    # must run in CI) before its job.
    assert "-m venv" in makefile
    assert ".[dev,distributed]" in makefile


def test_ci_runs_make_test() -> None:
    ci = (ROOT / ".ci" / "run").read_text(encoding="utf-8")
    commands = [ln.strip() for ln in ci.splitlines() if ln.strip() and not ln.startswith("#")]
    assert "make test" in commands
