"""Pre-flight: can every backend the runnable tasks need actually be started?

A campaign that discovers at its fortieth task that `codex` is not installed has wasted an
hour; this check runs first and names every missing executable at once.
"""

from __future__ import annotations

import os
import shutil
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

from .shim import ShimConfig, ShimError, resolve_backend


@dataclass(frozen=True)
class BackendProblem:
    task_key: str
    backend: str
    problem: str

    def __str__(self) -> str:
        return f"task {self.task_key}: backend {self.backend!r}: {self.problem}"


def executable_problem(program: str, *, env_path: str | None = None) -> str | None:
    """Why `program` (argv[0]) cannot be run, or None when it can."""
    if "{" in program:
        return None  # a placeholder decides at dispatch time
    if "/" in program:
        path = Path(program)
        if not path.is_file():
            return f"{program} does not exist"
        if not os.access(path, os.X_OK):
            return f"{program} is not executable"
        return None
    if shutil.which(program, path=env_path) is None:
        return f"{program!r} is not on PATH"
    return None


def check_backends(
    wanted: Iterable[tuple[str, str | None]],
    config: ShimConfig | None,
    config_source: str,
) -> list[BackendProblem]:
    """Problems for each (task key, requested backend) pair; empty when all can start."""
    problems: list[BackendProblem] = []
    seen: dict[str, str | None] = {}
    for key, requested in wanted:
        try:
            name, command = resolve_backend(config, config_source, requested, None)
        except ShimError as exc:
            problems.append(BackendProblem(key, requested or "?", str(exc)))
            continue
        if name not in seen:
            seen[name] = executable_problem(command.create[0])
        if seen[name] is not None:
            problems.append(BackendProblem(key, name, str(seen[name])))
    return problems
