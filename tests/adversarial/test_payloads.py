"""Hostile payloads for every decoder (hypothesis): random bytes, arbitrary JSON, truncated
JSON, deep nesting, huge strings, invalid UTF-8, duplicate keys, out-of-range numbers. Only our
own errors come out; the StepResult extraction never raises at all, finds the last result
through any noise, and keeps the runner's memory bounded whatever the agent printed."""

from __future__ import annotations

import contextlib
import json
import subprocess
import sys
import tempfile
import zipfile
from collections.abc import Callable
from pathlib import Path

import anyio
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from ledger import LedgerError, ProjectPaths, open_ledger
from ledger.archive import MANIFEST_NAME, import_project
from ledger.errors import UnsafeArchive
from ledger.store import read_manifest
from ledger.verify import verify_project
from protocol import KINDS, ProtocolError, decode_kind
from runner.checkpoint import CheckpointError, CheckpointStore
from runner.extract import extract_result
from runner.progress import ProgressError, load_queue
from runner.shim import load_config
from tests.adversarial.trials import trials
from tests.ledger.conftest import PROJECT, populate
from tests.protocol.test_fuzz import json_values
from tests.runner.engine_fixtures import child_env

EXAMPLES = trials(150, 3000)
FUZZ = settings(
    max_examples=EXAMPLES,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)
RESULT = {"verdict": "PASS", "reason_code": "PASS_ALL_CRITERIA", "task_id": "T-1", "step_id": "S1"}


def deep(n: int, kind: str) -> bytes:
    if kind == "list":
        return b"[" * n + b"]" * n
    if kind == "object":
        return b'{"a":' * n + b"1" + b"}" * n
    return b'{"verdict":' * n  # a result-like opening that never closes


hostile = st.one_of(
    st.binary(max_size=400),
    json_values.map(lambda v: json.dumps(v).encode()),
    st.builds(lambda v, cut: json.dumps(v).encode()[:cut], json_values, st.integers(0, 200)),
    st.builds(deep, st.integers(1, 50_000), st.sampled_from(["list", "object", "verdict"])),
    st.integers(1, 4_000_000).map(lambda n: b'{"task_id": "' + b"x" * n + b'"}'),
    st.sampled_from(
        [
            b'{"a": 1, "a": 2}',
            b'{"verdict": "PASS", "verdict": "FAIL"}',
            b"1e400",
            b"-0",
            b"18446744073709551616",
            b"NaN",
            b'"\\ud800"',
            b'{"task_id": "\\u0000"}',
            b'{"\xff": 1}',
            b"\xef\xbb\xbf{}",
            b"{}" * 1000,
        ]
    ),
)


def only(errors: tuple[type[BaseException], ...], call: Callable[[], object]) -> None:
    """`call` returns, or raises one of `errors`: nothing else (no KeyError, no RecursionError,
    no UnicodeDecodeError, no MemoryError)."""
    with contextlib.suppress(*errors):
        call()


def scratch(name: str, raw: bytes) -> Path:
    directory = Path(tempfile.mkdtemp(prefix="adv-payload-"))
    path = directory / name
    path.write_bytes(raw)
    return path


@FUZZ
@given(hostile, st.sampled_from([None, *sorted(KINDS)]))
def test_every_payload_kind_gives_a_protocol_error(raw: bytes, kind: str | None) -> None:
    only((ProtocolError,), lambda: decode_kind(raw, kind))


@FUZZ
@given(hostile)
def test_shim_config_and_queue_files_give_our_errors(raw: bytes) -> None:
    path = scratch("input.json", raw)
    only((ProtocolError,), lambda: load_config(path))
    only((ProtocolError, ProgressError), lambda: load_queue(path))


@FUZZ
@given(hostile)
def test_checkpoint_and_ledger_manifests_give_our_errors(raw: bytes) -> None:
    store = CheckpointStore(Path(tempfile.mkdtemp(prefix="adv-store-")))
    store.manifest_path("cp-1").parent.mkdir(parents=True)
    store.manifest_path("cp-1").write_bytes(raw)
    only((CheckpointError,), lambda: store.load("cp-1"))
    paths = ProjectPaths.of(tempfile.mkdtemp(prefix="adv-ledger-"), "p")
    paths.manifest.parent.mkdir(parents=True)
    paths.manifest.write_bytes(raw)
    only((LedgerError,), lambda: read_manifest(paths))


@pytest.fixture(scope="module")
def ledger_template(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("payload-ledger")
    populate(root, tasks=2)
    return root


def copy_of(template: Path) -> ProjectPaths:
    root = Path(tempfile.mkdtemp(prefix="adv-chain-"))
    subprocess.run(["cp", "-a", f"{template}/.", str(root)], check=True)
    return ProjectPaths.of(root, PROJECT)


@FUZZ
@given(hostile, st.sampled_from(["task", "project", "journal"]))
def test_hostile_ledger_lines_are_damage_or_recovered_never_a_crash(
    ledger_template: Path, raw: bytes, where: str
) -> None:
    """A chain file gains a hostile line: verify reports it (never raises). The journal holds
    one after a "crash": opening recovers or refuses with a ledger error."""
    paths = copy_of(ledger_template)
    line = raw.replace(b"\n", b" ") + b"\n"
    if where == "journal":
        paths.journal.write_bytes(line)

        async def reopen() -> None:
            async with open_ledger(paths.root, PROJECT):
                pass

        only((LedgerError,), lambda: anyio.run(reopen))
        return
    target = paths.events if where == "project" else paths.task_events("T-1")
    with target.open("ab") as f:
        f.write(line)
    report = verify_project(paths)
    assert report.problems, "a hostile line went unnoticed"


@FUZZ
@given(hostile)
def test_a_hostile_archive_manifest_is_an_unsafe_archive(raw: bytes) -> None:
    archive = scratch("a.zip", b"")
    with zipfile.ZipFile(archive, "w") as z:
        z.writestr(MANIFEST_NAME, raw)
        z.writestr("events.jsonl", b"")
    root = archive.parent / "root"
    only((UnsafeArchive,), lambda: import_project(root, archive))
    assert not root.exists() or not any(root.iterdir()), "a refused import left files behind"


# -- the StepResult in noisy output -----------------------------------------------------------

noise_line = st.one_of(
    json_values.map(json.dumps),  # agent events, JSONL
    st.text(max_size=200).filter(lambda t: "\n" not in t),
    st.builds(lambda v: json.dumps({"type": "item", "text": json.dumps(v)}), json_values),
    st.builds(lambda n: "{" * n + "}" * (n // 2), st.integers(1, 5000)),  # nested braces
    st.builds(lambda cut: json.dumps(RESULT)[:cut], st.integers(1, 60)),  # a draft, cut off
    st.integers(1, 300_000).map(lambda n: "x" * n),
    st.just(
        '{"verdict": "PASS", "task_id": "T-1", "step_id": "S1", "reason_code": "X", "extra": 1}'
    ),
)


@FUZZ
@given(
    st.lists(noise_line, max_size=30),
    st.lists(noise_line.filter(lambda s: '"verdict"' not in s), max_size=10),
    st.booleans(),
)
def test_the_last_result_is_found_through_any_noise(
    before: list[str], after: list[str], pretty: bool
) -> None:
    """Noise, then the real result (compact or pretty), then noise that mentions no verdict:
    the result is found; without it, a failure with a reason. Never an exception."""
    result = json.dumps(
        {**RESULT, "summary": "a {brace} in a string"}, indent=2 if pretty else None
    )
    directory = Path(tempfile.mkdtemp(prefix="adv-extract-"))
    out = directory / "shim_stdout.txt"
    out.write_text("\n".join([*before, result, *after]) + "\n", encoding="utf-8")
    got = extract_result(directory / "step_result.json", out, task_id="T-1", step_id="S1")
    assert got.result is not None, got.failure
    assert got.result.summary == "a {brace} in a string"
    out.write_text("\n".join(before) + "\n", encoding="utf-8")
    got = extract_result(directory / "step_result.json", out, task_id="T-1", step_id="S1")
    assert (got.result is None) != (got.failure is None)


@FUZZ
@given(hostile, hostile)
def test_any_stdout_and_result_file_give_a_result_or_a_failure(out: bytes, file: bytes) -> None:
    directory = Path(tempfile.mkdtemp(prefix="adv-extract-"))
    (directory / "out.txt").write_bytes(out)
    (directory / "step_result.json").write_bytes(file)
    got = extract_result(directory / "step_result.json", directory / "out.txt")
    assert (got.result is None) != (got.failure is None)
    assert got.failure is None or len(got.failure.excerpt) <= 610


EXTRACT = """
import resource, sys
from pathlib import Path
from runner.extract import extract_result
out = Path(sys.argv[1])
got = extract_result(out.with_name("step_result.json"), out)
peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss // 1024
print(peak, got.failure and got.failure.reason)
"""
FLOOD_MB = trials(128, 1024)
EXTRA_MB = 48  # the 8 MiB window, split into lines, and a candidate or two


def extraction_peak_mb(out: Path) -> tuple[int, str]:
    done = subprocess.run(
        [sys.executable, "-c", EXTRACT, str(out)],
        capture_output=True, text=True, timeout=300, check=True, env=child_env(),
    )  # fmt: skip
    peak, reason = done.stdout.split()
    return int(peak), reason


@pytest.mark.parametrize(
    ("shape", "reason"),
    [
        ("one-line", "NO_RESULT"),
        ("deep-nesting", "NO_RESULT"),
        ("braces", "NO_RESULT"),
        ("result-like", "RESULT_MALFORMED"),
    ],
)
def test_extraction_memory_stays_bounded_whatever_the_agent_printed(
    tmp_path: Path, shape: str, reason: str
) -> None:
    """`FLOOD_MB` MiB of hostile stdout: only the last 8 MiB are read; the process doing the
    extraction grows by far less than what was printed (measured against reading an empty
    file in the same way)."""
    line = {
        "one-line": b"x" * 1024,
        "deep-nesting": b"[" * 1023 + b"\n",
        "braces": b"{" * 511 + b"}" * 512 + b"\n",
        "result-like": b'{"verdict": "PASS", "s": "' + b"y" * 990 + b'",\n',
    }[shape]
    out = tmp_path / "shim_stdout.txt"
    out.write_bytes(b"")
    baseline, _ = extraction_peak_mb(out)
    with out.open("wb") as f:
        block = line * 1024
        for _ in range(FLOOD_MB):
            f.write(block)
    peak, found = extraction_peak_mb(out)
    out.unlink()
    assert found == reason
    assert peak - baseline < EXTRA_MB, f"+{peak - baseline} MB for {FLOOD_MB} MB of {shape}"


def test_decoders_reject_huge_nesting_quickly() -> None:
    """A megabyte of nesting is refused without exhausting the stack (msgspec bounds depth)."""
    raw = b"[" * 1_000_000
    for kind in sorted(KINDS):
        only((ProtocolError,), lambda k=kind: decode_kind(raw, k))
