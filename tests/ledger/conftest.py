"""Fixtures that build real ledgers on disk through the real writer."""

from __future__ import annotations

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


def listing(path: Path) -> list[str]:
    """Everything under `path`, relative, sorted (to show that nothing was written)."""
    return sorted(p.relative_to(path).as_posix() for p in path.rglob("*"))


@pytest.fixture
def project(tmp_path: Path) -> ProjectPaths:
    return populate(tmp_path)


@pytest.fixture
def run() -> Callable[..., object]:
    return anyio.run
