"""`runner campaign --executor dask-local` / `dask` end to end: a real Dask LocalCluster (worker
processes, TCP on 127.0.0.1), real git repositories (a bare one as the remote), the mock shim
as the agent. The same queue run locally and on 2 workers ends the same; a worker killed with
SIGKILL mid-step costs one retry (same R, S+1) and nothing else."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import msgspec
import psutil
import pytest

from protocol.ledger_events import Attempt, AttemptStarted
from tests.runner.engine_fixtures import (
    FAST_CONFIG,
    Project,
    TaskSpec,
    git,
    json_events,
    kill_processes_under,
    processes_under,
)

distributed = pytest.importorskip("distributed")

SPECS = [
    TaskSpec("pass1"),
    TaskSpec("pass2", commands=["true"]),
    TaskSpec("after", depends_on=["pass1"]),
    TaskSpec("ftp", scenario="fail_then_pass"),
    TaskSpec("oos", scenario="out_of_scope", max_attempts=2),
    TaskSpec("crash", scenario="crash", max_attempts=2),
]
# What differs from run to run, or from machine to machine, and nothing else. A file's
# sha256 is here because the review file names the base commit (two repositories made at
# different times); `review_files` compares those files without it.
VOLATILE = {
    "ts", "prev_event_hash", "event_hash", "project_seq", "campaign_id", "started_at",
    "ended_at", "duration_ms", "peak_memory_bytes", "stdout_bytes", "stderr_bytes", "summary",
    "sha256", "base_revision",
}  # fmt: skip


def _strip(value: Any) -> Any:
    if isinstance(value, dict):
        return {k: _strip(v) for k, v in value.items() if k not in VOLATILE}
    if isinstance(value, list):
        return [_strip(v) for v in value]
    return value


def ledger_view(p: Project) -> dict[str, Any]:
    """Each task's chain and the project's own events, minus times, hashes and ids."""
    tasks = {k: [_strip(msgspec.to_builtins(r)) for r in p.task_events(k)] for k in p.specs}
    project = [
        _strip(msgspec.to_builtins(r.body))
        for r in p.project_events()
        if type(r.body).__struct_config__.tag != "task_events"  # type: ignore[attr-defined]
    ]
    return {"tasks": tasks, "project": project}


def review_files(p: Project) -> dict[str, Any]:
    found = p.workspace.glob(".artifacts/agent_runs/*/steps/*/rounds/*/logs/qa_review.json")
    return {
        path.relative_to(p.workspace).as_posix(): _strip(json.loads(path.read_text()))
        for path in found
    }


def queue_view(p: Project) -> dict[str, Any]:
    out = {}
    for key, task in p.queue().items():
        raw = msgspec.to_builtins(task)
        out[key] = {k: v for k, v in raw.items() if not k.endswith("_at") and k != "history"}
    return out


@pytest.fixture(scope="module")
def both(tmp_path_factory: pytest.TempPathFactory) -> tuple[Project, Project]:
    runs = []
    for executor in (["--executor", "local"], ["--executor", "dask-local", "--workers", "2"]):
        project = Project(tmp_path_factory.mktemp("exec"), SPECS)
        result = project.run(
            *executor, "--max-parallel-steps", "3", "--max-memory-mb", "200", "--seed", "3",
            timeout=180,
        )  # fmt: skip
        assert result.returncode == 1, result.stderr[-3000:]
        runs.append(project)
    return runs[0], runs[1]


def test_a_campaign_on_two_workers_ends_as_the_local_one(both: tuple[Project, Project]) -> None:
    local, dask = both
    assert dask.statuses() == local.statuses() == {
        "pass1": "completed", "pass2": "completed", "after": "completed", "ftp": "completed",
        "oos": "failed", "crash": "failed",
    }  # fmt: skip
    assert queue_view(dask) == queue_view(local)
    assert ledger_view(dask) == ledger_view(local)
    assert review_files(dask) == review_files(local)
    assert len(review_files(dask)) == 7
    assert dask.merges_per_task() == local.merges_per_task()
    for key in ("pass1", "pass2", "after", "ftp"):
        assert dask.head_file(f"src/{key}.txt") == f"{key}\n"
    verified = dask.verify_ledger()
    assert verified.returncode == 0, verified.stdout + verified.stderr


def test_the_evidence_of_every_round_comes_back(both: tuple[Project, Project]) -> None:
    local, dask = both
    for key in dask.specs:
        mine = [r.name for r in dask.rounds(key)]
        assert mine == [r.name for r in local.rounds(key)], key
        for round_dir in dask.rounds(key):
            names = {p.relative_to(round_dir).as_posix() for p in round_dir.rglob("*")}
            assert {"shim_stdout.txt", "logs/command.json", "logs/prompt.md"} <= names
    # The worker's own record of what it ran: its worktree, not the controller's.
    command = (dask.rounds("pass1")[0] / "logs" / "command.json").read_text()
    assert "worker-cache" in command


def test_nothing_is_left_behind_on_either_side(both: tuple[Project, Project]) -> None:
    _, dask = both
    assert dask.worktrees() == []
    assert dask.runner_branches() == []
    assert git(dask.workspace, "status", "--porcelain") == ""
    cache = dask.progress / "worker-cache"
    assert list((cache / "work").iterdir()) == []
    repos = list((cache / "repos").glob("*.git"))
    assert len(repos) == 1
    assert git(repos[0], "worktree", "list", "--porcelain").count("worktree ") == 1  # bare


def _mock_processes(under: Path) -> list[psutil.Process]:
    return [p for p in processes_under(under) if "runner.mock_shim" in " ".join(p.cmdline())]


def _gone(proc: psutil.Process) -> bool:
    try:
        return proc.status() == psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return True


def test_a_worker_killed_mid_step_costs_one_retry_on_another_worker(tmp_path: Path) -> None:
    project = Project(tmp_path, [TaskSpec("victim", scenario="hang"), TaskSpec("bystander")])
    cache = project.progress / "worker-cache"
    started = project.popen("--executor", "dask-local", "--workers", "2", "--no-live")
    try:
        deadline = time.monotonic() + 60
        while not (agents := _mock_processes(cache / "work")):
            assert started.proc.poll() is None, started.tail()
            assert time.monotonic() < deadline, started.tail()
            time.sleep(0.1)
        hang = agents[0]
        worker = hang.parent()
        assert worker is not None and worker.pid != started.proc.pid
        project.set_scenario("victim", "pass")  # the retry does the work
        os.kill(worker.pid, signal.SIGKILL)
        code = started.finish(timeout=90)
        # The retry's set-up on this machine found the dead worker's step and killed it.
        assert _gone(hang)
        assert "worker.orphans_killed" in {e.get("event") for e in started.events()}
    finally:
        if started.proc.poll() is None:
            started.proc.kill()
        kill_processes_under(cache)  # the killed worker's orphaned agent
    assert code == 0, started.tail()
    assert project.statuses() == {"victim": "completed", "bystander": "completed"}
    assert project.queue()["victim"].attempts == 2
    starts = [
        (r.body.r, r.body.s, str(r.body.kind))
        for r in project.task_events("victim")
        if isinstance(r.body, AttemptStarted)
    ]
    assert starts == [(0, 0, "first"), (0, 1, "retry")]
    lost = next(r.body for r in project.task_events("victim") if isinstance(r.body, Attempt))
    assert lost.reason_code == "WORKER_LOST"
    assert project.event_types("victim") == [
        "attempt_started", "attempt",
        "attempt_started", "step_outcome", "review", "attempt", "task_closed",
    ]  # fmt: skip
    assert project.merges_per_task() == {"victim": 1, "bystander": 1}
    returned = [e for e in started.events() if e.get("event") == "step.returned"]
    victims = [e["worker"] for e in returned if e.get("task_id") == "victim"]
    assert victims and all(w.rsplit(":", 1)[1] != str(worker.pid) for w in victims)
    verified = project.verify_ledger()
    assert verified.returncode == 0, verified.stdout + verified.stderr


@pytest.fixture(scope="module")
def cluster() -> Iterator[Any]:
    """A cluster of our own for `--executor dask`: two worker processes offering the mock
    backend and 1 GB each, told to report a lost worker at once."""
    with distributed.LocalCluster(
        n_workers=2,
        threads_per_worker=2,
        processes=True,
        host="127.0.0.1",
        dashboard_address="127.0.0.1:0",
        scheduler_kwargs={"allowed_failures": 0},
        resources={"backend-mock": 2, "MEMORY": 1e9},
        memory_limit=0,
    ) as c:
        yield c


def test_a_scheduler_of_your_own_with_a_bare_remote(cluster: Any, tmp_path: Path) -> None:
    project = Project(tmp_path, [TaskSpec("one"), TaskSpec("two", depends_on=["one"])])
    remote = tmp_path / "remote.git"
    subprocess.run(["git", "init", "-q", "--bare", str(remote)], check=True)
    result = project.run(
        "--executor", "dask", "--scheduler", cluster.scheduler_address, "--remote", str(remote),
        "--worker-cache-dir", str(tmp_path / "cache"), "--max-memory-mb", "100", "--no-live",
    )  # fmt: skip
    assert result.returncode == 0, result.stderr[-3000:]
    assert project.statuses() == {"one": "completed", "two": "completed"}
    # Each base the workers started from was pushed to the remote for them to fetch.
    bases = git(remote, "for-each-ref", "--format=%(refname)", "refs/runner/bases/").split()
    assert len(bases) == 2
    assert project.head_file("src/two.txt") == "two\n"


def test_a_step_no_worker_can_take_fails_as_no_worker(cluster: Any, tmp_path: Path) -> None:
    project = Project(tmp_path, [TaskSpec("big", max_attempts=1)])
    result = project.run(
        "--executor", "dask", "--scheduler", cluster.scheduler_address,
        "--worker-cache-dir", str(tmp_path / "cache"), "--max-memory-mb", "4000", "--no-live",
    )  # fmt: skip
    assert result.returncode == 1, result.stderr[-3000:]
    assert project.statuses() == {"big": "failed"}
    reason = project.queue()["big"].last_reason or ""
    assert "NO_WORKER" in reason and "MEMORY" in reason


def test_a_scheduler_that_would_rerun_a_lost_step_is_refused(tmp_path: Path) -> None:
    project = Project(tmp_path, [TaskSpec("one")])
    with distributed.LocalCluster(
        n_workers=0,
        processes=False,
        protocol="tcp://",
        host="127.0.0.1",
        dashboard_address="127.0.0.1:0",
    ) as c:
        result = project.run("--executor", "dask", "--scheduler", c.scheduler_address)
    assert result.returncode == 2, result.stderr
    assert "ALLOWED_FAILURES=0" in result.stderr
    assert not project.ledger_dir.exists()


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--executor", "dask"], "needs --scheduler"),
        (
            ["--executor", "dask", "--scheduler", "notanaddress"],
            "--scheduler: missing port number in address 'notanaddress'",
        ),
        (["--scheduler", "tcp://127.0.0.1:1"], "--scheduler is for --executor dask"),
        (["--workers", "2"], "--workers is for --executor dask-local"),
        (["--executor", "dask-local", "--remote", "x", "--workers", "0"], "0 is not in the range"),
    ],
)
def test_options_that_do_not_fit_are_refused_before_anything_is_written(
    tmp_path: Path, args: list[str], message: str
) -> None:
    project = Project(tmp_path, [TaskSpec("one")])
    result = project.run(*args)
    assert result.returncode == 2, result.stderr
    assert message in result.stderr
    assert not project.ledger_dir.exists()
    assert project.statuses() == {"one": "pending"}


def test_an_unreachable_scheduler_is_exit_4(tmp_path: Path) -> None:
    project = Project(tmp_path, [TaskSpec("one")])
    result = project.run(
        "--executor", "dask", "--scheduler", "tcp://127.0.0.1:9", "--connect-timeout", "2"
    )
    assert result.returncode == 4, result.stderr
    assert "cannot reach the Dask scheduler at tcp://127.0.0.1:9: " in result.stderr
    assert "tcp://127.0.0.1:9: \n" not in result.stderr  # a reason follows
    assert not project.ledger_dir.exists()


def test_without_the_extra_the_error_names_it(tmp_path: Path) -> None:
    fake = tmp_path / "fake"
    (fake / "distributed").mkdir(parents=True)
    (fake / "distributed" / "__init__.py").write_text("raise ImportError('not installed')\n")
    project = Project(tmp_path / "p", [TaskSpec("one")])
    env = {**os.environ, "PYTHONPATH": str(fake)}
    result = subprocess.run(
        project.argv("campaign", "--executor", "dask-local"),
        capture_output=True, text=True, env=env, timeout=60, check=False,
    )  # fmt: skip
    assert result.returncode == 2, result.stderr
    assert "ai-coding-control-plane[distributed]" in result.stderr
    assert json_events(result.stderr) == [] or "Traceback" not in result.stderr


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class RealCluster:
    """`dask scheduler` and one `dask worker` as separate processes, as on real machines."""

    def __init__(self, root: Path, port: int) -> None:
        self.address = f"tcp://127.0.0.1:{port}"
        self.cache = root / "worker-cache"
        bin_dir = Path(sys.executable).parent
        env = {**os.environ, "DASK_DISTRIBUTED__SCHEDULER__ALLOWED_FAILURES": "0"}
        log = (root / "cluster.log").open("ab")
        self.scheduler = subprocess.Popen(
            [str(bin_dir / "dask"), "scheduler", "--host", "127.0.0.1", "--port", str(port),
             "--dashboard-address", ":0"],
            stdout=log, stderr=log, env=env,
        )  # fmt: skip
        self.worker = subprocess.Popen(
            [str(bin_dir / "dask"), "worker", self.address, "--nthreads", "2",
             "--memory-limit", "0", "--resources", "backend-mock=2", "--no-dashboard"],
            stdout=log, stderr=log, env={**env, "RUNNER_WORKER_CACHE": str(self.cache)},
        )  # fmt: skip

    def stop(self) -> None:
        for proc in (self.worker, self.scheduler):
            if proc.poll() is None:
                proc.kill()
            proc.wait(timeout=30)
        kill_processes_under(self.cache)


def test_a_scheduler_that_goes_away_stops_the_campaign_resumably(tmp_path: Path) -> None:
    project = Project(tmp_path, [TaskSpec("slow", scenario="hang")])
    port = _free_port()
    args = ["--executor", "dask", "--scheduler", f"tcp://127.0.0.1:{port}",
            "--connect-timeout", "60", "--no-live"]  # fmt: skip
    cluster = RealCluster(tmp_path, port)
    try:
        started = project.popen(*args)
        deadline = time.monotonic() + 60
        while not _mock_processes(cluster.cache / "work"):
            assert started.proc.poll() is None, started.tail()
            assert time.monotonic() < deadline, started.tail()
            time.sleep(0.1)
        cluster.scheduler.kill()
        code = started.finish(timeout=60)
    finally:
        cluster.stop()
    assert code == 4, started.tail()
    assert "the cluster went away" in started.stderr.read_text()
    assert project.statuses() == {"slow": "pending"}
    assert project.queue()["slow"].attempts == 0  # given back, not counted
    assert project.event_types("slow") == ["attempt_started", "attempt_interrupted"]
    verified = project.verify_ledger()
    assert verified.returncode == 0, verified.stdout + verified.stderr

    project.set_scenario("slow", "pass")
    cluster = RealCluster(tmp_path, port)
    try:
        result = project.run(*args)
    finally:
        cluster.stop()
    assert result.returncode == 0, result.stderr[-3000:]
    assert project.statuses() == {"slow": "completed"}
    assert project.event_types("slow") == [
        "attempt_started", "attempt_interrupted",
        "attempt_started", "step_outcome", "review", "attempt", "task_closed",
    ]  # fmt: skip
    assert project.merges_per_task() == {"slow": 1}


def test_a_signal_to_the_controller_kills_the_steps_on_their_workers(tmp_path: Path) -> None:
    project = Project(
        tmp_path, [TaskSpec("hang1", scenario="hang"), TaskSpec("hang2", scenario="hang")]
    )
    cache = project.progress / "worker-cache"
    started = project.popen(
        "--executor", "dask-local", "--workers", "2", "--max-parallel-steps", "2", "--no-live"
    )  # fmt: skip
    try:
        deadline = time.monotonic() + 60
        while len(agents := _mock_processes(cache / "work")) < 2:
            assert started.proc.poll() is None, started.tail()
            assert time.monotonic() < deadline, started.tail()
            time.sleep(0.1)
        started.proc.send_signal(signal.SIGINT)
        code = started.finish(timeout=60)
        # Cancelled on their workers, which were still alive: not left for a next step to find.
        assert all(_gone(agent) for agent in agents)
    finally:
        if started.proc.poll() is None:
            started.proc.kill()
        kill_processes_under(cache)
    assert code == 130, started.tail()
    assert project.statuses() == {"hang1": "pending", "hang2": "pending"}
    for key in ("hang1", "hang2"):
        assert project.queue()[key].attempts == 0  # given back, not counted
        assert project.event_types(key)[-1] == "attempt_interrupted"
    verified = project.verify_ledger()
    assert verified.returncode == 0, verified.stdout + verified.stderr
    assert not list((cache / "work").glob("*/")), "worktrees left on the worker"


def _config(**cluster: Any) -> dict[str, Any]:
    return {**FAST_CONFIG, "cluster": cluster}


def test_the_config_file_can_name_the_executor(tmp_path: Path) -> None:
    """`cluster` in campaign.json chooses the executor like the options do."""
    project = Project(tmp_path, [TaskSpec("one")], config=_config(executor="dask-local", workers=1))
    result = project.run()
    assert result.returncode == 0, result.stderr[-3000:]
    connected = [e for e in json_events(result.stderr) if e.get("event") == "cluster.connected"]
    assert [e["executor"] for e in connected] == ["dask-local"]
    assert project.statuses() == {"one": "completed"}


def test_the_command_line_executor_wins_over_the_config_file(tmp_path: Path) -> None:
    """The file's scheduler does not follow `--executor local` (nothing connects to it)."""
    config = _config(executor="dask", scheduler="tcp://127.0.0.1:9", connect_timeout_sec=1)
    project = Project(tmp_path, [TaskSpec("one")], config=config)
    result = project.run("--executor", "local")
    assert result.returncode == 0, result.stderr[-3000:]
    assert "cluster.connected" not in result.stderr
    assert project.statuses() == {"one": "completed"}


def test_a_bad_cluster_section_names_the_field_and_the_choices(tmp_path: Path) -> None:
    project = Project(tmp_path, [TaskSpec("one")], config=_config(executor="k8s"))
    result = project.run()
    assert result.returncode == 2, result.stderr
    assert "$.cluster.executor: Invalid enum value 'k8s'" in result.stderr
    assert "expected one of: dask, dask-local, local" in result.stderr
    assert not project.ledger_dir.exists()
    assert project.statuses() == {"one": "pending"}
