"""A stand-in for a real agent: speaks the shim's command line and acts out a scenario.

    runner-mock-shim create "<prompt>" --backend=mock --run-id R --task-id T --step-id S
    runner-mock-shim resume "<prompt>" <thread_id> --backend=mock --run-id R ...
    python -m runner.mock_shim ...          (the same)

It finds its work where the runner's adapter puts it: the pack in ``RUNNER_PACK_FILE``, the
round's evidence directory in ``RUNNER_ROUND_DIR``, the workspace in ``RUNNER_WORKSPACE`` (its
working directory by default). The scenario comes from ``RUNNER_MOCK_SCENARIO``, else the
StepPack's ``context.mock_scenario``, else the thread id on resume, else ``pass``:

- ``pass``: does the work: writes the pack's ``context.mock_files`` (path to content) or, without
  them, one marker file per allowed path pattern; runs every command in ``commands_to_run`` from
  the workspace, its output in ``outputs/cmd_<i>.txt``; writes ``subagent_output.md`` and a
  truthful ``step_result.json`` (also printed last on stdout, after JSONL progress events).
- ``fail_ac``: the same, but the last acceptance criterion is reported unmet (the worker's
  verdict FAIL; QA reviews it REWORK).
- ``out_of_scope``: the same, plus an edit outside the allowed paths (reported).
- ``lie``: does nothing, yet claims the files it would have written and exit code 0 for every
  command (which it ran, and which may well have failed).
- ``hang``: prints a heartbeat every 0.2 s, never finishes.
- ``silent``: prints one line, then nothing, never finishes.
- ``eat_memory``: allocates 16 MiB every 50 ms (up to 2 GiB), never finishes.
- ``fork_tree``: starts children and grandchildren, one of which escapes with ``setsid`` and
  ignores SIGTERM; never finishes. Every pid goes to ``logs/mock_pids.txt``.
- ``garbage``: prints invalid UTF-8 and broken JSON, writes no result, exits 0.
- ``crash``: prints half a StepResult, raises, exits 1.
- ``flood``: prints ``RUNNER_MOCK_FLOOD_MB`` (default 64) MiB, part of it one line without a
  newline, then behaves as ``pass``.
- ``fail_then_pass``: ``fail_ac`` on create, ``pass`` on resume.

Results carry a ``usage`` block (tokens from the prompt's length, a fixed model and price) so
cost accounting can be tested. The thread id is ``mock-<scenario>-<random>``.
"""

from __future__ import annotations

import argparse
import os
import secrets
import signal
import subprocess
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, NoReturn

import protocol
from protocol import (
    CommandRecord,
    ReworkPack,
    StepPack,
    StepResult,
    Usage,
    Verdict,
    VerificationResult,
)

SCENARIOS = (
    "pass",
    "fail_ac",
    "out_of_scope",
    "lie",
    "hang",
    "silent",
    "eat_memory",
    "fork_tree",
    "garbage",
    "crash",
    "flood",
    "fail_then_pass",
)
MODEL = "mock-1"
PRICE_PER_TOKEN_USD = 0.000002


class MockError(Exception):
    """The mock was started without what it needs (exit 2, message on stderr)."""


@dataclass(frozen=True)
class Work:
    """What the mock was asked to do, from a StepPack or a ReworkPack."""

    task_id: str
    run_id: str
    step_id: str
    allowed: tuple[str, ...]
    forbidden: tuple[str, ...]
    commands: tuple[str, ...]
    criteria: tuple[tuple[str, str], ...]  # (AC id, verbatim text)
    gates: tuple[tuple[int, tuple[str, ...]], ...]  # (command index, AC ids it proves)
    files: dict[str, str]
    scenario: str | None


@dataclass(frozen=True)
class Round:
    workspace: Path
    root: Path

    def rel(self, path: Path) -> str:
        return path.relative_to(self.workspace).as_posix()


def main(argv: Sequence[str] | None = None) -> None:
    args = _parser().parse_args(argv)
    try:
        code = run(args)
    except (MockError, protocol.ProtocolError, OSError) as exc:
        print(f"runner-mock-shim: {exc}", file=sys.stderr)
        code = 2
    sys.exit(code)


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="runner-mock-shim", description=__doc__.split("\n")[0])
    sub = parser.add_subparsers(dest="mode", required=True)
    for mode in ("create", "resume"):
        p = sub.add_parser(mode)
        p.add_argument("prompt")
        if mode == "resume":
            p.add_argument("thread_id")
        p.add_argument("--backend", default="mock")
        p.add_argument("--run-id")
        p.add_argument("--task-id")
        p.add_argument("--step-id")
    return parser


def run(args: argparse.Namespace) -> int:
    env = os.environ
    workspace = Path(env.get("RUNNER_WORKSPACE") or Path.cwd())
    pack_file = env.get("RUNNER_PACK_FILE")
    round_dir = env.get("RUNNER_ROUND_DIR")
    if not pack_file or not round_dir:
        raise MockError("RUNNER_PACK_FILE and RUNNER_ROUND_DIR must be set (the runner sets them)")
    rnd = Round(workspace=workspace, root=Path(round_dir))
    (rnd.root / "outputs").mkdir(parents=True, exist_ok=True)
    (rnd.root / "logs").mkdir(parents=True, exist_ok=True)
    work = _load(Path(pack_file), workspace)
    for name, given in (("task", args.task_id), ("run", args.run_id), ("step", args.step_id)):
        if given is not None and given != getattr(work, f"{name}_id"):
            raise MockError(f"--{name}-id {given} does not match the pack")
    thread = getattr(args, "thread_id", None)
    scenario = env.get("RUNNER_MOCK_SCENARIO") or work.scenario or _scenario_of(thread) or "pass"
    if scenario not in SCENARIOS:
        raise MockError(f"unknown scenario {scenario!r}; one of: {', '.join(SCENARIOS)}")
    thread = thread or f"mock-{scenario.replace('_', '.')}-{secrets.token_hex(4)}"
    if scenario == "fail_then_pass":
        scenario = "fail_ac" if args.mode == "create" else "pass"
    _event("thread.started", thread_id=thread, scenario=scenario, mode=args.mode)
    return BEHAVIOURS[scenario](work, rnd, thread, args.prompt)


def _scenario_of(thread: str | None) -> str | None:
    if thread and thread.startswith("mock-") and thread.count("-") >= 2:
        return thread.split("-")[1].replace(".", "_")
    return None


def _load(pack_file: Path, workspace: Path) -> Work:
    raw = pack_file.read_bytes()
    kind = os.environ.get("RUNNER_PACK_KIND") or protocol.detect_kind(raw, source=str(pack_file))
    if kind in ("step", "step-pack"):
        return _from_step_pack(protocol.decode(raw, StepPack, source=str(pack_file)))
    rework = protocol.decode(raw, ReworkPack, source=str(pack_file))
    # A real agent remembers its thread; the mock re-reads the step pack of the first round.
    original = _first_step_pack(workspace, rework.run_id, rework.step_id)
    criteria = tuple(
        (protocol.ac_id_of(text, i + 1), text) for i, text in enumerate(rework.acceptance_criteria)
    ) or (original.criteria if original else ())
    return Work(
        task_id=rework.task_id,
        run_id=rework.run_id,
        step_id=rework.step_id,
        allowed=tuple(rework.scope_guard.allowed_paths),
        forbidden=tuple(rework.scope_guard.forbidden_paths),
        commands=tuple(rework.rerun_commands),
        criteria=criteria,
        gates=(),
        files=original.files if original else {},
        scenario=None,
    )


def _from_step_pack(pack: StepPack) -> Work:
    view = pack.view
    files = pack.context.get("mock_files") or {}
    scenario = pack.context.get("mock_scenario")
    return Work(
        task_id=view.task_id,
        run_id=view.run_id,
        step_id=view.step_id,
        allowed=view.allowed_paths,
        forbidden=view.forbidden_paths,
        commands=view.commands_to_run,
        criteria=tuple((c.id, c.text) for c in view.criteria),
        gates=tuple(
            (g.command_index, tuple(g.target_ac)) for g in view.gates if g.command_index is not None
        ),
        files={str(k): str(v) for k, v in files.items()} if isinstance(files, dict) else {},
        scenario=str(scenario) if scenario else None,
    )


def _first_step_pack(workspace: Path, run_id: str, step_id: str) -> Work | None:
    rounds = workspace / protocol.ARTIFACTS_ROOT / run_id / "steps" / step_id / "rounds"
    copies = sorted(
        rounds.glob("R*/logs/step_pack.json"), key=lambda p: int(p.parent.parent.name[1:])
    )
    for copy in copies:
        try:
            return _from_step_pack(protocol.read(copy, StepPack))
        except (protocol.ProtocolError, ValueError):
            continue
    return None


def _event(kind: str, **fields: Any) -> None:
    print(protocol.encode({"type": kind, **fields}).decode(), flush=True)


def concrete_path(pattern: str, step_id: str) -> str:
    """A file name that the scope pattern `pattern` matches."""
    name = f"mock_{step_id}"
    path = pattern.strip("/")
    if path.endswith("**"):
        path = path[:-2] + f"{name}.txt"
    path = path.replace("**/", "").replace("*", name).replace("?", "x")
    while "[" in path and "]" in path[path.index("[") :]:
        start = path.index("[")
        path = path[:start] + "x" + path[path.index("]", start) + 1 :]
    return path or f"{name}.txt"


def _planned_files(work: Work) -> dict[str, str]:
    if work.files:
        return dict(work.files)
    return {
        concrete_path(p, work.step_id): f"mock edit for step {work.step_id}\n" for p in work.allowed
    }


def _write(workspace: Path, files: dict[str, str]) -> list[str]:
    for rel, content in files.items():
        target = workspace / rel
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_text(content, encoding="utf-8")
    return sorted(files)


def _run_commands(work: Work, rnd: Round) -> list[CommandRecord]:
    records = []
    for i, command in enumerate(work.commands):
        out = rnd.root / "outputs" / f"cmd_{i}.txt"
        t0 = time.monotonic()
        with out.open("wb") as f:
            code = subprocess.run(
                command,
                shell=True,
                cwd=rnd.workspace,
                stdout=f,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                check=False,
            ).returncode
        records.append(
            CommandRecord(
                command=command,
                exit_code=code,
                evidence_path=rnd.rel(out),
                duration_ms=round((time.monotonic() - t0) * 1000),
            )
        )
        _event("command.finished", index=i, exit_code=code)
    return records


def _verify(
    work: Work, records: list[CommandRecord], rnd: Round, fail_last: bool
) -> list[VerificationResult]:
    summary = rnd.rel(rnd.root / "subagent_output.md")
    results = []
    for n, (ac_id, text) in enumerate(work.criteria):
        proving = [i for i, acs in work.gates if ac_id in acs and i < len(records)]
        relevant = [records[i] for i in proving] or records
        met = all(r.exit_code == 0 for r in relevant)
        if fail_last and n == len(work.criteria) - 1:
            met = False
        results.append(
            VerificationResult(
                ac=text,
                met=met,
                evidence_path=relevant[0].evidence_path if relevant else summary,
                notes="" if met else "not met",
            )
        )
    return results


def _usage(prompt: str, output: str) -> Usage:
    tokens_in, tokens_out = len(prompt) // 4 + 1, len(output) // 4 + 1
    return Usage(
        input_tokens=tokens_in,
        output_tokens=tokens_out,
        cost_usd=round((tokens_in + tokens_out) * PRICE_PER_TOKEN_USD, 6),
        model=MODEL,
    )


def _finish(
    work: Work,
    rnd: Round,
    thread: str,
    prompt: str,
    *,
    files_changed: list[str],
    records: list[CommandRecord],
    verification: list[VerificationResult],
    summary: str,
) -> int:
    all_met = all(v.met for v in verification) and all(r.exit_code == 0 for r in records)
    if all_met:
        verdict, reason = Verdict.PASS, "PASS_ALL_CRITERIA"
    elif any(r.exit_code != 0 for r in records):
        verdict, reason = Verdict.FAIL, "COMMAND_FAILED"
    else:
        verdict, reason = Verdict.FAIL, "AC_NOT_MET"
    summary_file = rnd.root / "subagent_output.md"
    lines = [
        f"# Step {work.step_id}: {verdict}",
        "",
        summary,
        "",
        "## Files changed",
        *[f"- {f}" for f in files_changed],
        "",
        "## Acceptance",
        *[f"- {'met' if v.met else 'NOT met'}: {v.ac} ({v.evidence_path})" for v in verification],
    ]
    summary_file.write_text("\n".join(lines) + "\n", encoding="utf-8")
    evidence_map: dict[str, list[str]] = {}
    for (ac_id, _), v in zip(work.criteria, verification, strict=True):
        evidence_map[ac_id] = [v.evidence_path, rnd.rel(summary_file)]
    result = StepResult(
        verdict=verdict,
        reason_code=reason,
        task_id=work.task_id,
        run_id=work.run_id,
        step_id=work.step_id,
        files_changed=files_changed,
        commands_executed=records,
        verification_results=verification,
        evidence_map=evidence_map,
        summary=summary,
        thread_id=thread,
        usage=_usage(prompt, summary),
    )
    encoded = protocol.encode(result)
    (rnd.root / "step_result.json").write_bytes(protocol.encode_pretty(result))
    _event("turn.completed", verdict=str(verdict))
    sys.stdout.write(encoded.decode() + "\n")
    sys.stdout.flush()
    return 0


def do_pass(
    work: Work,
    rnd: Round,
    thread: str,
    prompt: str,
    *,
    fail_last: bool = False,
    extra: dict[str, str] | None = None,
) -> int:
    changed = _write(rnd.workspace, {**_planned_files(work), **(extra or {})})
    records = _run_commands(work, rnd)
    outside = f", {len(extra)} of them outside the scope ({', '.join(extra)})" if extra else ""
    return _finish(
        work,
        rnd,
        thread,
        prompt,
        files_changed=changed,
        records=records,
        verification=_verify(work, records, rnd, fail_last),
        summary=f"Edited {len(changed)} file(s){outside} and ran {len(records)} command(s).",
    )


def do_fail_ac(work: Work, rnd: Round, thread: str, prompt: str) -> int:
    return do_pass(work, rnd, thread, prompt, fail_last=True)


def do_out_of_scope(work: Work, rnd: Round, thread: str, prompt: str) -> int:
    candidates = [p for p in work.forbidden if not p.startswith(".artifacts")]
    outside = (
        concrete_path(candidates[0], work.step_id)
        if candidates
        else f"mock_out_of_scope_{work.step_id}.txt"
    )
    return do_pass(work, rnd, thread, prompt, extra={outside: "out of scope\n"})


def do_lie(work: Work, rnd: Round, thread: str, prompt: str) -> int:
    records = [
        CommandRecord(command=r.command, exit_code=0, evidence_path=r.evidence_path)
        for r in _run_commands(work, rnd)
    ]
    return _finish(
        work,
        rnd,
        thread,
        prompt,
        files_changed=sorted(_planned_files(work)),
        records=records,
        verification=_verify(work, records, rnd, False),
        summary="Everything is done and every command passed.",
    )


def do_hang(work: Work, rnd: Round, thread: str, prompt: str) -> int:
    _record_pid(rnd)
    while True:
        _event("heartbeat", at=time.time())
        time.sleep(0.2)


def do_silent(work: Work, rnd: Round, thread: str, prompt: str) -> int:
    _record_pid(rnd)
    while True:
        time.sleep(60)


def do_eat_memory(work: Work, rnd: Round, thread: str, prompt: str) -> int:
    _record_pid(rnd)
    hoard: list[bytearray] = []
    while len(hoard) < 128:
        hoard.append(bytearray(16 * 1024 * 1024))  # zero-filled: every page is touched
        time.sleep(0.05)
    while True:
        time.sleep(60)


def do_fork_tree(work: Work, rnd: Round, thread: str, prompt: str) -> NoReturn:
    _record_pid(rnd)
    for _ in range(2):
        if os.fork() == 0:
            _record_pid(rnd)
            if os.fork() == 0:
                _record_pid(rnd)
                _sleep_forever()
            _sleep_forever()
    if os.fork() == 0:
        os.setsid()
        if os.fork() == 0:
            signal.signal(signal.SIGTERM, signal.SIG_IGN)
            _record_pid(rnd)
            _sleep_forever()
        os._exit(0)
    _event("tree.started")
    _sleep_forever()


def do_garbage(work: Work, rnd: Round, thread: str, prompt: str) -> int:
    out = sys.stdout.buffer
    out.write(b"\xff\xfe\xfd not utf-8 \xc3\x28\n{ broken json: [1, 2\n")
    out.write(b'{"type": "item", "text": "no result here"}\n' + bytes(range(256)) + b"\n")
    out.flush()
    return 0


def do_crash(work: Work, rnd: Round, thread: str, prompt: str) -> int:
    sys.stdout.write('{"verdict": "PASS", "reason_code": "PASS_ALL_CRI')
    sys.stdout.flush()
    raise RuntimeError("mock agent crashed mid-result")


def do_flood(work: Work, rnd: Round, thread: str, prompt: str) -> int:
    megabytes = int(os.environ.get("RUNNER_MOCK_FLOOD_MB", "64"))
    out = sys.stdout.buffer
    line = b"flood " * 10 + b"\n"
    block = line * (1024 * 1024 // len(line))
    for i in range(megabytes):
        out.write(block if i % 2 else b"x" * (1024 * 1024))  # every other MB: no newline
    out.write(b"\n")
    out.flush()
    return do_pass(work, rnd, thread, prompt)


def _record_pid(rnd: Round) -> None:
    with (rnd.root / "logs" / "mock_pids.txt").open("a", encoding="ascii") as f:
        f.write(f"{os.getpid()}\n")


def _sleep_forever() -> NoReturn:
    while True:
        time.sleep(60)


BEHAVIOURS = {
    "pass": do_pass,
    "fail_ac": do_fail_ac,
    "out_of_scope": do_out_of_scope,
    "lie": do_lie,
    "hang": do_hang,
    "silent": do_silent,
    "eat_memory": do_eat_memory,
    "fork_tree": do_fork_tree,
    "garbage": do_garbage,
    "crash": do_crash,
    "flood": do_flood,
}


if __name__ == "__main__":
    main()
