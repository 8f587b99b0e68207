"""Several runner processes on one ledger or one queue: one waits or refuses clearly (exit 3,
naming what is locked); nothing is interleaved, lost or written twice."""

from __future__ import annotations

import itertools
import subprocess
import sys
from pathlib import Path

import msgspec
import pytest

from ledger import ProjectPaths
from ledger.verify import verify_project
from protocol.ledger_events import ProjectRecord, TaskEventsLinked, TaskRecord
from tests.adversarial.trials import seeds, trials
from tests.runner.engine_fixtures import RUNNER, Project, TaskSpec, child_env

HAMMER = Path(__file__).with_name("ledger_hammer.py")
WRITERS = trials(4, 8)
APPENDS = trials(15, 50)
RACES = seeds("init-race", 3, 20)


def cli(root: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [*RUNNER, "ledger", "--root-dir", str(root), "--project-id", "p", *args],
        capture_output=True, text=True, timeout=120, check=False, env=child_env(),
    )  # fmt: skip


def hashes(path: Path, type_: type[TaskRecord] | type[ProjectRecord]) -> list[str]:
    decoder = msgspec.json.Decoder(type_)
    return [decoder.decode(line).event_hash for line in path.read_bytes().splitlines()]


def test_writers_in_many_processes_never_interleave_or_lose_an_event(tmp_path: Path) -> None:
    """`WRITERS` processes append at once, each opening and closing the ledger per event (the
    lock changes hands at every append): every acknowledged event is in its chain, once, in
    order; every line is whole; the project chain links each one."""
    assert cli(tmp_path, "init").returncode == 0
    procs = [
        subprocess.Popen(
            [sys.executable, str(HAMMER), str(tmp_path), "p", f"T-{i}", str(APPENDS)],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            env=child_env(),
        )
        for i in range(WRITERS)
    ]
    # All of them imported and ready before any appends: then they contend from the first.
    for proc in procs:
        assert proc.stdout is not None and proc.stdout.readline() == "ready\n"
    for proc in procs:
        assert proc.stdin is not None
        proc.stdin.write("go\n")
        proc.stdin.flush()
    acked: dict[str, list[str]] = {}
    for proc in procs:
        out, err = proc.communicate(timeout=300)
        assert proc.returncode == 0, err[-2000:]
        for line in out.splitlines():
            task, _, digest = line.split()
            acked.setdefault(task, []).append(digest)
    paths = ProjectPaths.of(tmp_path, "p")
    report = verify_project(paths)
    assert report.ok and not report.notes, (report.problems, report.notes)
    for task, digests in acked.items():
        assert len(digests) == APPENDS
        assert hashes(paths.task_events(task), TaskRecord) == digests, task
    links = [
        link
        for r in msgspec.json.Decoder(list[ProjectRecord]).decode(
            b"[" + b",".join(paths.events.read_bytes().splitlines()) + b"]"
        )
        if isinstance(r.body, TaskEventsLinked)
        for link in r.body.events
    ]
    assert len(links) == WRITERS * APPENDS
    # The writers really took turns (the lock changed hands between their appends).
    order = [link.task_id for link in links]
    switches = sum(a != b for a, b in itertools.pairwise(order))
    assert switches >= WRITERS, order


def test_a_second_writer_refuses_at_once_or_waits_its_turn(tmp_path: Path) -> None:
    assert cli(tmp_path, "init").returncode == 0
    hold = (
        "import sys, anyio\nfrom ledger import open_ledger\n"
        "async def m():\n async with open_ledger(sys.argv[1], 'p'):\n"
        "  print('locked', flush=True)\n  await anyio.sleep(float(sys.argv[2]))\nanyio.run(m)"
    )
    attempt = ["attempt", "--task-id", "T-1", "--r", "0", "--s", "0", "--result", "PASS",
               "--reason-code", "PASS_ALL_CRITERIA"]  # fmt: skip
    holder = subprocess.Popen(
        [sys.executable, "-c", hold, str(tmp_path), "1.5"], stdout=subprocess.PIPE, text=True
    )
    try:
        assert holder.stdout is not None and holder.stdout.readline() == "locked\n"
        refused = cli(tmp_path, *attempt)
        assert refused.returncode == 3, refused.stderr
        assert f"{tmp_path / 'p'} is locked by another writer" in refused.stderr
        waited = subprocess.run(
            [*RUNNER, "ledger", "--root-dir", str(tmp_path), "--project-id", "p",
             "--lock-timeout", "30", *attempt],
            capture_output=True, text=True, timeout=60, check=False, env=child_env(),
        )  # fmt: skip
        assert waited.returncode == 0, waited.stderr
    finally:
        holder.kill()
        holder.wait()
    assert holder.returncode == 0, "the holder finished its turn before the waiter wrote"
    report = verify_project(ProjectPaths.of(tmp_path, "p"))
    assert report.ok and report.task_heads["T-1"].seq == 0


@pytest.mark.parametrize("race", RACES)
def test_racing_inits_create_one_project(tmp_path: Path, race: str) -> None:
    procs = [
        subprocess.Popen(
            [*RUNNER, "ledger", "--root-dir", str(tmp_path), "--project-id", "p", "init"],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            env=child_env(),
        )
        for _ in range(4)
    ]
    codes = []
    for proc in procs:
        _, err = proc.communicate(timeout=60)
        assert "Traceback" not in err, err
        codes.append(proc.returncode)
    assert codes.count(0) == 1, codes
    assert set(codes) <= {0, 2, 3}, codes  # exists, or locked by the one creating it
    paths = ProjectPaths.of(tmp_path, "p")
    assert len(paths.events.read_bytes().splitlines()) == 1  # one genesis
    assert verify_project(paths).ok


def test_a_campaign_holds_its_queue_and_its_ledger_against_other_runners(tmp_path: Path) -> None:
    """While a campaign runs, a second campaign on its queue and a ledger writer on its ledger
    exit 3 at once with a clear message, and change nothing: the campaign ends as it would."""
    config = {"limits": {"max_silence_sec": 20}}
    p = Project(tmp_path, [TaskSpec(f"t{i}", commands=["sleep 0.5"]) for i in range(3)],
                config=config)  # fmt: skip
    first = p.popen()
    first.wait_for(lambda events: any(e["event"] == "task.claimed" for e in events), timeout=20)
    second = p.run()
    assert second.returncode == 3, second.stderr
    assert "the queue is locked by process" in second.stderr
    writer = subprocess.run(
        [*RUNNER, "ledger", "--root-dir", str(p.progress / "ledger"), "--project-id", "project",
         "close", "--task-id", "t0", "--final-status", "accepted"],
        capture_output=True, text=True, timeout=60, check=False, env=child_env(),
    )  # fmt: skip
    assert writer.returncode == 3, writer.stderr
    assert f"{p.ledger_dir} is locked by another writer" in writer.stderr
    assert first.finish() == 0, first.tail()
    assert p.statuses() == {"t0": "completed", "t1": "completed", "t2": "completed"}
    assert p.merges_per_task() == {"t0": 1, "t1": 1, "t2": 1}
    for key in ("t0", "t1", "t2"):
        assert p.event_types(key).count("task_closed") == 1, key
    assert p.verify_ledger().returncode == 0
