"""The campaign [the original's `run_campaign`]: cycles over the queue, several at once.

One scheduler owns the queue (through `QueueKeeper`) and starts a cycle per eligible task, at
most `max_parallel_steps` at a time, each in its own task of one task group; all ledger events
go through the one ledger writer. It stops when the queue drains (or nothing left can run), at
`max_cycles`, after `max_stagnant_cycles` finished cycles without a task completing, or on
SIGINT/SIGTERM: running steps are killed, their attempts recorded as interrupted and given
back, and the queue stays consistent.

An infrastructure failure is retried after an exponential backoff; the task waits in the
queue meanwhile and other tasks go on.

**Executors.** Cycles dispatch their steps through one executor (`runner.executor`): here, or
on a Dask cluster. When the executor itself is lost (the scheduler went away) the campaign
stops as it does on a signal: each running attempt is recorded as interrupted and its task
given back, no new cycle starts, and `report.executor_lost` says why; run it again to resume.

**Resume.** Started again after being killed (even with SIGKILL), the campaign first
reconciles: a task left ``in_progress`` whose work was already merged (the merge commit names
it) or whose ledger chain is closed is completed; any other is given back to ``pending`` with
its open attempt recorded as interrupted, and is retried (same R, S+1). Stale worktrees and
branches are removed. No task is lost, run twice to completion, or counted twice.
"""

from __future__ import annotations

import functools
import math
import random
import secrets
import signal
import time
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime

import anyio
import msgspec

from kernel import retry_delay, triage
from kernel.triage import AttemptOutcome
from ledger import Ledger, LedgerError
from protocol import (
    BackoffPolicy,
    FreezeCheck,
    LastSelected,
    QueueTask,
    TaskQueue,
    TaskStatus,
)
from protocol.ledger_events import (
    AttemptInterrupted,
    CampaignFinished,
    CampaignStarted,
    ExecutionBlockedUnapproved,
    ExecutionStarted,
    FinalStatus,
    TaskClosed,
)

from .cycle import Cycle, CycleEnd, EngineOptions, Reporter
from .executor import Executor, ExecutorLost, LocalExecutor
from .log import get_logger
from .progress import QueueKeeper, utc_now
from .supervisor import Supervisor
from .workspace import Workspaces

log = get_logger("runner.campaign")


@dataclass(frozen=True)
class CampaignLimits:
    max_parallel_steps: int = 1
    max_cycles: int | None = None
    max_stagnant_cycles: int | None = None
    backoff: BackoffPolicy = field(default_factory=BackoffPolicy)
    seed: int | None = None


@dataclass
class CampaignReport:
    campaign_id: str
    cycles: int = 0
    stop_reason: str = ""
    completed: list[str] = field(default_factory=list)
    failed: list[str] = field(default_factory=list)
    blocked: list[str] = field(default_factory=list)
    interrupted: list[str] = field(default_factory=list)
    reconciled: list[str] = field(default_factory=list)
    signal: int | None = None
    executor_lost: str | None = None


def new_campaign_id() -> str:
    stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%SZ")
    return f"campaign_{stamp}_{secrets.token_hex(3)}"


async def record_freeze(ledger: Ledger, check: FreezeCheck, run_id: str | None) -> None:
    """The freeze decision goes on the project chain either way: who ran against what."""
    if check.decision == "execution_started":
        await ledger.append_project_event(ExecutionStarted(run_id=run_id, detail=check.detail))
    else:
        await ledger.append_project_event(
            ExecutionBlockedUnapproved(reason=f"{check.reason}: {check.detail}")
        )


async def reconcile(
    keeper: QueueKeeper, ledger: Ledger, workspaces: Workspaces, report: CampaignReport
) -> None:
    """Bring the queue, the ledger and the repository into agreement after a crash."""
    for path in await workspaces.cleanup_stale():
        log.info("campaign.stale_removed", path=path)
    for task in list(keeper.queue.tasks):
        if task.status is not TaskStatus.IN_PROGRESS:
            continue
        key = task.key
        state = ledger.task_state(key)
        merged = await workspaces.accepted_attempt(key)
        if state.closed or merged is not None:
            if not state.closed:
                await ledger.append_task_event(
                    key,
                    TaskClosed(
                        final_status=FinalStatus.ACCEPTED,
                        summary=f"merged ({merged}); recorded when the campaign resumed",
                    ),
                )
            await keeper.apply(
                functools.partial(
                    triage.record_attempt,
                    key=key,
                    outcome=AttemptOutcome.PASSED,
                    reason="accepted (recovered)",
                    now=utc_now(),
                )
            )
            log.info("campaign.reconciled", task_id=key, to="completed")
        else:
            if state.attempt_open and state.pointer is not None:
                await ledger.append_task_event(
                    key,
                    AttemptInterrupted(
                        r=state.pointer.r, s=state.pointer.s, reason="runner killed mid-attempt"
                    ),
                )
            restored = await workspaces.recover(key)
            await keeper.apply(functools.partial(_give_back, key=key))
            log.info("campaign.reconciled", task_id=key, to="pending", rolled_back=restored)
        report.reconciled.append(key)


def _give_back(queue: TaskQueue, key: str) -> TaskQueue:
    """An attempt the runner abandoned: back to pending, not counted, retried next."""
    released = triage.release(queue, key, reason="interrupted: runner stopped", now=utc_now())
    return _with(released, key, resume_as="retry")


def _with(queue: TaskQueue, key: str, **changes: object) -> TaskQueue:
    tasks = [msgspec.structs.replace(t, **changes) if t.key == key else t for t in queue.tasks]
    return msgspec.structs.replace(queue, tasks=tasks)


class Campaign:
    """Schedules cycles; see the module docstring."""

    def __init__(
        self,
        *,
        keeper: QueueKeeper,
        ledger: Ledger,
        workspaces: Workspaces,
        options: EngineOptions,
        limits: CampaignLimits,
        reporter: Reporter,
        campaign_id: str | None = None,
        only: Callable[[QueueTask], bool] | None = None,
        executor: Executor | None = None,
    ) -> None:
        self.keeper = keeper
        self.ledger = ledger
        self.workspaces = workspaces
        self.options = options
        self.limits = limits
        self.reporter = reporter
        self.report = CampaignReport(campaign_id or new_campaign_id())
        self.only = only
        parallel = limits.max_parallel_steps if workspaces.isolated else 1
        self.parallel = max(1, parallel)
        self.supervisor = Supervisor(max_parallel_steps=self.parallel * 2)
        self.executor = executor or LocalExecutor(self.supervisor)
        self._running: set[str] = set()
        self._not_before: dict[str, float] = {}
        self._retries: dict[str, int] = {}
        self._wake = anyio.Event()
        self._stagnant = 0
        self._random = random.Random(limits.seed)

    async def run(self) -> CampaignReport:
        report = self.report
        await reconcile(self.keeper, self.ledger, self.workspaces, report)
        await self.ledger.append_project_event(
            CampaignStarted(
                campaign_id=report.campaign_id,
                max_cycles=self.limits.max_cycles,
                detail=f"parallel {self.parallel}",
            )
        )
        self.reporter.emit("campaign.started", "-", campaign_id=report.campaign_id)
        try:
            with anyio.open_signal_receiver(signal.SIGINT, signal.SIGTERM) as signals:
                async with anyio.create_task_group() as tg:
                    tg.start_soon(self._watch_signals, signals, tg.cancel_scope)
                    await self._schedule(tg)
                    tg.cancel_scope.cancel()
        finally:
            with anyio.CancelScope(shield=True):
                if report.signal is not None:
                    report.stop_reason = f"signal {signal.Signals(report.signal).name}"
                queue = self.keeper.queue
                await self.ledger.append_project_event(
                    CampaignFinished(
                        campaign_id=report.campaign_id,
                        cycles=report.cycles,
                        stop_reason=report.stop_reason or "stopped",
                        completed=sum(t.status is TaskStatus.COMPLETED for t in queue.tasks),
                        failed=sum(t.status is TaskStatus.FAILED for t in queue.tasks),
                    )
                )
                self.reporter.emit(
                    "campaign.finished",
                    "-",
                    campaign_id=report.campaign_id,
                    cycles=report.cycles,
                    stop_reason=report.stop_reason,
                )
        return report

    async def _watch_signals(self, signals: AsyncIterator[int], scope: anyio.CancelScope) -> None:
        async for signum in signals:
            self.report.signal = signum
            log.warning("campaign.signal", signal=signal.Signals(signum).name)
            self.supervisor.cancel(f"runner got {signal.Signals(signum).name}")
            scope.cancel()
            return

    async def _schedule(self, tg: anyio.abc.TaskGroup) -> None:
        report = self.report
        while True:
            if self._stop_reason():
                break
            started = await self._start_eligible(tg)
            waiting = [t for t in self._not_before.values() if t > time.monotonic()]
            if self._running or started or waiting:
                # Until a cycle ends or a retry's backoff does (a slot may be free for it).
                await self._wait(min(waiting, default=math.inf) - time.monotonic())
                continue
            selection = triage.select_next(self._visible(self.keeper.queue))
            report.stop_reason = "queue drained" if selection.state == "done" else (
                f"nothing can run ({selection.state})"
            )  # fmt: skip
            break
        # Let running cycles finish (a stop condition stops new cycles, not running ones).
        while self._running:
            await self._wait()

    def _stop_reason(self) -> str | None:
        limits, report = self.limits, self.report
        if report.stop_reason:
            return report.stop_reason
        if limits.max_cycles is not None and report.cycles >= limits.max_cycles:
            report.stop_reason = f"max cycles ({limits.max_cycles})"
        elif (
            limits.max_stagnant_cycles is not None and self._stagnant >= limits.max_stagnant_cycles
        ):
            report.stop_reason = f"{self._stagnant} cycles without progress"
        return report.stop_reason or None

    def _visible(self, queue: TaskQueue) -> TaskQueue:
        if self.only is None:
            return queue
        return msgspec.structs.replace(queue, tasks=[t for t in queue.tasks if self.only(t)])

    async def _start_eligible(self, tg: anyio.abc.TaskGroup) -> int:
        started = 0
        now = time.monotonic()
        selection = triage.select_next(self._visible(self.keeper.queue))
        for key in selection.eligible:
            if len(self._running) >= self.parallel or self._stop_reason():
                break
            if key in self._running or self._not_before.get(key, 0.0) > now:
                continue
            queue = await self.keeper.apply(
                functools.partial(triage.claim, key=key, now=utc_now()),
                selected=LastSelected(key=key, at=utc_now(), run_id=self.report.campaign_id),
            )
            task = triage.get(queue, key)
            self._running.add(key)
            self.report.cycles += 1
            started += 1
            self.reporter.emit("task.claimed", key, attempt=task.attempts, title=task.title)
            tg.start_soon(self._cycle, task)
        return started

    async def _wait(self, at_most: float = math.inf) -> None:
        with anyio.move_on_after(max(0.0, at_most)):
            await self._wake.wait()
        self._wake = anyio.Event()

    async def _cycle(self, task: QueueTask) -> None:
        key = task.key
        cycle = Cycle(
            task,
            ledger=self.ledger,
            workspaces=self.workspaces,
            supervisor=self.supervisor,
            options=self.options,
            reporter=self.reporter,
            executor=self.executor,
        )
        try:
            try:
                end = await cycle.run()
            except (LedgerError, OSError):
                raise  # the record or the disk itself failed: stop the campaign
            except ExecutorLost as exc:
                # The cycle recorded its attempt as interrupted; the task goes back as on a
                # signal, and no new cycle starts (every other one meets the same loss).
                report = self.report
                report.executor_lost = report.executor_lost or str(exc)
                report.stop_reason = report.stop_reason or f"executor lost: {exc}"
                with anyio.CancelScope(shield=True):
                    await self.keeper.apply(functools.partial(_give_back, key=key))
                    report.interrupted.append(key)
                    self.reporter.emit("task.interrupted", key, reason=str(exc)[:200])
                return
            except Exception as exc:
                # A bug or an unexpected state in one task must not end a night's run: the
                # task is blocked with the error for a person to look at; the rest go on.
                log.exception("cycle.crashed", task_id=key)
                end = CycleEnd(key, AttemptOutcome.BLOCKED, f"internal error: {exc!r}"[:500])
            with anyio.CancelScope(shield=True):
                await self._finish(task, end)
        except anyio.get_cancelled_exc_class():
            with anyio.CancelScope(shield=True):
                await self.keeper.apply(functools.partial(_give_back, key=key))
                self.report.interrupted.append(key)
                self.reporter.emit("task.interrupted", key)
            raise
        finally:
            self._running.discard(key)
            self._wake.set()

    async def _finish(self, task: QueueTask, end: CycleEnd) -> None:
        """Finalise the queue for one ended attempt: the ledger first, the queue last (a crash
        in between is reconciled on resume)."""
        key, report = task.key, self.report
        if end.outcome is AttemptOutcome.PASSED:
            await self.ledger.append_task_event(
                key,
                TaskClosed(
                    final_status=FinalStatus.ACCEPTED,
                    summary=f"accepted; merged as {end.merged_commit or 'no change'}",
                ),
            )
        queue = await self.keeper.apply(
            lambda q: _with(
                triage.record_attempt(
                    q,
                    key,
                    end.outcome,
                    reason=end.reason[:500],
                    now=utc_now(),
                    reworks=end.reworks,
                    spend=end.spend,
                ),
                key,
                resume_as=end.resume_as,
            ),
            trend=True,
        )
        status = triage.get(queue, key).status
        if end.stop and not report.stop_reason:
            report.stop_reason = end.stop[:500]
        if status is TaskStatus.COMPLETED:
            report.completed.append(key)
            self._stagnant = 0
        else:
            self._stagnant += 1
            if status is TaskStatus.FAILED:
                report.failed.append(key)
            elif status is TaskStatus.BLOCKED:
                report.blocked.append(key)
            if status in (TaskStatus.FAILED, TaskStatus.BLOCKED):
                # Left open in the ledger (a later campaign may retry it), and worth reading now.
                self.ledger.render_log_on_close(key)
        if end.infrastructure and status is TaskStatus.PENDING:
            self._retries[key] = self._retries.get(key, 0) + 1
            delay = retry_delay(
                self._retries[key], self.limits.backoff, unit_random=self._random.random()
            )
            self._not_before[key] = time.monotonic() + delay
            self.reporter.emit("task.backoff", key, delay_sec=round(delay, 3))
        else:
            self._retries.pop(key, None)
            self._not_before.pop(key, None)
        self.reporter.emit("task.finished", key, status=str(status), reason=end.reason[:200])
