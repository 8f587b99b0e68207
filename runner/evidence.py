"""The evidence layout of one round, as the original system laid it out.

``.artifacts/agent_runs/<run_id>/steps/<step_id>/rounds/R<n>/`` holds

- ``shim_stdout.txt``, ``shim_stderr.txt``: the shim's output, streamed as it came;
- ``step_result.json``: the worker's StepResult (written by the worker, or stored by the runner
  when the worker printed it on stdout instead);
- ``subagent_output.md``: the worker's own summary (the runner never writes it);
- ``logs/command.json``: what the runner ran (argv, cwd, limits) and how it ended;
- ``logs/prompt.md``: the prompt the runner rendered (also ``{prompt_file}``);
- ``outputs/``: the outputs of the commands the worker ran.

Rounds are numbered from 1. A round directory is claimed with an exclusive ``mkdir``, so two
dispatches of the same step never share one.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

from protocol import ARTIFACTS_ROOT, check_id

_ROUND = re.compile(r"^R([1-9][0-9]{0,8})$")


def round_rel(run_id: str, step_id: str, round_no: int) -> str:
    """The round directory relative to the workspace; `StepPackView.round_dir` agrees."""
    check_id("run id", run_id)
    check_id("step id", step_id)
    return f"{ARTIFACTS_ROOT}/{run_id}/steps/{step_id}/rounds/R{round_no}"


@dataclass(frozen=True)
class RoundDir:
    """The paths of one round; `rel` is what evidence paths in a StepResult start with."""

    workspace: Path
    run_id: str
    step_id: str
    number: int

    @property
    def rel(self) -> str:
        return round_rel(self.run_id, self.step_id, self.number)

    @property
    def root(self) -> Path:
        return self.workspace / self.rel

    @property
    def shim_stdout(self) -> Path:
        return self.root / "shim_stdout.txt"

    @property
    def shim_stderr(self) -> Path:
        return self.root / "shim_stderr.txt"

    @property
    def step_result(self) -> Path:
        return self.root / "step_result.json"

    @property
    def subagent_output(self) -> Path:
        return self.root / "subagent_output.md"

    @property
    def command_log(self) -> Path:
        return self.root / "logs" / "command.json"

    @property
    def prompt(self) -> Path:
        return self.root / "logs" / "prompt.md"

    @property
    def outputs(self) -> Path:
        return self.root / "outputs"

    def relative(self, path: Path) -> str:
        """A path inside the round, as the workspace-relative string a StepResult uses."""
        return path.relative_to(self.workspace).as_posix()


def rounds_dir(workspace: Path, run_id: str, step_id: str) -> Path:
    return workspace / round_rel(run_id, step_id, 1).rsplit("/", 1)[0]


def existing_rounds(workspace: Path, run_id: str, step_id: str) -> list[int]:
    parent = rounds_dir(workspace, run_id, step_id)
    if not parent.is_dir():
        return []
    return sorted(int(m[1]) for p in parent.iterdir() if (m := _ROUND.match(p.name)))


def next_round(workspace: Path, run_id: str, step_id: str) -> int:
    """The number the next round would get (nothing is created)."""
    return max(existing_rounds(workspace, run_id, step_id), default=0) + 1


def claim_round(workspace: Path, run_id: str, step_id: str, number: int | None = None) -> RoundDir:
    """Create the next round's directory (or exactly `number`, which must be free).

    Raises FileExistsError when `number` is taken; without `number`, a concurrent claim of the
    same number makes this try the next one.
    """
    candidate = number if number is not None else next_round(workspace, run_id, step_id)
    while True:
        paths = RoundDir(workspace, run_id, step_id, candidate)
        paths.root.parent.mkdir(parents=True, exist_ok=True)
        try:
            paths.root.mkdir()
        except FileExistsError:
            if number is not None:
                raise
            candidate += 1
            continue
        (paths.root / "logs").mkdir()
        paths.outputs.mkdir()
        return paths
