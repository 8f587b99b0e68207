from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from kernel.dialogue import RequirementsDraft, draft_from_dialogue, render_draft

DIALOGUE = """\
User: We need a `report --json` flag so CI can parse the weekly report.
Assistant: Understood. Should the JSON include the raw rows or only totals?
User: Only totals for now. Please keep the existing text output unchanged.
User: Do not touch `src/legacy/` or pyproject.toml. Only edit src/report/ and tests/test_report.py.
Assistant: What Python versions must it support?
User: Done when `pytest tests/test_report.py` passes and the output is valid JSON.
User: Also the flag must not add new dependencies.

Constraints:
- Python 3.11 only
- no network access in tests

Open questions:
- Should we version the JSON schema?
"""


def test_extracts_every_section_from_a_dialogue() -> None:
    draft = draft_from_dialogue(DIALOGUE)
    assert draft.goals == ["We need a `report --json` flag so CI can parse the weekly report."]
    assert "Also the flag must not add new dependencies." in draft.constraints
    assert "Python 3.11 only" in draft.constraints
    assert "no network access in tests" in draft.constraints
    assert draft.acceptance == [
        "Done when `pytest tests/test_report.py` passes and the output is valid JSON."
    ]
    assert draft.allowed_paths == ["src/report/", "tests/test_report.py"]
    assert draft.forbidden_paths == ["src/legacy/", "pyproject.toml"]
    # Answered (the reply shares "totals"): not open. Unanswered: open.
    assert draft.open_questions == [
        "What Python versions must it support?",
        "Should we version the JSON schema?",
    ]


def test_labelled_blocks_and_markdown_headings() -> None:
    text = """\
## Goals
- Add CSV export
- Add CSV export

**Acceptance criteria:** AC3: `make test` passes
Acceptance:
- the export round-trips
Allowed paths: src/export/**, tests/
Forbidden: secrets/*
"""
    draft = draft_from_dialogue(text)
    assert draft.goals == ["Add CSV export"]
    assert draft.acceptance == ["AC3: `make test` passes", "the export round-trips"]
    assert draft.allowed_paths == ["src/export/**", "tests/"]
    assert draft.forbidden_paths == ["secrets/*"]


def test_render_numbers_criteria_around_stated_ids_and_marks_empty_sections() -> None:
    draft = RequirementsDraft(acceptance=["AC1: first", "second", "AC-3: third"])
    text = render_draft(draft, generator="test")
    assert "- AC1: first\n- AC2: second\n- AC3: third\n" in text
    assert text.count("_None stated._") == 5
    assert text.index("## Goals") < text.index("## Open Questions")
    assert text.endswith("\n")


def test_same_dialogue_same_draft() -> None:
    first = render_draft(draft_from_dialogue(DIALOGUE), generator="g")
    assert render_draft(draft_from_dialogue(DIALOGUE), generator="g") == first


def test_uncertainty_is_an_open_question_even_when_answered() -> None:
    draft = draft_from_dialogue("User: The retention period is TBD.\nBob: The period is fine.\n")
    assert draft.open_questions == ["The retention period is TBD."]


@given(st.text(max_size=400))
def test_any_text_gives_a_draft(text: str) -> None:
    out = render_draft(draft_from_dialogue(text), generator="g")
    assert out.startswith("# Requirements (draft)")
