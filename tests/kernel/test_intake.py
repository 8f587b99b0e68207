from __future__ import annotations

from typing import Any

import msgspec
import pytest
from hypothesis import given
from hypothesis import strategies as st

from kernel import intake as ki
from kernel.errors import IntakeInvalid
from protocol import (
    IntakeProblemCode,
    RiskFlag,
    RoutingRule,
    StepPack,
    TaskIntake,
    TierRules,
    read,
)
from tests.conftest import SEED_PACKS

Code = IntakeProblemCode


def intake(**changes: Any) -> TaskIntake:
    base = TaskIntake(
        task_title="Add a --json flag to report",
        target="report --json prints the report as JSON",
        execution_route=["add the flag", "add a test"],
        acceptance_criteria=["AC1: report --json prints valid JSON", "AC2: tests pass"],
        allowed_paths=["src/report/**", "tests/test_report.py"],
        commands_to_run=["python -m pytest tests/test_report.py -q"],
    )
    return msgspec.structs.replace(base, **changes)


def codes(item: TaskIntake, **kw: Any) -> list[tuple[str, Code]]:
    return [(p.path, p.code) for p in ki.validate(item, **kw)]


def test_a_complete_intake_has_no_problems() -> None:
    assert ki.validate(intake()) == ()
    assert ki.check(intake()) == intake()


def test_an_empty_intake_reports_every_required_field_at_once() -> None:
    assert codes(TaskIntake()) == [
        ("$.task_title", Code.MISSING),
        ("$.target", Code.MISSING),
        ("$.execution_route", Code.MISSING),
        ("$.acceptance_criteria", Code.MISSING),
    ]


@pytest.mark.parametrize(
    ("changes", "expected"),
    [
        ({"task_title": "   "}, [("$.task_title", Code.MISSING)]),
        ({"target": ""}, [("$.target", Code.MISSING)]),
        (
            {"execution_route": ["", " "]},
            [
                ("$.execution_route", Code.MISSING),
                ("$.execution_route[0]", Code.BLANK_ITEM),
                ("$.execution_route[1]", Code.BLANK_ITEM),
            ],
        ),
        ({"acceptance_criteria": []}, [("$.acceptance_criteria", Code.MISSING)]),
        (
            {"acceptance_criteria": ["AC1: x", "AC1: x"]},
            [("$.acceptance_criteria[1]", Code.DUPLICATE)],
        ),
        (
            {"acceptance_criteria": ["AC1: x", "AC1: y"]},
            [("$.acceptance_criteria[1]", Code.DUPLICATE_AC_ID)],
        ),
        ({"allowed_paths": ["/etc/passwd"]}, [("$.allowed_paths[0]", Code.BAD_PATH)]),
        ({"forbidden_paths": ["../up"]}, [("$.forbidden_paths[0]", Code.BAD_PATH)]),
        ({"commands_to_run": ["make", ""]}, [("$.commands_to_run[1]", Code.BLANK_ITEM)]),
        (
            {"forbidden_paths": ["secrets/**", "src/report/**"]},
            [("$.forbidden_paths[1]", Code.PATH_CONFLICT)],
        ),
        ({"task_id": "a/b"}, [("$.task_id", Code.BAD_ID)]),
    ],
)
def test_each_problem_is_reported_with_its_path_and_code(
    changes: dict[str, Any], expected: list[tuple[str, Code]]
) -> None:
    assert codes(intake(**changes)) == expected


def test_task_id_given_must_be_safe_and_agree_with_the_intake() -> None:
    assert codes(intake(task_id="T-1"), task_id="T-2") == [("$.task_id", Code.ID_MISMATCH)]
    assert codes(intake(), task_id="../x") == [("$.task_id", Code.BAD_ID)]
    assert codes(intake(task_id="T-1"), task_id="T-1") == []


def test_check_raises_with_every_problem_and_the_source() -> None:
    with pytest.raises(IntakeInvalid) as err:
        ki.check(TaskIntake(allowed_paths=["/abs"]), source="task.json")
    assert len(err.value.problems) == 5
    text = str(err.value)
    assert "task.json: $.task_title" in text and "$.allowed_paths[0]" in text


def rules_fired(item: TaskIntake, rules: TierRules = ki.DEFAULT_RULES) -> list[RoutingRule]:
    return [r.rule for r in ki.route(item, rules).reasons]


@pytest.mark.parametrize(
    ("changes", "tier", "fired"),
    [
        ({}, "tier2", [RoutingRule.WITHIN_TIER2_LIMITS]),
        ({"risk_flags": [RiskFlag.DATA_MIGRATION]}, "tier3", [RoutingRule.RISK_FLAG]),
        ({"execution_route": ["a", "b", "c", "d"]}, "tier3", [RoutingRule.STEP_COUNT]),
        ({"execution_route": ["a", "b", "c"]}, "tier2", [RoutingRule.WITHIN_TIER2_LIMITS]),
        (
            {"allowed_paths": [f"src/m{i}.py" for i in range(6)]},
            "tier3",
            [RoutingRule.PATH_COUNT],
        ),
        ({"allowed_paths": ["**"]}, "tier3", [RoutingRule.PATH_BREADTH]),
        ({"allowed_paths": ["**/*.py"]}, "tier3", [RoutingRule.PATH_BREADTH]),
        ({"allowed_paths": ["src/a", "docs/b", "tests/c"]}, "tier3", [RoutingRule.PATH_BREADTH]),
        ({"allowed_paths": ["src/a", "tests/c"]}, "tier2", [RoutingRule.WITHIN_TIER2_LIMITS]),
        (
            {"commands_to_run": ["psql -c 'DROP TABLE users'"]},
            "tier3",
            [RoutingRule.DESTRUCTIVE_WORK],
        ),
        ({"description": "Rotate the API keys"}, "tier3", [RoutingRule.SECURITY_SENSITIVE_WORK]),
        ({"target": "fix login redirect"}, "tier3", [RoutingRule.SECURITY_SENSITIVE_WORK]),
        # Whole words only: "author" is not "auth", "tokenizer" is not "token".
        (
            {"target": "show the author in the tokenizer"},
            "tier2",
            [RoutingRule.WITHIN_TIER2_LIMITS],
        ),
    ],
)
def test_routing_rules(changes: dict[str, Any], tier: str, fired: list[RoutingRule]) -> None:
    decision = ki.route(intake(**changes))
    assert (decision.tier, [r.rule for r in decision.reasons]) == (tier, fired)
    assert decision.rules_tier == tier


def test_reasons_say_where_wording_was_found() -> None:
    decision = ki.route(intake(commands_to_run=["make", "rm -rf build"]))
    (reason,) = decision.reasons
    assert reason.detail == "'rm -rf' in $.commands_to_run[1]"


def test_several_rules_fire_together() -> None:
    item = intake(risk_flags=[RiskFlag.DESTRUCTIVE], execution_route=list("abcde"))
    assert rules_fired(item) == [RoutingRule.RISK_FLAG, RoutingRule.STEP_COUNT]


def test_override_to_tier3_is_honoured() -> None:
    decision = ki.route(intake(tier_override="tier3"))
    assert (decision.tier, decision.rules_tier) == ("tier3", "tier2")
    assert [r.rule for r in decision.reasons] == [
        RoutingRule.OVERRIDE,
        RoutingRule.WITHIN_TIER2_LIMITS,
    ]


def test_override_to_tier2_of_risky_work_is_refused_by_default() -> None:
    item = intake(tier_override="tier2", risk_flags=[RiskFlag.DESTRUCTIVE])
    decision = ki.route(item)
    assert decision.tier == "tier3"
    assert "refused" in decision.reasons[0].detail


def test_override_to_tier2_when_the_rules_allow_it() -> None:
    item = intake(tier_override="tier2", risk_flags=[RiskFlag.DESTRUCTIVE])
    decision = ki.route(item, TierRules(allow_override_to_tier2=True))
    assert (decision.tier, decision.rules_tier) == ("tier2", "tier3")


def test_override_ignored_when_not_honoured() -> None:
    decision = ki.route(intake(tier_override="tier3"), TierRules(honour_override=False))
    assert decision.tier == "tier2"
    assert "ignored" in decision.reasons[0].detail


def test_rules_are_configurable() -> None:
    rules = TierRules(
        max_tier2_steps=10,
        tier3_risk_flags=[RiskFlag.DESTRUCTIVE],
        security_phrases=[],
        max_tier2_top_dirs=5,
    )
    item = intake(
        execution_route=list("abcdef"),
        risk_flags=[RiskFlag.PUBLIC_API_CHANGE],
        description="password reset page",
    )
    assert ki.route(item, rules).tier == "tier2"
    assert ki.route(item).tier == "tier3"


def test_rules_decode_from_json_with_defaults() -> None:
    rules = msgspec.json.decode(b'{"max_tier2_steps": 1}', type=TierRules)
    assert rules.max_tier2_steps == 1
    assert rules.max_tier2_paths == ki.DEFAULT_RULES.max_tier2_paths


@pytest.mark.parametrize("path", SEED_PACKS, ids=lambda p: p.name)
def test_real_packs_yield_valid_intakes(path: Any) -> None:
    pack = read(path, StepPack)
    item = ki.intake_of_pack(pack)
    assert ki.validate(item, task_id=pack.task_id) == ()
    assert item.acceptance_criteria == [c.text for c in pack.view.criteria]


texts = st.text(alphabet="abcAC1: -/*.", max_size=12)


@given(
    st.builds(
        TaskIntake,
        task_title=texts,
        target=texts,
        execution_route=st.lists(texts, max_size=5),
        acceptance_criteria=st.lists(texts, max_size=4),
        allowed_paths=st.lists(texts, max_size=7),
        risk_flags=st.lists(st.sampled_from(RiskFlag), max_size=2),
        tier_override=st.sampled_from([None, "tier2", "tier3"]),
    )
)
def test_routing_is_total_and_always_explained(item: TaskIntake) -> None:
    decision = ki.route(item)
    assert decision.tier in ("tier2", "tier3")
    assert decision.reasons
    # tier3 from the rules is never silently downgraded under the default rules.
    if decision.rules_tier == "tier3":
        assert decision.tier == "tier3"
    assert decision == ki.route(item)
