"""The supervisor against real, hostile subprocesses; psutil checks that nothing survives."""

from __future__ import annotations

import os
import signal
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import anyio
import psutil
import pytest

from protocol import EndReason
from runner._child import Child
from runner.supervisor import Limits, StepRun, StepSpec, Supervisor, run_step
from tests.runner.hostile import (
    CLOSE_STDOUT_AND_STAY,
    FORK_TREE,
    IGNORE_TERM,
    PY,
    READ_STDIN_FOREVER,
    own_zombies,
    recorded_pids,
    survivors,
    write_script,
)

pytestmark = pytest.mark.anyio

FAST = Limits(poll_interval_sec=0.05, kill_grace_sec=0.3)


def limits(**kw: float) -> Limits:
    kw = {"poll_interval_sec": 0.05, "kill_grace_sec": 0.3, **kw}
    return Limits(**kw)  # type: ignore[arg-type]


async def run_hostile(
    tmp_path: Path,
    name: str,
    body: str,
    *args: str,
    expect: int = 1,
    stdout: Path | None = None,
    **lim: float,
) -> tuple[StepRun, list[str]]:
    """Run a hostile script under `lim`; returns the run and whatever of its tree survived."""
    pids_file = tmp_path / f"{name}.pids"
    script = write_script(tmp_path, name, body)
    run = await run_step(
        StepSpec(argv=[PY, str(script), str(pids_file), *args], stdout=stdout, limits=limits(**lim))
    )
    ended = time.time()
    return run, survivors(recorded_pids(pids_file, expect=expect), ended)


@pytest.fixture(autouse=True)
def no_zombies_left() -> Iterator[None]:
    yield
    assert own_zombies() == [], "the supervisor left a zombie child in the test process"


async def test_completed_step_reports_exit_code_output_and_times(tmp_path: Path) -> None:
    run = await run_step(
        StepSpec(
            argv=[PY, "-c", "import sys; print('out'); print('err', file=sys.stderr); exit(3)"],
            stdout=tmp_path / "ev" / "out.txt",
            stderr=tmp_path / "ev" / "err.txt",
            limits=FAST,
        )
    )
    o = run.outcome
    assert (o.reason, o.exit_code) == (EndReason.COMPLETED, 3)
    assert (tmp_path / "ev" / "out.txt").read_bytes() == b"out\n"
    assert (tmp_path / "ev" / "err.txt").read_bytes() == b"err\n"
    assert (o.stdout_bytes, o.stderr_bytes) == (4, 4)
    assert (run.stdout_tail, run.stderr_tail) == (b"out\n", b"err\n")
    assert o.started_at.endswith("Z") and o.ended_at >= o.started_at
    assert o.duration_ms >= 0 and o.pid is not None


async def test_signal_death_is_a_negative_exit_code() -> None:
    run = await run_step(StepSpec(argv=[PY, "-c", "import os; os.kill(os.getpid(), 9)"]))
    assert (run.outcome.reason, run.outcome.exit_code) == (EndReason.COMPLETED, -9)


async def test_runtime_limit_kills_and_reports(tmp_path: Path) -> None:
    t0 = time.monotonic()
    run = await run_step(
        StepSpec(argv=[PY, "-c", "import time; time.sleep(30)"], limits=limits(max_runtime_sec=0.5))
    )
    assert run.outcome.reason is EndReason.RUNTIME_LIMIT
    assert run.outcome.exit_code == -signal.SIGTERM
    assert 0.5 <= time.monotonic() - t0 < 2.5
    assert "0.5 s" in run.outcome.detail


@pytest.mark.parametrize("sink", ["pipe", "evidence file"])
async def test_silence_limit_counts_from_the_last_byte(tmp_path: Path, sink: str) -> None:
    code = (
        "import time\nfor i in range(6):\n    print(i, flush=True); time.sleep(0.1)\ntime.sleep(30)"
    )
    out = tmp_path / "out.txt" if sink == "evidence file" else None
    t0 = time.monotonic()
    run = await run_step(
        StepSpec(argv=[PY, "-c", code], stdout=out, limits=limits(max_silence_sec=0.4))
    )
    elapsed = time.monotonic() - t0
    assert run.outcome.reason is EndReason.SILENCE_LIMIT
    assert elapsed >= 0.9, "the chatty first 0.6 s must not count as silence"
    assert elapsed < 1.9, "the last byte, not the start or a poll, starts the silence"
    assert run.stdout_tail == b"0\n1\n2\n3\n4\n5\n"
    if out is not None:
        assert out.read_bytes() == run.stdout_tail


async def test_silence_on_an_evidence_file_counts_from_the_write_not_the_look(
    tmp_path: Path,
) -> None:
    """The write is seen at a look (here the first deadline, long before any poll), but its
    time comes from the file: silence is declared one limit after the write, not after the
    look, and never before."""
    code = "import time; print(time.time(), flush=True); time.sleep(30)"
    lim = Limits(max_silence_sec=1.0, poll_interval_sec=5.0, kill_grace_sec=0.3)
    run = await run_step(StepSpec(argv=[PY, "-c", code], stdout=tmp_path / "o", limits=lim))
    after_write = time.time() - float(run.stdout_tail)
    assert run.outcome.reason is EndReason.SILENCE_LIMIT
    assert 1.0 <= after_write < 1.5


async def test_output_on_stderr_alone_is_not_silence(tmp_path: Path) -> None:
    """With evidence files the runner sees output as file changes between polls: a step that
    writes only to stderr, more often than the silence limit, is never silent."""
    code = "import sys, time\nfor i in range(8):\n    sys.stderr.write('.'); time.sleep(0.15)"
    run = await run_step(
        StepSpec(
            argv=[PY, "-c", code],
            stdout=tmp_path / "o",
            stderr=tmp_path / "e",
            limits=Limits(max_silence_sec=0.4, poll_interval_sec=0.25, kill_grace_sec=0.3),
        )
    )
    assert (run.outcome.reason, run.outcome.exit_code) == (EndReason.COMPLETED, 0)
    assert (run.outcome.stdout_bytes, run.outcome.stderr_bytes) == (0, 8)
    assert run.stderr_tail == b"." * 8


async def test_evidence_file_is_the_childs_own_output(tmp_path: Path) -> None:
    """The child writes straight into its evidence file (opened for appending): a process
    that seeks its stdout still cannot overwrite what the tree wrote before."""
    code = (
        "import os, stat, sys\n"
        "print(stat.S_ISREG(os.fstat(1).st_mode), flush=True)\n"
        "os.lseek(1, 0, os.SEEK_SET); os.write(1, b'after seek\\n')\n"
    )
    out = tmp_path / "deep" / "er" / "out.txt"
    run = await run_step(StepSpec(argv=[PY, "-c", code], stdout=out, limits=FAST, tail_bytes=0))
    assert out.read_bytes() == b"True\nafter seek\n"
    assert run.outcome.stdout_bytes == len(b"True\nafter seek\n")
    assert (run.stdout_tail, run.stdout_last_byte) == (b"", ord("\n"))


async def test_a_path_that_is_no_regular_file_is_fed_through_a_pipe() -> None:
    """A device's size and time say nothing about the child's output: the runner reads it."""
    run = await run_step(StepSpec(argv=["echo", "hi"], stdout=Path(os.devnull), limits=FAST))
    assert (run.stdout_tail, run.outcome.stdout_bytes) == (b"hi\n", 3)


async def test_evidence_file_replaces_an_older_one(tmp_path: Path) -> None:
    out = tmp_path / "out.txt"
    out.write_bytes(b"stale output of an earlier run\n" * 100)
    run = await run_step(StepSpec(argv=["echo", "fresh"], stdout=out, limits=FAST))
    assert out.read_bytes() == b"fresh\n" == run.stdout_tail


async def test_memory_limit_is_decided_on_the_tree(tmp_path: Path) -> None:
    # Two processes of 40 MB each: neither alone is over 60 MB, the tree is.
    code = (
        "import os, time\n"
        "if os.fork() == 0:\n"
        "    b = bytearray(40 * 1024 * 1024); time.sleep(30)\n"
        "b = bytearray(40 * 1024 * 1024)\n"
        "time.sleep(30)\n"
    )
    run = await run_step(StepSpec(argv=[PY, "-c", code], limits=limits(max_memory_mb=60)))
    assert run.outcome.reason is EndReason.MEMORY_LIMIT
    assert run.outcome.peak_memory_bytes > 60 * 1024 * 1024
    assert "PSS" in run.outcome.detail


async def test_shared_copy_on_write_pages_are_not_double_counted() -> None:
    # A 60 MB heap shared by four forked processes: RSS sums to ~240 MB, PSS to ~60 MB.
    code = (
        "import os, time\n"
        "b = bytearray(60 * 1024 * 1024)\n"
        "for _ in range(3):\n"
        "    if os.fork() == 0:\n"
        "        time.sleep(30)\n"
        "print('forked', flush=True)\n"
        "time.sleep(30)\n"
    )
    run = await run_step(
        StepSpec(argv=[PY, "-c", code], limits=limits(max_memory_mb=150, max_runtime_sec=1.5))
    )
    assert run.outcome.reason is EndReason.RUNTIME_LIMIT, run.outcome
    assert run.outcome.peak_memory_bytes > 150 * 1024 * 1024  # the RSS sum went over


async def test_fork_tree_with_setsid_escape_is_killed_completely(tmp_path: Path) -> None:
    run, left = await run_hostile(tmp_path, "tree", FORK_TREE, expect=4, max_runtime_sec=1.0)
    assert run.outcome.reason is EndReason.RUNTIME_LIMIT
    assert left == []
    assert run.signalled >= 4


async def test_leftovers_of_a_root_that_exits_are_killed(tmp_path: Path) -> None:
    run, left = await run_hostile(tmp_path, "tree", FORK_TREE, "exit", expect=4)
    assert (run.outcome.reason, run.outcome.exit_code) == (EndReason.COMPLETED, 0)
    assert left == []


async def test_sigterm_ignored_means_sigkill_after_grace(tmp_path: Path) -> None:
    t0 = time.monotonic()
    run, left = await run_hostile(
        tmp_path, "stubborn", IGNORE_TERM, max_runtime_sec=0.5, kill_grace_sec=0.5
    )
    elapsed = time.monotonic() - t0
    assert run.outcome.reason is EndReason.RUNTIME_LIMIT
    assert run.outcome.exit_code == -signal.SIGKILL
    assert 1.0 <= elapsed < 3.0
    assert left == []


@pytest.mark.parametrize("sink", ["pipe", "evidence file"])
async def test_closed_stdout_still_bounded_by_silence(tmp_path: Path, sink: str) -> None:
    out = tmp_path / "out.txt" if sink == "evidence file" else None
    run, left = await run_hostile(
        tmp_path, "closer", CLOSE_STDOUT_AND_STAY, stdout=out, max_silence_sec=0.5
    )
    assert run.outcome.reason is EndReason.SILENCE_LIMIT
    assert run.stdout_tail == b"bye\n"
    assert left == []


async def test_stdin_is_dev_null_unless_given(tmp_path: Path) -> None:
    pids_file = tmp_path / "pids"
    script = write_script(tmp_path, "reader", READ_STDIN_FOREVER)
    run = await run_step(
        StepSpec(argv=[PY, str(script), str(pids_file)], limits=limits(max_runtime_sec=0.6))
    )
    assert run.outcome.reason is EndReason.RUNTIME_LIMIT
    assert run.stdout_tail == b"stdin=0\n"
    run = await run_step(
        StepSpec(
            argv=[PY, str(script), str(pids_file)],
            stdin=b"x" * 300_000,  # more than a pipe holds: fed while the child reads
            limits=limits(max_runtime_sec=0.6),
        )
    )
    assert run.stdout_tail == b"stdin=300000\n"
    assert survivors(recorded_pids(pids_file, expect=2), time.time()) == []


async def test_child_that_never_reads_its_stdin_is_still_bounded() -> None:
    run = await run_step(
        StepSpec(
            argv=[PY, "-c", "import time; time.sleep(30)"],
            stdin=b"y" * 1_000_000,
            limits=limits(max_runtime_sec=0.4),
        )
    )
    assert run.outcome.reason is EndReason.RUNTIME_LIMIT


@pytest.mark.parametrize("sink", ["pipe", "evidence file"])
async def test_long_line_without_newline_keeps_runner_memory_flat(
    tmp_path: Path, sink: str
) -> None:
    size = 96 * 1024 * 1024
    code = (
        "import sys\n"
        "chunk = b'x' * (1024 * 1024)\n"
        f"for _ in range({size // (1024 * 1024)}):\n"
        "    sys.stdout.buffer.write(chunk)\n"
    )
    me = psutil.Process()
    before = me.memory_info().rss
    out = tmp_path / "out.txt" if sink == "evidence file" else None
    run = await run_step(StepSpec(argv=[PY, "-c", code], stdout=out, limits=FAST, tail_bytes=4096))
    grown = me.memory_info().rss - before
    assert run.outcome.reason is EndReason.COMPLETED
    assert run.outcome.stdout_bytes == size
    if out is not None:
        assert out.stat().st_size == size
    assert run.stdout_tail == b"x" * 4096
    assert grown < 32 * 1024 * 1024, f"runner grew by {grown} bytes"


async def test_invalid_utf8_is_stored_byte_for_byte(tmp_path: Path) -> None:
    payload = b"ok \xff\xfe\xc3( \x00 end"
    code = f"import sys; sys.stdout.buffer.write({payload!r}); sys.stderr.buffer.write(b'\\x80')"
    run = await run_step(
        StepSpec(argv=[PY, "-c", code], stdout=tmp_path / "o", stderr=tmp_path / "e", limits=FAST)
    )
    assert (tmp_path / "o").read_bytes() == payload == run.stdout_tail
    assert (tmp_path / "e").read_bytes() == b"\x80"


@pytest.mark.parametrize(
    ("case", "errno", "words"),
    [
        ("missing", 2, "No such file"),
        ("not_executable", 13, "Permission denied"),
        ("bad_format", 8, "Exec format error"),
        ("bad_cwd", 2, "No such file"),
        ("empty", None, "empty argv"),
        ("nul_byte", None, "null byte"),
    ],
)
async def test_spawn_failure_is_an_outcome(
    tmp_path: Path, case: str, errno: int | None, words: str
) -> None:
    plain = tmp_path / "plain.txt"
    plain.write_bytes(b"\x00\x01 not a program")
    garbage = tmp_path / "garbage"
    garbage.write_bytes(b"\x00\x01 not a program")
    garbage.chmod(0o755)
    argv, cwd = {
        "missing": (["/nonexistent/agent"], None),
        "not_executable": ([str(plain)], None),
        "bad_format": ([str(garbage)], None),
        "bad_cwd": (["true"], tmp_path / "nope"),
        "empty": ([], None),
        "nul_byte": (["ec\x00ho"], None),
    }[case]
    run = await run_step(StepSpec(argv=argv, cwd=cwd))
    assert run.outcome.reason is EndReason.SPAWN_FAILED
    assert run.outcome.exit_code is None
    assert run.spawn_errno == errno
    assert words in run.outcome.detail


async def test_unwritable_evidence_file_is_spawn_failed(tmp_path: Path) -> None:
    blocker = tmp_path / "file"
    blocker.write_text("")
    run = await run_step(StepSpec(argv=["true"], stdout=blocker / "out.txt"))
    assert run.outcome.reason is EndReason.SPAWN_FAILED
    assert "cannot open output" in run.outcome.detail


async def test_stopped_process_is_killed(tmp_path: Path) -> None:
    code = "import os, signal; os.kill(os.getpid(), signal.SIGSTOP)"
    run = await run_step(StepSpec(argv=[PY, "-c", code], limits=limits(max_runtime_sec=0.4)))
    assert run.outcome.reason is EndReason.RUNTIME_LIMIT
    assert run.outcome.exit_code == -signal.SIGTERM  # SIGCONT let it act on the SIGTERM


async def test_output_passes_through_to_an_fd(tmp_path: Path) -> None:
    target = tmp_path / "through"
    with target.open("wb") as f:
        run = await run_step(StepSpec(argv=["echo", "passed"], stdout=f.fileno(), limits=FAST))
    assert target.read_bytes() == b"passed\n" == run.stdout_tail


async def test_environment_is_replaced_when_given(tmp_path: Path) -> None:
    code = "import os; print(sorted(k for k in os.environ if k in ('ONLY', 'HOME')))"
    run = await run_step(StepSpec(argv=[PY, "-c", code], env={"ONLY": "1"}, cwd=tmp_path))
    assert run.stdout_tail == b"['ONLY']\n"


async def test_supervisor_runs_at_most_n_at_once(tmp_path: Path) -> None:
    log = tmp_path / "log"
    code = (
        "import sys, time, os\n"
        "open(sys.argv[1], 'a').write(f'start {time.time()}\\n')\n"
        "time.sleep(0.2)\n"
        "open(sys.argv[1], 'a').write(f'end {time.time()}\\n')\n"
    )
    sup = Supervisor(max_parallel_steps=2)
    runs = await sup.run_all(
        StepSpec(argv=[PY, "-c", code, str(log)], limits=FAST) for _ in range(6)
    )
    assert [r.outcome.reason for r in runs] == [EndReason.COMPLETED] * 6
    events = sorted(
        (float(t), kind) for kind, t in (line.split() for line in log.read_text().splitlines())
    )
    running = peak = 0
    for _, kind in events:
        running += 1 if kind == "start" else -1
        peak = max(peak, running)
    assert peak == 2


async def test_cancel_ends_running_and_waiting_steps_as_cancelled(tmp_path: Path) -> None:
    pids_file = tmp_path / "pids"
    script = write_script(tmp_path, "tree", FORK_TREE)
    sup = Supervisor(max_parallel_steps=2)
    runs: list[object] = []

    async def one() -> None:
        runs.append(await sup.run(StepSpec(argv=[PY, str(script), str(pids_file)], limits=FAST)))

    async with anyio.create_task_group() as tg:
        for _ in range(3):
            tg.start_soon(one)
        await wait_for_pids(pids_file, 8)
        sup.cancel("test says stop")
    ended = time.time()
    assert len(runs) == 3
    outcomes = [r.outcome for r in runs]  # type: ignore[attr-defined]
    assert all(o.reason is EndReason.CANCELLED for o in outcomes)
    assert sum(o.pid is None for o in outcomes) == 1, "the waiting step never started"
    assert all("test says stop" in o.detail for o in outcomes)
    assert survivors(recorded_pids(pids_file, expect=8), ended) == []


async def test_outer_cancel_scope_still_kills_the_tree(tmp_path: Path) -> None:
    pids_file = tmp_path / "pids"
    script = write_script(tmp_path, "tree", FORK_TREE)
    with anyio.move_on_after(0.8):
        await run_step(StepSpec(argv=[PY, str(script), str(pids_file)], limits=FAST))
        pytest.fail("should have been cancelled")
    assert survivors(recorded_pids(pids_file, expect=4), time.time()) == []


async def test_second_cancel_skips_the_grace_period(tmp_path: Path) -> None:
    pids_file = tmp_path / "pids"
    script = write_script(tmp_path, "stubborn", IGNORE_TERM)
    sup = Supervisor()
    result: list[float] = []

    async def one() -> None:
        await sup.run(
            StepSpec(
                argv=[PY, str(script), str(pids_file)],
                limits=Limits(kill_grace_sec=20, poll_interval_sec=0.05),
            )
        )
        result.append(time.monotonic())

    async with anyio.create_task_group() as tg:
        tg.start_soon(one)
        await wait_for_pids(pids_file, 1)
        t0 = time.monotonic()
        sup.cancel()
        await anyio.sleep(0.2)
        sup.cancel()
    assert result and result[0] - t0 < 2.0
    assert survivors(recorded_pids(pids_file), time.time()) == []


async def wait_for_pids(path: Path, count: int) -> None:
    """Poll the pid file (a file has no event to wait on), then let the tree settle."""
    with anyio.fail_after(10):
        while len(recorded_pids(path, timeout=0)) < count:  # noqa: ASYNC110
            await anyio.sleep(0.05)
    await anyio.sleep(0.1)


def test_limits_reject_nonsense() -> None:
    with pytest.raises(ValueError, match="max_runtime_sec"):
        Limits(max_runtime_sec=0)
    with pytest.raises(ValueError, match="kill_grace_sec"):
        Limits(kill_grace_sec=-1)
    with pytest.raises(ValueError, match="max_parallel_steps"):
        Supervisor(0)


async def test_many_parallel_trivial_steps_all_complete() -> None:
    sup = Supervisor(max_parallel_steps=8)
    runs = await sup.run_all(StepSpec(argv=["true"]) for _ in range(60))
    assert {r.outcome.reason for r in runs} == {EndReason.COMPLETED}
    assert {r.outcome.exit_code for r in runs} == {0}


async def test_without_pidfd_the_exit_is_polled(monkeypatch: pytest.MonkeyPatch) -> None:
    def no_pidfd(pid: int) -> int:
        raise OSError(38, "Function not implemented")

    monkeypatch.setattr(os, "pidfd_open", no_pidfd)
    run = await run_step(StepSpec(argv=[PY, "-c", "import time; time.sleep(0.2); exit(4)"]))
    assert (run.outcome.reason, run.outcome.exit_code) == (EndReason.COMPLETED, 4)


async def test_env_wiping_daemon_is_killed_when_its_step_ends(tmp_path: Path) -> None:
    """The daemon that leaves nothing linking it to its step: fork, setsid, fork, a fresh empty
    environment, the middle process gone, all before the first look (0.25 s). It is the runner's
    child (the subreaper adopted it) in a session of its own: the step's end kills it, says so
    in the outcome, and does not wait for the pipe it holds."""
    pid_file = tmp_path / "daemon.pid"
    daemon_sh = f"echo $$ > {pid_file}; exec sleep 30"
    code = (
        "import os, time\n"
        "child = os.fork()\n"
        "if child == 0:\n"
        "    os.setsid()\n"
        "    if os.fork() == 0:\n"
        f"        os.execve('/bin/sh', ['sh', '-c', {daemon_sh!r}], {{}})\n"
        "    os._exit(0)\n"
        "os.waitpid(child, 0)\n"
        f"while not os.path.exists({str(pid_file)!r}): time.sleep(0.01)\n"
    )
    # No poll before the step ends (a poll could see the chain while it forms, and then the
    # daemon is a member like any other): the kill finds it with no link to the step.
    lim = Limits(max_runtime_sec=5, kill_grace_sec=0.5, poll_interval_sec=30)
    run = await run_step(StepSpec(argv=[PY, "-c", code], limits=lim))
    daemon = int(recorded_pids(pid_file)[0])
    assert run.outcome.reason is EndReason.COMPLETED
    assert run.outcome.duration_ms < 3000
    assert survivors([daemon], time.time()) == []
    assert "held open" not in run.outcome.detail
    escaped = f"escaped a step's tree (own session, no step token): [{daemon}]"
    assert escaped in run.outcome.detail


async def test_own_session_leaders_are_never_taken_for_escapees(tmp_path: Path) -> None:
    """The runner's own processes in sessions of their own (a verify command's re-run) are its
    children outside every step's session, as an escapee is: registered, they are left alone
    when a step that started before them ends."""
    from runner import _proctree
    from runner.facts import CommandRerun, run_shell

    rerun: list[CommandRerun] = []
    runs: list[StepRun] = []

    async def step() -> None:
        code = "import time; time.sleep(0.6)"
        runs.append(await run_step(StepSpec(argv=[PY, "-c", code], limits=FAST)))

    async with anyio.create_task_group() as tg:
        tg.start_soon(step)
        await anyio.sleep(0.2)
        rerun.append(await run_shell(0, "sleep 1.2; echo done", cwd=tmp_path, timeout_s=10))
    assert runs[0].outcome.reason is EndReason.COMPLETED
    assert "escaped" not in runs[0].outcome.detail
    assert (rerun[0].exit_code, rerun[0].timed_out) == (0, False), rerun[0]
    assert _proctree._SCANNER.spawning == 0


async def test_a_child_reaped_by_poll_while_waited_for_ends_the_wait() -> None:
    """The kill loop's `poll()` may reap the root (and close its pidfd) while `_wait_exit`
    awaits that pidfd: the wait must end with the exit code, not a ClosedResourceError."""
    child = Child.start(
        ["sleep", "30"], cwd=None, env=dict(os.environb),
        stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )  # fmt: skip
    codes: list[int] = []

    async def waiter() -> None:
        codes.append(await child.wait())

    async with anyio.create_task_group() as tg:
        tg.start_soon(waiter)
        await anyio.sleep(0.1)  # the waiter now awaits the pidfd
        os.kill(child.pid, signal.SIGKILL)
        deadline = time.monotonic() + 5
        while child.poll() is None:  # reaped here, without letting the waiter run
            assert time.monotonic() < deadline
            time.sleep(0.01)  # noqa: ASYNC251 (blocking on purpose: the waiter must not run)
    assert codes == [-9]
