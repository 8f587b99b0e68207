"""Dispatching a step or a rework to an agent: validate, plan, run, read the result.

`plan_step` / `plan_rework` validate the pack, pick the backend and its command, claim the
round's evidence directory (not in a dry run), render the prompt and build the exact argv,
environment and limits. `execute` runs the plan under the supervisor, writes
``logs/command.json`` before and after the run, and applies the result-extraction rule.

The returned `Dispatch` carries everything an attempt record needs (ids, round, backend, argv,
limits, outcome with times and duration, the StepResult or the parse failure, whether it was an
infrastructure failure); the R/S pointer bookkeeping belongs to the ledger, which decides retry
(an infrastructure failure: same R, S+1) or revision (a rework: R+1, S0).
"""

from __future__ import annotations

import hashlib
import os
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

import msgspec

import protocol
from kernel import AttemptCause, next_attempt
from ledger import open_ledger
from protocol import (
    AttemptPointer,
    EndReason,
    ResultParseFailure,
    ReworkPack,
    StepOutcome,
    StepPack,
    StepResult,
    Verdict,
    classify,
)
from protocol.ledger_events import (
    Attempt,
    AttemptInterrupted,
    AttemptStarted,
    AttemptUsage,
    FileRef,
    StepOutcomeRecorded,
)

from . import evidence
from .evidence import RoundDir
from .extract import Extraction, extract_result
from .files import write_atomic
from .log import get_logger
from .prompt import render_rework_prompt, render_step_prompt
from .shim import (
    Mode,
    ShimConfig,
    ShimError,
    build_invocation,
    resolve_backend,
)
from .supervisor import Limits, StepRun, StepSpec, Supervisor

Kind = Literal["step", "rework"]
log = get_logger("runner.dispatch")


class LimitOverrides(msgspec.Struct, frozen=True, kw_only=True):
    """Limits given on the command line; each replaces the pack's value when set."""

    max_runtime_sec: float | None = None
    max_silence_sec: float | None = None
    max_memory_mb: int | None = None
    poll_interval_sec: float | None = None
    kill_grace_sec: float | None = None


class CommandLog(msgspec.Struct, frozen=True, kw_only=True):
    """``logs/command.json``: what was run for a round and how it ended (also printed)."""

    kind: Kind
    task_id: str
    run_id: str
    step_id: str
    round: int
    round_dir: str
    backend: str
    argv: list[str]
    cwd: str
    env: dict[str, str]
    prompt_via: str
    limits: Limits
    thread_id: str | None = None
    outcome: StepOutcome | None = None
    result_source: str | None = None
    verdict: str | None = None
    reason_code: str | None = None
    result_thread_id: str | None = None
    parse_failure: ResultParseFailure | None = None


@dataclass(frozen=True)
class DispatchPlan:
    kind: Kind
    pack_bytes: bytes
    task_id: str
    run_id: str
    step_id: str
    backend: str
    round: RoundDir
    argv: list[str]
    stdin: bytes | None
    env: dict[str, str]
    prompt: str
    prompt_via: str
    limits: Limits
    thread_id: str | None = None
    claimed: bool = False

    def log(self, **after: object) -> CommandLog:
        return CommandLog(
            kind=self.kind,
            task_id=self.task_id,
            run_id=self.run_id,
            step_id=self.step_id,
            round=self.round.number,
            round_dir=self.round.rel,
            backend=self.backend,
            argv=self.argv,
            cwd=str(self.round.workspace),
            env=self.env,
            prompt_via=self.prompt_via,
            limits=self.limits,
            thread_id=self.thread_id,
            **after,  # type: ignore[arg-type]
        )


@dataclass(frozen=True)
class Dispatch:
    """One dispatched round: the plan, how the process ended, and the result or why not."""

    plan: DispatchPlan
    run: StepRun
    extraction: Extraction = field(default_factory=Extraction)

    @property
    def outcome(self) -> StepOutcome:
        return self.run.outcome

    @property
    def result(self) -> StepResult | None:
        return self.extraction.result

    @property
    def failure(self) -> ResultParseFailure | None:
        return self.extraction.failure

    @property
    def infrastructure_failure(self) -> bool:
        """True when the round says nothing about the work: a limit breach, a crash, a shim
        that could not start or exited non-zero, or no usable StepResult. Such a round is
        retried (same R, S+1), not reviewed."""
        return (
            self.outcome.reason is not EndReason.COMPLETED
            or self.outcome.exit_code != 0
            or self.result is None
        )

    def record(self) -> CommandLog:
        result = self.result
        return self.plan.log(
            outcome=self.outcome,
            result_source=self.extraction.source,
            verdict=str(result.verdict) if result else None,
            reason_code=result.reason_code if result else None,
            result_thread_id=result.thread_id if result else None,
            parse_failure=self.failure,
        )


@dataclass(frozen=True)
class PlanOptions:
    """Where and how to dispatch: the workspace, the shim config, overrides."""

    workspace: Path
    config: ShimConfig | None = None
    config_source: str = "the shim config"
    backend: str | None = None
    limits: LimitOverrides | None = None
    round_number: int | None = None


def plan_step(pack_file: Path, options: PlanOptions, *, claim: bool = True) -> DispatchPlan:
    """Validate a StepPack and plan its dispatch (``create``); a dry run has `claim` False."""
    raw = _read(pack_file)
    pack = protocol.decode(raw, StepPack, source=str(pack_file))
    policy = pack.runtime_policy
    base = Limits(
        max_runtime_sec=policy.timeout_sec,
        max_silence_sec=policy.no_output_timeout_sec,
        max_memory_mb=policy.max_memory_mb,
    )
    ids = (pack.task_id, pack.run_id, pack.step_id)
    return _plan(
        "step", raw, ids, options, pack.worker_backend, base, claim,
        lambda rd: render_step_prompt(pack, rd),
    )  # fmt: skip


def plan_rework(
    pack_file: Path, thread_id: str, options: PlanOptions, *, claim: bool = True
) -> DispatchPlan:
    """Validate a ReworkPack and plan its dispatch (``resume`` of `thread_id`)."""
    if not thread_id or not thread_id.isprintable() or thread_id != thread_id.strip():
        raise ShimError(f"invalid thread id {thread_id!r}: empty, blank-padded or unprintable")
    raw = _read(pack_file)
    pack = protocol.decode(raw, ReworkPack, source=str(pack_file))
    ids = (pack.task_id, pack.run_id, pack.step_id)
    return _plan(
        "rework", raw, ids, options, None, Limits(), claim,
        lambda rd: render_rework_prompt(pack, rd), thread_id,
    )  # fmt: skip


def _plan(
    kind: Kind,
    raw: bytes,
    ids: tuple[str, str, str],
    options: PlanOptions,
    pack_backend: str | None,
    base_limits: Limits,
    claim: bool,
    render: Callable[[RoundDir], str],
    thread_id: str | None = None,
) -> DispatchPlan:
    backend, command = resolve_backend(
        options.config, options.config_source, options.backend, pack_backend
    )
    command_mode: Mode = "create" if kind == "step" else "resume"
    limits = _merge(base_limits, options.limits)
    round_number = options.round_number
    workspace = options.workspace
    task_id, run_id, step_id = ids
    workspace = workspace.resolve()
    if not workspace.is_dir():
        raise ShimError(f"workspace {workspace} is not a directory")
    if claim:
        try:
            round_dir = evidence.claim_round(workspace, run_id, step_id, round_number)
        except FileExistsError:
            raise ShimError(
                f"round R{round_number} of step {step_id} already exists under {workspace}"
            ) from None
    else:
        number = round_number or evidence.next_round(workspace, run_id, step_id)
        round_dir = RoundDir(workspace, run_id, step_id, number)
    pack_copy = round_dir.root / "logs" / f"{kind}_pack.json"
    prompt = render(round_dir)
    values = {
        "prompt": prompt,
        "prompt_file": str(round_dir.prompt),
        "thread_id": thread_id or "",
        "task_id": task_id,
        "run_id": run_id,
        "step_id": step_id,
        "backend": backend,
        "round": str(round_dir.number),
        "round_dir": str(round_dir.root),
        "workspace": str(workspace),
        "pack_file": str(pack_copy),
        "step_result_file": str(round_dir.step_result),
    }
    invocation = build_invocation(command, command_mode, backend, values)
    env = {
        "RUNNER_PACK_KIND": kind,
        "RUNNER_PACK_FILE": str(pack_copy),
        "RUNNER_TASK_ID": task_id,
        "RUNNER_RUN_ID": run_id,
        "RUNNER_STEP_ID": step_id,
        "RUNNER_ROUND": str(round_dir.number),
        "RUNNER_ROUND_DIR": str(round_dir.root),
        "RUNNER_WORKSPACE": str(workspace),
        "RUNNER_PROMPT_FILE": str(round_dir.prompt),
        "RUNNER_STEP_RESULT_FILE": str(round_dir.step_result),
        "RUNNER_BACKEND": backend,
        **({"RUNNER_THREAD_ID": thread_id} if thread_id else {}),
        **command.env,
    }
    plan = DispatchPlan(
        kind=kind,
        pack_bytes=raw,
        task_id=task_id,
        run_id=run_id,
        step_id=step_id,
        backend=backend,
        round=round_dir,
        argv=invocation.argv,
        stdin=invocation.stdin,
        env=env,
        prompt=prompt,
        prompt_via=invocation.prompt_via,
        limits=limits,
        thread_id=thread_id,
        claimed=claim,
    )
    if claim:
        write_atomic(pack_copy, raw)
        write_atomic(round_dir.prompt, prompt.encode())
        write_atomic(round_dir.command_log, protocol.encode_pretty(plan.log()))
    return plan


async def execute(plan: DispatchPlan, supervisor: Supervisor) -> Dispatch:
    """Run a claimed plan and read its result (see `runner.extract`)."""
    if not plan.claimed:
        raise ShimError("a dry-run plan cannot be executed")
    rd = plan.round
    spec = StepSpec(
        argv=plan.argv,
        cwd=rd.workspace,
        env={**os.environ, **plan.env},
        stdin=plan.stdin,
        stdout=rd.shim_stdout,
        stderr=rd.shim_stderr,
        limits=plan.limits,
        label=f"{plan.task_id}/{plan.step_id}/R{rd.number}",
    )
    log.info(
        "dispatch.started",
        kind=plan.kind,
        task_id=plan.task_id,
        step_id=plan.step_id,
        round=rd.number,
        backend=plan.backend,
    )
    run = await supervisor.run(spec)
    extraction = extract_result(
        rd.step_result,
        rd.shim_stdout,
        task_id=plan.task_id,
        run_id=plan.run_id,
        step_id=plan.step_id,
    )
    if extraction.source == "stdout" and extraction.result is not None:
        write_atomic(rd.step_result, protocol.encode_pretty(extraction.result))
    dispatch = Dispatch(plan=plan, run=run, extraction=extraction)
    write_atomic(rd.command_log, protocol.encode_pretty(dispatch.record()))
    log.info(
        "dispatch.finished",
        task_id=plan.task_id,
        step_id=plan.step_id,
        round=rd.number,
        reason=str(run.outcome.reason),
        exit_code=run.outcome.exit_code,
        duration_ms=run.outcome.duration_ms,
        verdict=str(extraction.result.verdict) if extraction.result else None,
        parse_failure=str(extraction.failure.reason) if extraction.failure else None,
    )
    return dispatch


def _read(path: Path) -> bytes:
    try:
        return path.read_bytes()
    except OSError as exc:
        raise protocol.ProtocolError(
            f"cannot read file: {exc.strerror or exc}", source=str(path)
        ) from None


def _merge(base: Limits, overrides: LimitOverrides | None) -> Limits:
    if overrides is None:
        return base
    changes = {k: v for k, v in msgspec.structs.asdict(overrides).items() if v is not None}
    return msgspec.structs.replace(base, **changes)


async def record_dispatches(
    root: Path, project_id: str, dispatches: list[Dispatch], kind: Kind
) -> list[AttemptPointer]:
    """Record each dispatch as one attempt in the ledger, the R/S pointer managed here.

    A step dispatch of a task with no attempt yet is R0/S0; another step dispatch of the same
    task is a retry (R, S+1): the same instructions again. A rework dispatch is a revision
    (R+1, S0). Each attempt is three events: ``attempt_started``, ``step_outcome`` and the
    ``attempt`` record with the worker's verdict (there is no review here: ``runner
    review-step`` judges a round separately).
    """
    cause = AttemptCause.REWORK if kind == "rework" else AttemptCause.INFRASTRUCTURE
    pointers: list[AttemptPointer] = []
    async with open_ledger(root, project_id, create=True) as ledger:
        for dispatch in dispatches:
            plan = dispatch.plan
            state = ledger.task_state(plan.task_id)
            if state.attempt_open and state.pointer is not None:
                await ledger.append_task_event(
                    plan.task_id,
                    AttemptInterrupted(
                        r=state.pointer.r, s=state.pointer.s, reason="never recorded"
                    ),
                )
            pointer = next_attempt(state.pointer, cause)
            command_log = plan.round.command_log
            data = command_log.read_bytes()
            ref = FileRef(
                path=plan.round.relative(command_log),
                sha256=hashlib.sha256(data).hexdigest(),
                size=len(data),
            )
            for body in (
                AttemptStarted(
                    r=pointer.r,
                    s=pointer.s,
                    kind=classify(state.pointer, pointer),
                    worker_backend=plan.backend,
                    run_id=plan.run_id,
                    step_id=plan.step_id,
                    refs=[ref],
                ),
                StepOutcomeRecorded.from_outcome(pointer, dispatch.outcome),
                _attempt_record(pointer, dispatch),
            ):
                await ledger.append_task_event(plan.task_id, body)
            pointers.append(pointer)
    return pointers


def _attempt_record(pointer: AttemptPointer, dispatch: Dispatch) -> Attempt:
    result = dispatch.result
    if result is None:
        return Attempt(
            r=pointer.r,
            s=pointer.s,
            result=Verdict.FAIL,
            reason_code=_failure_code(dispatch),
            code_artifact_ref=dispatch.plan.round.rel,
            reason_detail=dispatch.failure.detail[:4000] if dispatch.failure else "",
            next_action="retry (same R, S+1)",
        )
    return Attempt(
        r=pointer.r,
        s=pointer.s,
        result=result.verdict,
        reason_code=result.reason_code,
        code_change_summary=result.summary[:4000],
        code_artifact_ref=dispatch.plan.round.rel,
        executed_files=list(result.files_changed),
        executed_commands=[c.command for c in result.commands_executed],
        next_action="review the round (runner review-step)",
        usage=AttemptUsage.from_usage(result.usage) if result.usage else None,
    )


def _failure_code(dispatch: Dispatch) -> str:
    if dispatch.outcome.reason is not EndReason.COMPLETED:
        return str(dispatch.outcome.reason).upper()
    if dispatch.failure is not None:
        return str(dispatch.failure.reason)
    return "SHIM_EXIT_NONZERO"
