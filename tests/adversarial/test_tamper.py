"""Tampering with each chain (project and task), at seeded random places: flip one byte,
delete, duplicate, reorder, insert a forged line with a correct-looking hash, truncate, and
rewrite the tail with a recomputed chain. Each is found, with the file and the line; the
consistent rewrite of both chains only against a head kept elsewhere (`--expect-head`)."""

from __future__ import annotations

import json
import random
import shutil
from collections.abc import Callable
from pathlib import Path

import msgspec
import pytest
from click.testing import CliRunner

from ledger import init_project
from ledger.canonical import canonical
from ledger.chain import link_json, seal, seal_links_line, seal_project_line, seal_task_line
from ledger.store import ProjectPaths
from ledger.verify import verify_project
from ledger.writer import utc_now
from protocol import AttemptPointer
from protocol.ledger_events import (
    GENESIS_HASH,
    CampaignStarted,
    ExecutionStarted,
    ProjectRecord,
    TaskEventsLinked,
    TaskRecord,
)
from runner.cli import main
from tests.adversarial.trials import trials
from tests.ledger.conftest import PROJECT, attempt, populate
from tests.ledger.test_verify import read_lines, rechain, write_lines

Lines = list[bytes]
PLACES = trials(10, 100)  # random places per chain and attack
CHAINS = ["project", "task"]
OLD_TS = "2000-01-01T00:00:00.000000Z"
ATTACKS = ["flip", "delete", "duplicate", "reorder", "forge", "truncate", "rewrite"]


@pytest.fixture(scope="module")
def template(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A finished ledger of six tasks, copied for every trial."""
    root = tmp_path_factory.mktemp("tamper-template")
    populate(root, tasks=6)
    return root


def target(paths: ProjectPaths, chain: str, rng: random.Random) -> Path:
    if chain == "project":
        return paths.events
    return paths.task_events(rng.choice(sorted(paths.task_ids())))


def decoder(chain: str) -> msgspec.json.Decoder[ProjectRecord] | msgspec.json.Decoder[TaskRecord]:
    return msgspec.json.Decoder(ProjectRecord if chain == "project" else TaskRecord)


# Each attack edits `lines` in place of the file and returns the 1-based line where the damage
# must be reported (None: only against the expected head).


def flip(lines: Lines, chain: str, rng: random.Random) -> int:
    i = rng.randrange(len(lines))
    at = rng.randrange(len(lines[i]) - 1)  # any byte but the line's own newline
    line = bytearray(lines[i])
    line[at] ^= rng.randrange(1, 256)
    lines[i] = bytes(line)
    return i + 1


def delete(lines: Lines, chain: str, rng: random.Random) -> int:
    i = rng.randrange(1, len(lines) - 1)  # the last line's deletion is a truncation
    del lines[i]
    return i + 1


def duplicate(lines: Lines, chain: str, rng: random.Random) -> int:
    i = rng.randrange(len(lines))
    lines.insert(i + 1, lines[i])
    return i + 2


def reorder(lines: Lines, chain: str, rng: random.Random) -> int:
    i = rng.randrange(len(lines) - 1)
    lines[i], lines[i + 1] = lines[i + 1], lines[i]
    return i + 1


def forge(lines: Lines, chain: str, rng: random.Random) -> int:
    """A line sealed as the writer seals one: canonical, its hash right, linked to the line
    before it, and an event the rules allow there (the project chain: a run-level event; a
    task chain: the event that comes next, as if recorded twice). Inserted before the last
    line, so the chain must go on after it: the line after it no longer follows."""
    i = rng.randrange(len(lines) - 1)
    dec = decoder(chain)
    before, after = dec.decode(lines[i]), dec.decode(lines[i + 1])
    body = ExecutionStarted(detail="forged") if chain == "project" else after.body
    record = msgspec.structs.replace(
        after, seq=before.seq + 1, prev_event_hash=before.event_hash, body=body
    )
    _, line = seal(record, dec)  # type: ignore[arg-type]
    lines.insert(i + 1, line)
    return i + 3


def truncate(lines: Lines, chain: str, rng: random.Random) -> int:
    """Cut the file at a random byte after the first line (maybe mid-line)."""
    data = b"".join(lines)
    cut = rng.randrange(len(lines[0]) + 1, len(data))
    kept = data[:cut].splitlines(keepends=True)
    lines[:] = kept
    if kept[-1].endswith(b"\n"):
        return len(kept) + 1  # whole lines: the chain ends where the links say it goes on
    return len(kept)  # a torn last line


def rewrite(lines: Lines, chain: str, rng: random.Random) -> None:
    """Change one event (its time) and recompute every hash from there on, as a forger holding
    the file would (`relink` does the same to the project chain for a task chain's rewrite)."""
    i = rng.randrange(1, len(lines))
    record = decoder(chain).decode(lines[i])
    lines[i] = msgspec.json.encode(msgspec.structs.replace(record, ts=OLD_TS)) + b"\n"
    lines[:] = rechain(lines, ProjectRecord if chain == "project" else TaskRecord)


ATTACK: dict[str, Callable[[Lines, str, random.Random], int | None]] = {
    "flip": flip,
    "delete": delete,
    "duplicate": duplicate,
    "reorder": reorder,
    "forge": forge,
    "truncate": truncate,
    "rewrite": rewrite,
}


def relink(paths: ProjectPaths, task_file: Path) -> None:
    """After a task chain's rewrite: make its project links say the new hashes, and recompute
    the project chain, as a forger holding both files would."""
    task_id = task_file.parent.name
    hashes = [msgspec.json.decode(x, type=TaskRecord).event_hash for x in read_lines(task_file)]
    dec = msgspec.json.Decoder(ProjectRecord)
    out = []
    for line in read_lines(paths.events):
        record = dec.decode(line)
        body = record.body
        if isinstance(body, TaskEventsLinked):
            events = [
                msgspec.structs.replace(e, task_event_hash=hashes[e.task_seq])
                if e.task_id == task_id
                else e
                for e in body.events
            ]
            record = msgspec.structs.replace(record, body=TaskEventsLinked(events))
        out.append(msgspec.json.encode(record) + b"\n")
    write_lines(paths.events, rechain(out, ProjectRecord))


def verify_cli(paths: ProjectPaths, *extra: str) -> tuple[int, str]:
    result = CliRunner().invoke(
        main,
        ["ledger", "--root-dir", str(paths.root), "--project-id", PROJECT, "verify", *extra],
        catch_exceptions=False,
    )
    return result.exit_code, result.output


@pytest.mark.parametrize("attack", ATTACKS)
@pytest.mark.parametrize("chain", CHAINS)
def test_tampering_is_found_with_file_and_line(
    template: Path, tmp_path: Path, chain: str, attack: str
) -> None:
    for place in range(PLACES):
        rng = random.Random(f"{chain}-{attack}-{place}")
        root = tmp_path / str(place)
        shutil.copytree(template, root)
        paths = ProjectPaths.of(root, PROJECT)
        before = verify_project(paths)
        assert before.ok and before.project_head is not None
        head = before.project_head
        path = target(paths, chain, rng)
        lines = read_lines(path)
        line = ATTACK[attack](lines, chain, rng)
        write_lines(path, lines)
        where = f"{attack} of {path.relative_to(root)} (trial {place})"
        if attack == "rewrite":
            if chain == "task":
                relink(paths, path)
            assert verify_project(paths).ok, f"{where}: a consistent rewrite verifies alone"
            path, line = paths.events, None
        report = verify_project(paths, expect_heads=(head,))
        assert report.problems, f"{where}: not found"
        first = report.problems[0]
        assert first.path == str(path), (where, report.problems)
        if line is not None:
            assert first.line == line, (where, report.problems)
        else:
            assert first.line == head.seq + 1 and "rewritten" in first.reason, report.problems
        if place == 0:  # the command line says the same, exit 1
            code, out = verify_cli(paths, "--expect-head", str(head))
            assert code == 1, out
            assert f"damage: {first.path}:{first.line}: " in out, out
        shutil.rmtree(root)


def test_a_link_naming_another_event_type_is_found(template: Path, tmp_path: Path) -> None:
    """A forger holding the project chain makes a link say `review` for an `attempt` (and
    re-seals the chain): the hashes agree, the types do not."""
    shutil.copytree(template, tmp_path / "root")
    paths = ProjectPaths.of(tmp_path / "root", PROJECT)
    dec = msgspec.json.Decoder(ProjectRecord)
    out, changed = [], None
    for line in read_lines(paths.events):
        record = dec.decode(line)
        body = record.body
        if changed is None and isinstance(body, TaskEventsLinked):
            event = body.events[0]
            assert event.task_event_type == "attempt"
            changed = (event.task_id, record.seq)
            forged = msgspec.structs.replace(event, task_event_type="review")
            record = msgspec.structs.replace(
                record, body=TaskEventsLinked([forged, *body.events[1:]])
            )
        out.append(msgspec.json.encode(record) + b"\n")
    assert changed is not None
    write_lines(paths.events, rechain(out, ProjectRecord))
    report = verify_project(paths)
    assert [p.path for p in report.problems] == [str(paths.task_events(changed[0]))]
    assert "differs from its link" in report.problems[0].reason


def test_a_link_hash_of_the_wrong_length_is_found(tmp_path: Path) -> None:
    """Verify compares a link's hash with the task event's as part of a string: a link whose
    hash is one digit longer could borrow the next part, and pass for a task event whose
    `project_seq` points elsewhere (here line 11, a `campaign_started`). Such a link is not
    a valid record."""
    paths = init_project(tmp_path, "p")
    genesis = paths.events.read_bytes()
    head = json.loads(genesis)["event_hash"].encode()
    ts, chain = utc_now().encode(), b"p"
    digest, task_line = seal_task_line(
        canonical(attempt(0, 0)), False, False, AttemptPointer(0, 0), GENESIS_HASH.encode(),
        chain, 11, 0, b"T", ts,
    )  # fmt: skip
    head_str, links = seal_links_line(
        [link_json(b"T", 0, digest + "1", b"attempt")], head, chain, 1, ts
    )
    lines = [genesis, links]
    for seq in range(2, 12):
        body = canonical(CampaignStarted(campaign_id=f"c{seq}"))
        head_str, line = seal_project_line(body, head_str.encode(), chain, seq, ts)
        lines.append(line)
    paths.events.write_bytes(b"".join(lines))
    paths.task_events("T").parent.mkdir(parents=True)
    paths.task_events("T").write_bytes(task_line)
    report = verify_project(paths)
    assert [(p.path, p.line) for p in report.problems] == [(str(paths.events), 2)]
    assert "length" in report.problems[0].reason
