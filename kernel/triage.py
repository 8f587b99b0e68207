"""The triage queue's rules: transitions, dependency checks, selection, explanations.

Every function is pure: it takes a `TaskQueue` and returns a new one (or a decision), so the
one owner of the queue file (the runner, later the engine) can apply them under its lock, and
tests can run them on tables. Times are passed in (`now`, an RFC 3339 string): the kernel has no
clock.

Selection policy: a task is *eligible* when it is pending, every dependency is completed and
it has attempts left (``attempts < max_attempts``). Eligible tasks are ordered by priority
(lower first: 0 is the most urgent) and then by position in the queue (insertion order). The
first is selected. Nothing else (time, randomness, dict order) enters the choice.
"""

from __future__ import annotations

import enum
from collections.abc import Iterator, Mapping
from typing import Literal

import msgspec

from protocol import QueueTask, Spend, TaskQueue, TaskStatus

from .errors import DuplicateTask, IllegalTransition, NotEligible, QueueInvalid, UnknownTask

S = TaskStatus

TRANSITIONS: Mapping[TaskStatus, frozenset[TaskStatus]] = {
    S.PENDING: frozenset({S.IN_PROGRESS, S.BLOCKED, S.CANCELLED}),
    S.IN_PROGRESS: frozenset({S.COMPLETED, S.FAILED, S.PENDING, S.BLOCKED, S.CANCELLED}),
    S.BLOCKED: frozenset({S.PENDING, S.CANCELLED}),
    S.FAILED: frozenset({S.PENDING, S.CANCELLED}),
    S.COMPLETED: frozenset(),
    S.CANCELLED: frozenset(),
}
"""Legal status changes. `completed` and `cancelled` are final; `failed` and `blocked` wait for
a person to reopen (-> pending) or cancel them; -> in_progress only through `claim`."""

FINAL: frozenset[TaskStatus] = frozenset(s for s, to in TRANSITIONS.items() if not to)


class AttemptOutcome(enum.StrEnum):
    """How an attempt ended, as the cycle reports it to `record_attempt`."""

    PASSED = "passed"
    FAILED = "failed"
    BLOCKED = "blocked"
    CANCELLED = "cancelled"


SelectionState = Literal["selected", "waiting", "stuck", "done"]


class Skip(msgspec.Struct, frozen=True):
    """A task that was not eligible, and every reason why."""

    key: str
    status: TaskStatus
    reasons: tuple[str, ...]


class Selection(msgspec.Struct, frozen=True):
    """The policy's answer. `key` is the selected task (None when nothing is eligible);
    `eligible` lists every eligible task in selection order (an engine running several at once
    takes the first n); `state` says why nothing was selected:

    - ``waiting``: tasks are in progress, and their completion may make others eligible;
    - ``stuck``: pending tasks remain but none can become eligible without a person
      (a dependency failed, blocked or cancelled; attempts used up);
    - ``done``: nothing is pending or in progress.
    """

    key: str | None
    state: SelectionState
    eligible: tuple[str, ...]
    skipped: tuple[Skip, ...]


class Explanation(msgspec.Struct, frozen=True):
    """Why a task was (not) picked: ``runner queue explain KEY``."""

    key: str
    status: TaskStatus
    eligible: bool
    selected: bool
    rank: int | None
    reasons: tuple[str, ...]


# -- loading checks -----------------------------------------------------------------------------


def check(queue: TaskQueue, *, source: str | None = None) -> TaskQueue:
    """Return `queue` if it is usable, else raise `QueueInvalid` listing every problem:
    duplicate keys, duplicate or self dependencies, unknown dependencies, dependency cycles."""
    problems = list(_problems(queue))
    if problems:
        raise QueueInvalid(problems, source=source)
    return queue


def _problems(queue: TaskQueue) -> Iterator[str]:
    first: dict[str, int] = {}
    for i, task in enumerate(queue.tasks):
        if task.key in first:
            was = first[task.key]
            yield f"$.tasks[{i}].key: duplicate key {task.key!r} (first at $.tasks[{was}])"
        else:
            first[task.key] = i
    for i, task in enumerate(queue.tasks):
        seen: set[str] = set()
        for j, dep in enumerate(task.depends_on):
            at = f"$.tasks[{i}].depends_on[{j}]"
            if dep == task.key:
                yield f"{at}: task {task.key!r} depends on itself"
            elif dep not in first:
                yield f"{at}: task {task.key!r} depends on unknown task {dep!r}"
            elif dep in seen:
                yield f"{at}: dependency {dep!r} listed twice"
            seen.add(dep)
    for cycle in find_cycles(queue):
        yield "dependency cycle: " + " -> ".join((*cycle, cycle[0]))


def find_cycles(queue: TaskQueue) -> list[tuple[str, ...]]:
    """One cycle per strongly connected group of tasks that depend on each other (self
    dependencies excluded: `check` reports those on their own). Each cycle starts at its
    smallest key and follows dependency edges; the list is sorted, so the answer is stable."""
    graph = _graph(queue)
    cycles = []
    for component in _components(graph):
        if len(component) > 1:
            cycles.append(_cycle_in(graph, component))
    return sorted(cycles)


def _graph(queue: TaskQueue) -> dict[str, list[str]]:
    keys = {t.key for t in queue.tasks}
    graph: dict[str, list[str]] = {}
    for task in queue.tasks:
        deps = graph.setdefault(task.key, [])
        deps.extend(d for d in task.depends_on if d in keys and d != task.key and d not in deps)
    return graph


def _components(graph: dict[str, list[str]]) -> list[set[str]]:
    """Strongly connected components (Kosaraju, iterative: deep chains must not recurse)."""
    order: list[str] = []
    visited: set[str] = set()
    for root in graph:
        if root in visited:
            continue
        visited.add(root)
        stack = [(root, iter(graph[root]))]
        while stack:
            node, edges = stack[-1]
            nxt = next((e for e in edges if e not in visited), None)
            if nxt is None:
                stack.pop()
                order.append(node)
            else:
                visited.add(nxt)
                stack.append((nxt, iter(graph[nxt])))
    reverse: dict[str, list[str]] = {k: [] for k in graph}
    for node, deps in graph.items():
        for dep in deps:
            reverse[dep].append(node)
    assigned: set[str] = set()
    components = []
    for root in reversed(order):
        if root in assigned:
            continue
        component = {root}
        assigned.add(root)
        todo = [root]
        while todo:
            for prev in reverse[todo.pop()]:
                if prev not in assigned:
                    assigned.add(prev)
                    component.add(prev)
                    todo.append(prev)
        components.append(component)
    return components


def _cycle_in(graph: dict[str, list[str]], component: set[str]) -> tuple[str, ...]:
    """A shortest cycle through the component's smallest key (breadth-first, so stable)."""
    start = min(component)
    parent: dict[str, str] = {}
    frontier = [start]
    while frontier:
        following = []
        for node in frontier:
            for dep in sorted(graph[node]):
                if dep not in component:
                    continue
                if dep == start:
                    path = [node]
                    while path[-1] != start:
                        path.append(parent[path[-1]])
                    return tuple(reversed(path))
                if dep not in parent:
                    parent[dep] = node
                    following.append(dep)
        frontier = following
    raise AssertionError("a strongly connected component of two or more nodes has a cycle")


# -- selection ----------------------------------------------------------------------------------


def ineligibility(queue: TaskQueue, task: QueueTask) -> tuple[str, ...]:
    """Every reason `task` cannot be selected now; empty when it is eligible."""
    by_key = {t.key: t for t in queue.tasks}
    reasons = []
    if task.status is not S.PENDING:
        reasons.append(f"status is {task.status.value}, not pending")
    if task.attempts >= task.max_attempts:
        reasons.append(f"no attempts left ({task.attempts} of {task.max_attempts} used)")
    for dep in task.depends_on:
        other = by_key.get(dep)
        if other is None:
            reasons.append(f"depends on unknown task {dep!r}")
        elif other.status is not S.COMPLETED:
            hint = " and cannot complete without a person" if _dead(other) else ""
            reasons.append(f"waits for {dep} ({other.status.value}{hint})")
    return tuple(reasons)


def _dead(task: QueueTask) -> bool:
    """Whether `task` cannot reach completed without a person acting."""
    if task.status in (S.FAILED, S.BLOCKED, S.CANCELLED):
        return True
    return task.status is S.PENDING and task.attempts >= task.max_attempts


def select_next(queue: TaskQueue) -> Selection:
    """Apply the selection policy (module docstring). Deterministic: same queue, same answer."""
    ranked: list[tuple[int, int, str]] = []
    skipped = []
    for index, task in enumerate(queue.tasks):
        reasons = ineligibility(queue, task)
        if reasons:
            skipped.append(Skip(task.key, task.status, reasons))
        else:
            ranked.append((task.priority, index, task.key))
    eligible = tuple(key for _, _, key in sorted(ranked))
    if eligible:
        return Selection(eligible[0], "selected", eligible, tuple(skipped))
    statuses = {t.status for t in queue.tasks}
    state: SelectionState
    if S.IN_PROGRESS in statuses:
        state = "waiting"
    elif S.PENDING in statuses:
        state = "stuck"
    else:
        state = "done"
    return Selection(None, state, (), tuple(skipped))


def explain(queue: TaskQueue, key: str) -> Explanation:
    """Why `key` was or was not picked, in words a person can act on."""
    task = get(queue, key)
    selection = select_next(queue)
    reasons = ineligibility(queue, task)
    if reasons:
        return Explanation(key, task.status, False, False, None, reasons)
    rank = selection.eligible.index(key)
    if rank == 0:
        why = ("selected: first eligible task by priority, then insertion order",)
        return Explanation(key, task.status, True, True, 0, why)
    first = get(queue, selection.eligible[0])
    if first.priority < task.priority:
        ahead = f"priority {first.priority} runs before priority {task.priority}"
    else:
        ahead = "same priority, inserted earlier"
    why = (f"eligible, number {rank + 1} in line: {first.key} is picked first ({ahead})",)
    return Explanation(key, task.status, True, False, rank, why)


# -- changes ------------------------------------------------------------------------------------


def get(queue: TaskQueue, key: str) -> QueueTask:
    for task in queue.tasks:
        if task.key == key:
            return task
    raise UnknownTask(key, [t.key for t in queue.tasks])


def add_task(queue: TaskQueue, task: QueueTask) -> TaskQueue:
    """Append `task` (it goes last in insertion order). Its dependencies must exist already."""
    if any(t.key == task.key for t in queue.tasks):
        raise DuplicateTask(task.key)
    return check(msgspec.structs.replace(queue, tasks=[*queue.tasks, task]))


def transition(queue: TaskQueue, key: str, to: TaskStatus, *, reason: str, now: str) -> TaskQueue:
    """Move `key` to status `to` if the table allows it, recording `reason` and `now`.

    Moving to in_progress is a claim: the task must be eligible, and the attempt is counted.
    """
    task = get(queue, key)
    allowed = TRANSITIONS[task.status]
    if to not in allowed:
        raise IllegalTransition(key, task.status, to, sorted(allowed))
    attempts = task.attempts
    if to is S.IN_PROGRESS:
        reasons = ineligibility(queue, task)
        if reasons:
            raise NotEligible(key, reasons)
        attempts += 1
    return _replace(queue, key, status=to, attempts=attempts, last_reason=reason, updated_at=now)


def claim(queue: TaskQueue, key: str, *, now: str, reason: str = "selected") -> TaskQueue:
    """Start an attempt on `key`: pending -> in_progress, attempts + 1."""
    return transition(queue, key, S.IN_PROGRESS, reason=reason, now=now)


def record_attempt(
    queue: TaskQueue,
    key: str,
    outcome: AttemptOutcome,
    *,
    reason: str,
    now: str,
    reworks: int = 0,
    spend: Spend | None = None,
) -> TaskQueue:
    """End the attempt in progress on `key`.

    passed -> completed; failed -> pending when attempts are left (the policy will pick it again),
    else failed; blocked -> blocked; cancelled -> cancelled. `reworks` rounds and `spend` are
    added to the task's totals.
    """
    task = get(queue, key)
    target = _target(task, outcome)
    if task.status is not S.IN_PROGRESS:
        raise IllegalTransition(key, task.status, target, sorted(TRANSITIONS[task.status]))
    queue = transition(queue, key, target, reason=reason, now=now)
    return _replace(queue, key, reworks=task.reworks + reworks, spend=add_spend(task.spend, spend))


def _target(task: QueueTask, outcome: AttemptOutcome) -> TaskStatus:
    if outcome is AttemptOutcome.PASSED:
        return S.COMPLETED
    if outcome is AttemptOutcome.FAILED:
        return S.PENDING if task.attempts < task.max_attempts else S.FAILED
    if outcome is AttemptOutcome.BLOCKED:
        return S.BLOCKED
    return S.CANCELLED


def record_rework(queue: TaskQueue, key: str, *, now: str) -> TaskQueue:
    """Count one rework round inside the attempt in progress on `key`."""
    task = get(queue, key)
    if task.status is not S.IN_PROGRESS:
        raise NotEligible(key, [f"a rework needs an attempt in progress; status is {task.status}"])
    return _replace(queue, key, reworks=task.reworks + 1, updated_at=now)


def release(queue: TaskQueue, key: str, *, reason: str, now: str) -> TaskQueue:
    """Give back the attempt in progress on `key`: in_progress -> pending, attempts - 1.

    For an attempt the runner abandoned itself (killed, interrupted by a signal): it judged
    nothing, so it must not use up one of the task's attempts.
    """
    task = get(queue, key)
    if task.status is not S.IN_PROGRESS:
        raise IllegalTransition(key, task.status, S.PENDING, sorted(TRANSITIONS[task.status]))
    queue = transition(queue, key, S.PENDING, reason=reason, now=now)
    return _replace(queue, key, attempts=max(0, task.attempts - 1))


def reopen(
    queue: TaskQueue, key: str, *, reason: str, now: str, extra_attempts: int = 0
) -> TaskQueue:
    """A person's decision to try a failed or blocked task again, optionally with more attempts."""
    if extra_attempts < 0:
        raise ValueError("extra_attempts must not be negative")
    queue = transition(queue, key, S.PENDING, reason=reason, now=now)
    task = get(queue, key)
    return _replace(queue, key, max_attempts=task.max_attempts + extra_attempts)


def add_spend(a: Spend | None, b: Spend | None) -> Spend | None:
    if a is None or b is None:
        return a or b
    cost = None
    if a.cost_micro_usd is not None or b.cost_micro_usd is not None:
        cost = (a.cost_micro_usd or 0) + (b.cost_micro_usd or 0)
    return Spend(a.input_tokens + b.input_tokens, a.output_tokens + b.output_tokens, cost)


def _replace(queue: TaskQueue, key: str, **changes: object) -> TaskQueue:
    tasks = [msgspec.structs.replace(t, **changes) if t.key == key else t for t in queue.tasks]
    return msgspec.structs.replace(queue, tasks=tasks)
