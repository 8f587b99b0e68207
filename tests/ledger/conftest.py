"""Fixtures that build real ledgers on disk through the real writer."""

from __future__ import annotations

import shutil
from collections.abc import Callable
from pathlib import Path

import anyio
import pytest

from ledger.store import ProjectPaths
from ledger.writer import Mode, open_ledger
from protocol import AttemptKind, Verdict
from protocol.ledger_events import (
    Attempt,
    AttemptStarted,
    CampaignStarted,
    FileRef,
    FinalStatus,
    ReviewRecorded,
    TaskClosed,
)
from protocol.qa_review import QAReason, ReviewVerdict

PROJECT = "proj"


def attempt(r: int, s: int, **kw: object) -> Attempt:
    fields: dict[str, object] = {"result": Verdict.PASS, "reason_code": "PASS_ALL_CRITERIA"}
    fields.update(kw)
    return Attempt(r=r, s=s, **fields)  # type: ignore[arg-type]


def populate(root: Path, *, tasks: int = 3, mode: Mode = "buffered") -> ProjectPaths:
    """A project with `tasks` tasks, each with a few attempts, a review and a close, and some
    run-level events in between."""

    async def main() -> None:
        async with open_ledger(root, PROJECT, create=True, mode=mode) as ledger:
            await ledger.append_project_event(CampaignStarted(campaign_id="c1"))
            for i in range(tasks):
                t = f"T-{i}"
                await ledger.append_task_event(t, attempt(0, 0, code_content="x = 1\n"))
                await ledger.append_task_event(t, attempt(0, 1))
                await ledger.append_task_event(
                    t, AttemptStarted(r=1, s=0, kind=AttemptKind.REVISION, worker_backend="mock")
                )
                await ledger.append_task_event(t, attempt(1, 0, next_action="Close task"))
                await ledger.append_task_event(
                    t,
                    ReviewRecorded(
                        r=1, s=0, verdict=ReviewVerdict.PASS,
                        reason_codes=[QAReason.PASS_ALL_GATES],
                        review=FileRef(path="artifacts/review.json", sha256="a" * 64),
                    ),
                )  # fmt: skip
                if i % 2 == 0:
                    await ledger.append_task_event(
                        t, TaskClosed(final_status=FinalStatus.ACCEPTED, summary="ok")
                    )

    anyio.run(main)
    return ProjectPaths.of(root, PROJECT)


def crash_image(root: Path, dest: Path, bodies: list[tuple[str | None, object]]) -> ProjectPaths:
    """The project as a kill would leave it right after `bodies` were acknowledged: a copy
    taken while the writer runs (its journal still holds the batches since the last
    checkpoint). Tests then cut the copy's chain files back to where the kill landed."""

    async def main() -> None:
        async with open_ledger(root, PROJECT, mode="buffered") as ledger:
            for task_id, body in bodies:
                if task_id is None:
                    await ledger.append_project_event(body)
                else:
                    await ledger.append_task_event(task_id, body)
            await ledger.flush()  # the kill comes after the chain writes; tests cut them back
            shutil.copytree(ledger.paths.dir, dest / PROJECT)

    anyio.run(main)
    return ProjectPaths.of(dest, PROJECT)


def listing(path: Path) -> list[str]:
    """Everything under `path`, relative, sorted (to show that nothing was written)."""
    return sorted(p.relative_to(path).as_posix() for p in path.rglob("*"))


@pytest.fixture
def project(tmp_path: Path) -> ProjectPaths:
    return populate(tmp_path)


@pytest.fixture
def run() -> Callable[..., object]:
    return anyio.run


@pytest.fixture
def project_root(tmp_path: Path) -> Path:
    async def main() -> None:
        async with open_ledger(tmp_path, PROJECT, create=True, mode="buffered") as ledger:
            await ledger.append_task_event("T", attempt(0, 0))

    anyio.run(main)
    return tmp_path
