"""One task's cycle [the original's `run_next_cycle`, made parallel and crash-proof].

A cycle takes a task the campaign has claimed and carries one attempt of it to an end:

1. prepare it: its StepPack (mapped, referenced, or auto-planned), intake validation, tier,
   contract for tier3, the frozen boundary's guard;
2. give it a workspace (its own git worktree, or the workspace itself behind a checkpoint) and
   run the ``after_create`` and ``before_run`` hooks;
3. dispatch the step through the shim under the supervisor's limits, here or on a cluster
   worker (the `runner.executor` seam: either way the evidence and the change come back into
   the workspace, so everything after this point runs here);
4. gather facts (git's changed files, the evidence files that exist, optionally the controller's
   own re-run of the pack's commands) and QA-review the worker's result against them;
5. on REWORK, build a ReworkPack and resume the worker's thread (a revision, R+1/S0), up to
   `max_rework_rounds`; on PASS, merge the work into the target branch (a conflict is a rework
   too, on a fresh workspace at the new head);
6. report how the attempt ended; the campaign finalises the queue.

Every step is a ledger event on the task's chain: ``attempt_started`` (which claims the R/S
pointer), ``step_outcome``, ``review``, ``attempt`` (the attempt's full record, which closes it),
``rework_dispatched``, and ``attempt_interrupted`` when the runner is stopped mid-attempt. A
limit breach, a crash or an unparsable result is an infrastructure failure: the cycle ends and
the next attempt is a retry (same R, S+1) after a backoff.

A retry repeats the instructions of the attempt it retries (`kernel.rework_to_repeat`): after a
rework round that was interrupted or failed for infrastructure reasons, the same ReworkPack
(checked against its SHA-256 in the ledger) resumes the same thread, in a fresh workspace with
the step's earlier evidence; its ``attempt_started`` names the pack in ``refs``. When that pack
or thread cannot be had any more, the next attempt is a revision from the StepPack instead.
A rework round in the same workspace renames the workspace after its attempt
(`Workspaces.relabel`), so that the accepted attempt's branch, commit and merge name it.
"""

from __future__ import annotations

import hashlib
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath
from typing import Literal, Protocol

import anyio

import protocol
from kernel import (
    AttemptCause,
    CannotPlan,
    KernelError,
    build_conflict_rework,
    build_rework,
    next_attempt,
    prepare_task,
    primary_reason,
    review,
    rework_to_repeat,
)
from kernel.triage import AttemptOutcome, add_spend
from ledger import Ledger
from ledger.render import task_records
from protocol import (
    AttemptKind,
    AttemptPointer,
    BoundarySnapshot,
    EndReason,
    Hooks,
    QAReview,
    QueueTask,
    ReviewVerdict,
    ReworkPack,
    Spend,
    StepPack,
    StepResult,
    Verdict,
)
from protocol.ledger_events import (
    Attempt,
    AttemptInterrupted,
    AttemptStarted,
    AttemptUsage,
    FileRef,
    ReviewRecorded,
    ReworkDispatched,
    StepOutcomeRecorded,
)

from . import evidence
from .dispatch import Dispatch, DispatchPlan, LimitOverrides, PlanOptions
from .executor import Executor, LocalExecutor, StepLost, StepOrder
from .facts import gather_facts
from .files import write_atomic
from .log import get_logger
from .shim import ShimConfig, resolve_backend
from .supervisor import Limits, StepSpec, Supervisor
from .workspace import TaskWorkspace, Workspaces, copy_evidence

log = get_logger("runner.cycle")

PREPARED_DIR = "prepared"
REVIEW_FILE = "qa_review.json"
REWORK_FILE = "rework_pack.generated.json"


class Reporter(Protocol):
    """Where a cycle reports what happens (the live view, JSON log lines)."""

    def emit(self, event: str, task_id: str, **fields: object) -> None: ...


@dataclass(frozen=True)
class EngineOptions:
    """How cycles run; the campaign fills it from its options and config file."""

    progress_dir: Path
    run_prefix: str = "run"
    max_rework_rounds: int = 1
    verify_commands: bool = False
    auto_plan_missing: bool = False
    step_packs: Mapping[str, Path] = field(default_factory=dict)
    backends: Mapping[str, str] = field(default_factory=dict)
    default_backend: str | None = None
    shim_config: ShimConfig | None = None
    shim_config_source: str = "the shim config"
    limits: LimitOverrides = field(default_factory=LimitOverrides)
    hooks: Hooks = field(default_factory=Hooks)
    boundary: BoundarySnapshot | None = None


@dataclass(frozen=True)
class CycleEnd:
    """How one attempt of a task ended, for the campaign to finalise the queue."""

    key: str
    outcome: AttemptOutcome
    reason: str
    resume_as: Literal["retry", "revision"] | None = None
    reworks: int = 0
    spend: Spend | None = None
    merged_commit: str | None = None
    stop: str | None = None  # why no new attempt should start anywhere (a person must act)

    @property
    def infrastructure(self) -> bool:
        return self.resume_as == "retry"


@dataclass(frozen=True)
class _Repeat:
    """A rework a retry gives the agent again: the pack's ledger reference (its path relative
    to a workspace), the thread to resume, and the pack itself."""

    ref: FileRef
    thread: str
    pack: ReworkPack


@dataclass
class _Attempt:
    """The state of the attempt in flight (what an interruption must record)."""

    pointer: AttemptPointer | None = None
    open: bool = False
    spend: Spend | None = None
    reworks: int = 0
    workspace: TaskWorkspace | None = None  # the one in use (a conflict rework moves on)


class Cycle:
    """Runs one attempt of one claimed task; see the module docstring."""

    def __init__(
        self,
        task: QueueTask,
        *,
        ledger: Ledger,
        workspaces: Workspaces,
        supervisor: Supervisor,
        options: EngineOptions,
        reporter: Reporter,
        executor: Executor | None = None,
    ) -> None:
        self.task = task
        self.key = task.key
        self.ledger = ledger
        self.workspaces = workspaces
        self.supervisor = supervisor
        self.executor = executor or LocalExecutor(supervisor)
        self.options = options
        self.reporter = reporter
        self.attempt = _Attempt()

    # -- the cycle --------------------------------------------------------------------------

    async def run(self) -> CycleEnd:
        try:
            pack, pack_file = await self._prepare()
        except (KernelError, protocol.ProtocolError, OSError) as exc:
            reason = f"cannot prepare: {exc}"
            self.reporter.emit("task.blocked", self.key, reason=reason)
            return CycleEnd(self.key, AttemptOutcome.BLOCKED, reason)

        pointer, repeat = await self._next_pointer()
        ws = await self.workspaces.prepare(self.key, _label(pointer))
        self.attempt.workspace = ws
        try:
            return await self._attempt(pack, pack_file, ws, pointer, repeat)
        except BaseException as exc:
            with anyio.CancelScope(shield=True):
                await self._interrupted(f"runner stopped: {type(exc).__name__}")
                await self.workspaces.reject(self.attempt.workspace or ws)
            raise
        finally:
            with anyio.CancelScope(shield=True):
                await self._remove(self.attempt.workspace or ws, pack)

    async def _attempt(
        self,
        pack: StepPack,
        pack_file: Path,
        ws: TaskWorkspace,
        pointer: AttemptPointer,
        repeat: _Repeat | None = None,
    ) -> CycleEnd:
        view = pack.view
        refs = [repeat.ref] if repeat else []
        problem = await self._ready(ws, pack)
        if problem:
            await self._start(pointer, pack, refs=refs)
            await self._record_infra(pointer, "HOOK_FAILED", problem)
            return self._end(AttemptOutcome.FAILED, problem, "retry")

        await self._start(pointer, pack, refs=refs)
        if repeat is None:
            dispatch = await self._dispatch_step(pack_file, ws)
            rework_round = 0
        else:
            dispatch = await self._repeat_rework(repeat, ws)
            rework_round = repeat.pack.rework_round
            self.attempt.reworks += 1  # the round given back when it was cut short
        while True:
            if isinstance(dispatch, StepLost):  # no outcome to record: the machine is gone
                await self._record_infra(pointer, dispatch.code, dispatch.detail)
                return self._end(AttemptOutcome.FAILED, str(dispatch), "retry")
            await self._append(StepOutcomeRecorded.from_outcome(pointer, dispatch.outcome))
            self._add_usage(dispatch.result)
            if dispatch.outcome.reason is EndReason.CANCELLED:
                raise anyio.get_cancelled_exc_class()()
            result = dispatch.result
            if dispatch.infrastructure_failure or result is None:
                code, detail = _infra_reason(dispatch)
                await self._record_infra(pointer, code, detail)
                return self._end(AttemptOutcome.FAILED, f"{code}: {detail}", "retry")

            qa, review_ref = await self._review(pack, result, ws, dispatch.plan.round)
            await self._append(
                ReviewRecorded(
                    r=pointer.r,
                    s=pointer.s,
                    verdict=qa.verdict,
                    reason_codes=qa.reason_codes,
                    review=review_ref,
                )
            )
            await self._record_attempt(pointer, pack, result, qa, dispatch)
            self.reporter.emit(
                "review.finished",
                self.key,
                verdict=str(qa.verdict),
                reasons=[str(r) for r in qa.reason_codes],
                round=dispatch.plan.round.number,
            )
            await self._hook("after_run", ws, pack, required=False)

            rework: ReworkPack | None = None
            if qa.verdict is ReviewVerdict.PASS:
                # Shielded: a merge cut short by a signal could leave the target branch half
                # merged, or merged without the cycle knowing (it would run the task again).
                with anyio.CancelScope(shield=True):
                    accepted = await self.workspaces.accept(
                        ws, f"{self.key}: {view.title or self.task.title}"
                    )
                if accepted.merged:
                    self.reporter.emit("task.merged", self.key, commit=accepted.commit)
                    return self._end(
                        AttemptOutcome.PASSED, "accepted", None, merged=accepted.commit
                    )
                if accepted.target_edited:
                    # Every merge would meet the same edit: the task waits for a person
                    # (its reviewed work stays in the ledger and evidence) and so does the
                    # campaign; `runner queue set KEY pending` after the checkout is clean.
                    reason = f"TARGET_EDITED: {accepted.detail}"
                    return self._end(AttemptOutcome.BLOCKED, reason, None, stop=reason)
                reason = f"merge conflict in {', '.join(accepted.conflicted_files) or '?'}"
                self.reporter.emit("task.conflict", self.key, files=list(accepted.conflicted_files))
                if rework_round < self.options.max_rework_rounds:
                    rework = build_conflict_rework(
                        pack, accepted.conflicted_files, rework_round=rework_round + 1
                    )
                    ws = await self._fresh_workspace(ws, pointer.revise(), pack)
                    problem = await self._ready(ws, pack)
                    if problem:
                        pointer = pointer.revise()
                        await self._start(pointer, pack, kind=AttemptKind.REVISION)
                        await self._record_infra(pointer, "HOOK_FAILED", problem)
                        return self._end(AttemptOutcome.FAILED, problem, "retry")
                else:
                    return self._end(AttemptOutcome.FAILED, reason, "revision")
            elif qa.verdict is ReviewVerdict.REWORK and result.thread_id is None:
                return self._end(
                    AttemptOutcome.FAILED, "REWORK, but the worker gave no thread to resume",
                    "revision",
                )  # fmt: skip
            elif (
                qa.verdict is ReviewVerdict.REWORK and rework_round < self.options.max_rework_rounds
            ):
                rework = build_rework(
                    pack, qa, rework_round=rework_round + 1, review_ref=review_ref.path
                )
            else:
                await self.workspaces.reject(ws)
                reason = f"{qa.verdict}: {', '.join(str(r) for r in qa.reason_codes)}"
                return self._end(AttemptOutcome.FAILED, reason, "revision")

            rework_round += 1
            self.attempt.reworks += 1
            thread = result.thread_id
            if thread is None:  # a conflict rework of a worker that named no thread
                return self._end(AttemptOutcome.FAILED, "no thread to resume", "revision")
            # In the current workspace: a conflict rework has moved to a fresh one.
            rework_file = ws.path / dispatch.plan.round.rel / "logs" / REWORK_FILE
            ref = await _write_ref(rework_file, protocol.encode_pretty(rework), ws.path)
            await self._append(ReworkDispatched(r=pointer.r, s=pointer.s, rework_pack=ref))
            self.reporter.emit(
                "rework.dispatched", self.key, round=rework_round, reason=str(rework.reason_code)
            )
            pointer = pointer.revise()
            await self._start(pointer, pack, kind=AttemptKind.REVISION)
            if ws.label != _label(pointer):  # a rework in place: the workspace is R+1/S0's now
                ws = await self.workspaces.relabel(ws, _label(pointer))
                self.attempt.workspace = ws
            dispatch = await self._dispatch_rework(rework_file, thread, ws)

    # -- steps ------------------------------------------------------------------------------

    async def _prepare(self) -> tuple[StepPack, Path]:
        """Resolve the task's StepPack and write the prepared files (contract, pack)."""
        opts = self.options
        ref = opts.step_packs.get(self.key)
        if ref is None and self.task.step_pack_ref:
            ref = opts.progress_dir / self.task.step_pack_ref
        pack: StepPack | None = None
        if ref is not None:
            pack = protocol.read(ref, StepPack)
        elif not opts.auto_plan_missing:
            raise CannotPlan(
                self.key, "no step pack is mapped or referenced (use --auto-plan-missing)"
            )
        run_id = pack.run_id if pack else f"{self.key}_{opts.run_prefix}"
        prepared = prepare_task(self.task, run_id=run_id, pack=pack, boundary=opts.boundary)
        assert prepared.pack is not None
        out = opts.progress_dir / PREPARED_DIR / self.key
        for name, data in prepared.files.items():
            await anyio.to_thread.run_sync(write_atomic, out / name, data)
        return prepared.pack, out / "step_pack.json"

    async def _next_pointer(self) -> tuple[AttemptPointer, _Repeat | None]:
        """The next attempt's pointer, and for a retry of a rework round the rework it
        repeats."""
        state = self.ledger.task_state(self.key)
        if state.attempt_open and state.pointer is not None:
            # The last runner died mid-attempt: say so before starting the next one.
            await self._append(
                AttemptInterrupted(
                    r=state.pointer.r, s=state.pointer.s, reason="runner stopped mid-attempt"
                )
            )
        cause = (
            AttemptCause.REWORK
            if self.task.resume_as == "revision" and not state.attempt_open
            else AttemptCause.INFRASTRUCTURE
        )
        pointer = next_attempt(state.pointer, cause)
        if pointer.s == 0:
            return pointer, None
        await self.ledger.flush()  # the chain file holds every event committed so far
        bodies = await anyio.to_thread.run_sync(
            lambda: [r.body for r in task_records(self.ledger.paths, self.key)]
        )
        dispatched = rework_to_repeat(bodies, pointer)
        if dispatched is None:
            return pointer, None  # the StepPack again
        repeat, problem = await anyio.to_thread.run_sync(self._find_rework, dispatched.rework_pack)
        if repeat is not None:
            return pointer, repeat
        # A retry must give the same instructions, and these are gone: new ones (the StepPack)
        # make it a revision, and the ledger says so.
        revision = next_attempt(state.pointer, AttemptCause.REWORK)
        log.warning(
            "cycle.rework_lost", task_id=self.key, retry=str(pointer), instead=str(revision),
            problem=problem,
        )  # fmt: skip
        return revision, None

    def _find_rework(self, ref: FileRef) -> tuple[_Repeat | None, str]:
        """The rework pack the ledger recorded as `ref`, from the main workspace's evidence
        (every round's evidence is copied there), unchanged since, with the thread of the round
        whose review it answered (the cycle wrote it into that round's ``logs/``); else None
        and why not."""
        rel = PurePosixPath(ref.path)
        if rel.is_absolute() or ".." in rel.parts:
            return None, f"{ref.path}: not a path in the evidence"
        path = self.workspaces.root / rel
        try:
            data = path.read_bytes()
        except OSError as exc:
            return None, f"{ref.path}: {exc.strerror or exc}"
        if hashlib.sha256(data).hexdigest() != ref.sha256:
            return None, f"{ref.path}: not the rework pack the ledger recorded (SHA-256 differs)"
        try:
            rework = protocol.decode(data, ReworkPack, source=ref.path)
        except protocol.ProtocolError as exc:
            return None, str(exc)
        rounds = evidence.rounds_dir(self.workspaces.root, rework.run_id, rework.step_id)
        round_dir = path.parent.parent
        if round_dir.parent != rounds:
            return None, f"{ref.path}: not in a round of step {rework.step_id}"
        try:
            result = protocol.read(round_dir / "step_result.json", StepResult)
        except protocol.ProtocolError as exc:
            return None, str(exc)
        if not result.thread_id:
            return None, f"{ref.path}: the result it answered names no thread to resume"
        return _Repeat(ref, result.thread_id, rework), ""

    async def _repeat_rework(self, repeat: _Repeat, ws: TaskWorkspace) -> Dispatch | StepLost:
        """Dispatch a recorded rework again on its thread, in `ws` with the step's earlier
        evidence (the pack among it: the agent finds its rounds where it left them)."""
        rework = repeat.pack
        rounds = evidence.rounds_dir(Path(), rework.run_id, rework.step_id).as_posix()
        await anyio.to_thread.run_sync(copy_evidence, self.workspaces.root, ws.path, rounds)
        self.reporter.emit(
            "rework.dispatched", self.key, round=rework.rework_round,
            reason=str(rework.reason_code), repeated=repeat.ref.path,
        )  # fmt: skip
        return await self._dispatch_rework(ws.path / repeat.ref.path, repeat.thread, ws)

    async def _start(
        self,
        pointer: AttemptPointer,
        pack: StepPack,
        *,
        kind: AttemptKind | None = None,
        refs: list[FileRef] | None = None,
    ) -> None:
        state = self.ledger.task_state(self.key)
        if kind is None:
            kind = protocol.classify(state.pointer, pointer)
        backend, _ = resolve_backend(
            self.options.shim_config,
            self.options.shim_config_source,
            self._backend(pack),
            pack.worker_backend,
        )
        await self._append(
            AttemptStarted(
                r=pointer.r,
                s=pointer.s,
                kind=kind,
                worker_backend=backend,
                run_id=pack.run_id,
                step_id=pack.step_id,
                refs=refs or [],
            )
        )
        self.attempt.pointer = pointer
        self.attempt.open = True
        self.reporter.emit("attempt.started", self.key, pointer=str(pointer), kind=str(kind))

    def _backend(self, pack: StepPack | None = None) -> str | None:
        """The backend asked for: the campaign's map, then the task's, then the pack's (when
        given), then the campaign's default; None leaves the choice to the shim config."""
        return (
            self.options.backends.get(self.key)
            or self.task.worker_backend
            or (pack.worker_backend if pack else None)
            or self.options.default_backend
        )

    def _plan_options(self, ws: TaskWorkspace, pack_run: tuple[str, str]) -> PlanOptions:
        run_id, step_id = pack_run
        rounds = evidence.existing_rounds(ws.path, run_id, step_id)
        rounds += evidence.existing_rounds(self.workspaces.root, run_id, step_id)
        return PlanOptions(
            workspace=ws.path,
            config=self.options.shim_config,
            config_source=self.options.shim_config_source,
            backend=self._backend(),
            limits=self.options.limits,
            round_number=max(rounds, default=0) + 1,
        )

    async def _dispatch_step(self, pack_file: Path, ws: TaskWorkspace) -> Dispatch | StepLost:
        pack = protocol.read(pack_file, StepPack)
        options = self._plan_options(ws, (pack.run_id, pack.step_id))
        return await self._dispatch(StepOrder("step", pack_file, options, ws))

    async def _dispatch_rework(
        self, rework_file: Path, thread: str, ws: TaskWorkspace
    ) -> Dispatch | StepLost:
        rework = protocol.read(rework_file, ReworkPack)
        options = self._plan_options(ws, (rework.run_id, rework.step_id))
        return await self._dispatch(StepOrder("rework", rework_file, options, ws, thread))

    async def _dispatch(self, order: StepOrder) -> Dispatch | StepLost:
        def announce(plan: DispatchPlan) -> None:
            resume = {"resume": order.thread_id} if order.thread_id else {}
            self.reporter.emit(
                "step.dispatched", self.key, round=plan.round.number, backend=plan.backend,
                stdout=str(plan.round.shim_stdout), **resume,
            )  # fmt: skip

        try:
            return await self.executor.run(order, announce)
        except StepLost as lost:
            return lost

    async def _review(
        self, pack: StepPack, result: StepResult, ws: TaskWorkspace, rd: evidence.RoundDir
    ) -> tuple[QAReview, FileRef]:
        changed = await self.workspaces.changed_files(ws)
        facts = await gather_facts(
            ws.path,
            pack,
            base=ws.base or "HEAD",
            round_no=rd.number,
            verify_commands=self.options.verify_commands,
            changed=changed,
        )
        qa = review(pack, result, facts, round_no=rd.number)
        ref = await _write_ref(rd.root / "logs" / REVIEW_FILE, protocol.encode_pretty(qa), ws.path)
        return qa, ref

    async def _record_attempt(
        self,
        pointer: AttemptPointer,
        pack: StepPack,
        result: StepResult,
        qa: QAReview,
        dispatch: Dispatch,
    ) -> None:
        commands = result.commands_executed
        passed = sum(1 for c in commands if c.exit_code == 0)
        next_action = {
            ReviewVerdict.PASS: "merge into the target branch",
            ReviewVerdict.REWORK: "rework",
            ReviewVerdict.FAIL: "end the attempt",
        }[qa.verdict]
        await self._append(
            Attempt(
                r=pointer.r,
                s=pointer.s,
                result=Verdict(str(qa.verdict)),
                reason_code=str(primary_reason(qa)),
                acceptance_snapshot=[c.text for c in pack.view.criteria],
                code_change_summary=result.summary[:4000],
                code_artifact_ref=dispatch.plan.round.rel,
                executed_files=list(qa.changed_files or result.files_changed),
                executed_commands=[c.command for c in commands],
                test_results=f"{passed}/{len(commands)} commands exited 0",
                reason_detail="; ".join(f.message for f in qa.findings)[:4000],
                next_action=next_action,
                usage=AttemptUsage.from_usage(result.usage) if result.usage else None,
            )
        )  # fmt: skip
        self.attempt.open = False

    async def _record_infra(self, pointer: AttemptPointer, code: str, detail: str) -> None:
        await self._append(
            Attempt(
                r=pointer.r,
                s=pointer.s,
                result=Verdict.FAIL,
                reason_code=code,
                reason_detail=detail[:4000],
                next_action="retry (same R, S+1) after a backoff",
            )
        )
        self.attempt.open = False
        self.reporter.emit("attempt.failed", self.key, reason=code, detail=detail[:200])

    async def _interrupted(self, reason: str) -> None:
        if self.attempt.open and self.attempt.pointer is not None:
            p = self.attempt.pointer
            await self._append(AttemptInterrupted(r=p.r, s=p.s, reason=reason))
            self.attempt.open = False

    async def _fresh_workspace(
        self, old: TaskWorkspace, pointer: AttemptPointer, pack: StepPack
    ) -> TaskWorkspace:
        """A new workspace at the target's current head for a conflict rework; the earlier
        rounds' evidence comes along (the worker resumes its thread and may look at it)."""
        new = await self.workspaces.prepare(self.key, _label(pointer))
        self.attempt.workspace = new
        await anyio.to_thread.run_sync(copy_evidence, old.path, new.path)
        await self._remove(old, pack)
        return new

    async def _ready(self, ws: TaskWorkspace, pack: StepPack) -> str:
        """Run the hooks that must pass before an agent works in `ws`; why not, or ''."""
        for hook in ("after_create", "before_run"):
            problem = await self._hook(hook, ws, pack, required=True)
            if problem:
                return problem
        return ""

    async def _remove(self, ws: TaskWorkspace, pack: StepPack) -> None:
        await self._hook("before_remove", ws, pack, required=False)
        await self.workspaces.release(ws)

    async def _hook(self, name: str, ws: TaskWorkspace, pack: StepPack, *, required: bool) -> str:
        """Run hook `name` if configured; returns why it failed ('' when it did not)."""
        command = getattr(self.options.hooks, name)
        if not command:
            return ""
        out = (
            self.workspaces.root
            / protocol.ARTIFACTS_ROOT
            / pack.run_id
            / "hooks"
            / f"{self.key}-{ws.label}-{name}"
        )
        run = await self.supervisor.run(
            StepSpec(
                argv=["/bin/sh", "-c", command],
                cwd=ws.path,
                stdout=out.with_suffix(".stdout.txt"),
                stderr=out.with_suffix(".stderr.txt"),
                limits=Limits(
                    max_runtime_sec=self.options.hooks.timeout_sec,
                    max_silence_sec=self.options.hooks.timeout_sec,
                ),
                label=f"{self.key}/{name}",
            )
        )
        outcome = run.outcome
        ok = outcome.reason is EndReason.COMPLETED and outcome.exit_code == 0
        self.reporter.emit(
            "hook.finished", self.key, hook=name, reason=str(outcome.reason),
            exit_code=outcome.exit_code, required=required,
        )  # fmt: skip
        if ok:
            return ""
        tail = run.stderr_tail.decode("utf-8", "replace").strip().splitlines()[-1:] or [""]
        return (
            f"hook {name} failed ({outcome.reason}, exit code {outcome.exit_code}): {tail[0][:300]}"
        )

    async def _append(self, body: object) -> None:
        await self.ledger.append_task_event(self.key, body)

    def _add_usage(self, result: StepResult | None) -> None:
        if result is None or result.usage is None:
            return
        u = result.usage
        self.attempt.spend = add_spend(
            self.attempt.spend, Spend(u.input_tokens, u.output_tokens, u.cost_micro_usd)
        )

    def _end(
        self,
        outcome: AttemptOutcome,
        reason: str,
        resume_as: Literal["retry", "revision"] | None,
        *,
        merged: str | None = None,
        stop: str | None = None,
    ) -> CycleEnd:
        self.reporter.emit("attempt.finished", self.key, outcome=str(outcome), reason=reason)
        return CycleEnd(
            key=self.key,
            outcome=outcome,
            reason=reason,
            resume_as=resume_as,
            reworks=self.attempt.reworks,
            spend=self.attempt.spend,
            merged_commit=merged,
            stop=stop,
        )


def _label(pointer: AttemptPointer) -> str:
    """An attempt's name in its workspace, branch and merge trailer: ``R<r>S<s>``."""
    return f"R{pointer.r}S{pointer.s}"


def _infra_reason(dispatch: Dispatch) -> tuple[str, str]:
    outcome = dispatch.outcome
    if outcome.reason is not EndReason.COMPLETED:
        return outcome.reason.upper(), outcome.detail or str(outcome.reason)
    if dispatch.failure is not None:
        return str(dispatch.failure.reason), dispatch.failure.detail
    return "SHIM_EXIT_NONZERO", f"the shim exited with code {outcome.exit_code}"


async def _write_ref(path: Path, data: bytes, root: Path) -> FileRef:
    await anyio.to_thread.run_sync(write_atomic, path, data)
    return FileRef(
        path=path.relative_to(root).as_posix(),
        sha256=hashlib.sha256(data).hexdigest(),
        size=len(data),
    )
