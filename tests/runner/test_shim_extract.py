"""The result-extraction rule: a table of real shim outputs, then properties (hypothesis)."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from protocol import ParseFailureReason, StepResult, Verdict
from runner.extract import extract_result

GOOD: dict[str, Any] = {
    "verdict": "PASS",
    "reason_code": "PASS_ALL_CRITERIA",
    "task_id": "T-1",
    "step_id": "S1",
    "files_changed": ["src/a.py"],
    "summary": 'nested {braces} and "quotes" in a string',
}
OTHER = {**GOOD, "verdict": "FAIL", "reason_code": "COMMAND_FAILED"}


def compact(doc: dict[str, Any]) -> str:
    return json.dumps(doc)


def pretty(doc: dict[str, Any]) -> str:
    return json.dumps(doc, indent=2)


def jsonl_noise() -> str:
    events = [
        {"type": "thread.started", "thread_id": "th_1"},
        {"type": "item.completed", "item": {"type": "agent_message", "text": compact(OTHER)}},
        {"type": "turn", "nested": {"verdict": "FAIL"}},
    ]
    return "\n".join(json.dumps(e) for e in events)


def run(tmp_path: Path, stdout: str | bytes, file: str | bytes | None = None, **ids: str) -> Any:
    out = tmp_path / "shim_stdout.txt"
    out.write_bytes(stdout.encode() if isinstance(stdout, str) else stdout)
    result_file = tmp_path / "step_result.json"
    if file is not None:
        result_file.write_bytes(file.encode() if isinstance(file, str) else file)
    return extract_result(result_file, out, **ids)


@pytest.mark.parametrize(
    ("stdout", "verdict"),
    [
        (compact(GOOD), "PASS"),
        (pretty(GOOD), "PASS"),
        (f"log line\n{jsonl_noise()}\n{compact(GOOD)}\ntrailing log", "PASS"),
        (f"RESULT: {compact(GOOD)}  \x1b[0m", "PASS"),
        (f"{compact(OTHER)}\nmore\n{compact(GOOD)}\n", "PASS"),
        (f"{compact(GOOD)}\n{jsonl_noise()}\n", "PASS"),
        (f"{pretty(OTHER)}\nnoise {{ not json }}\n{pretty(GOOD)}\n", "PASS"),
        ("\xff\xfe garbage\n" + compact(GOOD), "PASS"),
    ],
    ids=[
        "compact",
        "pretty",
        "jsonl-noise",
        "prefix",
        "last-wins",
        "noise-after",
        "two-pretty",
        "bad-utf8",
    ],
)
def test_result_found_in_stdout(tmp_path: Path, stdout: str, verdict: str) -> None:
    extraction = run(tmp_path, stdout)
    assert extraction.failure is None, extraction.failure
    assert extraction.source == "stdout"
    assert extraction.result.verdict == Verdict(verdict)


@pytest.mark.parametrize(
    ("stdout", "file", "reason"),
    [
        ("", None, ParseFailureReason.NO_RESULT),
        (jsonl_noise(), None, ParseFailureReason.NO_RESULT),
        ("garbage {]} \x00\x01", None, ParseFailureReason.NO_RESULT),
        (compact({**GOOD, "verdict": "MAYBE"}), None, ParseFailureReason.RESULT_MALFORMED),
        (compact(GOOD) + "\n" + compact(GOOD)[:40], None, ParseFailureReason.RESULT_MALFORMED),
        (pretty(GOOD)[:-30], None, ParseFailureReason.RESULT_MALFORMED),
        (compact({**GOOD, "extra": 1}), None, ParseFailureReason.RESULT_MALFORMED),
        ("", "{not json", ParseFailureReason.RESULT_FILE_MALFORMED),
        ("", compact({"verdict": "PASS"}), ParseFailureReason.RESULT_FILE_MALFORMED),
        (compact(OTHER), compact(GOOD), ParseFailureReason.RESULT_CONFLICT),
    ],
    ids=[
        "empty",
        "only-noise",
        "garbage",
        "bad-verdict",
        "truncated-last",
        "truncated-pretty",
        "unknown-field",
        "file-not-json",
        "file-missing-field",
        "file-vs-stdout",
    ],
)
def test_parse_failures_have_a_reason_and_excerpt(
    tmp_path: Path, stdout: str, file: str | None, reason: ParseFailureReason
) -> None:
    extraction = run(tmp_path, stdout, file)
    assert extraction.result is None
    assert extraction.failure is not None
    assert extraction.failure.reason is reason
    assert extraction.failure.detail
    if stdout or file:
        assert extraction.failure.excerpt


def test_file_wins_and_agreeing_stdout_is_fine(tmp_path: Path) -> None:
    extraction = run(tmp_path, f"{jsonl_noise()}\n{compact(GOOD)}", pretty(GOOD))
    assert (extraction.source, extraction.failure) == ("file", None)
    extraction = run(tmp_path, "no json here", compact(GOOD))
    assert extraction.source == "file"


def test_result_for_another_step_is_rejected(tmp_path: Path) -> None:
    extraction = run(tmp_path, compact(GOOD), task_id="T-1", step_id="S2")
    assert extraction.failure.reason is ParseFailureReason.RESULT_WRONG_STEP
    assert "step_id" in extraction.failure.detail
    assert run(tmp_path, compact(GOOD), task_id="T-1", step_id="S1").result is not None


def test_unreadable_file_is_a_failure(tmp_path: Path) -> None:
    out = tmp_path / "out.txt"
    out.write_text("")
    directory = tmp_path / "step_result.json"
    directory.mkdir()
    extraction = extract_result(directory, out)
    assert extraction.failure.reason is ParseFailureReason.RESULT_FILE_UNREADABLE


@pytest.mark.parametrize("kind", ["fifo", "link", "dangling-link"])
def test_a_result_file_that_is_no_regular_file_is_refused_without_blocking(
    tmp_path: Path, kind: str
) -> None:
    """The agent owns the round directory: a FIFO there would block an open for reading
    forever, a link would have the runner read and quote a file of the agent's choosing."""
    out = tmp_path / "out.txt"
    out.write_text(compact(OTHER))
    outside = tmp_path / "outside.json"
    outside.write_text(compact(GOOD))
    result_file = tmp_path / "step_result.json"
    if kind == "fifo":
        os.mkfifo(result_file)
    else:
        result_file.symlink_to(outside if kind == "link" else tmp_path / "missing")
    extraction = extract_result(result_file, out)
    assert extraction.failure.reason is ParseFailureReason.RESULT_FILE_UNREADABLE
    what = "not a regular file" if kind == "fifo" else "symbolic link (not followed)"
    assert what in extraction.failure.detail


def test_invalid_utf8_inside_a_result_is_a_parse_failure(tmp_path: Path) -> None:
    bad = b'{"verdict": "P\xff", "reason_code": "X"}\n'
    assert run(tmp_path, bad).failure.reason is ParseFailureReason.RESULT_MALFORMED
    assert run(tmp_path, "", file=bad).failure.reason is ParseFailureReason.RESULT_FILE_MALFORMED


def test_a_stdout_file_swapped_for_a_fifo_is_no_result_not_a_hang(tmp_path: Path) -> None:
    out = tmp_path / "out.txt"
    os.mkfifo(out)
    extraction = extract_result(tmp_path / "step_result.json", out)
    assert extraction.failure.reason is ParseFailureReason.NO_RESULT


def test_only_the_tail_window_is_scanned(tmp_path: Path) -> None:
    head = compact(GOOD) + "\n"
    filler = ("x" * 99 + "\n") * 2000  # 200 KB after the result
    extraction = run(tmp_path, head + filler)
    assert extraction.result is not None
    out = tmp_path / "shim_stdout.txt"
    small = extract_result(tmp_path / "none.json", out, scan_bytes=64 * 1024)
    assert small.failure.reason is ParseFailureReason.NO_RESULT


def test_huge_line_without_newline_is_bounded(tmp_path: Path) -> None:
    out = tmp_path / "out.txt"
    with out.open("wb") as f:
        f.write(b"{" * (20 * 1024 * 1024))  # 20 MB of open braces, no newline
        f.write(b"\n" + compact(GOOD).encode())
    extraction = extract_result(tmp_path / "none.json", out)
    assert extraction.result is not None


noise_line = st.one_of(
    st.sampled_from(["{", "}", "  {", "{ log", "},"]),
    st.text(
        alphabet=st.characters(blacklist_characters="\n", blacklist_categories=("Cs",)), max_size=80
    ).filter(lambda s: '"verdict"' not in s),
    st.dictionaries(
        st.text(max_size=8).filter(lambda k: k != "verdict"), st.integers(), max_size=3
    ).map(json.dumps),
)


@settings(max_examples=150, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(
    before=st.lists(noise_line, max_size=8),
    after=st.lists(noise_line, max_size=8),
    shape=st.sampled_from([compact, pretty]),
    earlier=st.booleans(),
)
def test_last_result_wins_through_any_noise(
    tmp_path: Path, before: list[str], after: list[str], shape: Any, earlier: bool
) -> None:
    lines = [*before]
    if earlier:
        lines.append(compact(OTHER))
    lines += [shape(GOOD), *after]
    extraction = run(tmp_path, "\n".join(lines))
    assert extraction.failure is None, (extraction.failure, lines)
    assert extraction.result == StepResult(**{**GOOD, "verdict": Verdict.PASS})  # type: ignore[arg-type]


@settings(max_examples=200, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(st.binary(max_size=2000))
def test_any_bytes_give_a_result_or_a_failure_never_an_exception(
    tmp_path: Path, data: bytes
) -> None:
    extraction = run(tmp_path, data)
    assert (extraction.result is None) != (extraction.failure is None)


def test_malformed_pretty_result_reports_the_validation_error(tmp_path: Path) -> None:
    extraction = run(tmp_path, f"{compact(GOOD)}\n{pretty({**GOOD, 'verdict': 'MAYBE'})}\n")
    assert extraction.failure.reason is ParseFailureReason.RESULT_MALFORMED
    assert "$.verdict" in extraction.failure.detail
    assert "MAYBE" in extraction.failure.excerpt
