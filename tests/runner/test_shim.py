"""The shim adapter: config and templates, argv building, prompts, dry runs, bad input."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

import protocol
from protocol import StepPack
from runner.evidence import RoundDir, round_rel
from runner.prompt import render_step_prompt
from runner.shim import (
    MAX_ARG_BYTES,
    RESERVED_ENV,
    ShimConfig,
    ShimError,
    UnknownBackend,
    build_invocation,
    resolve_backend,
)
from tests.conftest import SEED_PACKS

PY = sys.executable
RUNNER = [PY, "-m", "runner", "--log-level", "warning"]
GXD_IDS = ["--run-id", "T-9_run", "--task-id", "T-9", "--step-id", "S2"]

PACK: dict[str, Any] = {
    "task_id": "T-9",
    "run_id": "T-9_run",
    "step_id": "S2",
    "objective": "Do the thing.",
    "allowed_paths": ["src/**"],
    "commands_to_run": ["true"],
    "acceptance_criteria": ["AC1: the thing is done, with `quotes` and {braces}."],
    "runtime_policy": {"timeout_sec": 900, "no_output_timeout_sec": 120},
}
REWORK: dict[str, Any] = {
    "task_id": "T-9",
    "run_id": "T-9_run",
    "step_id": "S2",
    "rework_round": 1,
    "reason_code": "AC_NOT_MET",
    "scope_guard": {"allowed_paths": ["src/**"]},
    "failed_acceptance_criteria": ["AC1: the thing is done, with `quotes` and {braces}."],
    "minimal_fix_list": ["do the thing properly"],
}


def runner(*args: str, cwd: Path | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [*RUNNER, *args], capture_output=True, text=True, cwd=cwd, timeout=60, check=False
    )


def files(tmp_path: Path, pack: dict[str, Any] = PACK, config: Any = None) -> tuple[Path, Path]:
    ws = tmp_path / "ws"
    ws.mkdir(exist_ok=True)
    pack_file = tmp_path / "pack.json"
    pack_file.write_text(json.dumps(pack))
    config_file = tmp_path / "shim.json"
    if config is not None:
        config_file.write_text(json.dumps(config))
    return ws, pack_file


def step(ws: Path, pack_file: Path, *extra: str) -> subprocess.CompletedProcess[str]:
    """`runner dispatch-step` on one pack in `ws`, with the shim config beside it if any."""
    config = pack_file.parent / "shim.json"
    shim = ["--shim-config", str(config)] if config.exists() else []
    return runner(
        "dispatch-step", "--step-pack-file", str(pack_file), "--workspace", str(ws), *shim, *extra
    )


def dry(tmp_path: Path, *extra: str, pack: dict[str, Any] = PACK, config: Any = None) -> Any:
    ws, pack_file = files(tmp_path, pack, config)
    result = step(ws, pack_file, "--dry-run", *extra)
    assert result.returncode == 0, result.stderr
    assert not any(ws.iterdir()), "a dry run writes nothing"
    return json.loads(result.stdout)


def test_default_command_is_the_original_shim(tmp_path: Path) -> None:
    plan = dry(tmp_path)
    argv = plan["argv"]
    assert argv[:2] == ["gxd-subagent-shim", "create"]
    assert argv[3:] == ["--backend=codex", *GXD_IDS]
    assert argv[2].startswith("# Step S2 of task T-9 (run T-9_run), round R1")
    assert plan["prompt_via"] == "argv"
    assert plan["cwd"] == str(tmp_path / "ws")
    assert plan["env"]["RUNNER_ROUND_DIR"].endswith(
        ".artifacts/agent_runs/T-9_run/steps/S2/rounds/R1"
    )


def test_limits_come_from_the_pack_and_options_override(tmp_path: Path) -> None:
    limits = dry(tmp_path)["limits"]
    assert (limits["max_runtime_sec"], limits["max_silence_sec"]) == (900, 120)
    limits = dry(tmp_path, "--max-runtime-sec", "30", "--max-memory-mb", "512")["limits"]
    assert (limits["max_runtime_sec"], limits["max_silence_sec"], limits["max_memory_mb"]) == (
        30,
        120,
        512,
    )


def test_backend_option_and_resume_command(tmp_path: Path) -> None:
    ws, _ = files(tmp_path)
    rework = tmp_path / "rework.json"
    rework.write_text(json.dumps(REWORK))
    result = runner(
        "dispatch-rework",
        "--rework-pack-file",
        str(rework),
        "--thread-id",
        "th_42",
        "--workspace",
        str(ws),
        "--worker-backend",
        "claude",
        "--dry-run",
    )
    assert result.returncode == 0, result.stderr
    plan = json.loads(result.stdout)
    argv = plan["argv"]
    assert argv[:2] == ["gxd-subagent-shim", "resume"]
    assert argv[2].startswith("# Rework 1 of step S2")
    assert argv[3:] == ["th_42", "--backend=claude", *GXD_IDS]
    assert (plan["kind"], plan["thread_id"]) == ("rework", "th_42")


def test_config_templates_and_placeholders(tmp_path: Path) -> None:
    config = {
        "backends": {
            "script": {
                "create": ["my-agent", "--file={prompt_file}", "{round_dir}", "R{round}", "{{x}}"],
                "env": {"AGENT_MODE": "fast"},
            }
        },
        "default_backend": "script",
    }
    plan = dry(tmp_path, config=config)
    root = tmp_path / "ws" / ".artifacts/agent_runs/T-9_run/steps/S2/rounds/R1"
    assert plan["argv"] == ["my-agent", f"--file={root}/logs/prompt.md", str(root), "R1", "{x}"]
    assert plan["prompt_via"] == "file"
    assert plan["env"]["AGENT_MODE"] == "fast"
    assert plan["backend"] == "script"


@pytest.mark.parametrize(
    ("backends", "words"),
    [
        (
            {"a": {"create": ["x", "{promt}"]}},
            "$.backends.a.create[1]: unknown placeholder {promt}",
        ),
        ({"a": {"create": ["x", "{prompt:>10}"]}}, "unknown placeholder"),
        ({"a": {"create": ["x", "{prompt}", "{thread_id}"]}}, "no thread"),
        ({"a": {"create": ["x"]}}, "never gets the prompt"),
        ({"a": {"create": []}}, "length >= 1"),
        ({"a": {"create": ["x", "{prompt"]}}, "bad template"),
        ({"a": {"create": ["{prompt}"], "shell": True}}, "unknown field `shell`"),
        # Each of these used to pass and only fail at spawn time, a round wasted (exit 1).
        ({"a": {"create": ["", "{prompt}"]}}, "$.backends.a.create[0]: the program name is"),
        (
            {"a": {"create": ["x", "{prompt}"], "resume": ["", "{prompt}"]}},
            "$.backends.a.resume[0]: the program name is empty",
        ),
        ({"a": {"create": ["x\0", "{prompt}"]}}, "$.backends.a.create[0]: an argument contains"),
        ({"a": {"create": ["x", "{prompt}\0"]}}, "$.backends.a.create[1]: an argument contains"),
        (
            {"a": {"create": ["x", "{prompt}"], "env": {"A=B": "1"}}},
            "$.backends.a.env[\"A=B\"]: an environment variable name contains '='",
        ),
        (
            {"a": {"create": ["x", "{prompt}"], "env": {"": "1"}}},
            '$.backends.a.env[""]: an environment variable name is empty',
        ),
        (
            {"a": {"create": ["x", "{prompt}"], "env": {"A\0": "1"}}},
            '$.backends.a.env["A\\u0000"]: an environment variable name contains a NUL byte',
        ),
        (
            {"a": {"create": ["x", "{prompt}"], "env": {"A": "1\0"}}},
            "$.backends.a.env.A: an environment variable value contains a NUL byte",
        ),
        ({"a\0": {"create": ["x", "{prompt}"]}}, "a backend name contains a NUL byte"),
        (
            {"a": {"create": ["x", "{prompt}"], "env": {"RUNNER_STEP_TOKEN": "t"}}},
            "$.backends.a.env.RUNNER_STEP_TOKEN: RUNNER_STEP_TOKEN is set by the runner",
        ),
        (
            {"a": {"create": ["x", "{prompt}"], "env": {"RUNNER_ROUND_DIR": "/tmp/elsewhere"}}},
            "$.backends.a.env.RUNNER_ROUND_DIR: RUNNER_ROUND_DIR is set by the runner",
        ),
    ],
)
def test_bad_config_is_exit_2_naming_file_and_path(
    tmp_path: Path, backends: dict[str, Any], words: str
) -> None:
    ws, pack_file = files(tmp_path, config={"backends": backends})
    result = step(ws, pack_file)
    assert result.returncode == 2
    assert words in result.stderr
    assert "shim.json" in result.stderr and "$.backends" in result.stderr
    assert "Traceback" not in result.stderr
    assert not any(ws.iterdir())


def test_every_runner_variable_is_reserved_in_a_config() -> None:
    """What a shim gets from the runner (and the supervisor's token) cannot be configured:
    a configured value would win over the runner's, or be shown by --dry-run and then lost."""
    for name in RESERVED_ENV:
        config = {"backends": {"a": {"create": ["x", "{prompt}"], "env": {name: "v"}}}}
        with pytest.raises(protocol.ProtocolError) as err:
            protocol.decode(json.dumps(config), ShimConfig)
        assert err.value.path == f"$.backends.a.env.{name}"
    assert "RUNNER_STEP_TOKEN" in RESERVED_ENV and "RUNNER_ROUND_DIR" in RESERVED_ENV
    ok = {"backends": {"a": {"create": ["x", "{prompt}"], "env": {"RUNNER_MOCK_SCENARIO": "hang"}}}}
    assert protocol.decode(json.dumps(ok), ShimConfig).backends["a"].env


def test_the_reserved_names_are_those_a_dispatch_sets(tmp_path: Path) -> None:
    """RESERVED_ENV is written out by hand beside the code that sets the variables
    (runner.dispatch): a variable added there must be reserved too."""
    config = {"backends": {"a": {"create": ["x", "{prompt}"]}}, "default_backend": "a"}
    env = dry(tmp_path, config=config)["env"]
    set_by_runner = {name for name in env if name.startswith("RUNNER_")}
    assert "RUNNER_ROUND_DIR" in set_by_runner
    assert set_by_runner <= RESERVED_ENV, set_by_runner - RESERVED_ENV


def test_nul_byte_from_the_pack_is_refused_before_running(tmp_path: Path) -> None:
    config = {"backends": {"a": {"create": ["x", "{prompt}"]}}, "default_backend": "a"}
    ws, pack_file = files(tmp_path, {**PACK, "objective": "Do\0it."}, config)
    result = step(ws, pack_file)
    assert result.returncode == 2, result.stderr
    assert "NUL byte in argument 1" in result.stderr and "{prompt_file}" in result.stderr
    assert not any(ws.iterdir())


def test_unknown_backend_lists_the_known_ones(tmp_path: Path) -> None:
    config = {"backends": {"mock": {"create": ["m", "{prompt}"]}}}
    ws, pack_file = files(tmp_path, config=config)
    result = step(ws, pack_file, "--worker-backend", "codx")
    assert result.returncode == 2
    assert "'codx'" in result.stderr and "mock" in result.stderr


def test_prompt_too_long_for_argv_is_refused_before_running(tmp_path: Path) -> None:
    pack = {**PACK, "objective": "x" * (MAX_ARG_BYTES + 10)}
    ws, pack_file = files(tmp_path, pack)
    result = step(ws, pack_file)
    assert result.returncode == 2
    assert "{prompt_file}" in result.stderr and "prompt_stdin" in result.stderr
    assert not any(ws.iterdir())


def test_prompt_on_stdin_and_shim_environment(tmp_path: Path) -> None:
    dump = (
        "import json, os, sys; data = sys.stdin.read(); "
        "env = {k: v for k, v in os.environ.items() if k.startswith('RUNNER_')}; "
        "open(os.environ['RUNNER_ROUND_DIR'] + '/seen.json', 'w').write("
        "json.dumps({'stdin': data, 'env': env, 'cwd': os.getcwd()}))"
    )
    literal = dump.replace("{", "{{").replace("}", "}}")  # braces are template syntax
    config = {"backends": {"dump": {"create": [PY, "-c", literal], "prompt_stdin": True}}}
    pack = {**PACK, "objective": "y" * (MAX_ARG_BYTES + 10)}  # too long for argv, fine on stdin
    ws, pack_file = files(tmp_path, pack, config)
    result = step(ws, pack_file, "--worker-backend", "dump")
    assert result.returncode == 1, "no StepResult: a parse failure"
    record = json.loads(result.stdout)
    assert record["parse_failure"]["reason"] == "NO_RESULT"
    root = ws / record["round_dir"]
    seen = json.loads((root / "seen.json").read_text())
    assert seen["stdin"] == (root / "logs" / "prompt.md").read_text()
    assert seen["cwd"] == str(ws)
    assert seen["env"]["RUNNER_STEP_ID"] == "S2" and seen["env"]["RUNNER_ROUND"] == "1"
    assert seen["env"]["RUNNER_PACK_FILE"] == str(root / "logs" / "step_pack.json")
    assert json.loads((root / "logs" / "step_pack.json").read_text()) == pack


@pytest.mark.parametrize(
    ("mutate", "words"),
    [
        (lambda p: {**p, "allowed_paths": ["../escape/**"]}, "allowed_paths"),
        (lambda p: {k: v for k, v in p.items() if k != "acceptance_criteria"}, "missing"),
        (lambda p: {**p, "run_id": "../evil"}, "$.run_id"),
    ],
)
def test_invalid_pack_is_exit_2_and_nothing_is_written(
    tmp_path: Path, mutate: Any, words: str
) -> None:
    ws, pack_file = files(tmp_path, mutate(PACK))
    result = step(ws, pack_file)
    assert result.returncode == 2
    assert str(pack_file) in result.stderr and words in result.stderr
    assert not any(ws.iterdir())


def test_ledger_root_without_project_is_a_usage_error(tmp_path: Path) -> None:
    ws, pack_file = files(tmp_path)
    result = step(ws, pack_file, "--log-root-dir", str(tmp_path / "ledger"))
    assert result.returncode == 2
    assert "--log-root-dir needs --log-project-id" in result.stderr
    assert not any(ws.iterdir())
    assert not (tmp_path / "ledger").exists()


def test_taken_round_is_refused(tmp_path: Path) -> None:
    ws, pack_file = files(tmp_path)
    (ws / round_rel("T-9_run", "S2", 3)).mkdir(parents=True)
    result = step(ws, pack_file, "--round", "3")
    assert result.returncode == 2
    assert "R3" in result.stderr and "already exists" in result.stderr


def test_dry_run_round_follows_existing_rounds(tmp_path: Path) -> None:
    ws, _ = files(tmp_path)
    (ws / round_rel("T-9_run", "S2", 4)).mkdir(parents=True)
    pack_file = tmp_path / "pack.json"
    result = step(ws, pack_file, "--dry-run")
    assert json.loads(result.stdout)["round"] == 5


@pytest.mark.parametrize("path", SEED_PACKS, ids=lambda p: p.name)
def test_seed_packs_render_a_prompt_with_every_criterion(path: Path, tmp_path: Path) -> None:
    pack = protocol.read(path, StepPack)
    rd = RoundDir(tmp_path, pack.run_id, pack.step_id, 1)
    prompt = render_step_prompt(pack, rd)
    assert prompt == render_step_prompt(pack, rd), "deterministic"
    assert rd.rel == pack.view.round_dir(1)
    for criterion in pack.view.criteria:
        assert criterion.text in prompt
    for command in pack.view.commands_to_run:
        assert command in prompt
    for allowed in pack.view.allowed_paths:
        assert f"`{allowed}`" in prompt
    assert f"{rd.rel}/step_result.json" in prompt
    for field in ("verdict", "reason_code", "commands_executed", "verification_results"):
        assert field in prompt


def test_build_invocation_and_resolve_backend_units() -> None:
    config = protocol.decode(
        json.dumps({"backends": {"a": {"create": ["a", "{prompt}"]}}}), ShimConfig
    )
    with pytest.raises(UnknownBackend, match="'codex' is not in cfg; known: a"):
        resolve_backend(config, "cfg", None, None)
    name, command = resolve_backend(config, "cfg", "a", "ignored")
    assert resolve_backend(None, "", None, "pack-choice")[0] == "pack-choice"
    values = dict.fromkeys(
        [
            "prompt",
            "prompt_file",
            "thread_id",
            "task_id",
            "run_id",
            "step_id",
            "backend",
            "round",
            "round_dir",
            "workspace",
            "pack_file",
            "step_result_file",
        ],
        "v",
    )
    assert build_invocation(command, "create", name, values).argv == ["a", "v"]
    with pytest.raises(ShimError, match="no resume command"):
        build_invocation(command, "resume", name, values)
