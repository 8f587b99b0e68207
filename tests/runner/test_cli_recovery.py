"""End to end through `python -m runner`: checkpoint, rollback, requirements."""

from __future__ import annotations

import json
import shlex
import subprocess
import sys
from pathlib import Path

import pytest


def run(*args: str, cwd: Path | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "runner", "--log-format", "json", *args],
        capture_output=True,
        text=True,
        check=False,
        cwd=cwd,
        env=None,
    )


def events(stderr: str) -> list[str]:
    return [json.loads(line)["event"] for line in stderr.splitlines() if line.startswith("{")]


@pytest.fixture
def ws(tmp_path: Path) -> Path:
    root = tmp_path / "ws"
    (root / "src").mkdir(parents=True)
    (root / "src" / "parser.py").write_text("def parse(): return 1\n")
    (root / "tests").mkdir()
    (root / "tests" / "test_parser.py").write_text("def test(): pass\n")
    return root


def test_checkpoint_create_list_rollback_in_the_workspace(ws: Path) -> None:
    created = run(
        "checkpoint", "create", "--task-key", "T-013", "--run-id", "T-013_run1",
        "--file", "src/parser.py", "--file", "tests/test_parser.py", "--file", "src/new.py",
        cwd=ws,
    )  # fmt: skip
    assert created.returncode == 0, created.stderr
    assert "checkpoint.created" in events(created.stderr)
    checkpoint_id = created.stdout.split()[1].rstrip(":")
    assert checkpoint_id.startswith("T-013_")
    assert "2 files" in created.stdout and "1 absent" in created.stdout
    assert (ws / ".runner" / "checkpoints" / "manifests" / f"{checkpoint_id}.json").is_file()

    listed = run("checkpoint", "list", cwd=ws)
    assert listed.returncode == 0 and checkpoint_id in listed.stdout

    (ws / "src" / "parser.py").write_text("broken\n")
    (ws / "tests" / "test_parser.py").unlink()
    (ws / "src" / "new.py").write_text("new\n")

    rolled = run("rollback", "--checkpoint-id", checkpoint_id, cwd=ws)
    assert rolled.returncode == 0, rolled.stderr
    assert "deleted        src/new.py" in rolled.stdout
    assert "recreated      tests/test_parser.py" in rolled.stdout
    assert "rewritten      src/parser.py" in rolled.stdout
    assert (ws / "src" / "parser.py").read_text() == "def parse(): return 1\n"
    assert (ws / "tests" / "test_parser.py").exists()
    assert not (ws / "src" / "new.py").exists()


def test_tree_checkpoint_with_explicit_store_and_json(tmp_path: Path, ws: Path) -> None:
    store = tmp_path / "store"
    (ws / ".git").mkdir()
    (ws / ".git" / "HEAD").write_text("ref\n")
    (ws / "node_modules" / "dep").mkdir(parents=True)
    created = run(
        "checkpoint", "create", "--task-key", "T", "--run-id", "R", "--tree", ".",
        "--exclude", "node_modules", "--checkpoint-dir", str(store), "--workspace", str(ws),
        "--json",
    )  # fmt: skip
    assert created.returncode == 0, created.stderr
    manifest = json.loads(created.stdout)
    assert manifest["trees"] == ["."]
    assert manifest["exclude"] == [".git", "node_modules"]
    paths = {e["path"] for e in manifest["entries"]}
    assert paths >= {"src", "src/parser.py"}
    assert not any(p.startswith((".git", "node_modules")) for p in paths)

    (ws / "junk").mkdir()
    (ws / "junk" / "x").write_text("x")
    rolled = run(
        "rollback", "--checkpoint-id", manifest["checkpoint_id"],
        "--checkpoint-dir", str(store), "--workspace", str(ws), "--json",
    )  # fmt: skip
    assert rolled.returncode == 0, rolled.stderr
    report = json.loads(rolled.stdout)
    assert report["deleted"] == ["junk/x"] and report["dirs_removed"] == ["junk"]
    assert not (ws / "junk").exists()

    verified = run(
        "checkpoint", "verify", "--checkpoint-id", manifest["checkpoint_id"],
        "--checkpoint-dir", str(store),
    )  # fmt: skip
    assert verified.returncode == 0 and verified.stdout.startswith("ok: ")


def test_corrupt_checkpoint_is_refused_with_exit_2(ws: Path) -> None:
    created = run("checkpoint", "create", "--task-key", "T", "--run-id", "R",
                  "--file", "src/parser.py", "--json", cwd=ws)  # fmt: skip
    manifest = json.loads(created.stdout)
    sha = manifest["entries"][0]["sha256"]
    blob = ws / ".runner" / "checkpoints" / "blobs" / sha[:2] / sha[2:]
    blob.chmod(0o644)
    blob.write_text("tampered\n")
    (ws / "src" / "parser.py").write_text("work in progress\n")

    rolled = run("rollback", "--checkpoint-id", manifest["checkpoint_id"], cwd=ws)
    assert rolled.returncode == 2
    assert "is corrupt (src/parser.py)" in rolled.stderr
    assert "nothing was restored" in rolled.stderr
    assert "Traceback" not in rolled.stderr
    assert (ws / "src" / "parser.py").read_text() == "work in progress\n"

    verified = run("checkpoint", "verify", "--checkpoint-id", manifest["checkpoint_id"], cwd=ws)
    assert verified.returncode == 2 and "does not match" in verified.stderr


def test_tampered_manifest_path_is_refused_with_exit_2(ws: Path) -> None:
    created = run("checkpoint", "create", "--task-key", "T", "--run-id", "R",
                  "--file", "src/parser.py", "--json", cwd=ws)  # fmt: skip
    manifest = json.loads(created.stdout)
    manifest["entries"][0]["path"] = "../outside.py"
    path = ws / ".runner" / "checkpoints" / "manifests" / f"{manifest['checkpoint_id']}.json"
    path.write_text(json.dumps(manifest))
    rolled = run("rollback", "--checkpoint-id", manifest["checkpoint_id"], cwd=ws)
    assert rolled.returncode == 2
    assert "$.entries[0].path" in rolled.stderr and "climbs out" in rolled.stderr
    assert not (ws.parent / "outside.py").exists()


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--file", "/etc/passwd"], "absolute"),
        (["--file", "../x"], "climbs out"),
        ([], "nothing to checkpoint"),
    ],
)
def test_bad_checkpoint_input_exits_2_and_writes_nothing(
    ws: Path, args: list[str], message: str
) -> None:
    result = run("checkpoint", "create", "--task-key", "T", "--run-id", "R", *args, cwd=ws)
    assert result.returncode == 2
    assert message in result.stderr and "Traceback" not in result.stderr
    assert not (ws / ".runner" / "checkpoints" / "manifests").exists()


@pytest.mark.parametrize(
    ("args", "option", "message"),
    [
        (["--tree", "src", "--exclude", ""], "--exclude", "empty"),
        (["--tree", "src", "--exclude", "."], "--exclude", "would exclude everything"),
        (["--tree", "src", "--exclude", "../x"], "--exclude", "climbs out"),
        (["--tree", ""], "--tree", "empty"),
        (["--file", ""], "--file", "empty"),
        (["--file", "src/parser.py", "--file", "/etc/passwd"], "--file", "absolute"),
    ],
)
def test_bad_checkpoint_path_names_its_option(
    ws: Path, args: list[str], option: str, message: str
) -> None:
    result = run("checkpoint", "create", "--task-key", "T", "--run-id", "R", *args, cwd=ws)
    assert result.returncode == 2, result.stderr
    assert f"Invalid value for {option}" in result.stderr and message in result.stderr
    assert "Traceback" not in result.stderr
    assert not (ws / ".runner").exists()


def test_malformed_digest_is_a_usage_error_not_a_corrupt_checkpoint(ws: Path) -> None:
    created = run("checkpoint", "create", "--task-key", "T", "--run-id", "R",
                  "--file", "src/parser.py", "--json", cwd=ws)  # fmt: skip
    checkpoint_id = json.loads(created.stdout)["checkpoint_id"]
    (ws / "src" / "parser.py").write_text("work in progress\n")
    for command in (["checkpoint", "verify"], ["rollback"]):
        for digest in ("zz", "0" * 63, "g" * 64, ""):
            result = run(*command, "--checkpoint-id", checkpoint_id, "--digest", digest, cwd=ws)
            assert result.returncode == 2, result.stderr
            assert "Invalid value for '--digest'" in result.stderr
            assert "corrupt" not in result.stderr and "Traceback" not in result.stderr
    assert (ws / "src" / "parser.py").read_text() == "work in progress\n"
    # A well-formed digest that is not the manifest's still says so; case does not matter.
    wrong = run("checkpoint", "verify", "--checkpoint-id", checkpoint_id, "--digest", "a" * 64,
                cwd=ws)  # fmt: skip
    assert wrong.returncode == 2 and "digest mismatch" in wrong.stderr
    digest = subprocess.run(
        [sys.executable, "-c", "import sys; from runner.checkpoint import CheckpointStore, "
         "manifest_digest; print(manifest_digest(CheckpointStore(sys.argv[1]).load(sys.argv[2])))",
         str(ws / ".runner" / "checkpoints"), checkpoint_id],
        capture_output=True, text=True, check=True,
    ).stdout.strip()  # fmt: skip
    upper = run("checkpoint", "verify", "--checkpoint-id", checkpoint_id, "--digest",
                digest.upper(), cwd=ws)  # fmt: skip
    assert upper.returncode == 0, upper.stderr


def test_list_refuses_a_missing_store_and_a_bad_task_key(tmp_path: Path, ws: Path) -> None:
    missing = run("checkpoint", "list", "--checkpoint-dir", str(tmp_path / "no" / "store"))
    assert missing.returncode == 2
    assert f"checkpoint store {tmp_path / 'no' / 'store'} does not exist" in missing.stderr
    default = run("checkpoint", "list", "--workspace", str(tmp_path / "nowhere"))
    assert default.returncode == 2 and str(tmp_path / "nowhere") in default.stderr
    run("checkpoint", "create", "--task-key", "T", "--run-id", "R", "--file", "a", cwd=ws)
    bad_key = run("checkpoint", "list", "--task-key", "../x", cwd=ws)
    assert bad_key.returncode == 2 and "invalid task key '../x'" in bad_key.stderr
    assert "error: invalid task key" in bad_key.stderr  # no JSON path: it is in no document
    listed = run("checkpoint", "list", "--task-key", "T", cwd=ws)
    assert listed.returncode == 0 and "task=T" in listed.stdout
    other = run("checkpoint", "list", "--task-key", "U", cwd=ws)
    assert (other.returncode, other.stdout) == (0, "")


def test_unknown_checkpoint_and_bad_id(ws: Path) -> None:
    missing = run("rollback", "--checkpoint-id", "T_nope", cwd=ws)
    assert missing.returncode == 2 and "not found" in missing.stderr
    bad = run("rollback", "--checkpoint-id", "../../etc", cwd=ws)
    assert bad.returncode == 2 and "invalid checkpoint id" in bad.stderr


def test_requirements_draft_freeze_status(tmp_path: Path) -> None:
    dialogue = tmp_path / "dialogue.txt"
    dialogue.write_text(
        "User: We need CSV export. Only edit src/export/. Done when the tests pass.\n"
    )
    out = tmp_path / "input"

    drafted = run("requirements", "draft", "--dialogue-file", str(dialogue), "--out-dir", str(out))
    assert drafted.returncode == 0, drafted.stderr
    assert "- `src/export/`" in (out / "requirements.draft.md").read_text()
    assert json.loads((out / "controller_profile.json").read_text())["backend"] == "heuristic"

    status = run("requirements", "status", "--input-dir", str(out))
    assert status.returncode == 1
    assert status.stdout.startswith("execution_blocked_unapproved: not_frozen")

    frozen = run("requirements", "freeze", "--input-dir", str(out))
    assert frozen.returncode == 0 and "v1" in frozen.stdout and "not approved" in frozen.stdout
    assert run("requirements", "status", "--input-dir", str(out)).returncode == 1

    approved = run("requirements", "freeze", "--input-dir", str(out),
                   "--approve", "--approved-by", "Ann")  # fmt: skip
    assert approved.returncode == 0 and "approved by Ann" in approved.stdout
    status = run("requirements", "status", "--input-dir", str(out), "--json")
    assert status.returncode == 0
    check = json.loads(status.stdout)
    assert (check["decision"], check["reason"], check["version"]) == (
        "execution_started",
        "approved_and_current",
        1,
    )

    current = out / "requirements.current.md"
    current.write_text(current.read_text() + "- also delete prod\n")
    status = run("requirements", "status", "--input-dir", str(out))
    assert status.returncode == 1
    assert "edited_after_freeze" in status.stdout
    refused = run("requirements", "freeze", "--input-dir", str(out),
                  "--approve", "--approved-by", "Ann")  # fmt: skip
    assert refused.returncode == 2 and "in no frozen version" in refused.stderr
    assert "also delete prod" in current.read_text()


def test_requirements_draft_with_controller_command(tmp_path: Path) -> None:
    dialogue = tmp_path / "dialogue.txt"
    dialogue.write_text("User: build it\n")
    script = tmp_path / "ctl.py"
    script.write_text("import sys\nsys.stdout.write('# From controller\\n' + sys.stdin.read())\n")
    command = shlex.join([sys.executable, str(script)])
    out = tmp_path / "input"
    drafted = run(
        "requirements", "draft", "--dialogue-file", str(dialogue), "--out-dir", str(out),
        "--controller-command", command, "--controller-model", "gpt-x",
    )  # fmt: skip
    assert drafted.returncode == 0, drafted.stderr
    assert (out / "requirements.draft.md").read_text() == "# From controller\nUser: build it\n"
    profile = json.loads((out / "controller_profile.json").read_text())
    assert (profile["backend"], profile["model"]) == ("command", "gpt-x")

    failing = run(
        "requirements", "draft", "--dialogue-file", str(dialogue), "--out-dir",
        str(tmp_path / "other"), "--controller-command", f"{shlex.quote(sys.executable)} -c "
        "'import sys; sys.exit(4)'",
    )  # fmt: skip
    assert failing.returncode == 2 and "exited with code 4" in failing.stderr
    assert not (tmp_path / "other").exists()

    unbalanced = run("requirements", "draft", "--dialogue-file", str(dialogue),
                     "--out-dir", str(out), "--controller-command", "'oops")  # fmt: skip
    assert unbalanced.returncode == 2 and "--controller-command" in unbalanced.stderr


def test_requirements_bad_input_exits_2(tmp_path: Path) -> None:
    missing = run("requirements", "draft", "--dialogue-file", str(tmp_path / "nope.txt"),
                  "--out-dir", str(tmp_path / "input"))  # fmt: skip
    assert missing.returncode == 2 and "nope.txt: dialogue file not found" in missing.stderr
    no_draft = run("requirements", "freeze", "--input-dir", str(tmp_path / "input"))
    assert no_draft.returncode == 2 and "draft file not found" in no_draft.stderr
    (tmp_path / "input").mkdir()
    (tmp_path / "input" / "requirements.draft.md").write_text("# R\n")
    no_name = run("requirements", "freeze", "--input-dir", str(tmp_path / "input"), "--approve")
    assert no_name.returncode == 2 and "--approved-by" in no_name.stderr
    assert sorted(p.name for p in (tmp_path / "input").iterdir()) == ["requirements.draft.md"]
    for result in (missing, no_draft, no_name):
        assert "Traceback" not in result.stderr


def test_requirements_status_of_a_missing_directory_is_bad_input(tmp_path: Path) -> None:
    for extra in ([], ["--json"]):
        result = run("requirements", "status", "--input-dir", str(tmp_path / "nope"), *extra)
        assert result.returncode == 2, result.stdout
        assert f"{tmp_path / 'nope'}: input directory not found" in result.stderr
        assert result.stdout == "" and "Traceback" not in result.stderr
    (tmp_path / "empty").mkdir()
    empty = run("requirements", "status", "--input-dir", str(tmp_path / "empty"))
    assert empty.returncode == 1 and "not_frozen" in empty.stdout


def test_unwritable_out_dir_is_a_clear_error(tmp_path: Path) -> None:
    dialogue = tmp_path / "dialogue.txt"
    dialogue.write_text("User: build it\n")
    blocker = tmp_path / "file"
    blocker.write_text("x")
    result = run("requirements", "draft", "--dialogue-file", str(dialogue),
                 "--out-dir", str(blocker / "input"))  # fmt: skip
    assert result.returncode == 2, result.stderr
    assert "cannot write the draft" in result.stderr and "Traceback" not in result.stderr
