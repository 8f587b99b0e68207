"""The executor seam: where a cycle's step runs, and what comes back from it.

A cycle hands each dispatch (a step, or a rework that resumes the agent's thread) to an
executor as a `StepOrder` and gets back a `Dispatch`: the plan, the supervisor's outcome, the
StepResult or why there is none. When the executor returns, the round's evidence files are in
the cycle's workspace and so is the agent's change, whichever machine made it; QA, the merge
and the ledger stay with the cycle on the controller.

`LocalExecutor` is today's path: the step runs here under the campaign's supervisor. The Dask
executors (`runner.distributed`) send it to a cluster worker, which runs it under the same
supervisor and limits.

Two failures are the executor's own and are raised, not returned: `StepLost` (the machine
running the step died or could not run it: the attempt is an infrastructure failure, retried
as same R, S+1, possibly elsewhere) and `ExecutorLost` (the cluster itself is gone: the
campaign stops, giving the running attempts back, and resumes when run again).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

import anyio

from .dispatch import Dispatch, DispatchPlan, Kind, PlanOptions, execute, plan_rework, plan_step
from .supervisor import Supervisor
from .workspace import TaskWorkspace


class StepLost(Exception):
    """The step did not run to an outcome on its machine (`code` goes into the attempt record:
    WORKER_LOST, WORKER_ERROR, NO_WORKER)."""

    def __init__(self, code: str, detail: str) -> None:
        self.code = code
        self.detail = detail
        super().__init__(f"{code}: {detail}")


class ExecutorLost(Exception):
    """The executor cannot run anything any more (the Dask scheduler went away)."""


class ExecutorError(Exception):
    """The executor cannot be set up as asked (options, a missing extra): nothing ran."""


class ClusterUnavailable(ExecutorError):
    """The cluster cannot be reached, or has no worker: nothing ran."""


@dataclass(frozen=True)
class StepOrder:
    """One dispatch: the pack file (a StepPack, or a ReworkPack with the thread to resume),
    how to plan it, and the workspace it works in."""

    kind: Kind
    pack_file: Path
    options: PlanOptions
    workspace: TaskWorkspace
    thread_id: str | None = None

    def plan(self, *, claim: bool = True) -> DispatchPlan:
        """Validate the pack and plan the round (claiming its evidence directory)."""
        if self.kind == "rework":
            assert self.thread_id is not None
            return plan_rework(self.pack_file, self.thread_id, self.options, claim=claim)
        return plan_step(self.pack_file, self.options, claim=claim)


Announce = Callable[[DispatchPlan], None]


class Executor(Protocol):
    """Runs a cycle's dispatches; `announce` is called with the plan before the step starts."""

    async def run(self, order: StepOrder, announce: Announce) -> Dispatch: ...


class LocalExecutor:
    """The step runs on this machine, in the cycle's workspace, under `supervisor`."""

    def __init__(self, supervisor: Supervisor) -> None:
        self.supervisor = supervisor

    async def run(self, order: StepOrder, announce: Announce) -> Dispatch:
        plan = await anyio.to_thread.run_sync(order.plan)
        announce(plan)
        return await execute(plan, self.supervisor)
