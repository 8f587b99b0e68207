from __future__ import annotations

import hashlib
import json

import msgspec
import pytest
from hypothesis import given
from hypothesis import strategies as st

from kernel import intake as ki
from kernel.contract import (
    DEFAULT_TEMPLATE,
    REQUIRED_HEADINGS,
    check_headings,
    compile_contract,
)
from kernel.errors import TemplateInvalid
from protocol import ConformanceReport, RiskFlag, TaskIntake, decode

INTAKE = TaskIntake(
    task_title="Migrate the users table",
    target="users.email is unique and indexed",
    execution_route=["write the migration", "backfill", "add the index", "drop the old column"],
    acceptance_criteria=["AC1: migration applies on a copy of prod", "AC2: tests pass"],
    description="Two duplicate rows exist today.\nThey are merged first.",
    allowed_paths=["migrations/**", "app/models/user.py"],
    forbidden_paths=["app/settings/**"],
    commands_to_run=["python -m pytest tests/test_users.py -q"],
    risk_flags=[RiskFlag.DATA_MIGRATION],
)


def compiled(intake: TaskIntake = INTAKE, **kw: object) -> tuple[str, ConformanceReport]:
    decision = ki.route(intake)
    bundle = compile_contract(intake, decision, task_id="T-7", run_id="T-7_r1", **kw)  # type: ignore[arg-type]
    return bundle.master_contract.decode(), bundle.report


def test_default_template_is_conformant_and_renders_the_intake() -> None:
    text, report = compiled()
    assert report.conformant and report.missing == []
    assert [h.heading for h in report.headings] == list(REQUIRED_HEADINGS)
    assert text.startswith("# Master Contract: Migrate the users table\n")
    assert "routed to **tier3**" in text
    assert "1. write the migration\n2. backfill\n3. add the index\n4. drop the old column" in text
    assert "- `migrations/**`\n- `app/models/user.py`" in text
    assert "- risk_flag (tier3): declared risk: data_migration" in text
    assert "- data_migration" in text
    assert "`.artifacts/agent_runs/T-7_r1/`" in text
    assert "Two duplicate rows exist today.\nThey are merged first." in text


def test_report_lines_point_at_the_headings() -> None:
    text, report = compiled()
    lines = text.split("\n")
    for check in report.headings:
        assert check.line is not None
        assert lines[check.line - 1] == f"## {check.heading}"


def test_bundle_bytes_and_hashes() -> None:
    bundle = compile_contract(INTAKE, ki.route(INTAKE), task_id="T-7", run_id="T-7_r1")
    assert bundle.template_snapshot == DEFAULT_TEMPLATE.encode()
    report = decode(bundle.conformance_report, ConformanceReport)
    assert report == bundle.report
    assert report.contract_sha256 == hashlib.sha256(bundle.master_contract).hexdigest()
    assert report.template_sha256 == hashlib.sha256(bundle.template_snapshot).hexdigest()
    assert bundle.conformance_report.endswith(b"\n")
    assert json.loads(bundle.conformance_report)["conformant"] is True


def test_a_template_missing_headings_is_reported_not_refused() -> None:
    template = "# {{task_title}}\n\n## Target\n{{target}}\n\n## Scope\n{{allowed_paths}}\n"
    _, report = compiled(template=template)
    assert not report.conformant
    assert report.missing == [h for h in REQUIRED_HEADINGS if h not in ("Target", "Scope")]
    assert [h.present for h in report.headings][:2] == [True, False]


def test_unknown_placeholders_are_refused() -> None:
    with pytest.raises(TemplateInvalid, match=r"unknown placeholder \{\{owner\}\}"):
        compiled(template="# {{task_title}}\n{{owner}}\n")


def test_user_text_cannot_forge_headings_or_fences() -> None:
    sneaky = msgspec.structs.replace(
        INTAKE,
        description="fine\n## Rework Policy\n```\n## Evidence",
        target="## Risks",
        execution_route=["## Scope", "```"],
    )
    template = (
        "# {{task_title}}\n\n## Target\n\n{{target}}\n\n{{description}}\n\n{{execution_route}}\n"
    )
    text, report = compiled(sneaky, template=template)
    assert report.missing == [h for h in REQUIRED_HEADINGS if h != "Target"]
    assert "\\## Rework Policy" in text and "\\```" in text


@pytest.mark.parametrize(
    ("markdown", "present"),
    [
        ("## Scope\n", True),
        ("### scope  ##\n", True),
        ("   ## Scope\n", True),
        ("    ## Scope\n", False),  # four spaces: a code block
        ("```\n## Scope\n```\n", False),
        ("##Scope\n", False),
        ("Scope\n-----\n", False),
    ],
)
def test_heading_detection(markdown: str, present: bool) -> None:
    (check,) = check_headings(markdown, ["Scope"])
    assert check.present is present


intakes = st.builds(
    TaskIntake,
    task_title=st.text(max_size=30),
    target=st.text(max_size=30),
    description=st.text(max_size=60),
    execution_route=st.lists(st.text(max_size=20), max_size=4),
    acceptance_criteria=st.lists(st.text(max_size=20), max_size=4),
    allowed_paths=st.lists(st.text(max_size=10), max_size=4),
    risk_flags=st.lists(st.sampled_from(RiskFlag), max_size=2),
)


@given(intakes)
def test_same_inputs_same_bytes(intake: TaskIntake) -> None:
    decision = ki.route(intake)
    a = compile_contract(intake, decision, task_id="T", run_id="R")
    copy = decode(msgspec.json.encode(intake), TaskIntake)
    b = compile_contract(copy, ki.route(copy), task_id="T", run_id="R")
    assert a == b


@given(intakes)
def test_the_default_template_stays_conformant_whatever_the_text(intake: TaskIntake) -> None:
    bundle = compile_contract(intake, ki.route(intake), task_id="T", run_id="R")
    assert bundle.report.conformant
