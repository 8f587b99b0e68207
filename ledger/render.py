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


def _text(title: str, value: str) -> list[str]:
    """A free-text member (an agent wrote it) as one item: on its line when it is one line,
    else fenced under the item, so that its own lines (``- ...``, ``# ...``) cannot pass for
    the log's structure."""
    if not value:
        return []
    if "\n" not in value.rstrip("\n"):
        return [f"- {title}: {value.rstrip()}"]
    fenced = "\n".join(_fence(value)).split("\n")
    return [f"- {title}:", "", *(f"  {line}" if line else "" for line in fenced), ""]


def _code(value: str) -> str:
    """`value` as inline code whatever backticks it holds (CommonMark: a longer run of
    backticks around it, padded with spaces when it starts or ends with one)."""
    ticks = "`"
    while ticks in value:
        ticks += "`"
    pad = " " if value.startswith("`") or value.endswith("`") else ""
    return f"{ticks}{pad}{value}{pad}{ticks}"


def _items(title: str, values: list[str]) -> list[str]:
    return [f"- {title}:", *(f"  - {_code(v)}" for v in values)] if values else []


def _event_lines(record: TaskLine) -> list[str]:
    body = record.body
    head = f"### {record.seq}. {type(body).__struct_config__.tag} ({record.ts})"
    out = [head, ""]
    if isinstance(body, Attempt):
        out += [
            f"- pointer: R{body.r}/S{body.s}",
            f"- result: {body.result} ({body.reason_code})",
            *_text("reason", body.reason_detail),
            *_text("next action", body.next_action),
            *_text("change", body.code_change_summary),
            *([f"- artifact: {_code(body.code_artifact_ref)}"] if body.code_artifact_ref else []),
            *_text("tests", body.test_results),
            *_items("acceptance", body.acceptance_snapshot),
            *_items("files", body.executed_files),
            *_items("commands", body.executed_commands),
        ]
        if body.code_content:
            out += ["", *_fence(body.code_content), ""]
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
        out += _text(f"R{body.r}/S{body.s}", body.reason) or [f"- R{body.r}/S{body.s}"]
    elif isinstance(body, TaskClosed):
        out.append(f"- final status: {body.final_status}")
        out += _text("summary", body.summary)
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
