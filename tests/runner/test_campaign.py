"""`runner campaign` end to end: a real git repository, the mock shim acting out every kind of
agent at parallelism 3, and everything the campaign leaves behind checked afterwards (queue,
target branch, ledger chains and pointers, evidence, scoreboard, cost, no leftovers)."""

from __future__ import annotations

import hashlib
import subprocess

import msgspec
import pytest

from protocol import Scoreboard, Trends
from protocol.ledger_events import Attempt, AttemptStarted, ReviewRecorded
from tests.runner.engine_fixtures import Project, TaskSpec, json_events

SLOW = "sleep 0.3"  # keeps the conflict pair in flight together, from the same base

SPECS = [
    TaskSpec("conf_a", files={"src/shared.txt": "from a\n"}, commands=[SLOW]),
    TaskSpec("conf_b", files={"src/shared.txt": "from b\n"}, commands=[SLOW]),
    TaskSpec("pass1"),
    TaskSpec("ftp", scenario="fail_then_pass"),
    TaskSpec("oos", scenario="out_of_scope", max_attempts=2),
    TaskSpec("after_oos", depends_on=["oos"]),
    TaskSpec("lie", scenario="lie", max_attempts=1),
    TaskSpec("silent", scenario="silent", max_attempts=2),
    TaskSpec("mem", scenario="eat_memory", max_attempts=1),
    TaskSpec("crash", scenario="crash", max_attempts=1),
]


class Run:
    def __init__(self, project: Project, result: subprocess.CompletedProcess[str]) -> None:
        self.project = project
        self.result = result


@pytest.fixture(scope="module")
def run(tmp_path_factory: pytest.TempPathFactory) -> Run:
    project = Project(tmp_path_factory.mktemp("campaign"), SPECS)
    result = project.run(
        "--max-parallel-steps", "3", "--max-rework-rounds", "1", "--max-memory-mb", "100",
        "--seed", "7",
    )  # fmt: skip
    return Run(project, result)


def test_campaign_ends_with_each_task_where_the_rules_put_it(run: Run) -> None:
    queue = run.project.queue()
    assert {k: str(t.status) for k, t in queue.items()} == {
        "conf_a": "completed",
        "conf_b": "completed",
        "pass1": "completed",
        "ftp": "completed",
        "oos": "failed",
        "after_oos": "pending",  # waits for a failed task: a person must act
        "lie": "failed",
        "silent": "failed",
        "mem": "failed",
        "crash": "failed",
    }
    assert {k: t.attempts for k, t in queue.items()} == {
        "conf_a": 1, "conf_b": 1, "pass1": 1, "ftp": 1, "oos": 2, "after_oos": 0,
        "lie": 1, "silent": 2, "mem": 1, "crash": 1,
    }  # fmt: skip
    assert queue["ftp"].reworks == 1
    assert queue["lie"].reworks == 1
    assert queue["conf_a"].reworks + queue["conf_b"].reworks == 1  # one conflict rework
    assert "SILENCE_LIMIT" in (queue["silent"].last_reason or "")
    assert "MEMORY_LIMIT" in (queue["mem"].last_reason or "")
    assert "SCOPE_FORBIDDEN" in (queue["oos"].last_reason or "")
    assert "CHANGE_CLAIMED_NOT_MADE" in (queue["lie"].last_reason or "")
    # Exit 1: the campaign ended with tasks not completed; it says why it stopped.
    assert run.result.returncode == 1, run.result.stderr[-2000:]
    assert "nothing can run (stuck)" in run.result.stdout
    assert "completed 4, failed 5" in run.result.stdout


def test_accepted_work_is_merged_once_and_rejected_work_is_not(run: Run) -> None:
    p = run.project
    assert p.merges_per_task() == {"conf_a": 1, "conf_b": 1, "pass1": 1, "ftp": 1}
    assert p.head_file("src/pass1.txt") == "pass1\n"
    assert p.head_file("src/ftp.txt") == "ftp\n"
    # The task that met the conflict redid its work on top of the other: its content wins.
    reworked = "conf_a" if p.queue()["conf_a"].reworks else "conf_b"
    assert p.head_file("src/shared.txt") == f"from {reworked[-1]}\n"
    for key in ("oos", "lie", "silent", "mem", "crash", "after_oos"):
        assert p.head_file(f"src/{key}.txt") is None, key
    assert p.head_file("secrets/mock_S1") is None
    # The target branch's working tree is clean: evidence is excluded, nothing half merged.
    status = subprocess.run(
        ["git", "-C", str(p.workspace), "status", "--porcelain"],
        capture_output=True, text=True, check=True,
    ).stdout  # fmt: skip
    assert status == ""


def test_nothing_is_left_behind(run: Run) -> None:
    p = run.project
    assert p.worktrees() == []
    assert p.runner_branches() == []
    worktree_dir = p.progress / "worktrees"
    assert not worktree_dir.exists() or list(worktree_dir.iterdir()) == []


def test_ledger_verifies(run: Run) -> None:
    verified = run.project.verify_ledger()
    assert verified.returncode == 0, verified.stdout + verified.stderr
    assert verified.stdout.startswith("ok:")
    types = run.project.project_event_types()
    assert types[0] == "project_created"
    assert types.count("campaign_started") == 1
    assert types[-1] == "campaign_finished"


ONE_ROUND = ["attempt_started", "step_outcome", "review", "attempt"]
INFRA = ["attempt_started", "step_outcome", "attempt"]


def test_each_task_has_the_expected_event_sequence_and_pointers(run: Run) -> None:
    p = run.project
    rework = [*ONE_ROUND, "rework_dispatched", *ONE_ROUND]
    assert p.event_types("pass1") == [*ONE_ROUND, "task_closed"]
    assert p.event_types("ftp") == [*rework, "task_closed"]
    reworked = "conf_a" if p.queue()["conf_a"].reworks else "conf_b"
    other = "conf_b" if reworked == "conf_a" else "conf_a"
    assert p.event_types(reworked) == [*rework, "task_closed"]
    assert p.event_types(other) == [*ONE_ROUND, "task_closed"]
    assert p.event_types("oos") == ONE_ROUND * 2
    assert p.event_types("lie") == rework
    assert p.event_types("silent") == INFRA * 2
    assert p.event_types("mem") == INFRA
    assert p.event_types("crash") == INFRA
    assert p.event_types("after_oos") == []
    # Each task's log is rendered for people (docs/ledger.md): a closed task's, and a failed
    # one's, still open in the ledger; a task that never ran has none.
    logs = {key: p.ledger_dir / "tasks" / key / "task_log.md" for key in p.queue()}
    assert "final status: accepted" in logs["pass1"].read_text()
    lie = logs["lie"].read_text()
    assert "rework_dispatched" in lie and "final status" not in lie
    assert {key for key, path in logs.items() if path.exists()} == set(p.queue()) - {"after_oos"}

    def started(key: str) -> list[tuple[int, int, str]]:
        return [
            (r.body.r, r.body.s, str(r.body.kind))
            for r in p.task_events(key)
            if isinstance(r.body, AttemptStarted)
        ]

    # A rework (or a failing review, next attempt) is a revision R+1/S0; an infrastructure
    # retry keeps R and takes S+1.
    assert started("ftp") == [(0, 0, "first"), (1, 0, "revision")]
    assert started(reworked) == [(0, 0, "first"), (1, 0, "revision")]
    assert started("oos") == [(0, 0, "first"), (1, 0, "revision")]
    assert started("silent") == [(0, 0, "first"), (0, 1, "retry")]
    assert started("lie") == [(0, 0, "first"), (1, 0, "revision")]

    reviews = [r.body for r in p.task_events("ftp") if isinstance(r.body, ReviewRecorded)]
    assert [str(v.verdict) for v in reviews] == ["REWORK", "PASS"]
    conflict = [r.body for r in p.task_events(reworked) if isinstance(r.body, ReviewRecorded)]
    assert [str(v.verdict) for v in conflict] == ["PASS", "PASS"]
    silent = [r.body for r in p.task_events("silent") if isinstance(r.body, Attempt)]
    assert [a.reason_code for a in silent] == ["SILENCE_LIMIT", "SILENCE_LIMIT"]
    mem = [r.body for r in p.task_events("mem") if isinstance(r.body, Attempt)]
    assert [a.reason_code for a in mem] == ["MEMORY_LIMIT"]


def test_evidence_of_every_round_is_in_the_main_workspace(run: Run) -> None:
    p = run.project
    for key in p.specs:
        outcomes = [r for r in p.task_events(key) if type(r.body).__name__ == "StepOutcomeRecorded"]
        rounds = p.rounds(key)
        assert len(rounds) == len(outcomes), (key, rounds)
        for rd in rounds:
            assert (rd / "logs" / "command.json").is_file(), rd
            assert (rd / "shim_stdout.txt").exists(), rd
    # Reviews and rework packs the ledger points at exist, with the recorded hash.
    for key in ("ftp", "lie"):
        for record in p.task_events(key):
            ref = getattr(record.body, "review", None) or getattr(record.body, "rework_pack", None)
            if ref is not None:
                data = (p.workspace / ref.path).read_bytes()
                assert hashlib.sha256(data).hexdigest() == ref.sha256, ref.path


def test_scoreboard_summary_and_trends_agree_with_the_queue(run: Run) -> None:
    p = run.project
    queue = p.queue()
    board = msgspec.json.decode((p.progress / "scoreboard.json").read_bytes(), type=Scoreboard)
    assert board.total == len(queue)
    assert board.counts.completed == 4
    assert board.counts.failed == 5
    assert board.counts.pending == 1
    assert board.counts.in_progress == 0
    assert board.attempts == sum(t.attempts for t in queue.values())
    assert board.reworks == sum(t.reworks for t in queue.values())
    trends = msgspec.json.decode((p.progress / "trends.json").read_bytes(), type=Trends)
    cycles = sum(t.attempts for t in queue.values())
    assert len(trends.points) == cycles  # one point per finished cycle
    assert trends.points[-1].counts == board.counts
    summary = (p.progress / "summary.md").read_text()
    assert "| 10 | 1 | 0 | 4 | 5 | 0 | 0 |" in summary


def test_spend_is_summed_from_the_agents_usage(run: Run) -> None:
    p = run.project
    queue = p.queue()
    board = msgspec.json.decode((p.progress / "scoreboard.json").read_bytes(), type=Scoreboard)
    total_in = total_out = total_cost = 0
    for key, task in queue.items():
        usages = [
            r.body.usage
            for r in p.task_events(key)
            if isinstance(r.body, Attempt) and r.body.usage is not None
        ]
        tokens_in = sum(u.input_tokens for u in usages)
        cost = sum(u.cost_micro_usd or 0 for u in usages)
        if usages:
            assert task.spend is not None, key
            assert task.spend.input_tokens == tokens_in, key
            assert task.spend.cost_micro_usd == cost, key
            total_in += tokens_in
            total_out += sum(u.output_tokens for u in usages)
            total_cost += cost
        else:
            assert task.spend is None, key  # crashed / killed agents report nothing
    assert queue["ftp"].spend is not None
    assert queue["ftp"].spend.input_tokens > queue["pass1"].spend.input_tokens  # type: ignore[union-attr]
    assert (board.input_tokens, board.output_tokens, board.cost_micro_usd) == (
        total_in, total_out, total_cost,
    )  # fmt: skip


def test_json_log_has_one_line_per_state_change(run: Run) -> None:
    events = json_events(run.result.stderr)
    names = {e["event"] for e in events}
    for name in (
        "campaign.started", "task.claimed", "step.dispatched", "review.finished",
        "rework.dispatched", "task.merged", "task.conflict", "task.backoff", "task.finished",
        "campaign.finished",
    ):  # fmt: skip
        assert name in names, name
    finished = [e for e in events if e["event"] == "task.finished"]
    assert len(finished) == sum(t.attempts for t in run.project.queue().values())
    backoff = [e for e in events if e["event"] == "task.backoff"]
    assert {e["task_id"] for e in backoff} == {"silent"}


def test_a_second_run_has_nothing_to_do(run: Run) -> None:
    before = {k: (str(t.status), t.attempts) for k, t in run.project.queue().items()}
    again = run.project.run("--max-parallel-steps", "3")
    assert again.returncode == 1
    assert ": 0 cycles" in again.stdout
    assert run.project.merges_per_task() == {"conf_a": 1, "conf_b": 1, "pass1": 1, "ftp": 1}
    assert {k: (str(t.status), t.attempts) for k, t in run.project.queue().items()} == before
