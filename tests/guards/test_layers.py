"""The layout is the architecture: these tests fail when an import points the wrong way."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

from tests.conftest import ROOT

OURS = {"protocol", "kernel", "ledger", "runner"}
KERNEL_FORBIDDEN = {
    "runner", "ledger", "anyio", "psutil", "subprocess", "os", "shutil", "pathlib", "io",
    "socket", "tempfile", "asyncio", "threading", "multiprocessing", "structlog", "glob",
}  # fmt: skip


def python_files(package: str) -> list[Path]:
    return sorted((ROOT / package).rglob("*.py"))


def imported_roots(path: Path) -> set[str]:
    tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
    roots: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            roots |= {alias.name.split(".")[0] for alias in node.names}
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            roots.add(node.module.split(".")[0])
    return roots


def called_names(path: Path) -> set[str]:
    tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
    return {
        node.func.id
        for node in ast.walk(tree)
        if isinstance(node, ast.Call) and isinstance(node.func, ast.Name)
    }


@pytest.mark.parametrize("package", ["protocol", "kernel", "ledger", "runner"])
def test_package_has_python_files(package: str) -> None:
    assert python_files(package), f"{package}/ is empty"


@pytest.mark.parametrize("path", python_files("protocol"), ids=lambda p: p.name)
def test_protocol_imports_nothing_of_ours(path: Path) -> None:
    assert not imported_roots(path) & (OURS - {"protocol"})


@pytest.mark.parametrize("path", python_files("kernel"), ids=lambda p: p.name)
def test_kernel_is_pure(path: Path) -> None:
    assert not imported_roots(path) & KERNEL_FORBIDDEN
    assert "open" not in called_names(path), "kernel code must not open files"


@pytest.mark.parametrize("path", python_files("ledger"), ids=lambda p: p.name)
def test_ledger_imports_protocol_only_of_ours(path: Path) -> None:
    assert not imported_roots(path) & {"kernel", "runner"}


def test_guard_catches_a_bad_import(tmp_path: Path) -> None:
    bad = tmp_path / "bad.py"
    bad.write_text("import os\nfrom runner.cli import main\nopen('x')\n")
    assert {"os", "runner"} <= imported_roots(bad)
    assert "open" in called_names(bad)
