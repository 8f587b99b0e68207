"""The prompt an agent gets for a step or a rework: rendered from the pack, deterministically.

Same pack and round, same bytes: a prompt is evidence (it is stored in ``logs/prompt.md``) and a
reproducible instruction. It tells the agent what the original's worker instructions told it:
the scope it may touch, the commands to run and where their output goes, the acceptance
criteria to quote exactly, the evidence layout, and the StepResult shape to write.
"""

from __future__ import annotations

import json
from collections.abc import Iterable

from protocol import DependencyPolicy, ReworkPack, StepPack

from .evidence import RoundDir


def render_step_prompt(pack: StepPack, round_dir: RoundDir) -> str:
    view = pack.view
    parts = [
        f"# Step {view.step_id} of task {view.task_id} (run {view.run_id}), round "
        f"R{round_dir.number}",
    ]
    if view.title:
        parts.append(view.title)
    if view.objective or pack.step_description:
        parts.append(_section("Objective", view.objective or pack.step_description))
    if pack.step_description and view.objective:
        parts.append(pack.step_description)
    parts.append(_scope(view.allowed_paths, view.forbidden_paths, view.dependency_policy))
    parts.append(_commands(view.commands_to_run, round_dir))
    parts.append(
        _section(
            "Acceptance criteria",
            "Quote each criterion exactly, whole, as `ac` in `verification_results`:\n"
            + _bullets(c.text for c in view.criteria),
        )
    )
    if view.gates:
        parts.append(
            _section(
                "Gates",
                _bullets(
                    f"{g.gate_id} ({g.owner}, {g.type})"
                    + (f" for {', '.join(g.target_ac)}" if g.target_ac else "")
                    + (f", command {g.command_index}" if g.command_index is not None else "")
                    + (f": {g.pass_condition}" if g.pass_condition else "")
                    for g in view.gates
                ),
            )
        )
    if view.evidence_required:
        parts.append(
            _section(
                "Required evidence",
                _bullets(
                    f"{e.id}: `{e.path_pattern}`" + (f" ({e.notes})" if e.notes else "")
                    for e in view.evidence_required
                ),
            )
        )
    parts += _evidence_and_result(round_dir, view.task_id, view.run_id, view.step_id)
    return "\n\n".join(parts) + "\n"


def render_rework_prompt(pack: ReworkPack, round_dir: RoundDir) -> str:
    parts = [
        f"# Rework {pack.rework_round} of step {pack.step_id} of task {pack.task_id} "
        f"(run {pack.run_id}), round R{round_dir.number}",
        "Your previous round did not pass review "
        f"({pack.reason_code}). Fix exactly what is listed below, nothing else.",
    ]
    if pack.step_title:
        parts.append(pack.step_title)
    if pack.objective:
        parts.append(_section("Objective", pack.objective))
    if pack.failed_gates:
        parts.append(
            _section(
                "Failed gates",
                _bullets(
                    f"{g.gate_id} ({g.type}): {g.pass_condition}"
                    + "".join(f"\n  - {finding}" for finding in g.findings)
                    for g in pack.failed_gates
                ),
            )
        )
    if pack.failed_acceptance_criteria:
        parts.append(
            _section("Failed acceptance criteria", _bullets(pack.failed_acceptance_criteria))
        )
    if pack.missing_evidence:
        parts.append(_section("Missing evidence", _bullets(pack.missing_evidence)))
    if pack.minimal_fix_list:
        parts.append(_section("Minimal fix list", _bullets(pack.minimal_fix_list)))
    guard = pack.scope_guard
    parts.append(_scope(guard.allowed_paths, guard.forbidden_paths, guard.dependency_policy))
    parts.append(_commands(pack.rerun_commands, round_dir))
    if pack.acceptance_criteria:
        parts.append(
            _section(
                "Acceptance criteria",
                "Quote each criterion exactly, whole, as `ac` in `verification_results`:\n"
                + _bullets(pack.acceptance_criteria),
            )
        )
    parts += _evidence_and_result(round_dir, pack.task_id, pack.run_id, pack.step_id)
    return "\n\n".join(parts) + "\n"


def _section(title: str, body: str) -> str:
    return f"## {title}\n\n{body}"


def _bullets(items: Iterable[str]) -> str:
    return "\n".join(f"- {item}" for item in items)


def _scope(
    allowed: tuple[str, ...] | list[str],
    forbidden: tuple[str, ...] | list[str],
    policy: DependencyPolicy,
) -> str:
    lines = [
        "Create or edit only files matching these patterns (relative to the workspace root):",
        _bullets(f"`{p}`" for p in allowed) or "- (none: change no files)",
    ]
    if forbidden:
        lines += [
            "",
            "Never create, edit or delete files matching:",
            _bullets(f"`{p}`" for p in forbidden),
        ]
    lines += [
        "",
        f"Dependency policy: {policy.mode} (new dependencies: "
        f"{_yes(policy.allow_new_dependencies)}, lockfile changes: "
        f"{_yes(policy.allow_lockfile_changes)}, manifest changes: "
        f"{_yes(policy.allow_dependency_manifest_changes)}).",
    ]
    return _section("Scope", "\n".join(lines))


def _commands(commands: tuple[str, ...] | list[str], round_dir: RoundDir) -> str:
    if not commands:
        return _section("Commands to run", "None.")
    outputs = round_dir.relative(round_dir.outputs)
    lines = [
        "Run each command from the workspace root, in order. Save its combined stdout and "
        f"stderr to `{outputs}/cmd_<index>.txt` and record it in `commands_executed` with its "
        "real exit code (a failing command is reported as failing, never as passing):",
        "",
    ]
    lines += [f"{i}. `{command}`" for i, command in enumerate(commands)]
    return _section("Commands to run", "\n".join(lines))


def _evidence_and_result(round_dir: RoundDir, task_id: str, run_id: str, step_id: str) -> list[str]:
    rel = round_dir.rel
    example = {
        "task_id": task_id,
        "run_id": run_id,
        "step_id": step_id,
        "verdict": "PASS",
        "reason_code": "PASS_ALL_CRITERIA",
        "summary": "What was done, in two sentences.",
        "files_changed": ["path/you/changed.py"],
        "commands_executed": [
            {"command": "<command 0>", "exit_code": 0, "evidence_path": f"{rel}/outputs/cmd_0.txt"}
        ],
        "verification_results": [
            {
                "ac": "<the full text of AC1>",
                "met": True,
                "evidence_path": f"{rel}/outputs/cmd_0.txt",
            }
        ],
        "evidence_map": {"AC1": [f"{rel}/outputs/cmd_0.txt"]},
    }
    evidence = _section(
        "Evidence",
        f"Write all evidence under `{rel}/`:\n"
        + _bullets(
            [
                f"`{rel}/step_result.json`: your StepResult (required)",
                f"`{rel}/subagent_output.md`: your summary: files changed and, for each "
                "acceptance criterion, the evidence that shows it is met",
                f"`{rel}/outputs/`: the output of every command you ran",
            ]
        )
        + "\nEvidence paths in the StepResult are relative to the workspace root.",
    )
    result = _section(
        "StepResult",
        f"Write it as JSON to `{rel}/step_result.json`. If you also print it on stdout, print "
        "the same object, last. `verdict` is one of PASS, FAIL, REWORK, BLOCKED; `reason_code` "
        "is UPPER_SNAKE_CASE; list every file you changed in `files_changed`, every command in "
        "`commands_executed`, and one entry per acceptance criterion in "
        "`verification_results`. Example:\n\n```json\n" + json.dumps(example, indent=2) + "\n```",
    )
    return [evidence, result]


def _yes(flag: bool) -> str:
    return "allowed" if flag else "not allowed"
