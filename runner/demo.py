"""`runner demo`: the whole system on a small real project, in under a minute.

It creates, in a temporary directory, a git repository and a queue of tasks for the mock
shim (which really edits files and writes evidence): tasks that pass, one that needs a rework
round, one that goes silent, one that eats memory, one that edits outside its scope, one that
lies about its changes, and two that write the same file (the second conflicts, is reworked on
the new head, and merges). It runs the campaign at parallelism 3, verifies the ledger, and
prints what happened next to what each task was expected to do; it exits 1 if any task ended
otherwise, so the demo doubles as an end-to-end smoke test.
"""

from __future__ import annotations

import dataclasses
import shutil
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ledger import ProjectPaths, verify_project
from protocol import BackoffPolicy, CampaignConfig, StepLimits, encode_pretty

from .distributed import ClusterSettings
from .engine import Settings, run_campaign
from .git import RUNNER_IDENTITY
from .progress import load_queue

PROJECT_ID = "demo"


@dataclass(frozen=True)
class DemoTask:
    key: str
    title: str
    scenario: str
    files: dict[str, str]
    expected: str
    story: str
    depends_on: tuple[str, ...] = ()
    max_attempts: int = 2
    priority: int = 1
    allowed: tuple[str, ...] = ("src/**", "docs/**")


TASKS = (
    DemoTask("T-01", "Write the user guide", "pass",
             {"docs/guide.md": "# Guide\n\nRun `calc add 1 2`.\n"}, "completed",
             "passes review and merges", priority=0),
    DemoTask("T-02", "Record the version", "pass", {"src/version.txt": "1.1.0\n"},
             "completed", "waits for T-01 (a dependency), then passes",
             depends_on=("T-01",)),
    DemoTask("T-03", "Add the subtract command", "fail_then_pass",
             {"src/subtract.txt": "def subtract(a, b): return a - b\n"}, "completed",
             "misses an acceptance criterion, is reworked once, then passes"),
    DemoTask("T-04", "Profile the parser", "silent", {"src/profile.txt": "-\n"}, "failed",
             "goes silent: killed at the silence limit, retried after a backoff, fails"),
    DemoTask("T-05", "Cache everything", "eat_memory", {"src/cache.txt": "-\n"}, "failed",
             "eats memory: its process tree is killed at the memory limit", max_attempts=1),
    DemoTask("T-06", "Tidy the README", "out_of_scope", {"src/tidy.txt": "tidy\n"}, "failed",
             "also edits a file outside its allowed paths: QA fails it", max_attempts=1),
    DemoTask("T-07", "Fix the typo", "lie", {"src/typo.txt": "fixed\n"}, "failed",
             "claims a change it never made: QA trusts git, not the claim", max_attempts=1),
    DemoTask("T-08", "Set the default precision", "pass", {"src/config.txt": "precision=2\n"},
             "completed", "writes src/config.txt, in parallel with T-09", priority=0),
    DemoTask("T-09", "Set the default rounding", "pass",
             {"src/config.txt": "precision=2\nrounding=half-even\n"}, "completed",
             "writes src/config.txt too: the second of the two to merge conflicts, is sent "
             "back for a rework on the new head, then merges", priority=0),
)  # fmt: skip


def _pack(task: DemoTask) -> dict[str, Any]:
    first = next(iter(task.files))
    return {
        "task_id": task.key,
        "run_id": f"{task.key}_demo",
        "step_id": "S1",
        "step_title": task.title,
        "objective": task.title,
        "allowed_paths": list(task.allowed),
        "forbidden_paths": ["README.md", "pyproject.toml"],
        "commands_to_run": [f"test -f {first}", "git --version"],
        "acceptance_criteria": [
            f"AC1: {first} exists with the new content",
            "AC2: the verification commands exit 0",
        ],
        "gates": [
            {"gate_id": "G1", "owner": "worker", "type": "required_command_exit_0",
             "target_ac": ["AC1"], "command_index": 0},
            {"gate_id": "G2", "owner": "worker", "type": "required_command_exit_0",
             "target_ac": ["AC2"], "command_index": 1},
            {"gate_id": "G3", "owner": "controller", "type": "qa_scope_guard_review",
             "target_ac": ["AC1", "AC2"]},
        ],
        "runtime_policy": {"timeout_sec": 30, "no_output_timeout_sec": 30},
        "context": {"mock_scenario": task.scenario, "mock_files": task.files},
    }  # fmt: skip


def shim_config() -> dict[str, Any]:
    """The mock backend, started with this interpreter (no PATH needed)."""
    tail = ["--backend={backend}", "--run-id", "{run_id}", "--task-id", "{task_id}",
            "--step-id", "{step_id}"]  # fmt: skip
    mock = [sys.executable, "-m", "runner.mock_shim"]
    return {
        "backends": {
            "mock": {
                "create": [*mock, "create", "{prompt}", *tail],
                "resume": [*mock, "resume", "{prompt}", "{thread_id}", *tail],
            }
        },
        "default_backend": "mock",
    }


def build(root: Path) -> Settings:
    """Create the demo project, queue, packs and config under `root`; return the settings."""
    project, progress = root / "project", root / "progress"
    (project / "src").mkdir(parents=True)
    (project / "README.md").write_text("# calc\n\nA tiny calculator.\n")
    (project / "src" / "calc.txt").write_text("def add(a, b): return a + b\n")
    git = ["git", "-C", str(project), *RUNNER_IDENTITY]
    subprocess.run([*git, "init", "-q", "-b", "main"], check=True)
    subprocess.run([*git, "add", "-A"], check=True)
    subprocess.run([*git, "commit", "-qm", "calc: first version"], check=True)

    (progress / "packs").mkdir(parents=True)
    pack_map = {}
    for task in TASKS:
        path = progress / "packs" / f"{task.key}.json"
        path.write_bytes(encode_pretty(_pack(task)))
        pack_map[task.key] = f"packs/{task.key}.json"
    queue = {
        "version": 1,
        "tasks": [
            {"key": t.key, "title": t.title, "max_attempts": t.max_attempts,
             "priority": t.priority, "depends_on": list(t.depends_on)}
            for t in TASKS
        ],
    }  # fmt: skip
    (progress / "task_queue.json").write_bytes(encode_pretty(queue))
    (progress / "step_pack_map.json").write_bytes(encode_pretty(pack_map))
    (progress / "shim.json").write_bytes(encode_pretty(shim_config()))
    config = CampaignConfig(
        max_parallel_steps=3,
        max_rework_rounds=1,
        limits=StepLimits(max_runtime_sec=20, max_silence_sec=1.5, max_memory_mb=150),
        backoff=BackoffPolicy(base_sec=0.5, max_sec=2),
    )
    (progress / "campaign.json").write_bytes(encode_pretty(config))
    return Settings(
        queue_path=progress / "task_queue.json",
        progress_dir=progress,
        workspace=project,
        ledger_root=progress / "ledger",
        project_id=PROJECT_ID,
        worktree_dir=progress / "worktrees",
        config=config,
        shim_config_path=progress / "shim.json",
        step_pack_map_path=progress / "step_pack_map.json",
        seed=7,
    )


@dataclass(frozen=True)
class DemoResult:
    root: Path
    rows: list[tuple[str, str, str, str]]  # key, expected, got, story
    ledger_ok: bool
    ledger_summary: str
    seconds: float

    @property
    def ok(self) -> bool:
        return self.ledger_ok and all(expected == got for _, expected, got, _ in self.rows)


def run(root: Path, *, live: bool, cluster: ClusterSettings | None = None) -> DemoResult:
    """Build the demo in `root` and run it; `cluster` sends its steps to Dask workers (every
    task must end the same way: the executor changes where a step runs, not its judgement)."""
    start = time.monotonic()
    settings = dataclasses.replace(build(root), live=live, cluster=cluster or ClusterSettings())
    run_campaign(settings)
    queue = load_queue(settings.queue_path)
    status = {t.key: str(t.status) for t in queue.tasks}
    rows = [(t.key, t.expected, status[t.key], t.story) for t in TASKS]
    report = verify_project(ProjectPaths.of(settings.ledger_root, PROJECT_ID))
    if report.ok and report.project_head is not None:
        summary = (
            f"ok: {report.events} events in {1 + len(report.task_heads)} chains, "
            f"head {report.project_head}"  # whole: `verify --expect-head` takes it back
        )
    else:
        summary = "; ".join(str(p) for p in report.problems) or "no project head"
    return DemoResult(root, rows, report.ok, summary, time.monotonic() - start)


def temp_root() -> Path:
    return Path(tempfile.mkdtemp(prefix="runner-demo-"))


def remove(root: Path) -> None:
    shutil.rmtree(root, ignore_errors=True)
