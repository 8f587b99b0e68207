"""What a person watching a campaign sees.

Every state change is a structlog event with a stable name (``task.claimed``,
``step.dispatched``, ``review.finished``, ``rework.dispatched``, ``task.merged``,
``task.finished``, ...): JSON lines when stderr is not a terminal, for ``jq`` and log shippers.
On a terminal a live board is redrawn instead: done / failed / running tasks, each running
step's elapsed time and the last line of its output, and a summary table at the end.
"""

from __future__ import annotations

import contextlib
import logging
import os
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import TextIO

import anyio
import structlog

from .log import get_logger

log = get_logger("runner.campaign")

TAIL_BYTES = 4096


@dataclass
class _Row:
    key: str
    state: str = "queued"
    started: float = 0.0
    detail: str = ""
    stdout: Path | None = None


@dataclass
class Board:
    """The reporter of a campaign: logs every event and keeps a row per task for the view."""

    rows: dict[str, _Row] = field(default_factory=dict)
    done: int = 0
    failed: int = 0
    events: int = 0
    quiet_log: bool = False

    def emit(self, event: str, task_id: str, **fields: object) -> None:
        self.events += 1
        if not self.quiet_log:
            log.info(event, task_id=task_id, **fields)
        if task_id == "-":
            return
        row = self.rows.setdefault(task_id, _Row(task_id))
        if event == "task.claimed":
            row.state, row.started, row.detail = "running", time.monotonic(), ""
        elif event == "step.dispatched":
            row.stdout = Path(str(fields.get("stdout"))) if fields.get("stdout") else None
            row.detail = f"round {fields.get('round')}"
        elif event == "review.finished":
            row.detail = f"review {fields.get('verdict')}"
        elif event == "rework.dispatched":
            row.detail = f"rework {fields.get('round')}: {fields.get('reason')}"
        elif event == "task.finished":
            status = str(fields.get("status"))
            row.state, row.detail, row.stdout = status, str(fields.get("reason", "")), None
            self.done += status == "completed"
            self.failed += status == "failed"
        elif event == "task.interrupted":
            row.state, row.stdout = "interrupted", None
        elif event == "task.backoff":
            row.detail = f"retry in {fields.get('delay_sec')} s"

    def render(self, width: int) -> list[str]:
        running = [r for r in self.rows.values() if r.state == "running"]
        lines = [
            f"done {self.done}  failed {self.failed}  running {len(running)}  "
            f"(events {self.events})"
        ]
        now = time.monotonic()
        for row in running:
            last = last_line(row.stdout) if row.stdout else ""
            text = f"  {row.key:<20} {now - row.started:6.1f}s  {row.detail:<24} {last}"
            lines.append(text[: width - 1])
        return lines

    def summary(self) -> list[str]:
        lines = [f"{'task':<24} {'status':<12} detail", f"{'-' * 24} {'-' * 12} {'-' * 30}"]
        for row in self.rows.values():
            lines.append(f"{row.key:<24} {row.state:<12} {row.detail[:80]}")
        return lines


def last_line(path: Path) -> str:
    """The last non-empty line of a growing output file (reads only its tail)."""
    try:
        with path.open("rb") as f:
            f.seek(0, os.SEEK_END)
            size = f.tell()
            f.seek(max(0, size - TAIL_BYTES))
            tail = f.read()
    except OSError:
        return ""
    for line in reversed(tail.splitlines()):
        text = line.decode("utf-8", "replace").strip()
        if text:
            return "".join(ch if ch.isprintable() else "?" for ch in text)[:120]
    return ""


async def redraw(board: Board, stream: TextIO, *, interval: float = 0.5) -> None:
    """Redraw the board in place until cancelled (a terminal only)."""
    drawn = 0
    try:
        while True:
            width = _width(stream)
            lines = board.render(width)
            out = "\x1b[F\x1b[2K" * drawn + "\n".join(lines) + "\n"
            stream.write(out)
            stream.flush()
            drawn = len(lines)
            await anyio.sleep(interval)
    finally:
        if drawn:
            stream.write("\x1b[F\x1b[2K" * drawn)
            stream.flush()


@contextlib.contextmanager
def quiet_logs() -> Iterator[None]:
    """Only warnings and errors are logged while the board is drawn: the board redraws by
    moving the cursor up over the lines it drew, so info lines printed in between would be
    erased in its place and the board left in pieces (``--no-live`` gives the log lines)."""
    wrapper = structlog.get_config()["wrapper_class"]
    level: int = structlog.get_logger().get_effective_level()
    if level < logging.WARNING:
        structlog.configure(wrapper_class=structlog.make_filtering_bound_logger(logging.WARNING))
    try:
        yield
    finally:
        structlog.configure(wrapper_class=wrapper)


def _width(stream: TextIO) -> int:
    try:
        return os.get_terminal_size(stream.fileno()).columns
    except (OSError, ValueError, AttributeError):
        return 100


def is_terminal(stream: TextIO = sys.stderr) -> bool:
    try:
        return stream.isatty()
    except (AttributeError, ValueError):
        return False
