"""Verify with worker processes: the same report as in one process, damage or not."""

from __future__ import annotations

import os
import re
import signal
from collections.abc import Callable
from concurrent.futures import wait
from pathlib import Path
from typing import Any

import anyio
import msgspec
import pytest

import ledger.task_pool
import ledger.verify
from ledger.archive import import_project
from ledger.errors import LedgerError, UnsafeArchive
from ledger.store import ProjectPaths
from ledger.sync import WorkflowLogger
from ledger.task_pool import TaskChecks, available_cpus, cgroup_cpu_quota
from ledger.verify import verify_project
from ledger.writer import open_ledger
from protocol.ledger_events import TaskRecord
from tests.ledger.conftest import PROJECT, attempt, crash_image, listing, populate
from tests.ledger.test_archive import hostile_zips
from tests.ledger.test_verify import read_lines, rechain, write_lines


@pytest.fixture(autouse=True)
def always_parallel(monkeypatch: pytest.MonkeyPatch) -> None:
    """The fixtures' ledgers are small: use the workers anyway."""
    monkeypatch.setattr(ledger.task_pool, "PARALLEL_BYTES", 0)


@pytest.fixture
def checked_here(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """The task chains checked in this process (the workers import their own module)."""
    names: list[str] = []
    check = ledger.task_pool.check_task

    def counting(paths: ProjectPaths, chain_id: str, task_id: str, *rest: object) -> object:
        names.append(task_id)
        return check(paths, chain_id, task_id, *rest)  # type: ignore[arg-type]

    monkeypatch.setattr(ledger.task_pool, "check_task", counting)
    return names


def flip_task_byte(project: ProjectPaths, tmp_path: Path) -> ProjectPaths:
    path = project.task_events("T-1")
    lines = read_lines(path)
    lines[2] = lines[2].replace(b'"r":1', b'"r":2', 1)
    write_lines(path, lines)
    return project


def rehash_task_alone(project: ProjectPaths, tmp_path: Path) -> ProjectPaths:
    path = project.task_events("T-0")
    lines = read_lines(path)
    lines[2] = lines[2].replace(b'"worker_backend":"mock"', b'"worker_backend":"evil"')
    write_lines(path, rechain(lines, TaskRecord))
    return project


def break_project_chain(project: ProjectPaths, tmp_path: Path) -> ProjectPaths:
    lines = read_lines(project.events)
    lines[1] = lines[1].replace(b'"campaign_id":"c1"', b'"campaign_id":"c9"')
    write_lines(project.events, lines)
    return project


def odd_task_dirs(project: ProjectPaths, tmp_path: Path) -> ProjectPaths:
    (project.tasks / "bad name").mkdir()
    project.task_events("T-2").rename(project.tasks / "T-2" / "moved.jsonl")
    return project


def unlinked_end_after_a_crash(project: ProjectPaths, tmp_path: Path) -> ProjectPaths:
    image = crash_image(project.root, tmp_path / "image", [("T-1", attempt(2, 0))])
    # The kill landed after the task line, before the line that links it.
    write_lines(image.events, read_lines(image.events)[:-1])
    return image


def untouched(project: ProjectPaths, tmp_path: Path) -> ProjectPaths:
    return project


NAMES = ["T-0", "T-1", "T-2"]
DAMAGE: list[Callable[[ProjectPaths, Path], ProjectPaths]] = [
    untouched,
    flip_task_byte,
    rehash_task_alone,
    break_project_chain,
    odd_task_dirs,
    unlinked_end_after_a_crash,
]


@pytest.mark.parametrize("damage", DAMAGE, ids=lambda f: f.__name__)
def test_workers_report_what_one_process_reports(
    project: ProjectPaths, tmp_path: Path, damage: Callable[[ProjectPaths, Path], ProjectPaths]
) -> None:
    paths = damage(project, tmp_path)
    alone = verify_project(paths)
    shared = verify_project(paths, jobs=2)
    assert msgspec.json.encode(shared) == msgspec.json.encode(alone)
    assert alone.ok == (damage in (untouched, unlinked_end_after_a_crash)), alone


def test_workers_check_every_chain_of_a_clean_ledger(
    project: ProjectPaths, checked_here: list[str]
) -> None:
    # One chunk (the chains are small), sent to the worker before the project chain is read.
    report = verify_project(project, jobs=2)
    assert report.ok and len(report.task_heads) == 3
    assert checked_here == []


def test_a_chain_whose_end_the_project_chain_does_not_link_is_checked_again_here(
    project: ProjectPaths, tmp_path: Path, checked_here: list[str]
) -> None:
    image = unlinked_end_after_a_crash(project, tmp_path)
    report = verify_project(image, jobs=2)
    assert report.ok and any("never linked" in note for note in report.notes), report
    # The worker checked T-1 as if every event were linked; only the head says otherwise.
    assert checked_here == ["T-1"]


def test_this_process_takes_the_chunks_no_worker_was_sent(
    tmp_path: Path, checked_here: list[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(ledger.task_pool, "CHUNK_BYTES", 0)  # a chunk per chain
    paths = populate(tmp_path, tasks=8)
    names = paths.task_ids()
    alone = verify_project(paths)
    checked_here.clear()
    assert verify_project(paths, jobs=2) == alone
    # The worker was sent the first two chunks at once (one to work on, one waiting); it
    # needs a quarter of a second to start, so this process took the others, the last first.
    assert checked_here == names[::-1][: len(checked_here)]
    assert 1 <= len(checked_here) <= 6, checked_here


def test_a_writer_appending_during_verify_is_seen_as_one_process_sees_it(
    tmp_path: Path, checked_here: list[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    """`verify` takes no lock: a writer may append while it runs. The task chains a worker
    read before the project chain are then behind its links, and a new task's events are in
    the project chain but were not listed before it: both are checked (again) here."""
    paths = populate(tmp_path)
    read_project_chain = ledger.verify._verify_project_chain

    def meanwhile(*args: object) -> object:
        wait(list(sent))  # the workers have read the chains
        checked_here.clear()

        async def append() -> None:
            async with open_ledger(tmp_path, PROJECT) as log:
                await log.append_task_event("T-1", attempt(2, 0))
                await log.append_task_event("T-new", attempt(0, 0))

        anyio.run(append)
        return read_project_chain(*args)  # type: ignore[arg-type]

    sent: list[object] = []
    start = ledger.task_pool.TaskChecks._start

    def keep_futures(self: TaskChecks) -> None:
        start(self)
        sent.extend(self.sent.values())

    monkeypatch.setattr(ledger.task_pool.TaskChecks, "_start", keep_futures)
    monkeypatch.setattr(ledger.verify, "_verify_project_chain", meanwhile)
    report = verify_project(paths, jobs=2)
    assert report.ok, report.problems
    assert set(report.task_heads) == {"T-0", "T-1", "T-2", "T-new"}
    assert sorted(checked_here) == ["T-1", "T-new"]
    monkeypatch.undo()
    assert verify_project(paths) == report


def test_a_worker_killed_costs_only_time(
    tmp_path: Path, checked_here: list[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    paths = populate(tmp_path)
    alone = verify_project(paths)
    read_project_chain = ledger.verify._verify_project_chain
    pools: list[Any] = []
    enter = ledger.task_pool.TaskChecks.__enter__

    def keep_pool(self: TaskChecks) -> TaskChecks:
        pools.append(enter(self).pool)
        return self

    def kill_workers(*args: object) -> object:
        for process in list(pools[0]._processes.values()):
            os.kill(process.pid, signal.SIGKILL)
        return read_project_chain(*args)  # type: ignore[arg-type]

    monkeypatch.setattr(ledger.task_pool.TaskChecks, "__enter__", keep_pool)
    monkeypatch.setattr(ledger.verify, "_verify_project_chain", kill_workers)
    checked_here.clear()
    assert verify_project(paths, jobs=2) == alone
    assert checked_here == NAMES


def test_small_ledgers_are_checked_in_one_process(
    project: ProjectPaths, checked_here: list[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(ledger.task_pool, "PARALLEL_BYTES", 1 << 20)
    assert verify_project(project, jobs=2).ok
    assert checked_here == ["T-0", "T-1", "T-2"]


def test_export_and_import_verify_with_workers_and_refuse_damage(
    project: ProjectPaths, tmp_path: Path
) -> None:
    archive = WorkflowLogger(project.root, PROJECT).export_project(tmp_path / "p.zip", jobs=2)
    root = tmp_path / "imported"
    head = WorkflowLogger.import_project(root, archive, "copy", jobs=2).head
    assert verify_project(ProjectPaths.of(root, "copy"), jobs=2).project_head == head
    # A forger's archive: a changed task line with a manifest that tells the truth about it.
    edited = hostile_zips(archive)["edited-chain"](tmp_path / "edited.zip")
    before = listing(root)
    reason = re.escape("T-0/events.jsonl:1: event_hash does not match")
    with pytest.raises(UnsafeArchive, match=reason):
        import_project(root, edited, "forged", jobs=2)
    assert listing(root) == before
    path = project.task_events("T-1")
    path.write_bytes(path.read_bytes().replace(b'"result":"PASS"', b'"result":"FAIL"', 1))
    with pytest.raises(LedgerError, match="damaged"):
        WorkflowLogger(project.root, PROJECT).export_project(tmp_path / "d.zip", jobs=2)
    assert not (tmp_path / "d.zip").exists()


def cgroup_tree(tmp_path: Path, proc: str, files: dict[str, str]) -> tuple[Path, Path]:
    proc_cgroup = tmp_path / "proc-self-cgroup"
    proc_cgroup.write_text(proc)
    mount = tmp_path / "cgroup"
    for name, text in files.items():
        (mount / name).parent.mkdir(parents=True, exist_ok=True)
        (mount / name).write_text(text)
    return proc_cgroup, mount


@pytest.mark.parametrize(
    ("proc", "files", "quota"),
    [
        # v2: the tightest of the cgroup and its ancestors.
        ("0::/a/b\n", {"a/b/cpu.max": "150000 100000\n", "a/cpu.max": "max 100000\n"}, 1.5),
        ("0::/a/b\n", {"a/b/cpu.max": "max 100000\n", "a/cpu.max": "50000 100000\n"}, 0.5),
        ("0::/a\n", {"a/cpu.max": "max 100000\n", "cpu.max": "max 100000\n"}, None),
        # Hybrid: v1 controllers beside v2 mounted at `unified`; v1's quota -1 is none.
        (
            "4:memory:/x\n1:cpu,cpuacct:/x\n0::/x\n",
            {
                "cpu,cpuacct/x/cpu.cfs_quota_us": "300000\n",
                "cpu,cpuacct/x/cpu.cfs_period_us": "100000\n",
                "cpu,cpuacct/cpu.cfs_quota_us": "-1\n",
                "unified/x/cpu.stat": "",
            },
            3.0,
        ),
        ("1:cpu:/\n0::/\n", {"cpu/cpu.cfs_quota_us": "-1\n", "cpu/cpu.cfs_period_us": "1"}, None),
        # Another cgroup namespace: the path is not under the mount, its root still counts.
        ("0::/elsewhere/c\n", {"cpu.max": "200000 100000\n"}, 2.0),
        # Unreadable or odd files are no quota, not an error.
        ("0::/a\n", {"a/cpu.max": "garbage\n"}, None),
        ("not a cgroup file\n", {}, None),
    ],
)
def test_cgroup_cpu_quota(
    tmp_path: Path, proc: str, files: dict[str, str], quota: float | None
) -> None:
    assert cgroup_cpu_quota(*cgroup_tree(tmp_path, proc, files)) == quota


def test_available_cpus_is_capped_by_the_quota(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    affinity = available_cpus()
    tree = cgroup_tree(tmp_path, "0::/\n", {"cpu.max": "50000 100000\n"})
    monkeypatch.setattr(ledger.task_pool, "cgroup_cpu_quota", lambda: cgroup_cpu_quota(*tree))
    assert available_cpus() == 1  # half a CPU still gets one
    (tmp_path / "cgroup" / "cpu.max").write_text(f"{(affinity + 4) * 100000} 100000\n")
    assert available_cpus() == affinity  # a quota above the affinity changes nothing
