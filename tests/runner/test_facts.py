"""Facts from a real git work tree: changed files, evidence on disk, commands run again."""

from __future__ import annotations

import os
import shlex
import sys
import time
from pathlib import Path

import anyio
import pytest

from kernel import CommandRerun
from runner.facts import FactsError, gather_facts, list_artifacts, run_shell
from tests.kernel.qa_cases import ROUND_DIR, RUN_ID, small_pack
from tests.runner.test_git import sh

PY = shlex.quote(sys.executable)


@pytest.fixture
def repo(tmp_path: Path) -> Path:
    root = tmp_path / "repo"
    (root / "src" / "report").mkdir(parents=True)
    (root / "src" / "report" / "cli.py").write_text("print('report')\n")
    (root / "README.md").write_text("readme\n")
    sh(root, "init", "-q", "-b", "main")
    sh(root, "add", "-A")
    sh(root, "commit", "-qm", "init")
    return root


def write(path: Path, text: str = "x\n") -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)
    return path


@pytest.mark.anyio
async def test_gathers_changes_and_evidence(repo: Path) -> None:
    base = sh(repo, "rev-parse", "HEAD").strip()
    write(repo / "src/report/cli.py", "print('json')\n")
    write(repo / "tests/test_report.py")
    (repo / "README.md").unlink()
    write(repo / ROUND_DIR / "cmd_0.txt")
    write(repo / ROUND_DIR / "nested/deeper/out.txt")
    write(repo / ".artifacts/agent_runs/OTHER/x.txt")
    facts = await gather_facts(repo, small_pack(), round_no=1)
    assert facts.base == base
    assert facts.changed_files == tuple(
        sorted(
            [
                f"{ROUND_DIR}/cmd_0.txt",
                f"{ROUND_DIR}/nested/deeper/out.txt",
                ".artifacts/agent_runs/OTHER/x.txt",
                "README.md",
                "src/report/cli.py",
                "tests/test_report.py",
            ]
        )
    )
    assert facts.artifact_files == (f"{ROUND_DIR}/cmd_0.txt", f"{ROUND_DIR}/nested/deeper/out.txt")
    assert facts.command_reruns is None
    assert facts.unchecked == ["command_exit_codes"]


@pytest.mark.anyio
async def test_changes_are_measured_from_base_including_commits(repo: Path) -> None:
    base = sh(repo, "rev-parse", "HEAD").strip()
    write(repo / "src/report/new.py")
    sh(repo, "add", "-A")
    sh(repo, "commit", "-qm", "work")
    assert (await gather_facts(repo, small_pack(), round_no=1)).changed_files == ()
    facts = await gather_facts(repo, small_pack(), base=base, round_no=1)
    assert facts.changed_files == ("src/report/new.py",)


@pytest.mark.anyio
async def test_symlinks_are_never_evidence(repo: Path, tmp_path: Path) -> None:
    outside = write(tmp_path / "outside.txt", "secret\n")
    write(repo / ROUND_DIR / "real.txt")
    (repo / ROUND_DIR / "link.txt").symlink_to(outside)
    (repo / ROUND_DIR / "linkdir").symlink_to(tmp_path)
    facts = await gather_facts(repo, small_pack(), round_no=1)
    assert facts.artifact_files == (f"{ROUND_DIR}/real.txt",)


def test_a_symlinked_artifacts_directory_lists_nothing(repo: Path, tmp_path: Path) -> None:
    elsewhere = tmp_path / "elsewhere"
    write(elsewhere / f"agent_runs/{RUN_ID}/steps/S1/rounds/R1/cmd_0.txt")
    (repo / ".artifacts").symlink_to(elsewhere)
    assert list_artifacts(repo, f".artifacts/agent_runs/{RUN_ID}") == ()
    assert list_artifacts(repo, ".artifacts/agent_runs/missing") == ()


@pytest.mark.anyio
async def test_reruns_report_real_exit_codes_and_output(repo: Path) -> None:
    pack = small_pack(
        commands_to_run=[
            f"{PY} -c \"import sys; print('checking'); sys.exit(3)\"",
            "git status --short",
        ]
    )
    facts = await gather_facts(repo, pack, round_no=1, verify_commands=True)
    assert facts.command_reruns is not None
    failing, status = facts.command_reruns
    assert (failing.index, failing.exit_code, failing.timed_out) == (0, 3, False)
    assert "checking" in failing.detail
    assert (status.index, status.exit_code, status.detail) == (1, 0, "")
    assert facts.unchecked == []


@pytest.mark.anyio
async def test_rerun_runs_in_the_workspace(repo: Path) -> None:
    rerun = await run_shell(0, "test -f src/report/cli.py", cwd=repo, timeout_s=10)
    assert rerun.exit_code == 0
    rerun = await run_shell(0, "test -f nope.py", cwd=repo, timeout_s=10)
    assert rerun.exit_code == 1


@pytest.mark.anyio
async def test_rerun_timeout_kills_the_whole_process_group(tmp_path: Path) -> None:
    pidfile = tmp_path / "bg.pid"
    command = f"sleep 30 & echo $! > {shlex.quote(str(pidfile))}; wait"
    started = time.monotonic()
    rerun = await run_shell(0, command, cwd=tmp_path, timeout_s=0.5)
    assert time.monotonic() - started < 10
    assert rerun.timed_out and rerun.exit_code is None
    assert "timed out after 0.5 s" in rerun.detail
    background = int(pidfile.read_text())
    for _ in range(100):
        if not _alive(background):
            break
        await anyio.sleep(0.05)
    else:
        pytest.fail(f"background child {background} survived the timeout")


def _alive(pid: int) -> bool:
    """Running, as opposed to gone or a zombie waiting for init to reap it (how soon that
    happens depends on the machine's init, not on us)."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return False
    return stat.rsplit(")", 1)[1].split()[0] != "Z"


@pytest.mark.anyio
async def test_command_runner_is_a_seam(repo: Path) -> None:
    """The engine can hand in another runner (the supervisor); gather_facts uses it as is."""
    seen: list[tuple[int, str, float]] = []

    async def fake(index: int, command: str, *, cwd: Path, timeout_s: float) -> CommandRerun:
        seen.append((index, command, timeout_s))
        return CommandRerun(index=index, command=command, exit_code=0)

    pack = small_pack()
    facts = await gather_facts(
        repo, pack, round_no=1, verify_commands=True, command_timeout_s=7, run_command=fake
    )
    assert seen == [(i, c, 7) for i, c in enumerate(pack.commands_to_run)]
    assert facts.command_reruns is not None and len(facts.command_reruns) == 2


@pytest.mark.anyio
async def test_timeout_defaults_to_the_packs_runtime_limit(repo: Path) -> None:
    seen: list[float] = []

    async def fake(index: int, command: str, *, cwd: Path, timeout_s: float) -> CommandRerun:
        seen.append(timeout_s)
        return CommandRerun(index=index, command=command, exit_code=0)

    pack = small_pack(runtime_policy={"timeout_sec": 42})
    await gather_facts(repo, pack, round_no=1, verify_commands=True, run_command=fake)
    assert seen == [42.0, 42.0]


@pytest.mark.anyio
async def test_refuses_what_is_not_a_work_tree_top_level(repo: Path, tmp_path: Path) -> None:
    plain = tmp_path / "plain"
    plain.mkdir()
    with pytest.raises(FactsError, match="not a git work tree"):
        await gather_facts(plain, small_pack(), round_no=1)
    with pytest.raises(FactsError, match="pass its top level"):
        await gather_facts(repo / "src", small_pack(), round_no=1)
    with pytest.raises(FactsError, match="'no-such-rev' is not a commit"):
        await gather_facts(repo, small_pack(), base="no-such-rev", round_no=1)
