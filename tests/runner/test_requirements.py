from __future__ import annotations

import hashlib
import json
import sys
import time
from datetime import UTC, datetime
from pathlib import Path

import anyio
import psutil
import pytest

from protocol import (
    CURRENT_FILE,
    DRAFT_FILE,
    META_FILE,
    PROFILE_FILE,
    ControllerBackend,
    ControllerProfile,
    FreezeMeta,
    FreezeReason,
    read,
)
from runner.requirements import (
    ControllerFailed,
    DraftEdited,
    FreezeRefused,
    RequirementsError,
    RequirementsInputError,
    check_freeze,
    draft_requirements,
    freeze_requirements,
)
from tests.runner.hostile import recorded_pids, survivors

DIALOGUE = (
    "User: We need a --json flag on the report command.\n"
    "User: Do not touch `src/legacy/`.\n"
    "User: Done when `pytest tests/test_report.py` passes.\n"
)
T0 = datetime(2026, 3, 1, 12, 0, tzinfo=UTC)


def sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


@pytest.fixture
def dialogue(tmp_path: Path) -> Path:
    path = tmp_path / "dialogue.txt"
    path.write_text(DIALOGUE)
    return path


def controller(tmp_path: Path, body: str) -> list[str]:
    script = tmp_path / "controller.py"
    script.write_text("import sys, os, subprocess, time\n" + body)
    return [sys.executable, str(script)]


# --- draft ----------------------------------------------------------------------------------


@pytest.mark.anyio
async def test_heuristic_draft_writes_draft_and_profile(tmp_path: Path, dialogue: Path) -> None:
    out = tmp_path / "input"
    profile = await draft_requirements(dialogue, out, now=T0)
    text = (out / DRAFT_FILE).read_text()
    assert "## Forbidden Paths\n\n- `src/legacy/`" in text
    assert "- AC1: Done when `pytest tests/test_report.py` passes." in text
    assert read(out / PROFILE_FILE, ControllerProfile) == profile
    assert profile.backend is ControllerBackend.HEURISTIC
    assert profile.model == "heuristic-v1"
    assert profile.draft_sha256 == sha((out / DRAFT_FILE).read_bytes())
    assert profile.dialogue_sha256 == sha(DIALOGUE.encode())
    assert profile.created_at == "2026-03-01T12:00:00Z"


@pytest.mark.anyio
async def test_controller_command_gets_dialogue_on_stdin(tmp_path: Path, dialogue: Path) -> None:
    argv = controller(
        tmp_path,
        "text = sys.stdin.read()\n"
        "print('# Requirements from controller')\n"
        "print('- first line: ' + text.splitlines()[0])\n",
    )
    out = tmp_path / "input"
    profile = await draft_requirements(
        dialogue, out, controller_command=argv, controller_model="model-x", timeout_sec=30
    )
    assert (out / DRAFT_FILE).read_text() == (
        "# Requirements from controller\n"
        "- first line: User: We need a --json flag on the report command.\n"
    )
    assert profile.backend is ControllerBackend.COMMAND
    assert (profile.model, profile.command, profile.timeout_sec) == ("model-x", argv, 30)


@pytest.mark.anyio
@pytest.mark.parametrize(
    ("body", "message"),
    [
        ("sys.stderr.write('model quota exceeded\\n'); sys.exit(3)", "exited with code 3"),
        ("pass", "wrote no draft"),
        ("sys.stdout.buffer.write(b'\\xff\\xfe bad')", "not UTF-8"),
    ],
)
async def test_controller_failures_are_clear_and_write_nothing(
    tmp_path: Path, dialogue: Path, body: str, message: str
) -> None:
    out = tmp_path / "input"
    with pytest.raises(ControllerFailed, match=message) as caught:
        await draft_requirements(dialogue, out, controller_command=controller(tmp_path, body))
    if "quota" in body:
        assert caught.value.exit_code == 3
        assert "model quota exceeded" in str(caught.value)
    assert not out.exists()


@pytest.mark.anyio
async def test_controller_that_cannot_start(tmp_path: Path, dialogue: Path) -> None:
    with pytest.raises(ControllerFailed, match="cannot be started"):
        await draft_requirements(
            dialogue, tmp_path / "input", controller_command=[str(tmp_path / "no-such-binary")]
        )


@pytest.mark.anyio
async def test_controller_timeout_kills_its_whole_process_group(
    tmp_path: Path, dialogue: Path
) -> None:
    pid_file = tmp_path / "child.pid"
    argv = controller(
        tmp_path,
        "child = subprocess.Popen([sys.executable, '-c', 'import time; time.sleep(60)'])\n"
        f"open({str(pid_file)!r}, 'w').write(str(child.pid))\n"
        "time.sleep(60)\n",
    )
    started = time.monotonic()
    with pytest.raises(ControllerFailed, match=r"timed out after 0\.5s"):
        await draft_requirements(
            dialogue, tmp_path / "input", controller_command=argv, timeout_sec=0.5
        )
    assert time.monotonic() - started < 10
    grandchild = int(pid_file.read_text())
    deadline = time.monotonic() + 5
    while time.monotonic() < deadline:
        try:
            if psutil.Process(grandchild).status() == psutil.STATUS_ZOMBIE:
                break
        except psutil.NoSuchProcess:
            break
        await anyio.sleep(0.05)
    else:
        pytest.fail("the controller's child outlived the timeout")
    assert not (tmp_path / "input").exists()


@pytest.mark.anyio
@pytest.mark.parametrize("ends", ["timeout", "exit"])
async def test_no_process_of_the_controller_survives_it(
    tmp_path: Path, dialogue: Path, ends: str
) -> None:
    """A controller's processes in a session of their own (``setsid``) are outside its process
    group: killing the group left them running. Run under the supervisor, none survives, when
    the controller times out or when it exits."""
    pids = tmp_path / "pids"
    escapee = f"echo $$ >> {pids}; exec sleep 121"
    argv = controller(
        tmp_path,
        f"subprocess.Popen(['sh', '-c', {escapee!r}], start_new_session=True)\n"  # setsid
        f"subprocess.Popen(['sh', '-c', {escapee!r}])\n"
        f"def started(): return len(open({str(pids)!r}).read().split())\n"
        f"while not os.path.exists({str(pids)!r}) or started() < 2: time.sleep(0.01)\n"
        + ("time.sleep(60)\n" if ends == "timeout" else "print('# Draft')\n"),
    )
    out = tmp_path / "input"
    if ends == "timeout":
        with pytest.raises(ControllerFailed, match=r"timed out after 1s"):
            await draft_requirements(dialogue, out, controller_command=argv, timeout_sec=1)
        assert not out.exists()
    else:
        await draft_requirements(dialogue, out, controller_command=argv, timeout_sec=30)
        assert (out / DRAFT_FILE).read_text() == "# Draft\n"
    ended = time.time()
    recorded = recorded_pids(pids, expect=2)
    assert len(recorded) == 2
    assert survivors(recorded, ended) == []


@pytest.mark.anyio
async def test_controller_that_writes_too_much_is_stopped(tmp_path: Path, dialogue: Path) -> None:
    argv = controller(tmp_path, "while True: sys.stdout.write('x' * 65536)\n")
    started = time.monotonic()
    with pytest.raises(ControllerFailed, match="wrote more than 1048576 bytes"):
        await draft_requirements(dialogue, tmp_path / "input", controller_command=argv)
    assert time.monotonic() - started < 10
    assert not (tmp_path / "input").exists()


@pytest.mark.anyio
async def test_controller_that_exits_leaving_a_child_holding_stdout(
    tmp_path: Path, dialogue: Path
) -> None:
    argv = controller(
        tmp_path,
        "subprocess.Popen([sys.executable, '-c', 'import time; time.sleep(60)'])\n"
        "print('# Draft')\n",
    )
    started = time.monotonic()
    await draft_requirements(dialogue, tmp_path / "input", controller_command=argv, timeout_sec=30)
    assert time.monotonic() - started < 10
    assert (tmp_path / "input" / DRAFT_FILE).read_text() == "# Draft\n"


@pytest.mark.anyio
async def test_edited_draft_is_not_overwritten_without_force(
    tmp_path: Path, dialogue: Path
) -> None:
    out = tmp_path / "input"
    await draft_requirements(dialogue, out)
    await draft_requirements(dialogue, out)  # unedited: regenerating is fine
    (out / DRAFT_FILE).write_text("# My careful edits\n")
    marker = controller(tmp_path, f"open({str(tmp_path / 'ran')!r}, 'w').write('x')\n")
    with pytest.raises(DraftEdited):
        await draft_requirements(dialogue, out, controller_command=marker)
    assert (out / DRAFT_FILE).read_text() == "# My careful edits\n"
    assert not (tmp_path / "ran").exists(), "the controller must not run for nothing"
    await draft_requirements(dialogue, out, force=True)
    assert "# Requirements (draft)" in (out / DRAFT_FILE).read_text()


@pytest.mark.anyio
@pytest.mark.parametrize(
    ("content", "message"),
    [(None, "not found"), (b"   \n", "empty"), (b"\xff\xfe", "not UTF-8")],
)
async def test_bad_dialogue_file(tmp_path: Path, content: bytes | None, message: str) -> None:
    path = tmp_path / "dialogue.txt"
    if content is not None:
        path.write_bytes(content)
    with pytest.raises(RequirementsInputError, match=message) as caught:
        await draft_requirements(path, tmp_path / "input")
    assert caught.value.path == path
    assert not (tmp_path / "input").exists()


# --- freeze and check -----------------------------------------------------------------------


@pytest.fixture
def input_dir(tmp_path: Path) -> Path:
    directory = tmp_path / "input"
    directory.mkdir()
    (directory / DRAFT_FILE).write_text("# Requirements\n\n- goal one\n")
    return directory


def test_freeze_then_approve_then_check(input_dir: Path) -> None:
    assert check_freeze(input_dir).reason is FreezeReason.NOT_FROZEN

    plan, meta = freeze_requirements(input_dir, now=T0)
    assert (plan.action.value, meta.version, meta.approved) == ("new_version", 1, False)
    frozen = (input_dir / "requirements.v1.md").read_bytes()
    assert (input_dir / CURRENT_FILE).read_bytes() == frozen
    assert meta.sha256 == sha(frozen)
    assert read(input_dir / META_FILE, FreezeMeta) == meta
    assert check_freeze(input_dir).reason is FreezeReason.UNAPPROVED

    plan, meta = freeze_requirements(input_dir, approve=True, approved_by="Ann Lee", now=T0)
    assert (plan.action.value, meta.version, meta.approved) == ("approve", 1, True)
    assert (meta.approved_by, meta.approved_at) == ("Ann Lee", "2026-03-01T12:00:00Z")
    check = check_freeze(input_dir)
    assert check.allowed and check.reason is FreezeReason.APPROVED_AND_CURRENT
    assert (check.version, check.approved_by) == (1, "Ann Lee")

    plan, again = freeze_requirements(input_dir, approve=True, approved_by="Bob")
    assert plan.action.value == "unchanged" and again == meta  # Ann's approval stands


def test_changed_draft_becomes_the_next_version(input_dir: Path) -> None:
    freeze_requirements(input_dir, approve=True, approved_by="Ann")
    (input_dir / DRAFT_FILE).write_text("# Requirements\n\n- goal two\n")
    check = check_freeze(input_dir)
    assert check.allowed and check.draft_changed

    _, meta = freeze_requirements(input_dir)
    assert meta.version == 2 and not meta.approved
    assert "goal one" in (input_dir / "requirements.v1.md").read_text()
    assert "goal two" in (input_dir / CURRENT_FILE).read_text()
    assert check_freeze(input_dir).reason is FreezeReason.UNAPPROVED


def test_current_edited_after_approval_blocks_and_is_never_overwritten(input_dir: Path) -> None:
    freeze_requirements(input_dir, approve=True, approved_by="Ann")
    edited = (input_dir / CURRENT_FILE).read_text() + "- sneaked in\n"
    (input_dir / CURRENT_FILE).write_text(edited)

    check = check_freeze(input_dir)
    assert not check.allowed
    assert check.decision.value == "execution_blocked_unapproved"
    assert check.reason is FreezeReason.EDITED_AFTER_FREEZE
    assert "edited after freeze v1" in check.detail

    with pytest.raises(FreezeRefused, match="in no frozen version"):
        freeze_requirements(input_dir, approve=True, approved_by="Ann")
    assert (input_dir / CURRENT_FILE).read_text() == edited


def test_version_file_edited_or_missing_blocks(input_dir: Path) -> None:
    freeze_requirements(input_dir, approve=True, approved_by="Ann")
    v1 = input_dir / "requirements.v1.md"
    v1.write_text("rewritten history\n")
    assert check_freeze(input_dir).reason is FreezeReason.VERSION_EDITED
    v1.unlink()
    assert check_freeze(input_dir).reason is FreezeReason.VERSION_MISSING
    (input_dir / CURRENT_FILE).unlink()
    assert check_freeze(input_dir).reason is FreezeReason.CURRENT_MISSING


def test_freeze_interrupted_before_the_meta_recovers(input_dir: Path) -> None:
    freeze_requirements(input_dir, approve=True, approved_by="Ann")
    new_text = b"# Requirements\n\n- goal two\n"
    (input_dir / DRAFT_FILE).write_bytes(new_text)
    # What a kill between "current written" and "meta written" leaves behind:
    (input_dir / "requirements.v2.md").write_bytes(new_text)
    (input_dir / CURRENT_FILE).write_bytes(new_text)
    assert check_freeze(input_dir).reason is FreezeReason.EDITED_AFTER_FREEZE

    _, meta = freeze_requirements(input_dir, approve=True, approved_by="Ann")
    assert meta.version == 3
    assert check_freeze(input_dir).allowed


def test_unreadable_meta_blocks_and_freeze_refuses(input_dir: Path) -> None:
    (input_dir / META_FILE).write_text(json.dumps({"version": 1, "approved": True}))
    check = check_freeze(input_dir)
    assert check.reason is FreezeReason.META_INVALID
    assert "sha256" in check.detail
    with pytest.raises(FreezeRefused, match="unreadable"):
        freeze_requirements(input_dir)


def test_frozen_text_has_lf_line_ends(input_dir: Path) -> None:
    raw = b"# R\r\n\r\n- a\r\n\r\n\r\n"
    (input_dir / DRAFT_FILE).write_bytes(raw)
    _, meta = freeze_requirements(input_dir)
    assert (input_dir / CURRENT_FILE).read_bytes() == b"# R\n\n- a\n"
    assert meta.source_draft_sha256 == sha(raw) != meta.sha256


@pytest.mark.parametrize(
    ("approve", "approved_by", "message"),
    [
        (True, None, "needs --approved-by"),
        (True, "  ", "non-blank name"),
        (True, "Ann\nEvil", "control characters"),
        (False, "Ann", "without --approve"),
    ],
)
def test_bad_approval_arguments_write_nothing(
    input_dir: Path, approve: bool, approved_by: str | None, message: str
) -> None:
    with pytest.raises(RequirementsError, match=message):
        freeze_requirements(input_dir, approve=approve, approved_by=approved_by)
    assert sorted(p.name for p in input_dir.iterdir()) == [DRAFT_FILE]


def test_missing_draft_is_a_clear_error(tmp_path: Path) -> None:
    with pytest.raises(RequirementsInputError, match="draft file not found") as caught:
        freeze_requirements(tmp_path / "nowhere")
    assert caught.value.path == tmp_path / "nowhere" / DRAFT_FILE
    assert not (tmp_path / "nowhere").exists()
