from __future__ import annotations

import copy
import json
from pathlib import Path
from typing import Any

import pytest

from protocol import ProtocolError, StepPack, decode, encode, read
from tests.conftest import SEED_PACKS


def load(path: Path) -> dict[str, Any]:
    data: dict[str, Any] = json.loads(path.read_text(encoding="utf-8"))
    return data


def decode_dict(data: dict[str, Any]) -> StepPack:
    return decode(json.dumps(data), StepPack, source="pack.json")


def test_there_are_three_seed_packs() -> None:
    assert [p.name for p in SEED_PACKS] == ["MVP-2_S1.json", "MVP-3_S1.json", "S1.json"]


@pytest.mark.parametrize("path", SEED_PACKS, ids=lambda p: p.name)
def test_seed_pack_decodes_unchanged_and_normalises(path: Path) -> None:
    pack = read(path, StepPack)
    raw = load(path)
    view = pack.view
    assert list(view.allowed_paths) == raw["allowed_paths"]
    assert list(view.forbidden_paths) == raw["forbidden_paths"]
    assert [c.text for c in view.criteria] == raw["AC"]
    assert [c.id for c in view.criteria] == [f"AC{i + 1}" for i in range(len(raw["AC"]))]
    assert [g.gate_id for g in view.gates] == [g["gate_id"] for g in raw["gates"]]
    assert view.commands_to_run == tuple(raw["commands_to_run"])
    assert view.runtime_policy.timeout_sec == raw["runtime_policy"]["timeout_sec"]
    assert view.round_dir(1) == f".artifacts/agent_runs/{raw['run_id']}/steps/S1/rounds/R1"
    # Re-encoding keeps every value the author wrote (defaults may be added beside them).
    assert_contains(json.loads(encode(pack)), raw)


def assert_contains(out: Any, raw: Any, at: str = "$") -> None:
    if isinstance(raw, dict):
        assert isinstance(out, dict), at
        for key, value in raw.items():
            assert key in out, f"{at}.{key} lost"
            assert_contains(out[key], value, f"{at}.{key}")
    elif isinstance(raw, list):
        assert isinstance(out, list) and len(out) == len(raw), at
        for i, (o, r) in enumerate(zip(out, raw, strict=True)):
            assert_contains(o, r, f"{at}[{i}]")
    else:
        assert out == raw, at


@pytest.mark.parametrize(
    ("edit", "first", "second"),
    [
        (lambda d: d["scope"]["allowed_paths"].append("src/**"), "allowed_paths", "scope."),
        (lambda d: d["scope_guard"]["allowed_paths"].pop(), "allowed_paths", "scope_guard."),
        (lambda d: d["scope"]["forbidden_paths"].pop(0), "forbidden_paths", "scope."),
        (lambda d: d["acceptance"]["AC"].__setitem__(0, "AC1: other"), "AC", "acceptance."),
        (lambda d: d["acceptance_criteria"].pop(), "AC", "acceptance_criteria"),
        (
            lambda d: d["acceptance"]["gates"][0].__setitem__("pass_condition", "x"),
            "gates",
            "acceptance.",
        ),
        (
            lambda d: d["scope"]["dependency_policy"].__setitem__("allow_new_dependencies", True),
            "dependency_policy",
            "scope.",
        ),
    ],
)
def test_disagreeing_copies_are_rejected_naming_both(edit: Any, first: str, second: str) -> None:
    data = load(SEED_PACKS[2])
    edit(data)
    with pytest.raises(ProtocolError) as info:
        decode_dict(data)
    message = str(info.value)
    assert f"`$.{first}`" in message
    assert f"`$.{second}" in message
    assert "disagree" in message
    assert info.value.source == "pack.json"


def test_allowed_path_order_does_not_matter() -> None:
    data = load(SEED_PACKS[2])
    data["scope"]["allowed_paths"].reverse()
    assert decode_dict(data).view.allowed_paths == tuple(data["allowed_paths"])


def minimal() -> dict[str, Any]:
    return {
        "task_id": "T-1",
        "run_id": "T-1_run",
        "step_id": "S1",
        "allowed_paths": ["src/**"],
        "commands_to_run": ["pytest -q"],
        "acceptance_criteria": ["AC1: tests pass", "AC2: docs updated"],
        "gates": [
            {
                "gate_id": "G1",
                "owner": "worker",
                "type": "required_command_exit_0",
                "target_ac": ["AC1"],
                "command_index": 0,
            }
        ],
    }


def test_minimal_canonical_pack_decodes() -> None:
    view = decode_dict(minimal()).view
    assert view.allowed_paths == ("src/**",)
    assert view.forbidden_paths == ()
    assert view.dependency_policy.allow_new_dependencies is False
    assert [c.id for c in view.criteria] == ["AC1", "AC2"]


def mutate(path: str, value: Any) -> dict[str, Any]:
    data = minimal()
    target: Any = data
    keys = path.split(".")
    for key in keys[:-1]:
        target = target[int(key)] if key.isdigit() else target[key]
    last = keys[-1]
    if value is KeyError:
        del target[last]
    elif last.isdigit():
        target[int(last)] = value
    else:
        target[last] = value
    return data


@pytest.mark.parametrize(
    ("data", "path", "words"),
    [
        (mutate("gates.0.command_index", 1), "$.gates[0].command_index", "past the end"),
        (mutate("gates.0.command_index", -1), "$.gates[0].command_index", ">= 0"),
        (mutate("gates.0.command_index", "0"), "$.gates[0].command_index", "Expected `int"),
        (mutate("gates.0.target_ac", ["AC9"]), "$.gates[0].target_ac[0]", "unknown AC `AC9`"),
        (
            mutate("acceptance_criteria", ["AC1: a", "AC1: b"]),
            "$.acceptance_criteria[1]",
            "duplicate AC id",
        ),
        (mutate("acceptance_criteria", []), "$.acceptance_criteria", "empty"),
        (mutate("allowed_paths", KeyError), "$.allowed_paths", "missing allowed_paths"),
        (mutate("allowed_paths", ["../etc/**"]), "$.allowed_paths[0]", "'..'"),
        (mutate("allowed_paths", ["/etc/passwd"]), "$.allowed_paths[0]", "absolute"),
        (mutate("allowed_paths", ["src/**", "C:x"]), "$.allowed_paths[1]", "absolute"),
        (mutate("forbidden_paths", ["./secrets/**"]), "$.forbidden_paths[0]", "'.' component"),
        (mutate("forbidden_paths", ["a//b"]), "$.forbidden_paths[0]", "empty or '.' component"),
        (mutate("task_id", "../x"), "$.task_id", "safe id"),
        (mutate("run_id", "a/b"), "$.run_id", "safe id"),
        (mutate("step_id", "S1\n"), "$.step_id", "safe id"),
        (mutate("step_id", KeyError), "$", "missing required field `step_id`"),
        (mutate("runtime_policy", {"timeout_sec": -5}), "$.runtime_policy.timeout_sec", ">= 1"),
        (mutate("runtime_policy", {"timeout_sec": 0}), "$.runtime_policy.timeout_sec", ">= 1"),
        (mutate("gates.0.type", "made_up"), "$.gates[0].type", "Invalid enum value"),
        (mutate("gates.0.command_index", None), "$.gates[0].command_index", "needs a command"),
        (mutate("surprise", 1), "$", "unknown field `surprise`"),
    ],
)
def test_invalid_pack_names_path_and_reason(data: dict[str, Any], path: str, words: str) -> None:
    with pytest.raises(ProtocolError) as info:
        decode_dict(data)
    assert info.value.path == path, str(info.value)
    assert words in info.value.reason


def test_duplicate_gate_ids_are_rejected() -> None:
    data = minimal()
    data["gates"].append(copy.deepcopy(data["gates"][0]))
    with pytest.raises(ProtocolError, match="duplicate gate id `G1`") as info:
        decode_dict(data)
    assert info.value.path == "$.gates[1].gate_id"


def test_error_names_file_path_and_reason() -> None:
    data = mutate("gates.0.command_index", 3)
    with pytest.raises(ProtocolError) as info:
        decode_dict(data)
    assert str(info.value).startswith("pack.json: $.gates[0].command_index: ")
