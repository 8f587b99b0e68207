"""A ledger writer process for the concurrency tests: appends `count` attempts to its own task,
each through its own open and close of the ledger (so every append contends for the lock),
and prints each acknowledgement (`task seq hash`) as soon as it has it. It prints `ready` and
waits for a line on stdin first, so that a test can start every writer's appends at once.
Between appends it pauses a little longer than a waiting writer's poll of the lock
(`ledger.lock.POLL_S`): the lock is not fair, and a writer that took it again at once, every
time, would let the others in only by chance.

    python tests/adversarial/ledger_hammer.py ROOT PROJECT TASK COUNT
"""

from __future__ import annotations

import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from ledger.lock import POLL_S
from ledger.sync import WorkflowLogger


def main(root: str, project: str, task: str, count: int) -> None:
    log = WorkflowLogger(root, project, mode="durable", lock_timeout=60, create=False)
    print("ready", flush=True)
    sys.stdin.readline()
    for s in range(count):
        got = log.log_attempt(
            task, 0, s, result="FAIL", reason_code="RETRY", code_content=f"{task} {s}\n" * 50
        )
        print(task, got.seq, got.event_hash, flush=True)
        time.sleep(POLL_S * 1.5)


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2], sys.argv[3], int(sys.argv[4]))
