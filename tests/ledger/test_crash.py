"""SIGKILL a writer mid-stream, again and again: every acknowledged event survives, the ledger
verifies after every kill, and the next writer recovers it."""

from __future__ import annotations

import random
import signal
import subprocess
import sys
import time
from pathlib import Path

import anyio
import msgspec
import pytest

from ledger.store import ProjectPaths
from ledger.verify import verify_project
from ledger.writer import open_ledger
from protocol.ledger_events import ProjectRecord, RecoveredTornTail, TaskRecord
from tests.ledger.conftest import PROJECT

WRITER = Path(__file__).with_name("crash_writer.py")


def run_and_kill(root: Path, mode: str, rng: random.Random) -> list[tuple[str, int, str]]:
    proc = subprocess.Popen(
        [sys.executable, str(WRITER), str(root), PROJECT, mode],
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
    )
    assert proc.stdout is not None
    acks: list[tuple[str, int, str]] = []
    want = rng.randint(1, 80)
    try:
        while len(acks) < want:
            line = proc.stdout.readline()
            if not line:
                break
            chain, seq, digest = line.decode().split()
            acks.append((chain, int(seq), digest))
        time.sleep(rng.uniform(0, 0.01))  # land the kill anywhere in the next batch
    finally:
        proc.send_signal(signal.SIGKILL)
        # Acknowledgements already printed before the kill count too.
        rest = proc.stdout.read()
        proc.wait()
    for line in rest.decode().splitlines():
        parts = line.split()
        if len(parts) == 3:
            acks.append((parts[0], int(parts[1]), parts[2]))
    assert proc.returncode == -signal.SIGKILL
    return acks


async def reopen(root: Path) -> None:
    async with open_ledger(root, PROJECT):
        pass


def records(path: Path) -> list[ProjectRecord]:
    return [msgspec.json.decode(x, type=ProjectRecord) for x in path.read_bytes().splitlines()]


def hashes(path: Path, type_: type[ProjectRecord] | type[TaskRecord]) -> list[str]:
    decoder = msgspec.json.Decoder(type_)
    return [decoder.decode(line).event_hash for line in path.read_bytes().splitlines()]


def kill_repeatedly(
    root: Path, mode: str, rng: random.Random, kills: int
) -> list[tuple[str, int, str]]:
    """Start a writer and SIGKILL it at a random moment, `kills` times; the ledger verifies
    after every kill (a torn tail is a note while the journal is not empty). Returns every
    acknowledgement the writers printed."""
    paths = ProjectPaths.of(root, PROJECT)
    acked: list[tuple[str, int, str]] = []
    for _ in range(kills):
        acked += run_and_kill(root, mode, rng)
        report = verify_project(paths)
        assert report.ok, report.problems
    return acked


def assert_recovered_with(root: Path, acked: list[tuple[str, int, str]]) -> None:
    """One more writer recovers whatever the last kill left and stops cleanly: the ledger then
    verifies without a note, and holds every acknowledged event at its place."""
    paths = ProjectPaths.of(root, PROJECT)
    anyio.run(reopen, root)
    report = verify_project(paths)
    assert report.ok and not report.notes, (report.problems, report.notes)
    project = hashes(paths.events, ProjectRecord)
    tasks: dict[str, list[str]] = {}
    for chain, seq, digest in acked:
        if chain == "-":
            assert project[seq] == digest
        else:
            if chain not in tasks:
                tasks[chain] = hashes(paths.task_events(chain), TaskRecord)
            assert tasks[chain][seq] == digest, f"acknowledged {chain} seq {seq} lost"


@pytest.mark.parametrize("mode", ["durable", "buffered"])
def test_acknowledged_events_survive_repeated_sigkill(tmp_path: Path, mode: str) -> None:
    rng = random.Random(f"crash-{mode}")
    kills = 6 if mode == "durable" else 4
    acked = kill_repeatedly(tmp_path, mode, rng, kills)
    assert len(acked) > kills
    assert_recovered_with(tmp_path, acked)
    # Each kill that landed mid-batch left a tail that recovery recorded; none lost an ack.
    paths = ProjectPaths.of(tmp_path, PROJECT)
    recovered = [r for r in records(paths.events) if isinstance(r.body, RecoveredTornTail)]
    print(f"{len(acked)} acknowledged events, {len(recovered)} recovered tails")
