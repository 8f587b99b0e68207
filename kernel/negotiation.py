"""Negotiation: a requirements markdown becomes a frozen plan and a frozen boundary.

The document is prose for people with a few structured sections the kernel reads (see
docs/queue.md for the full format)::

    # Title
    ## Goal            free text
    ## Boundary        allowed_paths / forbidden_paths / allowed_commands lists, dependency keys
    ## Tasks
    ### T-1: Title     key: value lines and ``key:`` followed by ``- item`` lists

Other sections are ignored; fenced code blocks are ignored. Inside the structured sections an
unknown key is an error (a typo must not silently drop a rule), and every problem is reported
at once with its line number. Tasks inherit the boundary's allowed paths when they name none,
and always carry its forbidden paths. The plan must respect its own boundary: a task whose
paths or commands step outside is refused here, before anything runs.
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Iterable
from typing import Any

import msgspec

from protocol import (
    BoundarySnapshot,
    DependencyPolicy,
    PlannedTask,
    PlanSnapshot,
    QueueTask,
    TaskIntake,
    TaskQueue,
    is_safe_id,
)

from . import intake as intake_rules
from .boundary import task_scope
from .errors import QueueInvalid, RequirementsInvalid, ScopePatternError
from .guard import check_parts
from .markdown import lines as markdown_lines
from .scope import ScopeRules, glob_problem
from .snapshot import freeze
from .triage import check as check_queue

_TASK_LISTS = {
    "route": "execution_route",
    "execution_route": "execution_route",
    "steps": "execution_route",
    "acceptance": "acceptance_criteria",
    "acceptance_criteria": "acceptance_criteria",
    "allowed_paths": "allowed_paths",
    "forbidden_paths": "forbidden_paths",
    "commands": "commands_to_run",
    "commands_to_run": "commands_to_run",
    "depends_on": "depends_on",
    "risk_flags": "risk_flags",
    "risks": "risk_flags",
}
_TASK_SCALARS = {
    "target": "target",
    "description": "description",
    "priority": "priority",
    "max_attempts": "max_attempts",
    "backend": "worker_backend",
    "worker_backend": "worker_backend",
    "tier": "tier_override",
    "tier_override": "tier_override",
}
_INLINE_LISTS = {"depends_on", "risk_flags"}
_BOUNDARY_LISTS = {
    "allowed_paths": "allowed_paths",
    "forbidden_paths": "forbidden_paths",
    "allowed_commands": "allowed_commands",
    "commands": "allowed_commands",
}
_BOUNDARY_SCALARS = {
    "dependency_mode": "mode",
    "mode": "mode",
    "allow_new_dependencies": "allow_new_dependencies",
    "allow_lockfile_changes": "allow_lockfile_changes",
    "allow_dependency_manifest_changes": "allow_dependency_manifest_changes",
    "allow_ci_changes": "allow_ci_changes",
}
_QUEUE_FIELDS = {"priority", "max_attempts", "depends_on", "worker_backend"}

_KEY = re.compile(r"^([A-Za-z][A-Za-z0-9 _-]*?)[ \t]*:(?:[ \t]+(.*))?$")
_BULLET = re.compile(r"^\s*[-*+][ \t]+(.*)$")
_TASK_HEAD = re.compile(r"^(\S+?)\s*:\s*(.+)$")


class Negotiated(msgspec.Struct, frozen=True):
    plan: PlanSnapshot
    boundary: BoundarySnapshot


class _Block:
    """The key/value content of one structured section, with line numbers for messages."""

    def __init__(self, line: int, lists: dict[str, str], scalars: dict[str, str]) -> None:
        self.line = line
        self.lists_known = lists
        self.scalars_known = scalars
        self.values: dict[str, Any] = {}
        self.text: list[tuple[int, str]] = []
        self.open_list: str | None = None

    def feed(self, number: int, raw: str, problems: list[str], where: str) -> None:
        bullet = _BULLET.match(raw)
        if bullet and self.open_list is not None:
            self.values[self.open_list].append(_unquote(bullet.group(1)))
            return
        key = _KEY.match(raw)
        if key:
            self._key(number, _norm(key.group(1)), (key.group(2) or "").strip(), problems, where)
            return
        self.open_list = None
        if bullet:
            problems.append(f"line {number} ({where}): list item outside a list key")
        else:
            self.text.append((number, raw.strip()))

    def _key(self, number: int, name: str, value: str, problems: list[str], where: str) -> None:
        self.open_list = None
        field = self.lists_known.get(name) or self.scalars_known.get(name)
        if field is None:
            known = ", ".join(sorted({*self.lists_known, *self.scalars_known}))
            problems.append(f"line {number} ({where}): unknown key {name!r}; known: {known}")
            return
        if field in self.values:
            problems.append(f"line {number} ({where}): {name!r} given twice")
            return
        if name in self.lists_known:
            items: list[str] = []
            if value and field in _INLINE_LISTS:
                items = [_unquote(v) for v in value.split(",") if v.strip()]
            elif value:
                problems.append(
                    f"line {number} ({where}): {name!r} is a list; put each item on its own "
                    "'- ' line below it"
                )
            self.values[field] = items
            self.open_list = field
        elif not value:
            problems.append(f"line {number} ({where}): {name!r} needs a value")
        else:
            self.values[field] = _unquote(value)


def negotiate(raw: bytes, *, source: str | None = None) -> Negotiated:
    """Parse, check and freeze; raise `RequirementsInvalid` listing every problem."""
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise RequirementsInvalid([f"not UTF-8 text: {exc}"], source=source) from None
    problems: list[str] = []
    title, goal, boundary_block, task_blocks = _parse(text, problems)
    source_sha = hashlib.sha256(raw).hexdigest()
    boundary = _boundary(boundary_block, source_sha, problems)
    tasks = [_task(key, block, boundary, problems) for key, block in task_blocks]
    planned = [t for t in tasks if t is not None]
    if not task_blocks:
        problems.append("no tasks: add '### KEY: Title' sections under '## Tasks'")
    _check_dependencies(task_blocks, problems)
    if problems:
        raise RequirementsInvalid(problems, source=source)
    plan = PlanSnapshot(title=title, goal=goal, source_sha256=source_sha, tasks=planned)
    return Negotiated(plan=freeze(plan), boundary=freeze(boundary))


def queue_tasks(tasks: Iterable[PlannedTask]) -> list[QueueTask]:
    """Planned tasks as queue entries, in plan order (their insertion order)."""
    return [
        QueueTask(
            key=t.key,
            title=t.title,
            priority=t.priority,
            max_attempts=t.max_attempts,
            depends_on=list(t.depends_on),
            worker_backend=t.worker_backend,
            intake=t.intake,
        )
        for t in tasks
    ]


def _parse(
    text: str, problems: list[str]
) -> tuple[str, str, _Block | None, list[tuple[str, _Block]]]:
    title = ""
    goal: list[str] = []
    boundary: _Block | None = None
    tasks: list[tuple[str, _Block]] = []
    section = ""
    current: _Block | None = None
    for number, raw, level, heading in markdown_lines(text):
        if level == 1 and not title:
            title = heading.strip()
            continue
        if level == 2:
            section = _norm(heading)
            current = None
            if section == "boundary":
                if boundary is not None:
                    problems.append(f"line {number}: a second '## Boundary' section")
                boundary = current = _Block(number, _BOUNDARY_LISTS, _BOUNDARY_SCALARS)
            continue
        if section == "tasks" and level == 3:
            match = _TASK_HEAD.match(heading.strip())
            if match is None:
                problems.append(f"line {number}: task heading must read '### KEY: Title'")
                current = None
                continue
            key = match.group(1)
            current = _Block(number, _TASK_LISTS, _TASK_SCALARS)
            current.values["title"] = match.group(2).strip()
            first = next((b.line for k, b in tasks if k == key), None)
            if not is_safe_id(key):
                problems.append(
                    f"line {number}: task key {key!r} is not a safe id (1-128 of [A-Za-z0-9._-], "
                    "starting with a letter or digit, no '..')"
                )
                current = None
            elif first is not None:
                problems.append(f"line {number}: task key {key!r} already used at line {first}")
                current = None
            else:
                tasks.append((key, current))
            continue
        if section == "goal":
            goal.append(raw.strip())
        elif current is not None and raw.strip():
            where = "boundary" if current is boundary else f"task {tasks[-1][0]}"
            current.feed(number, raw, problems, where)
    return title, "\n".join(goal).strip(), boundary, tasks


def _boundary(block: _Block | None, source_sha: str, problems: list[str]) -> BoundarySnapshot:
    empty = BoundarySnapshot(source_sha256=source_sha, allowed_paths=[])
    if block is None:
        problems.append("no '## Boundary' section: say which paths and commands the work may touch")
        return empty
    for number, text in block.text:
        problems.append(f"line {number} (boundary): unexpected text {text[:60]!r}")
    values = dict(block.values)
    policy_fields = {k: values.pop(k) for k in list(values) if k not in _BOUNDARY_LISTS.values()}
    try:
        policy = msgspec.convert(policy_fields, DependencyPolicy, strict=False)
    except msgspec.ValidationError as exc:
        problems.append(f"boundary (line {block.line}): dependency policy: {exc}")
        policy = DependencyPolicy()
    boundary = BoundarySnapshot(
        source_sha256=source_sha,
        allowed_paths=values.get("allowed_paths", []),
        forbidden_paths=values.get("forbidden_paths", []),
        allowed_commands=values.get("allowed_commands", []),
        dependency_policy=policy,
    )
    if not boundary.allowed_paths:
        problems.append(f"boundary (line {block.line}): allowed_paths is empty")
    for name in ("allowed_paths", "forbidden_paths"):
        for i, pattern in enumerate(getattr(boundary, name)):
            problem = glob_problem(pattern)
            if problem:
                problems.append(f"boundary (line {block.line}): {name}[{i}]: {problem}")
    return boundary


def _task(
    key: str, block: _Block, boundary: BoundarySnapshot, problems: list[str]
) -> PlannedTask | None:
    where = f"task {key} (line {block.line})"
    values = dict(block.values)
    text = "\n".join(t for _, t in block.text).strip()
    if text:
        values["description"] = "\n".join(filter(None, [values.get("description", ""), text]))
    queue_part = {k: values.pop(k) for k in list(values) if k in _QUEUE_FIELDS}
    title = values.pop("title")
    values["task_title"] = title
    values["task_id"] = key
    values["allowed_paths"], values["forbidden_paths"] = task_scope(
        values.get("allowed_paths", []), values.get("forbidden_paths", []), boundary
    )
    try:
        intake = msgspec.convert(values, TaskIntake, strict=False)
        head = {"key": key, "title": title, **queue_part}
        task = msgspec.convert(head, PlannedTask, strict=False)
        task = msgspec.structs.replace(task, intake=intake)
    except msgspec.ValidationError as exc:
        problems.append(f"{where}: {exc}")
        return None
    for problem in intake_rules.validate(intake):
        problems.append(f"{where}: {problem.path}: {problem.reason}")
    try:
        violations = check_parts(
            scope=ScopeRules(tuple(intake.allowed_paths), tuple(intake.forbidden_paths)),
            commands=intake.commands_to_run,
            policy=None,
            boundary=boundary,
        )
    except ScopePatternError:
        return task  # the unusable glob is already a problem (intake or boundary validation)
    for violation in violations:
        problems.append(f"{where}: outside the boundary: {violation}")
    return task


def _check_dependencies(blocks: list[tuple[str, _Block]], problems: list[str]) -> None:
    """Dependencies of every task, parsed or not (so one bad field does not hide a cycle)."""
    tasks = [
        QueueTask(key=key, title="", depends_on=list(block.values.get("depends_on", [])))
        for key, block in blocks
    ]
    try:
        check_queue(TaskQueue(tasks=tasks))
    except QueueInvalid as exc:
        for problem in exc.problems:
            # "$.tasks[0].depends_on[1]: ..." points into a queue file there is none of here.
            problems.append("tasks: " + re.sub(r"^\$\S*: ", "", problem))


def _norm(name: str) -> str:
    return re.sub(r"[\s-]+", "_", name.strip().lower())


def _unquote(value: str) -> str:
    value = value.strip()
    if len(value) >= 2 and value[0] == value[-1] and value[0] in "`\"'":
        return value[1:-1].strip()
    return value
