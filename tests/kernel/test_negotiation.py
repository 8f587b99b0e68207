from __future__ import annotations

import msgspec
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from kernel import intake as ki
from kernel.errors import RequirementsInvalid, SnapshotTampered
from kernel.negotiation import negotiate, queue_tasks
from kernel.snapshot import content_sha256, verify_boundary, verify_plan
from protocol import BoundarySnapshot, PlanSnapshot, decode, encode_pretty
from tests.conftest import ROOT

EXAMPLE = ROOT / "tests" / "fixtures" / "kernel" / "requirements.md"


def example() -> bytes:
    return EXAMPLE.read_bytes()


def test_the_example_negotiates_into_plan_and_boundary() -> None:
    result = negotiate(example(), source="requirements.md")
    plan, boundary = result.plan, result.boundary
    assert plan.title == "Report tool: JSON output"
    assert plan.goal == "Users can get the report as JSON."
    assert [t.key for t in plan.tasks] == ["T-1", "T-2"]
    t1, t2 = plan.tasks
    assert t1.intake.execution_route == ["add the flag to the CLI", "add a test"]
    assert t1.intake.commands_to_run == ["python -m pytest tests/test_report.py -q"]
    assert t2.depends_on == ["T-1"]
    # Tasks always carry the boundary's forbidden paths.
    assert t2.intake.forbidden_paths == ["src/report/secrets/**", "*.lock"]
    assert boundary.allowed_paths == ["src/report/**", "tests/**", "docs/report.md"]
    assert boundary.allowed_commands == ["python -m pytest *", "ruff check ."]
    assert boundary.dependency_policy.mode == "no-new-dependencies"
    assert plan.source_sha256 == boundary.source_sha256
    for task in plan.tasks:
        assert ki.validate(task.intake, task_id=task.key) == ()


def test_same_document_same_bytes_and_hashes_verify() -> None:
    a, b = negotiate(example()), negotiate(example())
    assert encode_pretty(a.plan) == encode_pretty(b.plan)
    assert encode_pretty(a.boundary) == encode_pretty(b.boundary)
    assert verify_plan(a.plan) is a.plan
    assert verify_boundary(a.boundary) is a.boundary
    assert a.boundary.content_sha256 == content_sha256(a.boundary)
    reread = decode(encode_pretty(a.boundary), BoundarySnapshot)
    assert verify_boundary(reread) == a.boundary


def test_an_edited_snapshot_is_refused() -> None:
    boundary = negotiate(example()).boundary
    widened = msgspec.structs.replace(boundary, allowed_paths=["**"])
    with pytest.raises(SnapshotTampered, match="boundary snapshot was changed after it was frozen"):
        verify_boundary(widened)
    plan = negotiate(example()).plan
    with pytest.raises(SnapshotTampered):
        verify_plan(msgspec.structs.replace(plan, goal="something else"))


def test_a_task_without_paths_inherits_the_boundary() -> None:
    doc = example().replace(b"allowed_paths:\n- docs/report.md\n", b"")
    t2 = negotiate(doc).plan.tasks[1]
    assert t2.intake.allowed_paths == ["src/report/**", "tests/**", "docs/report.md"]


def test_free_text_in_a_task_becomes_its_description() -> None:
    doc = example().replace(
        b"### T-2: Document the flag\n", b"### T-2: Document the flag\nWrite it for users.\n"
    )
    assert negotiate(doc).plan.tasks[1].intake.description == "Write it for users."


def test_queue_tasks_keep_plan_order_and_fields() -> None:
    plan = negotiate(example()).plan
    tasks = queue_tasks(plan.tasks)
    assert [(t.key, t.depends_on, t.status.value) for t in tasks] == [
        ("T-1", [], "pending"),
        ("T-2", ["T-1"], "pending"),
    ]
    assert tasks[0].intake == plan.tasks[0].intake


def problems(doc: bytes) -> list[str]:
    with pytest.raises(RequirementsInvalid) as err:
        negotiate(doc, source="req.md")
    assert str(err.value).startswith("req.md: requirements have")
    return list(err.value.problems)


BAD = [
    (b"acceptance:\n- AC1: docs/report.md mentions --json\n", b"acceptence:\n- AC1: x\n",
     ["unknown key 'acceptence'", "$.acceptance_criteria: give at least one"]),
    (b"priority: 0\n", b"priority: high\n", ["task T-1 (line 26): Expected `int`"]),
    (b"depends_on: T-1\n", b"depends_on: T-9\n", ["depends on unknown task 'T-9'"]),
    (b"### T-1: Add a --json flag\n", b"### T-1: Add a --json flag\ndepends_on: T-2\n",
     ["dependency cycle: T-1 -> T-2 -> T-1"]),
    (b"- src/report/cli.py\n", b"- src/other.py\n",
     ["task T-1 (line 26): outside the boundary: $.allowed_paths[0]"]),
    (b"- python -m pytest tests/test_report.py -q\n", b"- curl x | sh\n",
     ["$.commands_to_run[0]", "shell control syntax"]),
    (b"- `src/report/**`\n", b"- /etc/**\n", ["allowed_paths[0]: path pattern '/etc/**' is"]),
    (b"- src/report/secrets/**\n", b"- src/report/[z-a]/**\n",
     ["boundary (line 9): forbidden_paths[0]: not a valid glob: bad character range z-a"]),
    (b"- src/report/cli.py\n", b"- src/report/a\\\n",
     ["task T-1 (line 26): $.allowed_paths[0]: not a valid glob: Invalid git pattern: "
      "'src/report/a\\\\'"]),
    (b"### T-2: Document the flag", b"### Document the flag", ["task heading must read"]),
    (b"### T-2: Document the flag", b"### ../x: Document", ["line 41: task key '../x' is not"]),
    (b"### T-2: Document the flag", b"### T-1: Again", ["task key 'T-1' already used at line 26"]),
    (b"route:\n- write the docs\n", b"route: write the docs\n", ["'route' is a list"]),
    (b"target: docs/report.md shows --json\n", b"target:\n", ["'target' needs a value"]),
    (b"priority: 0\n", b"priority: 0\npriority: 1\n", ["'priority' given twice"]),
    (b"allow_lockfile_changes: false\n", b"allow_lockfile_changes: false\nstray words\n",
     ["line 23 (boundary): unexpected text 'stray words'"]),
]  # fmt: skip


@pytest.mark.parametrize(("old", "new", "words"), BAD)
def test_problems_are_reported_with_their_place(old: bytes, new: bytes, words: list[str]) -> None:
    doc = example()
    assert old in doc
    found = "\n".join(problems(doc.replace(old, new, 1)))
    for word in words:
        assert word in found


def test_every_problem_at_once() -> None:
    doc = (
        example()
        .replace(b"priority: 0\n", b"priority: x\n")
        .replace(b"depends_on: T-1", b"depends_on: Q")
    )
    doc = doc.replace(b"dependency_mode: no-new-dependencies\n", b"colour: blue\n")
    assert len(problems(doc)) == 3


@pytest.mark.parametrize(
    ("doc", "words"),
    [
        (b"# Nothing\n", ["no '## Boundary' section", "no tasks"]),
        (
            b"## Boundary\nallowed_commands:\n- make\n## Tasks\n",
            ["allowed_paths is empty", "no tasks"],
        ),
        (b"\xff\xfe", ["not UTF-8"]),
    ],
)
def test_skeleton_documents(doc: bytes, words: list[str]) -> None:
    found = "\n".join(problems(doc))
    for word in words:
        assert word in found


def test_fenced_blocks_and_other_sections_are_ignored() -> None:
    doc = example() + b"\n## Appendix\n```\n### T-9: not a task\ncolour: blue\n```\nprose: fine\n"
    assert [t.key for t in negotiate(doc).plan.tasks] == ["T-1", "T-2"]


def test_plan_snapshot_is_its_own_kind() -> None:
    from protocol import detect_kind

    plan = negotiate(example()).plan
    assert detect_kind(encode_pretty(plan)) == "plan-snapshot"
    assert decode(encode_pretty(plan), PlanSnapshot) == plan


LINES = st.sampled_from(
    ["# T", "## Goal", "## Boundary", "## Tasks", "### T-1: a", "### T-2: b", "### x", "```",
     "allowed_paths:", "- src/**", "- ", "allowed_commands:", "- make", "target: t", "route:",
     "acceptance:", "- AC1: ok", "depends_on: T-1, T-2", "priority: x", "colour: blue", "text",
     "forbidden_paths:", "- /abs", "dependency_mode: nope", ""]
)  # fmt: skip


@settings(max_examples=200)
@given(st.lists(LINES, max_size=40))
def test_any_document_negotiates_or_is_refused_cleanly(lines: list[str]) -> None:
    try:
        result = negotiate("\n".join(lines).encode())
    except RequirementsInvalid as err:
        assert err.problems
    else:
        assert verify_plan(result.plan) and verify_boundary(result.boundary)
