"""`task_log.md`: a task's chain rendered for people. Derived from the chain, never read back,
rebuilt whole whenever it is written (so it cannot drift from the events), and never from a
chain that does not check out."""

from __future__ import annotations

from collections.abc import Iterator

from protocol.ledger_events import (
    Attempt,
    AttemptInterrupted,
    AttemptStarted,
    ReviewRecorded,
    ReworkDispatched,
    StepOutcomeRecorded,
    TaskClosed,
    TaskRecord,
)

from .envelopes import TaskLine
from .scan import ChainScanner, blocks
from .store import ProjectPaths, read_manifest, write_file_atomic


def _fence(text: str) -> list[str]:
    ticks = "```"
    while ticks in text:
        ticks += "`"
    return [ticks, text.rstrip("\n"), ticks]


def _items(title: str, values: list[str]) -> list[str]:
    return [f"- {title}:", *(f"  - `{v}`" for v in values)] if values else []


def _event_lines(record: TaskLine) -> list[str]:
    body = record.body
    head = f"### {record.seq}. {type(body).__struct_config__.tag} ({record.ts})"
    out = [head, ""]
    if isinstance(body, Attempt):
        out += [
            f"- pointer: R{body.r}/S{body.s}",
            f"- result: {body.result} ({body.reason_code})",
            *([f"- reason: {body.reason_detail}"] if body.reason_detail else []),
            *([f"- next action: {body.next_action}"] if body.next_action else []),
            *([f"- change: {body.code_change_summary}"] if body.code_change_summary else []),
            *([f"- artifact: `{body.code_artifact_ref}`"] if body.code_artifact_ref else []),
            *([f"- tests: {body.test_results}"] if body.test_results else []),
            *_items("acceptance", body.acceptance_snapshot),
            *_items("files", body.executed_files),
            *_items("commands", body.executed_commands),
        ]
        if body.code_content:
            out += ["", *_fence(body.code_content)]
    elif isinstance(body, AttemptStarted):
        out.append(f"- R{body.r}/S{body.s} {body.kind} on `{body.worker_backend}`")
    elif isinstance(body, StepOutcomeRecorded):
        out.append(f"- {body.reason}, exit {body.exit_code}, {body.duration_ms} ms")
    elif isinstance(body, ReviewRecorded):
        codes = ", ".join(body.reason_codes)
        out.append(f"- {body.verdict}: {codes} (`{body.review.path}` {body.review.sha256[:12]})")
    elif isinstance(body, ReworkDispatched):
        out.append(f"- rework pack `{body.rework_pack.path}` {body.rework_pack.sha256[:12]}")
    elif isinstance(body, AttemptInterrupted):
        out.append(f"- R{body.r}/S{body.s}: {body.reason}")
    elif isinstance(body, TaskClosed):
        out.append(f"- final status: {body.final_status}")
        if body.summary:
            out.append(f"- summary: {body.summary}")
    out += [f"- hash: `{record.event_hash}`", ""]
    return out


def task_records(paths: ProjectPaths, task_id: str) -> Iterator[TaskLine]:
    """A task chain's records, checked as verify checks them (its links to the project chain
    aside): a log must not show a changed event as recorded. Raises `ChainBroken` naming the
    file and line; a torn last line (never acknowledged) is left out."""
    path = paths.task_events(task_id)
    identity = {"project_id": read_manifest(paths).chain_project_id, "task_id": task_id}
    scanner = ChainScanner(path, TaskRecord, TaskLine, identity)
    for block, whole in blocks(path):
        if not whole:
            return
        checked = scanner.check(block)
        yield from checked.records
        if checked.error is not None:
            raise checked.error


def render_task_log(paths: ProjectPaths, task_id: str) -> str:
    lines = [f"# Task {task_id}", "", f"Project `{paths.project_id}`. Rendered from "
             "`events.jsonl`; the chain is the record, this file is not.", ""]  # fmt: skip
    for record in task_records(paths, task_id):
        lines += _event_lines(record)
    return "\n".join(lines)


def write_task_log(paths: ProjectPaths, task_id: str) -> None:
    write_file_atomic(paths.task_log(task_id), render_task_log(paths, task_id).encode())
