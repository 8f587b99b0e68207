"""Steps per second through `--executor dask-local` against `local`, on the same queue.

Builds a git project with TASKS tasks for the mock shim (each writes one file and passes
review), runs `runner campaign` on it with the local executor, then on a fresh copy with a
Dask LocalCluster of WORKERS worker processes, both at PARALLEL steps at once, and prints for
each: the campaign's own time (from its `campaign.started` to its `campaign.finished` log
event, so the local cluster's start-up is counted apart), steps per second, and the whole
command's wall time. Then the ratio, and the per-step overhead the cluster adds: the extra
campaign time per step, times PARALLEL (steps overlap, so each one's own latency grew by
about that much).

    .venv/bin/python bench/distributed.py [--tasks 40] [--parallel 4] [--workers 2]
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from datetime import datetime
from pathlib import Path

# bench/protocol.py would shadow the `protocol` package: keep this directory off the path.
if sys.path and Path(sys.path[0]).resolve() == Path(__file__).resolve().parent:
    sys.path.pop(0)

PY = sys.executable
MOCK = [PY, "-m", "runner.mock_shim"]
IDS = ["--backend={backend}", "--run-id", "{run_id}", "--task-id", "{task_id}"]
IDS += ["--step-id", "{step_id}"]
SHIM = {
    "default_backend": "mock",
    "backends": {
        "mock": {
            "create": [*MOCK, "create", "{prompt}", *IDS],
            "resume": [*MOCK, "resume", "{prompt}", "{thread_id}", *IDS],
        }
    },
}
GIT = ["git", "-c", "user.name=bench", "-c", "user.email=bench@localhost"]


def build(root: Path, tasks: int) -> Path:
    """A project at `root/project` and its progress files; returns the queue path."""
    ws, progress = root / "project", root / "progress"
    (ws / "src").mkdir(parents=True)
    (ws / "README.md").write_text("# bench\n")
    subprocess.run([*GIT, "init", "-q", "-b", "main", str(ws)], check=True)
    subprocess.run([*GIT, "-C", str(ws), "add", "."], check=True)
    subprocess.run([*GIT, "-C", str(ws), "commit", "-qm", "start"], check=True)
    (progress / "packs").mkdir(parents=True)
    mapping, queue = {}, []
    for i in range(tasks):
        key = f"t{i:03d}"
        pack = {
            "task_id": key, "run_id": f"{key}_run", "step_id": "S1",
            "objective": f"Do {key}.", "allowed_paths": ["src/**"],
            "acceptance_criteria": [f"AC1: {key} is done."],
            "context": {"mock_scenario": "pass", "mock_files": {f"src/{key}.txt": key}},
        }  # fmt: skip
        (progress / "packs" / f"{key}.json").write_text(json.dumps(pack))
        mapping[key] = f"packs/{key}.json"
        queue.append({"key": key, "title": key})
    (progress / "step_pack_map.json").write_text(json.dumps(mapping))
    (progress / "shim.json").write_text(json.dumps(SHIM))
    queue_path = progress / "task_queue.json"
    queue_path.write_text(json.dumps({"tasks": queue}))
    return queue_path


def run(root: Path, tasks: int, parallel: int, executor: list[str]) -> tuple[float, float]:
    """(campaign seconds, wall seconds) of one `runner campaign`."""
    queue = build(root, tasks)
    argv = [
        PY, "-m", "runner", "--log-format", "json", "campaign",
        "--queue-path", str(queue), "--workspace", str(root / "project"),
        "--shim-config", str(queue.parent / "shim.json"),
        "--step-pack-map-file", str(queue.parent / "step_pack_map.json"),
        "--max-parallel-steps", str(parallel), "--no-live", *executor,
    ]  # fmt: skip
    env = {k: v for k, v in os.environ.items() if not k.startswith("RUNNER_")}
    t0 = time.perf_counter()
    done = subprocess.run(argv, capture_output=True, text=True, env=env, check=False)
    wall = time.perf_counter() - t0
    if done.returncode != 0:
        raise SystemExit(f"campaign failed ({done.returncode}):\n{done.stderr[-3000:]}")
    stamps = {}
    for line in done.stderr.splitlines():
        if line.startswith("{"):
            try:
                event = json.loads(line)
            except json.JSONDecodeError:  # a worker process's line written across ours
                continue
            if event.get("event") in ("campaign.started", "campaign.finished"):
                stamps[event["event"]] = datetime.fromisoformat(event["timestamp"])
    took = (stamps["campaign.finished"] - stamps["campaign.started"]).total_seconds()
    return took, wall


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--tasks", type=int, default=40)
    parser.add_argument("--parallel", type=int, default=4)
    parser.add_argument("--workers", type=int, default=2)
    args = parser.parse_args()
    load = os.getloadavg()
    print(f"{args.tasks} tasks, {args.parallel} at once, load average {load[0]:.2f} (1 min)")
    results = {}
    for name, executor in (
        ("local", ["--executor", "local"]),
        ("dask-local", ["--executor", "dask-local", "--workers", str(args.workers)]),
    ):
        with tempfile.TemporaryDirectory(prefix="bench-distributed-") as tmp:
            took, wall = run(Path(tmp), args.tasks, args.parallel, executor)
        results[name] = took
        print(
            f"{name:>10}: campaign {took:6.2f} s, {args.tasks / took:5.2f} steps/s "
            f"(command {wall:5.2f} s)"
        )
    local, dask = results["local"], results["dask-local"]
    overhead = (dask - local) / args.tasks * args.parallel
    print(f"dask-local / local steps per second: {local / dask:.2f}")
    print(f"overhead per step on the cluster: {overhead * 1000:.0f} ms")


if __name__ == "__main__":
    main()
