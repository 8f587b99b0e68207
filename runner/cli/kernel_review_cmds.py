"""`runner review-step`: review one round offline, as the controller would.

With ``--workspace`` the facts come from that git work tree (changed files against ``--base``,
the evidence files that exist, and with ``--verify-commands`` the exit codes of the pack's
commands run again). Without it the review has only the worker's claims: it judges the claimed
files and the evidence paths' form but cannot know what changed or what exists, and says so.

Exit codes: 0 PASS on facts; 1 REWORK or FAIL; 2 bad input (unreadable or invalid pack or
result, unusable glob, no git work tree, unknown base, unwritable output); 3 PASS on claims
only, which no script should mistake for an acceptance.
"""

from __future__ import annotations

from pathlib import Path

import anyio
import click

import protocol
from kernel import CLAIMS_ONLY, ScopePatternError, build_rework, review, scope_rules_of
from protocol import QAReview, ReviewVerdict, StepPack, StepResult
from runner.facts import gather_facts
from runner.files import write_atomic
from runner.log import get_logger

from ._group import EXIT_INPUT, FiniteFloatRange

EXIT_PASS = 0
EXIT_NOT_PASSED = 1
EXIT_PASS_ON_CLAIMS = 3

log = get_logger("runner.review")

_FILE = click.Path(dir_okay=False, path_type=Path)


class OutputError(click.ClickException):
    """An output file that cannot be written: bad input, exit 2."""

    exit_code = EXIT_INPUT


@click.command("review-step")
@click.option("--step-pack-file", required=True, type=_FILE, help="The StepPack JSON.")
@click.option("--step-result-file", required=True, type=_FILE, help="The worker's StepResult.")
@click.option(
    "--workspace",
    type=click.Path(file_okay=False, path_type=Path),
    help="Top level of the git work tree the worker changed; without it, claims only.",
)
@click.option("--base", help="Commit the worker started from (default HEAD; needs --workspace).")
@click.option(
    "--round",
    "round_no",
    type=click.IntRange(min=1),
    default=1,
    show_default=True,
    help="The round reviewed; also the rework round of the ReworkPack.",
)
@click.option(
    "--verify-commands",
    is_flag=True,
    help="Re-run the pack's commands_to_run in the workspace; their exit codes beat claims.",
)
@click.option(
    "--command-timeout",
    type=FiniteFloatRange(min=0, min_open=True),
    help="Seconds per re-run (default: the pack's timeout_sec, else 600).",
)
@click.option("--write-review-file", type=_FILE, help="Write the QAReview JSON here.")
@click.option(
    "--write-rework-file", type=_FILE, help="Write the ReworkPack JSON here (not on PASS)."
)
@click.option("--json", "as_json", is_flag=True, help="Print the review JSON, not a summary.")
@click.pass_context
def review_step(
    ctx: click.Context,
    step_pack_file: Path,
    step_result_file: Path,
    workspace: Path | None,
    base: str | None,
    round_no: int,
    verify_commands: bool,
    command_timeout: float | None,
    write_review_file: Path | None,
    write_rework_file: Path | None,
    as_json: bool,
) -> None:
    """Review a StepResult against its StepPack: PASS (exit 0), REWORK or FAIL (exit 1).

    Without --workspace the review rests on the worker's claims; a PASS then exits 3.
    """
    if workspace is None and (base is not None or verify_commands or command_timeout):
        raise click.UsageError("--base, --verify-commands and --command-timeout need --workspace")
    pack = protocol.read(step_pack_file, StepPack)
    result = protocol.read(step_result_file, StepResult)
    try:
        scope_rules_of(pack)
    except ScopePatternError as exc:
        raise protocol.ProtocolError(
            f"unusable pattern {exc.pattern!r}: {exc.reason}",
            path=exc.field,
            source=str(step_pack_file),
        ) from None

    if workspace is None:
        facts = CLAIMS_ONLY
    else:
        facts = anyio.run(
            lambda: gather_facts(
                workspace,
                pack,
                base=base or "HEAD",
                round_no=round_no,
                verify_commands=verify_commands,
                command_timeout_s=command_timeout,
            )
        )
    verdict = review(pack, result, facts, round_no=round_no)
    outputs: list[tuple[Path, bytes, str]] = []
    if write_review_file is not None:
        outputs.append((write_review_file, protocol.encode_pretty(verdict), "review"))
    if write_rework_file is not None and verdict.verdict is not ReviewVerdict.PASS:
        rework = build_rework(
            pack,
            verdict,
            rework_round=round_no,
            review_ref=str(write_review_file) if write_review_file else None,
        )
        outputs.append((write_rework_file, protocol.encode_pretty(rework), "rework"))
    for path, data, what in outputs:
        try:
            write_atomic(path, data)
        except OSError as exc:
            raise OutputError(
                f"cannot write the {what} file {path}: {exc.strerror or exc}"
            ) from None

    log.info(
        "review.finished",
        task_id=verdict.task_id,
        run_id=verdict.run_id,
        step_id=verdict.step_id,
        round=round_no,
        verdict=verdict.verdict.value,
        reasons=[r.value for r in verdict.reason_codes],
        unchecked=verdict.unchecked,
    )
    if as_json:
        click.echo(protocol.encode_pretty(verdict).decode(), nl=False)
    else:
        click.echo(_summary(verdict, workspace))
        for path, _, what in outputs:
            click.echo(f"wrote {what}: {path}")
        if write_rework_file is not None and verdict.verdict is ReviewVerdict.PASS:
            click.echo("no rework: the review passed")
    ctx.exit(_exit_code(verdict))


def _exit_code(verdict: QAReview) -> int:
    if verdict.verdict is not ReviewVerdict.PASS:
        return EXIT_NOT_PASSED
    if {"changed_files", "evidence_files"} & set(verdict.unchecked):
        return EXIT_PASS_ON_CLAIMS
    return EXIT_PASS


def _summary(verdict: QAReview, workspace: Path | None) -> str:
    reasons = ", ".join(r.value for r in verdict.reason_codes)
    lines = [
        f"{verdict.verdict.value} {verdict.task_id}/{verdict.step_id} round {verdict.round}"
        f" ({reasons})"
    ]
    if workspace is None:
        lines.append("facts: none; claims only (changed files and evidence existence not checked)")
    else:
        reran = "not re-run" if "command_exit_codes" in verdict.unchecked else "re-run"
        lines.append(
            f"facts: {workspace} at {verdict.base_revision}: {len(verdict.changed_files)} "
            f"changed files, commands {reran}"
        )
    for gate in verdict.gates:
        state = "pass" if gate.passed else f"FAIL ({', '.join(gate.findings)})"
        lines.append(f"gate {gate.gate_id} {gate.type}: {state}")
    for finding in verdict.findings:
        gates = f" [{', '.join(finding.gate_ids)}]" if finding.gate_ids else ""
        lines.append(f"- {finding.code.value}{gates}: {finding.message}")
    return "\n".join(lines)
