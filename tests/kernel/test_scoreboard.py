from __future__ import annotations

import msgspec
import pytest
from hypothesis import given
from hypothesis import strategies as st

from kernel import scoreboard as sb
from protocol import (
    LastSelected,
    QueueTask,
    Scoreboard,
    Spend,
    StatusCounts,
    TaskQueue,
    TaskStatus,
    Trends,
    decode,
    encode_pretty,
)

S = TaskStatus
NOW = "2026-01-01T00:00:00Z"


def task(key: str, **kw: object) -> QueueTask:
    return QueueTask(key=key, title=f"task {key}", **kw)  # type: ignore[arg-type]


QUEUE = TaskQueue(
    tasks=[
        task("A", status=S.COMPLETED, attempts=1, spend=Spend(100, 50, 20_000)),
        task("B", status=S.COMPLETED, attempts=2, reworks=1, spend=Spend(10, 5, None)),
        task("C", status=S.FAILED, attempts=3, reworks=2, last_reason="gate G1 failed | twice"),
        task("D", status=S.PENDING, depends_on=["C"]),
        task("E", status=S.PENDING, priority=1),
        task("F", status=S.BLOCKED, attempts=1),
    ]
)


def test_counters() -> None:
    board = sb.score(QUEUE, now=NOW)
    assert board.counts == StatusCounts(pending=2, completed=2, failed=1, blocked=1)
    assert (board.total, board.attempts, board.reworks) == (6, 7, 3)
    assert board.pass_rate == pytest.approx(2 / 3, abs=1e-4)
    assert (board.input_tokens, board.output_tokens, board.cost_micro_usd) == (110, 55, 20_000)
    assert board.updated_at == NOW


@pytest.mark.parametrize(
    ("statuses", "rate"),
    [
        ([], None),
        ([S.PENDING, S.IN_PROGRESS], None),
        ([S.COMPLETED], 1.0),
        ([S.FAILED], 0.0),
        ([S.COMPLETED, S.FAILED, S.FAILED, S.CANCELLED], 0.3333),
    ],
)
def test_pass_rate_is_completed_over_finished(statuses: list[S], rate: float | None) -> None:
    q = TaskQueue(tasks=[task(f"T{i}", status=s) for i, s in enumerate(statuses)])
    assert sb.score(q, now=NOW).pass_rate == rate


def test_cost_is_none_when_nobody_reported_one() -> None:
    q = TaskQueue(tasks=[task("A", spend=Spend(1, 1, None))])
    assert sb.score(q, now=NOW).cost_micro_usd is None


def test_last_selected_is_carried_over_until_replaced() -> None:
    first = LastSelected(key="E", run_id="R1", at=NOW)
    board = sb.score(QUEUE, now=NOW, selected=first)
    again = sb.score(QUEUE, now="2026-01-02T00:00:00Z", previous=board)
    assert again.last_selected == first
    second = LastSelected(key="D", run_id="R2", at=NOW)
    assert sb.score(QUEUE, now=NOW, previous=board, selected=second).last_selected == second


def test_trends_append_and_stay_bounded() -> None:
    trends = Trends()
    for i in range(5):
        board = sb.score(QUEUE, now=f"2026-01-0{i + 1}T00:00:00Z")
        trends = sb.append_trend(trends, board, limit=3, selected=f"T{i}")
    assert [p.selected for p in trends.points] == ["T2", "T3", "T4"]
    assert trends.points[-1].counts.completed == 2
    with pytest.raises(ValueError):
        sb.append_trend(trends, board, limit=0)


def test_scoreboard_round_trips_through_json() -> None:
    board = sb.score(QUEUE, now=NOW, selected=LastSelected(key="E", run_id="R1", at=NOW))
    assert decode(encode_pretty(board), Scoreboard) == board


def test_summary_is_readable() -> None:
    board = sb.score(QUEUE, now=NOW, selected=LastSelected(key="E", run_id="R1", at=NOW))
    trends = sb.append_trend(Trends(), board, selected="E")
    text = sb.summary_markdown(QUEUE, board, trends)
    assert text.startswith("# Progress summary\n")
    assert "| 6 | 2 | 0 | 2 | 1 | 1 | 0 |" in text
    assert "- pass rate (completed / finished): 67%" in text
    assert "- cost: $0.02" in text
    assert "- last selected: E (run R1, 2026-01-01T00:00:00Z)" in text
    assert "`E` is next; eligible in order: E." in text
    assert "| D | pending | 0 | 0/3 | 0 | waits for C (failed and cannot complete" in text
    assert "gate G1 failed \\| twice" in text
    assert "## Trend (last 1)" in text


def test_summary_of_an_empty_queue() -> None:
    board = sb.score(TaskQueue(), now=NOW)
    text = sb.summary_markdown(TaskQueue(), board, Trends())
    assert "Nothing is eligible (done)." in text
    assert "pass rate (completed / finished): n/a" in text
    assert "## Trend" not in text


@given(st.lists(st.sampled_from(S), max_size=20), st.lists(st.integers(0, 5), max_size=20))
def test_counts_add_up(statuses: list[S], attempts: list[int]) -> None:
    tasks = [
        task(f"T{i}", status=s, attempts=attempts[i] if i < len(attempts) else 0)
        for i, s in enumerate(statuses)
    ]
    board = sb.score(TaskQueue(tasks=tasks), now=NOW)
    assert sum(msgspec.structs.astuple(board.counts)) == board.total == len(tasks)
    assert board.attempts == sum(t.attempts for t in tasks)
