"""SIGKILL at random moments, many seeded trials: of a ledger writer fed by several producers,
and of `runner campaign` itself. Every acknowledged ledger event is present afterwards, the
ledger verifies after every kill, the queue file is whole after every kill, and a campaign
resumed until it drains ends in the same state as an uninterrupted one."""

from __future__ import annotations

import random
from pathlib import Path

import msgspec
import pytest

from ledger import ProjectPaths
from ledger.commit_process import COMMIT
from ledger.verify import verify_project
from protocol import TaskQueue
from protocol.ledger_events import LEDGER_RECORD, TaskRecord
from tests.adversarial.trials import seeds, trials
from tests.ledger.test_crash import assert_recovered_with, kill_repeatedly
from tests.runner.engine_fixtures import (
    Project,
    TaskSpec,
    assert_ends_like,
    drain_with_kills,
    kill_processes_under,
)

WRITER_KILLS = trials(12, 100)  # per mode and seed
WRITER_SEEDS = seeds("writer", 1, 3)


@pytest.mark.parametrize("seed", WRITER_SEEDS)
@pytest.mark.parametrize("mode", ["durable", "buffered"])
def test_a_writer_killed_again_and_again_loses_no_acknowledged_event(
    tmp_path: Path, mode: str, seed: str
) -> None:
    acked = kill_repeatedly(tmp_path, mode, random.Random(f"{seed}-{mode}"), WRITER_KILLS)
    assert len(acked) > WRITER_KILLS
    assert_recovered_with(tmp_path, acked)


# -- the whole runner -------------------------------------------------------------------------

SLOW = "sleep 0.4"  # keeps tasks in flight long enough to be caught by the kill
SPECS = [
    TaskSpec("p1", commands=[SLOW]),
    TaskSpec("p2", commands=[SLOW]),
    TaskSpec("ftp", scenario="fail_then_pass", commands=[SLOW]),
    TaskSpec("conf_a", files={"src/shared.txt": "from a\n"}, commands=[SLOW]),
    TaskSpec("conf_b", files={"src/shared.txt": "from b\n"}, commands=[SLOW]),
    TaskSpec("oos", scenario="out_of_scope", commands=[SLOW], max_attempts=2),
    TaskSpec("after", depends_on=["p1", "p2"], commands=[SLOW]),
]
ARGS = ("--max-parallel-steps", "3", "--max-rework-rounds", "1")
CAMPAIGN_SEEDS = seeds("campaign", 3, 20)
MAX_KILLS = trials(4, 6)

Event = tuple[str | None, int, str]  # task (None: the project chain), seq, event_hash


def fresh(root: Path) -> Project:
    return Project(root, [TaskSpec(**vars(s)) for s in SPECS])


@pytest.fixture(scope="module")
def reference(tmp_path_factory: pytest.TempPathFactory) -> dict[str, str]:
    """The final statuses of an uninterrupted run."""
    p = fresh(tmp_path_factory.mktemp("reference"))
    result = p.run(*ARGS)
    assert result.returncode == 1, result.stderr[-2000:]  # `oos` fails
    return p.statuses()


def durable(ledger_dir: Path) -> set[Event]:
    """Every event on disk after a kill: the complete lines of the chain files and every line
    of a committed batch in the journal. An append is acknowledged only after its batch is
    committed (durable mode: and fsynced), so this holds every acknowledged event."""
    decoder = msgspec.json.Decoder(LEDGER_RECORD)
    found: set[Event] = set()

    def note(line: bytes) -> None:
        record = decoder.decode(line)
        task = record.task_id if isinstance(record, TaskRecord) else None
        found.add((task, record.seq, record.event_hash))

    journal = ledger_dir / ".journal.jsonl"
    data = journal.read_bytes() if journal.exists() else b""
    end = data.rfind(COMMIT) + len(COMMIT) if COMMIT in data else 0
    for line in data[:end].splitlines(keepends=True):
        if line != COMMIT:
            note(line)
    for path in [ledger_dir / "events.jsonl", *ledger_dir.glob("tasks/*/events.jsonl")]:
        if path.exists():
            for line in path.read_bytes().splitlines(keepends=True):
                if line.endswith(b"\n"):
                    note(line)
    return found


def present(p: Project) -> set[Event]:
    events: set[Event] = {(None, r.seq, r.event_hash) for r in p.project_events()}
    for key in p.specs:
        events |= {(key, r.seq, r.event_hash) for r in p.task_events(key)}
    return events


@pytest.mark.slow
@pytest.mark.parametrize("seed", CAMPAIGN_SEEDS)
def test_a_campaign_killed_at_random_moments_resumes_to_the_same_end(
    tmp_path: Path, seed: str, reference: dict[str, str]
) -> None:
    p = fresh(tmp_path)
    on_disk: set[Event] = set()

    def after_kill(n: int) -> None:
        # The queue is written atomically: whole after any kill, and it decodes strictly.
        msgspec.json.decode(p.queue_path.read_bytes(), type=TaskQueue)
        if p.ledger_dir.exists():
            report = verify_project(ProjectPaths.of(p.ledger_dir.parent, "project"))
            assert report.ok, (n, report.problems)  # a torn tail is a note, not damage
            on_disk.update(durable(p.ledger_dir))

    try:
        kills = drain_with_kills(
            p, ARGS, random.Random(seed), MAX_KILLS, expect_code=1, after_kill=after_kill
        )
    finally:
        kill_processes_under(p.root)  # agents a killed runner left behind, if still going
    assert kills >= 1
    assert_ends_like(p, reference)
    lost = on_disk - present(p)
    assert not lost, f"events on disk at a kill are gone after the resume: {sorted(lost)[:5]}"
