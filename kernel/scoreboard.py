"""Scoreboard and trends: counters over the queue, a bounded series of them, a summary.

`score` derives the counters from the queue itself (so they can never drift from it); only
`last_selected` is carried over from the previous scoreboard, because the queue does not
remember which task was picked last. `summary_markdown` is what a person reads first.
"""

from __future__ import annotations

from collections.abc import Sequence

import msgspec

from protocol import (
    LastSelected,
    QueueTask,
    Scoreboard,
    StatusCounts,
    TaskQueue,
    TaskStatus,
    TrendPoint,
    Trends,
)

from .triage import add_spend, select_next

MAX_TREND_POINTS = 1000
"""Trends keep the newest points only, so the file stays small on a long campaign."""


def score(
    queue: TaskQueue,
    *,
    now: str,
    previous: Scoreboard | None = None,
    selected: LastSelected | None = None,
) -> Scoreboard:
    """The scoreboard for `queue` at `now`; `selected` replaces the previous last selection."""
    counts = count(queue.tasks)
    finished = counts.completed + counts.failed
    spend = None
    for task in queue.tasks:
        spend = add_spend(spend, task.spend)
    last = selected or (previous.last_selected if previous else None)
    return Scoreboard(
        updated_at=now,
        total=len(queue.tasks),
        counts=counts,
        attempts=sum(t.attempts for t in queue.tasks),
        reworks=sum(t.reworks for t in queue.tasks),
        pass_rate=round(counts.completed / finished, 4) if finished else None,
        last_selected=last,
        input_tokens=spend.input_tokens if spend else 0,
        output_tokens=spend.output_tokens if spend else 0,
        cost_micro_usd=spend.cost_micro_usd if spend else None,
    )


def count(tasks: Sequence[QueueTask]) -> StatusCounts:
    tally = dict.fromkeys((s.value for s in TaskStatus), 0)
    for task in tasks:
        tally[task.status.value] += 1
    return StatusCounts(**tally)


def append_trend(
    trends: Trends, board: Scoreboard, *, limit: int = MAX_TREND_POINTS, selected: str | None = None
) -> Trends:
    """`trends` with a point for `board` added (the oldest dropped beyond `limit`)."""
    if limit < 1:
        raise ValueError("limit must be at least 1")
    point = TrendPoint(
        at=board.updated_at or "",
        total=board.total,
        counts=board.counts,
        attempts=board.attempts,
        reworks=board.reworks,
        pass_rate=board.pass_rate,
        selected=selected,
    )
    return msgspec.structs.replace(trends, points=[*trends.points, point][-limit:])


def summary_markdown(
    queue: TaskQueue, board: Scoreboard, trends: Trends, *, recent: int = 5
) -> str:
    """A readable ``summary.md``: counters, what runs next and why, every task, recent trend."""
    c = board.counts
    rate = "n/a" if board.pass_rate is None else f"{board.pass_rate:.0%}"
    lines = [
        "# Progress summary",
        "",
        f"Updated {board.updated_at or '(never)'}.",
        "",
        "| tasks | pending | in progress | completed | failed | blocked | cancelled |",
        "| ---: | ---: | ---: | ---: | ---: | ---: | ---: |",
        f"| {board.total} | {c.pending} | {c.in_progress} | {c.completed} | {c.failed} "
        f"| {c.blocked} | {c.cancelled} |",
        "",
        f"- attempts: {board.attempts}, reworks: {board.reworks}",
        f"- pass rate (completed / finished): {rate}",
    ]
    if board.input_tokens or board.output_tokens:
        lines.append(f"- tokens: {board.input_tokens} in, {board.output_tokens} out")
    if board.cost_micro_usd is not None:
        lines.append(f"- cost: ${board.cost_micro_usd / 1_000_000:.2f}")
    if board.last_selected is not None:
        last = board.last_selected
        lines.append(f"- last selected: {last.key} (run {last.run_id}, {last.at})")
    selection = select_next(queue)
    lines += ["", "## Next", ""]
    if selection.key is not None:
        order = ", ".join(selection.eligible)
        lines.append(f"`{selection.key}` is next; eligible in order: {order}.")
    else:
        lines.append(f"Nothing is eligible ({selection.state}).")
    lines += ["", "## Tasks", "", "| key | status | priority | attempts | reworks | note |"]
    lines.append("| --- | --- | ---: | ---: | ---: | --- |")
    skipped = {s.key: s for s in selection.skipped}
    for task in queue.tasks:
        note = task.last_reason or ""
        if task.status is TaskStatus.PENDING and task.key in skipped:
            note = "; ".join(skipped[task.key].reasons)
        lines.append(
            f"| {task.key} | {task.status.value} | {task.priority} | "
            f"{task.attempts}/{task.max_attempts} | {task.reworks} | {_cell(note)} |"
        )
    points = trends.points[-recent:]
    if points:
        lines += ["", f"## Trend (last {len(points)})", ""]
        lines += ["| at | completed | failed | pending | attempts | pass rate | selected |"]
        lines.append("| --- | ---: | ---: | ---: | ---: | ---: | --- |")
        for p in points:
            prate = "n/a" if p.pass_rate is None else f"{p.pass_rate:.0%}"
            lines.append(
                f"| {p.at} | {p.counts.completed} | {p.counts.failed} | {p.counts.pending} "
                f"| {p.attempts} | {prate} | {p.selected or ''} |"
            )
    return "\n".join(lines) + "\n"


def _cell(text: str) -> str:
    """Text safe inside a markdown table cell."""
    return " ".join(text.split()).replace("|", "\\|")
