"""A writer for the crash test: appends forever from several producers, printing each
acknowledgement (`task seq hash`, `-` for project events) as soon as it has it.

    python tests/ledger/crash_writer.py ROOT PROJECT MODE
"""

from __future__ import annotations

import sys
from pathlib import Path

import anyio
import structlog

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from ledger import Ledger, open_ledger
from protocol import FIRST_ATTEMPT, Verdict
from protocol.ledger_events import Attempt, ExecutionStarted

PRODUCERS = 6


async def produce(ledger: Ledger, n: int) -> None:
    task = f"T-{n}"
    while True:
        last = ledger.task_state(task).pointer
        nxt = FIRST_ATTEMPT if last is None else last.retry()
        body = Attempt(r=nxt.r, s=nxt.s, result=Verdict.FAIL, reason_code="RETRY",
                       code_content="x" * 700)  # fmt: skip
        got = await ledger.append_task_event(task, body)
        print(task, got.seq, got.event_hash, flush=True)
        if n == 0:
            got = await ledger.append_project_event(ExecutionStarted(detail="tick"))
            print("-", got.seq, got.event_hash, flush=True)


async def main(root: str, project: str, mode: str) -> None:
    async with (
        open_ledger(root, project, create=True, mode=mode) as ledger,  # type: ignore[arg-type]
        anyio.create_task_group() as tg,
    ):
        for n in range(PRODUCERS):
            tg.start_soon(produce, ledger, n)


if __name__ == "__main__":
    # stdout carries only acknowledgements.
    structlog.configure(logger_factory=structlog.PrintLoggerFactory(sys.stderr))
    anyio.run(main, *sys.argv[1:4])
