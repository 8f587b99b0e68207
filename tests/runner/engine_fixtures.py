"""A real project for the engine tests: a git repository (or a plain directory), a queue of
tasks acted out by the mock shim, and readers for what a campaign leaves behind (queue, ledger
chains, merge commits, worktrees, branches, evidence).

Shared by the `test_campaign*`, `test_cycle*` and `test_workspace*` modules (a module, not a
conftest, so that the other tests in this directory are not affected).
"""

from __future__ import annotations

import contextlib
import json
import os
import random
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import msgspec
import psutil

from protocol import QueueTask, TaskQueue, encode_pretty
from protocol.ledger_events import (
    LEDGER_RECORD,
    Attempt,
    AttemptInterrupted,
    AttemptStarted,
    ProjectRecord,
    TaskRecord,
)
from tests.runner.test_mock_shim import CONFIG as SHIM_CONFIG

PY = sys.executable
RUNNER = [PY, "-m", "runner", "--log-format", "json"]
# Small limits so that hostile scenarios end quickly; `backoff` is short for the same reason.
FAST_CONFIG: dict[str, Any] = {
    "limits": {"max_silence_sec": 1.0, "max_runtime_sec": 30.0},
    "backoff": {"base_sec": 0.1, "factor": 2.0, "max_sec": 0.5},
}
GIT_ID = ["-c", "user.name=engine-test", "-c", "user.email=engine@test"]


@dataclass
class TaskSpec:
    """One queue task and the StepPack the mock shim acts out for it."""

    key: str
    scenario: str = "pass"
    files: dict[str, str] | None = None
    commands: list[str] = field(default_factory=list)
    allowed: list[str] = field(default_factory=lambda: ["src/**"])
    forbidden: list[str] = field(default_factory=lambda: ["secrets/**"])
    max_attempts: int = 3
    depends_on: list[str] = field(default_factory=list)
    priority: int = 0
    runtime: dict[str, Any] = field(default_factory=dict)
    context: dict[str, Any] = field(default_factory=dict)  # more of the pack's context

    def pack(self) -> dict[str, Any]:
        context: dict[str, Any] = {"mock_scenario": self.scenario, **self.context}
        context["mock_files"] = (
            self.files if self.files is not None else {f"src/{self.key}.txt": f"{self.key}\n"}
        )
        pack: dict[str, Any] = {
            "task_id": self.key,
            "run_id": f"{self.key}_run",
            "step_id": "S1",
            "objective": f"Do {self.key}.",
            "allowed_paths": self.allowed,
            "forbidden_paths": self.forbidden,
            "commands_to_run": self.commands,
            "acceptance_criteria": [f"AC1: {self.key} is done."],
            "context": context,
        }
        if self.runtime:
            pack["runtime_policy"] = self.runtime
        return pack

    def task(self) -> dict[str, Any]:
        return {
            "key": self.key,
            "title": f"task {self.key}",
            "priority": self.priority,
            "max_attempts": self.max_attempts,
            "depends_on": self.depends_on,
        }


def git(repo: Path, *args: str) -> str:
    out = subprocess.run(
        ["git", "-C", str(repo), *GIT_ID, *args],
        capture_output=True,
        text=True,
        check=True,
    )
    return out.stdout


class Project:
    """A workspace, its progress directory and the files a campaign is started with."""

    def __init__(
        self,
        root: Path,
        specs: list[TaskSpec],
        *,
        use_git: bool = True,
        config: dict[str, Any] | None = None,
        progress_inside: bool = False,
    ) -> None:
        self.root = root
        self.specs = {s.key: s for s in specs}
        self.workspace = root / "project"
        # The original's layout keeps progress/ inside the project: the runner's own files
        # must then be neither the agent's changes nor rolled back.
        self.progress = self.workspace / "progress" if progress_inside else root / "progress"
        self.queue_path = self.progress / "task_queue.json"
        self.shim_path = self.progress / "shim.json"
        self.map_path = self.progress / "step_pack_map.json"
        self.config_path = self.progress / "campaign.json"
        self.ledger_dir = self.progress / "ledger" / "project"
        self.workspace.mkdir(parents=True)
        (self.workspace / "src").mkdir()
        (self.workspace / "README.md").write_text("# project\n")
        (self.workspace / "src" / "base.txt").write_text("base\n")
        self.git = use_git
        if use_git:
            git(self.workspace, "init", "-q", "-b", "main")
            git(self.workspace, "add", ".")
            git(self.workspace, "commit", "-qm", "start")
        packs = self.progress / "packs"
        packs.mkdir(parents=True)
        mapping = {}
        for spec in specs:
            (packs / f"{spec.key}.json").write_bytes(encode_pretty(spec.pack()))
            mapping[spec.key] = f"packs/{spec.key}.json"
        self.map_path.write_text(json.dumps(mapping))
        self.queue_path.write_text(json.dumps({"tasks": [s.task() for s in specs]}, indent=2))
        self.shim_path.write_text(json.dumps(SHIM_CONFIG))
        self.config_path.write_text(json.dumps(FAST_CONFIG if config is None else config))

    def set_scenario(self, key: str, scenario: str) -> None:
        """Make task `key`'s agent behave differently from now on (its pack is rewritten)."""
        spec = self.specs[key]
        spec.scenario = scenario
        (self.progress / "packs" / f"{key}.json").write_bytes(encode_pretty(spec.pack()))

    # -- running ------------------------------------------------------------------------------

    def argv(self, command: str = "campaign", *extra: str) -> list[str]:
        return [
            *RUNNER, command,
            "--queue-path", str(self.queue_path),
            "--workspace", str(self.workspace),
            "--shim-config", str(self.shim_path),
            "--step-pack-map-file", str(self.map_path),
            "--config", str(self.config_path),
            *extra,
        ]  # fmt: skip

    def run(
        self, *extra: str, command: str = "campaign", timeout: float = 90
    ) -> subprocess.CompletedProcess[str]:
        result = subprocess.run(
            self.argv(command, *extra),
            capture_output=True,
            text=True,
            timeout=timeout,
            check=False,
            env=child_env(),
        )
        assert "Traceback" not in result.stderr, result.stderr
        return result

    def popen(self, *extra: str, command: str = "campaign") -> Started:
        """Start the runner in the background, its output going to files (read while it runs)."""
        n = len(list(self.root.glob("run-*.err")))
        out, err = self.root / f"run-{n}.out", self.root / f"run-{n}.err"
        with out.open("wb") as fo, err.open("wb") as fe:
            proc = subprocess.Popen(
                self.argv(command, *extra),
                stdout=fo,
                stderr=fe,
                stdin=subprocess.DEVNULL,
                env=child_env(),
                start_new_session=True,  # a signal for the runner only, as `kill PID` sends it
            )
        return Started(proc, out, err)

    def verify_ledger(self) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [*RUNNER, "ledger", "--root-dir", str(self.progress / "ledger"),
             "--project-id", "project", "verify"],
            capture_output=True, text=True, timeout=60, check=False, env=child_env(),
        )  # fmt: skip

    # -- reading ------------------------------------------------------------------------------

    def queue(self) -> dict[str, QueueTask]:
        raw = self.queue_path.read_bytes()
        return {t.key: t for t in msgspec.json.decode(raw, type=TaskQueue).tasks}

    def statuses(self) -> dict[str, str]:
        return {k: str(t.status) for k, t in self.queue().items()}

    def task_events(self, key: str) -> list[TaskRecord]:
        records = _records(self.ledger_dir / "tasks" / key / "events.jsonl")
        return [r for r in records if isinstance(r, TaskRecord)]

    def event_types(self, key: str) -> list[str]:
        return [type(r.body).__struct_config__.tag for r in self.task_events(key)]  # type: ignore[attr-defined]

    def project_events(self) -> list[ProjectRecord]:
        records = _records(self.ledger_dir / "events.jsonl")
        return [r for r in records if isinstance(r, ProjectRecord)]

    def project_event_types(self) -> list[str]:
        return [type(r.body).__struct_config__.tag for r in self.project_events()]  # type: ignore[attr-defined]

    def merges_per_task(self) -> dict[str, int]:
        """How many commits on the target branch carry each task's `Runner-Task` trailer in a
        merge commit (one per accepted task)."""
        out = git(
            self.workspace, "log", "--merges",
            "--format=%(trailers:key=Runner-Task,valueonly)%x00",
        )  # fmt: skip
        counts: dict[str, int] = {}
        for value in out.split("\0"):
            key = value.strip()
            if key:
                counts[key] = counts.get(key, 0) + 1
        return counts

    def worktrees(self) -> list[str]:
        out = git(self.workspace, "worktree", "list", "--porcelain")
        paths = [
            line[len("worktree ") :] for line in out.splitlines() if line.startswith("worktree ")
        ]
        return [p for p in paths if Path(p).resolve() != self.workspace.resolve()]

    def runner_branches(self) -> list[str]:
        out = git(self.workspace, "for-each-ref", "--format=%(refname:short)", "refs/heads/runner/")
        return out.split()

    def head_file(self, rel: str) -> str | None:
        """`rel` as committed on the target branch (None when it is not there)."""
        try:
            return git(self.workspace, "show", f"HEAD:{rel}")
        except subprocess.CalledProcessError:
            return None

    def rounds(self, key: str) -> list[Path]:
        """Every round directory of `key`'s step under the main workspace's `.artifacts/`."""
        base = self.workspace / ".artifacts" / "agent_runs" / f"{key}_run" / "steps/S1/rounds"
        return sorted(base.glob("R*"), key=lambda p: int(p.name[1:])) if base.is_dir() else []


@dataclass
class Started:
    """A runner started with `Project.popen`."""

    proc: subprocess.Popen[bytes]
    stdout: Path
    stderr: Path

    def events(self) -> list[dict[str, Any]]:
        return json_events(self.stderr.read_text(errors="replace"))

    def wait_for(self, predicate: Callable[[list[dict[str, Any]]], bool], timeout: float) -> None:
        """Poll the JSON log until `predicate` holds (fails the test after `timeout` s)."""
        deadline = time.monotonic() + timeout
        while not predicate(self.events()):
            if self.proc.poll() is not None:
                raise AssertionError(f"runner exited {self.proc.returncode}: {self.tail()}")
            if time.monotonic() > deadline:
                raise AssertionError(f"timed out waiting; log tail: {self.tail()}")
            time.sleep(0.05)

    def finish(self, timeout: float = 60) -> int:
        code = self.proc.wait(timeout=timeout)
        assert "Traceback" not in self.stderr.read_text(errors="replace"), self.tail()
        return code

    def tail(self) -> str:
        return self.stderr.read_text(errors="replace")[-3000:]


def _records(path: Path) -> list[Any]:
    if not path.exists():
        return []
    lines = path.read_bytes().splitlines()
    return [msgspec.json.decode(line, type=LEDGER_RECORD) for line in lines if line]


def processes_under(root: Path) -> list[psutil.Process]:
    """Live processes (zombies included) whose working directory is inside `root`: the
    agents, hooks and commands of a project's tasks."""
    found = []
    for proc in psutil.process_iter(["pid", "cwd"]):
        cwd = proc.info.get("cwd")
        if cwd and Path(cwd).is_relative_to(root):
            found.append(proc)
    return found


def kill_processes_under(root: Path) -> None:
    for proc in processes_under(root):
        with contextlib.suppress(psutil.NoSuchProcess):
            proc.kill()


def child_env() -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("RUNNER_")}
    env["PYTHONUNBUFFERED"] = "1"
    return env


def json_events(stderr: str) -> list[dict[str, Any]]:
    """The structlog JSON lines of a run's stderr (other lines skipped)."""
    out = []
    for line in stderr.splitlines():
        if line.startswith("{"):
            try:
                out.append(json.loads(line))
            except json.JSONDecodeError:
                continue
    return out


def drain_with_kills(
    p: Project,
    args: tuple[str, ...],
    rng: random.Random,
    max_kills: int,
    *,
    expect_code: int,
    after_kill: Callable[[int], None] | None = None,
) -> int:
    """Start the campaign, SIGKILL it at a random moment (0.3-2 s in), up to `max_kills`
    times, then let it finish (exit `expect_code`); returns the number of kills. The agents a
    killed runner had started live on in their own sessions, as they do after `kill -9`: the
    next runner must cope with them. `after_kill(n)` looks at what the n-th kill left."""
    kills = 0
    while True:
        started = p.popen(*args)
        if kills < max_kills:
            try:
                started.proc.wait(timeout=rng.uniform(0.3, 2.0))
            except subprocess.TimeoutExpired:
                started.proc.send_signal(signal.SIGKILL)
                started.proc.wait(timeout=10)
                kills += 1
                if after_kill is not None:
                    after_kill(kills)
                continue
        code = started.finish(timeout=60)
        assert code == expect_code, started.tail()
        return kills


def assert_ends_like(p: Project, reference: dict[str, str]) -> None:
    """The end state of an interrupted and resumed campaign equals an uninterrupted one's: the
    same statuses; every completed task merged once and closed once; no attempt counted past
    its limit, none left open, each started one ended; a ledger that verifies; no worktree or
    branch left."""
    assert p.statuses() == reference
    queue = p.queue()
    completed = sorted(k for k, s in reference.items() if s == "completed")
    assert p.merges_per_task() == dict.fromkeys(completed, 1)
    for key in completed:
        assert p.event_types(key).count("task_closed") == 1, key
    for key, task in queue.items():
        assert task.attempts <= task.max_attempts, key
    verified = p.verify_ledger()
    assert verified.returncode == 0, verified.stdout + verified.stderr
    # Every attempt started was ended: by its record, or as interrupted (by the cycle, or by
    # the reconciliation of the next run); none is left open.
    for key in p.specs:
        records = p.task_events(key)
        if records:
            assert not records[-1].attempt_open, key
        opened = sum(isinstance(r.body, AttemptStarted) for r in records)
        ended = sum(isinstance(r.body, Attempt | AttemptInterrupted) for r in records)
        assert opened == ended, key
    assert p.worktrees() == []
    assert p.runner_branches() == []
