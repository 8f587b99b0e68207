"""A campaign interrupted during a rework round, then resumed: the retry (same R, S+1) re-runs
the same ReworkPack on the agent's thread, as the ledger says, instead of starting the task over
from its StepPack; and the merge names the attempt that was accepted."""

from __future__ import annotations

import hashlib
import json
import shlex
import signal
from pathlib import Path
from typing import Any

import pytest

from protocol.ledger_events import (
    Attempt,
    AttemptInterrupted,
    AttemptStarted,
    FileRef,
    ReviewRecorded,
    ReworkDispatched,
)
from tests.runner.engine_fixtures import Project, TaskSpec, git, kill_processes_under
from tests.runner.test_mock_shim import IDS, MOCK


def gated_resume(gate: Path) -> dict[str, Any]:
    """The mock shim, whose `resume` (a rework round) waits until `gate` exists, talking all
    the while so that the silence limit leaves it alone."""
    wait = f'until [ -e {shlex.quote(str(gate))} ]; do echo waiting; sleep 0.1; done; exec "$@"'
    resume = [*MOCK, "resume", "{prompt}", "{thread_id}", *IDS]
    return {
        "default_backend": "mock",
        "backends": {
            "mock": {
                "create": [*MOCK, "create", "{prompt}", *IDS],
                "resume": ["/bin/sh", "-c", wait, "sh", *resume],
            }
        },
    }


def started(p: Project, key: str) -> list[tuple[int, int, str]]:
    return [
        (r.body.r, r.body.s, str(r.body.kind))
        for r in p.task_events(key)
        if isinstance(r.body, AttemptStarted)
    ]


def merge_trailers(p: Project) -> list[tuple[str, str, str]]:
    """(subject, Runner-Task, Runner-Attempt) of each commit on the target branch that has them,
    newest first."""
    out = git(
        p.workspace, "log",
        "--format=%s%x00%(trailers:key=Runner-Task,valueonly)%x00"
        "%(trailers:key=Runner-Attempt,valueonly)%x00",
    )  # fmt: skip
    fields = out.split("\0")
    rows = zip(fields[0::3], fields[1::3], fields[2::3], strict=False)
    return [(s.strip(), t.strip(), a.strip()) for s, t, a in rows if t.strip()]


def interrupted_in_rework(tmp_path: Path, signum: signal.Signals) -> tuple[Project, Path]:
    """A campaign whose one task failed its first review and was stopped by `signum` while
    its rework round ran; returns the project and the gate that lets a rework run."""
    gate = tmp_path / "let-the-rework-run"
    p = Project(
        tmp_path,
        [TaskSpec("ftp", scenario="fail_then_pass")],
        config={
            "limits": {"max_silence_sec": 5.0, "max_runtime_sec": 60.0},
            "backoff": {"base_sec": 0.1, "factor": 2.0, "max_sec": 0.5},
        },
    )
    p.shim_path.write_text(json.dumps(gated_resume(gate)))
    first = p.popen("--max-rework-rounds", "1")
    first.wait_for(
        lambda events: any(e["event"] == "step.dispatched" and e.get("resume") for e in events),
        timeout=30,
    )
    first.proc.send_signal(signum)
    assert first.finish(timeout=30) == (130 if signum == signal.SIGINT else -signal.SIGKILL)
    kill_processes_under(p.root)  # a killed runner's agent lives on (as after `kill -9`)
    if signum == signal.SIGINT:  # after SIGKILL the chain files may lag the journal
        assert started(p, "ftp") == [(0, 0, "first"), (1, 0, "revision")]
    return p, gate


def rework_dispatched(p: Project) -> FileRef:
    dispatched = [r.body for r in p.task_events("ftp") if isinstance(r.body, ReworkDispatched)]
    assert len(dispatched) == 1
    return dispatched[0].rework_pack


@pytest.mark.parametrize("signum", [signal.SIGINT, signal.SIGKILL])
def test_a_rework_interrupted_is_retried_as_the_same_rework(
    tmp_path: Path, signum: signal.Signals
) -> None:
    p, gate = interrupted_in_rework(tmp_path, signum)

    # Resumed: the retry R1/S1 is the same rework again (resume of the same thread with the
    # same ReworkPack), which passes; no second review-and-rework, no R2.
    gate.touch()
    again = p.run("--max-rework-rounds", "1")
    assert again.returncode == 0, again.stderr[-3000:]
    assert p.statuses() == {"ftp": "completed"}
    assert started(p, "ftp") == [(0, 0, "first"), (1, 0, "revision"), (1, 1, "retry")]
    rework_ref = rework_dispatched(p)
    retry = [r.body for r in p.task_events("ftp") if isinstance(r.body, AttemptStarted)][-1]
    assert retry.refs == [rework_ref]  # the ledger names what the retry gave the agent
    rework_bytes = (p.workspace / rework_ref.path).read_bytes()
    assert hashlib.sha256(rework_bytes).hexdigest() == rework_ref.sha256
    thread = json.loads((p.rounds("ftp")[0] / "step_result.json").read_text())["thread_id"]
    assert [r.name for r in p.rounds("ftp")] == ["R1", "R2", "R3"]
    resumed = p.rounds("ftp")[-1]
    assert (resumed / "logs" / "rework_pack.json").read_bytes() == rework_bytes
    assert not (resumed / "logs" / "step_pack.json").exists()
    command = json.loads((resumed / "logs" / "command.json").read_text())
    assert command["kind"] == "rework"
    assert command["thread_id"] == thread
    assert "resume" in command["argv"] and "create" not in command["argv"]
    reviews = [r.body for r in p.task_events("ftp") if isinstance(r.body, ReviewRecorded)]
    assert [(v.r, v.s, str(v.verdict)) for v in reviews] == [(0, 0, "REWORK"), (1, 1, "PASS")]
    interrupted = [r.body for r in p.task_events("ftp") if isinstance(r.body, AttemptInterrupted)]
    assert [(i.r, i.s) for i in interrupted] == [(1, 0)]
    attempts = [r.body for r in p.task_events("ftp") if isinstance(r.body, Attempt)]
    assert [(a.r, a.s, str(a.result)) for a in attempts] == [(0, 0, "REWORK"), (1, 1, "PASS")]
    task = p.queue()["ftp"]
    assert (task.attempts, task.reworks) == (1, 1)  # as if it had never been interrupted

    # The merge names the attempt the ledger accepted.
    assert merge_trailers(p) == [
        ("Merge runner/ftp/R1S1: ftp: task ftp", "ftp", "R1S1"),
        ("ftp: task ftp", "ftp", "R1S1"),
    ]
    assert p.head_file("src/ftp.txt") == "ftp\n"
    assert p.worktrees() == [] and p.runner_branches() == []
    verified = p.verify_ledger()
    assert verified.returncode == 0, verified.stdout + verified.stderr


def test_a_retry_whose_rework_pack_is_gone_is_a_revision_from_the_step_pack(
    tmp_path: Path,
) -> None:
    p, gate = interrupted_in_rework(tmp_path, signal.SIGINT)
    rework_ref = rework_dispatched(p)
    (p.workspace / rework_ref.path).write_text("{}")  # not what the ledger recorded
    gate.touch()
    again = p.run("--max-rework-rounds", "1")
    assert again.returncode == 0, again.stderr[-3000:]
    assert "cycle.rework_lost" in again.stderr
    # Not a retry that would claim the same instructions: a revision, from the StepPack,
    # which the mock fails once more and passes on its rework.
    assert started(p, "ftp") == [
        (0, 0, "first"), (1, 0, "revision"), (2, 0, "revision"), (3, 0, "revision"),
    ]  # fmt: skip
    refs = [r.body.refs for r in p.task_events("ftp") if isinstance(r.body, AttemptStarted)]
    assert refs == [[]] * 4
    assert (p.rounds("ftp")[2] / "logs" / "step_pack.json").exists()
    assert p.statuses() == {"ftp": "completed"}
    assert [a for _, _, a in merge_trailers(p)] == ["R3S0", "R3S0"]
    assert p.verify_ledger().returncode == 0


def test_a_task_that_passes_on_its_rework_is_merged_as_that_attempt(tmp_path: Path) -> None:
    p = Project(tmp_path, [TaskSpec("ftp", scenario="fail_then_pass"), TaskSpec("ok")])
    result = p.run("--max-rework-rounds", "1", "--max-parallel-steps", "2")
    assert result.returncode == 0, result.stderr[-3000:]
    assert started(p, "ftp") == [(0, 0, "first"), (1, 0, "revision")]
    accepted = [r.body for r in p.task_events("ftp") if isinstance(r.body, Attempt)][-1]
    assert (accepted.r, accepted.s, str(accepted.result)) == (1, 0, "PASS")
    trailers = {(t, s.startswith("Merge ")): (s, a) for s, t, a in merge_trailers(p)}
    assert trailers == {
        ("ftp", True): ("Merge runner/ftp/R1S0: ftp: task ftp", "R1S0"),
        ("ftp", False): ("ftp: task ftp", "R1S0"),
        ("ok", True): ("Merge runner/ok/R0S0: ok: task ok", "R0S0"),
        ("ok", False): ("ok: task ok", "R0S0"),
    }
    # `git log` of the merged commit itself (the merge's second parent) says the same.
    merge = git(p.workspace, "log", "--merges", "--grep=Runner-Task: ftp", "--format=%H").split()
    assert len(merge) == 1
    body = git(p.workspace, "log", "-1", "--format=%B", f"{merge[0]}^2")
    assert "Runner-Task: ftp\nRunner-Attempt: R1S0" in body
    assert p.worktrees() == [] and p.runner_branches() == []
