"""Error messages of the strict decoder: what a person needs to fix the file."""

from __future__ import annotations

import json

import pytest

from protocol import ProtocolError, QueueTask, StepResult, TaskIntake, decode

INTAKE = {
    "task_title": "t",
    "target": "x",
    "execution_route": ["a"],
    "acceptance_criteria": ["AC1: y"],
}


def error(payload: object, type: type) -> ProtocolError:
    with pytest.raises(ProtocolError) as info:
        decode(json.dumps(payload), type, source="f.json")
    return info.value


def test_a_bad_enum_value_in_a_list_names_the_good_ones() -> None:
    err = error({**INTAKE, "risk_flags": ["security"]}, TaskIntake)
    assert err.path == "$.risk_flags[0]"
    assert err.reason == (
        "Invalid enum value 'security'; expected one of: destructive, security_sensitive, "
        "data_migration, public_api_change, dependency_change, production_config"
    )


def test_a_bad_enum_value_behind_an_optional_names_the_good_ones() -> None:
    err = error({**INTAKE, "tier_override": "tier9"}, TaskIntake)
    assert err.path == "$.tier_override"
    assert "expected one of: tier2, tier3" in err.reason


def test_a_bad_value_in_a_nested_struct_names_the_good_ones() -> None:
    result = {
        "verdict": "MAYBE",
        "summary": "s",
    }
    err = error(result, StepResult)
    assert err.path == "$.verdict"
    assert err.reason.endswith("expected one of: PASS, FAIL, REWORK, BLOCKED")


def test_other_errors_are_left_as_they_are() -> None:
    err = error({"key": 1}, QueueTask)
    assert "expected one of" not in err.reason
    assert str(err).startswith("f.json: $.")
