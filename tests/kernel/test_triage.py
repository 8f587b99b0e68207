from __future__ import annotations

from typing import Any

import msgspec
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from kernel import triage
from kernel.errors import (
    DuplicateTask,
    IllegalTransition,
    KernelError,
    NotEligible,
    QueueInvalid,
    UnknownTask,
)
from kernel.triage import TRANSITIONS, AttemptOutcome
from protocol import QueueTask, Spend, TaskQueue, TaskStatus, decode, encode

S = TaskStatus
NOW = "2026-01-01T00:00:00Z"


def task(key: str, **kw: Any) -> QueueTask:
    return QueueTask(key=key, title=f"task {key}", **kw)


def queue(*tasks: QueueTask) -> TaskQueue:
    return TaskQueue(tasks=list(tasks))


def status_of(q: TaskQueue, key: str) -> TaskStatus:
    return triage.get(q, key).status


# -- transition table ---------------------------------------------------------------------------

ALL_PAIRS = [(a, b) for a in S for b in S]


@pytest.mark.parametrize(("start", "to"), ALL_PAIRS, ids=lambda s: s.value)
def test_transition_table_is_enforced(start: TaskStatus, to: TaskStatus) -> None:
    q = queue(task("A", status=start))
    if to in TRANSITIONS[start]:
        after = triage.transition(q, "A", to, reason="test", now=NOW)
        changed = triage.get(after, "A")
        assert (changed.status, changed.last_reason, changed.updated_at) == (to, "test", NOW)
    else:
        with pytest.raises(IllegalTransition) as err:
            triage.transition(q, "A", to, reason="test", now=NOW)
        assert err.value.allowed == tuple(sorted(TRANSITIONS[start]))
        assert f"{start.value} -> {to.value}" in str(err.value)


def test_final_states_are_completed_and_cancelled() -> None:
    assert {S.COMPLETED, S.CANCELLED} == triage.FINAL


def test_claim_counts_the_attempt_and_requires_eligibility() -> None:
    q = queue(task("A"), task("B", depends_on=["A"]))
    q = triage.claim(q, "A", now=NOW)
    assert (status_of(q, "A"), triage.get(q, "A").attempts) == (S.IN_PROGRESS, 1)
    with pytest.raises(NotEligible, match="waits for A"):
        triage.claim(q, "B", now=NOW)


@pytest.mark.parametrize(
    ("outcome", "attempts", "expected"),
    [
        (AttemptOutcome.PASSED, 1, S.COMPLETED),
        (AttemptOutcome.FAILED, 1, S.PENDING),
        (AttemptOutcome.FAILED, 2, S.PENDING),
        (AttemptOutcome.FAILED, 3, S.FAILED),
        (AttemptOutcome.BLOCKED, 1, S.BLOCKED),
        (AttemptOutcome.CANCELLED, 1, S.CANCELLED),
    ],
)
def test_record_attempt_outcomes(outcome: AttemptOutcome, attempts: int, expected: S) -> None:
    q = queue(task("A", status=S.IN_PROGRESS, attempts=attempts, max_attempts=3))
    q = triage.record_attempt(q, "A", outcome, reason="r", now=NOW)
    assert status_of(q, "A") == expected


def test_record_attempt_adds_reworks_and_spend() -> None:
    q = queue(task("A", status=S.IN_PROGRESS, attempts=1, reworks=1, spend=Spend(1, 2, None)))
    q = triage.record_attempt(
        q, "A", AttemptOutcome.PASSED, reason="ok", now=NOW, reworks=2, spend=Spend(10, 20, 5)
    )
    done = triage.get(q, "A")
    assert (done.reworks, done.spend) == (3, Spend(11, 22, 5))


def test_record_attempt_needs_an_attempt_in_progress() -> None:
    with pytest.raises(IllegalTransition):
        triage.record_attempt(queue(task("A")), "A", AttemptOutcome.PASSED, reason="", now=NOW)


def test_record_rework_needs_an_attempt_in_progress() -> None:
    q = queue(task("A", status=S.IN_PROGRESS, attempts=1))
    assert triage.get(triage.record_rework(q, "A", now=NOW), "A").reworks == 1
    with pytest.raises(NotEligible):
        triage.record_rework(queue(task("A")), "A", now=NOW)


def test_reopen_gives_extra_attempts() -> None:
    q = queue(task("A", status=S.FAILED, attempts=3, max_attempts=3))
    q = triage.reopen(q, "A", reason="fixed the flaky test", now=NOW, extra_attempts=2)
    assert triage.get(q, "A").max_attempts == 5
    assert triage.select_next(q).key == "A"
    with pytest.raises(IllegalTransition):
        triage.reopen(queue(task("B", status=S.COMPLETED)), "B", reason="", now=NOW)


@pytest.mark.parametrize(
    ("a", "b", "expected"),
    [
        (None, None, None),
        (Spend(1, 1, None), None, Spend(1, 1, None)),
        (None, Spend(1, 1, 3), Spend(1, 1, 3)),
        (Spend(1, 2, None), Spend(3, 4, None), Spend(4, 6, None)),
        (Spend(1, 2, 7), Spend(3, 4, None), Spend(4, 6, 7)),
    ],
)
def test_add_spend(a: Spend | None, b: Spend | None, expected: Spend | None) -> None:
    assert triage.add_spend(a, b) == expected


# -- loading checks -----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("tasks", "words"),
    [
        ([task("A"), task("A")], "duplicate key 'A' (first at $.tasks[0])"),
        ([task("A", depends_on=["Z"])], "$.tasks[0].depends_on[0]: task 'A' depends on unknown"),
        ([task("A", depends_on=["A"])], "depends on itself"),
        ([task("A"), task("B", depends_on=["A", "A"])], "dependency 'A' listed twice"),
        (
            [task("A", depends_on=["C"]), task("B", depends_on=["A"]), task("C", depends_on=["B"])],
            "dependency cycle: A -> C -> B -> A",
        ),
    ],
)
def test_check_rejects_bad_queues_naming_the_problem(tasks: list[QueueTask], words: str) -> None:
    with pytest.raises(QueueInvalid) as err:
        triage.check(queue(*tasks), source="q.json")
    assert words in str(err.value)
    assert str(err.value).startswith("q.json: ")


def test_check_reports_every_problem() -> None:
    bad = queue(
        task("A", depends_on=["X"]), task("B", depends_on=["C"]), task("C", depends_on=["B"])
    )
    with pytest.raises(QueueInvalid) as err:
        triage.check(bad)
    assert len(err.value.problems) == 2


def test_two_separate_cycles_are_both_named() -> None:
    q = queue(
        task("A", depends_on=["B"]),
        task("B", depends_on=["A"]),
        task("C", depends_on=["D"]),
        task("D", depends_on=["C"]),
    )
    assert triage.find_cycles(q) == [("A", "B"), ("C", "D")]


def test_add_task_rejects_duplicates_and_unknown_dependencies() -> None:
    q = triage.add_task(TaskQueue(), task("A"))
    q = triage.add_task(q, task("B", depends_on=["A"]))
    assert [t.key for t in q.tasks] == ["A", "B"]
    with pytest.raises(DuplicateTask):
        triage.add_task(q, task("A"))
    with pytest.raises(QueueInvalid, match="unknown task 'Z'"):
        triage.add_task(q, task("C", depends_on=["Z"]))


def test_unknown_key_names_the_known_ones() -> None:
    with pytest.raises(UnknownTask, match="tasks: A"):
        triage.get(queue(task("A")), "B")


# -- selection ----------------------------------------------------------------------------------


def test_selection_by_priority_then_insertion() -> None:
    q = queue(task("A", priority=2), task("B", priority=1), task("C", priority=1))
    selection = triage.select_next(q)
    assert (selection.key, selection.eligible, selection.state) == (
        "B",
        ("B", "C", "A"),
        "selected",
    )


@pytest.mark.parametrize(
    ("tasks", "key", "words"),
    [
        ([task("A", status=S.COMPLETED)], "A", ["status is completed, not pending"]),
        ([task("A", attempts=3, max_attempts=3)], "A", ["no attempts left (3 of 3 used)"]),
        ([task("D"), task("A", depends_on=["D"])], "A", ["waits for D (pending)"]),
        (
            [task("D", status=S.FAILED), task("A", depends_on=["D"])],
            "A",
            ["waits for D (failed and cannot complete without a person)"],
        ),
        (
            [
                task("D", status=S.IN_PROGRESS, attempts=1),
                task("A", attempts=1, max_attempts=1, depends_on=["D"]),
            ],
            "A",
            ["no attempts left (1 of 1 used)", "waits for D (in_progress)"],
        ),
    ],
)
def test_explain_gives_every_reason(tasks: list[QueueTask], key: str, words: list[str]) -> None:
    explanation = triage.explain(queue(*tasks), key)
    assert not explanation.eligible and not explanation.selected
    assert list(explanation.reasons) == words


def test_explain_an_eligible_task_that_was_not_first() -> None:
    q = queue(task("A", priority=0), task("B", priority=1), task("C", priority=1))
    assert triage.explain(q, "A").selected
    assert "priority 0 runs before priority 1" in triage.explain(q, "B").reasons[0]
    c = triage.explain(q, "C")
    assert (c.eligible, c.rank) == (True, 2)
    q2 = queue(task("A"), task("B"))
    assert "same priority, inserted earlier" in triage.explain(q2, "B").reasons[0]


@pytest.mark.parametrize(
    ("tasks", "state"),
    [
        ([], "done"),
        ([task("A", status=S.COMPLETED), task("B", status=S.FAILED)], "done"),
        ([task("A", status=S.IN_PROGRESS, attempts=1), task("B", depends_on=["A"])], "waiting"),
        ([task("A", status=S.BLOCKED), task("B", depends_on=["A"])], "stuck"),
        ([task("A", attempts=3)], "stuck"),
    ],
)
def test_nothing_selected_says_why(tasks: list[QueueTask], state: str) -> None:
    selection = triage.select_next(queue(*tasks))
    assert (selection.key, selection.state) == (None, state)


# -- properties ---------------------------------------------------------------------------------


@st.composite
def queues(draw: st.DrawFn, acyclic: bool = True) -> TaskQueue:
    n = draw(st.integers(0, 8))
    keys = [f"T{i}" for i in range(n)]
    tasks = []
    for i, key in enumerate(keys):
        pool = keys[:i] if acyclic else [k for k in keys if k != key]
        deps = draw(st.lists(st.sampled_from(pool), unique=True, max_size=3)) if pool else []
        max_attempts = draw(st.integers(1, 3))
        tasks.append(
            QueueTask(
                key=key,
                title=key,
                priority=draw(st.integers(0, 3)),
                status=draw(st.sampled_from(S)),
                attempts=draw(st.integers(0, max_attempts + 1)),
                max_attempts=max_attempts,
                depends_on=deps,
            )
        )
    return TaskQueue(tasks=tasks)


def reference_eligible(q: TaskQueue, t: QueueTask) -> bool:
    done = {x.key for x in q.tasks if x.status is S.COMPLETED}
    return t.status is S.PENDING and t.attempts < t.max_attempts and set(t.depends_on) <= done


@given(queues())
def test_policy_never_selects_an_ineligible_task(q: TaskQueue) -> None:
    selection = triage.select_next(q)
    expected = [t for t in q.tasks if reference_eligible(q, t)]
    assert set(selection.eligible) == {t.key for t in expected}
    if selection.key is not None:
        chosen = triage.get(q, selection.key)
        assert reference_eligible(q, chosen)
        index = q.tasks.index(chosen)
        assert all((chosen.priority, index) <= (t.priority, q.tasks.index(t)) for t in expected)
    else:
        assert not expected
    assert len(selection.eligible) + len(selection.skipped) == len(q.tasks)


@given(queues())
def test_selection_is_deterministic(q: TaskQueue) -> None:
    again = decode(encode(q), TaskQueue)
    assert triage.select_next(q) == triage.select_next(again) == triage.select_next(q)
    for t in q.tasks:
        assert triage.explain(q, t.key) == triage.explain(again, t.key)


OPS = st.lists(
    st.tuples(
        st.sampled_from(["transition", "claim", "record", "rework", "reopen"]),
        st.integers(0, 7),
        st.sampled_from(S),
        st.sampled_from(AttemptOutcome),
    ),
    max_size=25,
)


@settings(max_examples=150)
@given(queues(), OPS)
def test_transitions_never_leave_the_table(q: TaskQueue, ops: list[Any]) -> None:
    for op, index, status, outcome in ops:
        if not q.tasks:
            return
        key = q.tasks[index % len(q.tasks)].key
        before = triage.get(q, key)
        try:
            if op == "transition":
                after_q = triage.transition(q, key, status, reason="p", now=NOW)
            elif op == "claim":
                after_q = triage.claim(q, key, now=NOW)
            elif op == "record":
                after_q = triage.record_attempt(q, key, outcome, reason="p", now=NOW)
            elif op == "rework":
                after_q = triage.record_rework(q, key, now=NOW)
            else:
                after_q = triage.reopen(q, key, reason="p", now=NOW, extra_attempts=1)
        except KernelError:
            continue
        after = triage.get(after_q, key)
        assert after.status == before.status or after.status in TRANSITIONS[before.status]
        if after.status is S.IN_PROGRESS and before.status is not S.IN_PROGRESS:
            assert reference_eligible(q, before)
            assert after.attempts == before.attempts + 1
        others = [t for t in after_q.tasks if t.key != key]
        assert others == [t for t in q.tasks if t.key != key]
        q = after_q


def reference_has_cycle(q: TaskQueue) -> bool:
    edges = {t.key: {d for d in t.depends_on if d != t.key} for t in q.tasks}
    reach = {k: set(v) for k, v in edges.items()}
    changed = True
    while changed:
        changed = False
        for k in reach:
            extra = set().union(*(reach.get(d, set()) for d in reach[k])) - reach[k]
            if extra:
                reach[k] |= extra
                changed = True
    return any(k in reach[k] for k in reach)


@given(queues(acyclic=False))
def test_cycle_detection_agrees_with_a_reference(q: TaskQueue) -> None:
    cycles = triage.find_cycles(q)
    assert bool(cycles) == reference_has_cycle(q)
    deps = {t.key: set(t.depends_on) for t in q.tasks}
    for cycle in cycles:
        assert cycle[0] == min(cycle) and len(set(cycle)) == len(cycle)
        for a, b in zip(cycle, (*cycle[1:], cycle[0]), strict=True):
            assert b in deps[a]


@given(queues())
def test_acyclic_queues_pass_the_check(q: TaskQueue) -> None:
    assert triage.check(q) == q


def test_a_long_chain_does_not_recurse() -> None:
    n = 5000
    tasks = [task(f"T{i}", depends_on=[f"T{i - 1}"] if i else []) for i in range(n)]
    tasks[0] = msgspec.structs.replace(tasks[0], depends_on=[f"T{n - 1}"])
    (cycle,) = triage.find_cycles(queue(*tasks))
    assert len(cycle) == n


def test_release_gives_the_attempt_back() -> None:
    queue = TaskQueue(tasks=[QueueTask(key="A", title="a", max_attempts=1)])
    claimed = triage.claim(queue, "A", now="2026-01-01T00:00:00Z")
    assert claimed.tasks[0].attempts == 1
    released = triage.release(claimed, "A", reason="interrupted", now="2026-01-01T00:00:01Z")
    task = released.tasks[0]
    assert (task.status, task.attempts, task.last_reason) == (
        TaskStatus.PENDING,
        0,
        "interrupted",
    )
    # Only an attempt in progress can be released.
    with pytest.raises(IllegalTransition):
        triage.release(released, "A", reason="again", now="2026-01-01T00:00:02Z")
