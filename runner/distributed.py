"""Campaign steps on a Dask distributed cluster: ``--executor dask`` and ``dask-local``.

`DaskExecutor` sends each dispatch to a cluster worker as a `runner.remote.StepTicket` and
brings back what `run_ticket` returns: the round's evidence is written into the cycle's
worktree and the agent's change checked out there, so the review, the merge and the ledger go
on here as after a local step. The controller first plans the round itself (the pack is
validated and the round's directory claimed here, as locally), sends its worktree's content
when it differs from the base (a hook's or an earlier round's edits), and makes sure the base
commit can be fetched from the remote.

Failures: a worker that dies mid-step raises `KilledWorker` here, because the scheduler is
told to give up on a task at the first lost worker (``allowed-failures`` 0: `dask-local` sets
it, a scheduler of your own must be started with it, which is checked); that is `StepLost`, an
infrastructure failure retried as (R, S+1) wherever the scheduler then places it. A task that
raises on its worker (a remote it cannot fetch, say) is `StepLost` too. A scheduler that goes
away cancels every future (`FutureCancelledError`): that is `ExecutorLost`, and the campaign
stops with its queue consistent. When the controller itself is stopped, the running steps are
cancelled on their workers (`cancel_tickets`): Dask does not stop a running task by itself.

Resources: a step asks for ``MEMORY`` (its memory limit in bytes) when it has one and, on a
cluster of your own, ``backend-<name>=1`` for its backend, so it runs only on a worker started
with ``--resources "MEMORY=16e9 backend-codex=4"`` (docs/scale-out.md). A step no worker can
take is `StepLost` (NO_WORKER) rather than a wait forever.

`distributed` is imported only here and only when a Dask executor is asked for; without the
extra that is an `ExecutorError` naming it.
"""

from __future__ import annotations

import contextlib
import logging
import secrets
from collections.abc import AsyncIterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from types import ModuleType
from typing import TYPE_CHECKING, Any, cast

import anyio
import msgspec
import psutil

from protocol import ARTIFACTS_ROOT, ExecutorKind

from . import git, transfer
from . import log as runner_log
from .dispatch import Dispatch, DispatchPlan
from .executor import (
    Announce,
    ClusterUnavailable,
    ExecutorError,
    ExecutorLost,
    StepLost,
    StepOrder,
)
from .files import write_atomic
from .log import get_logger
from .remote import LOG_ENV, StepReturn, StepTicket, cancel_tickets, run_ticket

if TYPE_CHECKING:
    from distributed import Client

log = get_logger("runner.distributed")

EXTRA = "ai-coding-control-plane[distributed]"
EXECUTOR_KINDS: tuple[ExecutorKind, ...] = ("local", "dask", "dask-local")
CUT_NOTE = "evidence_cut.json"


@dataclass(frozen=True)
class ClusterSettings:
    """Where steps run: `executor`, and for Dask the scheduler or the local cluster's size,
    the git remote workers fetch from (default: the workspace repository's path) and the
    workers' cache directory (default: theirs, see `runner.remote`)."""

    executor: ExecutorKind = "local"
    scheduler: str | None = None
    workers: int | None = None
    remote: str | None = None
    cache_dir: Path | None = None
    connect_timeout: float = 30.0


def check_settings(cluster: ClusterSettings) -> None:
    """Refuse options that do not go together, and a Dask executor without the extra."""
    kind = cluster.executor
    if kind not in EXECUTOR_KINDS:
        raise ExecutorError(f"--executor: {kind!r} is not one of {', '.join(EXECUTOR_KINDS)}")
    if kind == "dask" and not cluster.scheduler:
        raise ExecutorError("--executor dask needs --scheduler tcp://HOST:PORT")
    if kind != "dask" and cluster.scheduler:
        raise ExecutorError("--scheduler is for --executor dask")
    if kind != "dask-local" and cluster.workers is not None:
        raise ExecutorError("--workers is for --executor dask-local")
    if kind == "local" and (cluster.remote or cluster.cache_dir):
        raise ExecutorError("--remote and --worker-cache-dir are for the Dask executors")
    if kind != "local":
        _distributed()
    if kind == "dask":
        from distributed.comm.addressing import get_address_host_port

        try:
            get_address_host_port(str(cluster.scheduler))
        except ValueError as exc:
            raise ExecutorError(f"--scheduler: {exc} (expected tcp://HOST:PORT)") from None


def _distributed() -> ModuleType:
    try:
        import distributed
    except ImportError as exc:
        raise ExecutorError(
            f"--executor: the Dask executors need the distributed extra "
            f"(pip install '{EXTRA}'): {exc}"
        ) from None
    return distributed


@contextlib.asynccontextmanager
async def open_dask(
    cluster: ClusterSettings, *, repo: Path, parallel: int, default_cache: Path
) -> AsyncIterator[DaskExecutor]:
    """Start the local cluster (`dask-local`) or connect to the scheduler, check it, and
    yield the executor; everything is closed on the way out, even when cancelled."""
    dd = _distributed()
    _one_line_logs()
    stack = contextlib.AsyncExitStack()
    try:
        local = cluster.executor == "dask-local"
        if local:
            workers = cluster.workers or 2
            slots = max(1, -(-parallel // workers))
            local_cluster = dd.LocalCluster(
                n_workers=workers,
                threads_per_worker=slots,
                processes=True,
                host="127.0.0.1",
                dashboard_address="127.0.0.1:0",  # its HTTP server would bind 0.0.0.0:8787
                scheduler_kwargs={"allowed_failures": 0},
                memory_limit=0,  # the supervisor limits each step; Dask must not kill workers
                resources={"MEMORY": psutil.virtual_memory().total // workers},
                env=dict(zip(LOG_ENV, runner_log.configured, strict=True)),
                asynchronous=True,
            )
            await stack.enter_async_context(local_cluster)
            address = local_cluster.scheduler_address
        else:
            assert cluster.scheduler is not None
            address = cluster.scheduler
        client = await _connect(dd, address, cluster.connect_timeout)
        stack.push_async_callback(client.close)
        allowed = await cast(Any, client).run_on_scheduler(_allowed_failures)
        if allowed != 0:
            raise ExecutorError(
                f"the scheduler at {address} retries a task whose worker died "
                f"(allowed-failures {allowed}): a step would run again behind the runner's "
                "back; start it with DASK_DISTRIBUTED__SCHEDULER__ALLOWED_FAILURES=0"
            )
        await _wait_for_a_worker(client, address, cluster.connect_timeout)
        remote = cluster.remote or str(repo)
        cache = cluster.cache_dir or (default_cache if local else None)
        log.info("cluster.connected", scheduler=address, executor=cluster.executor, remote=remote)
        yield DaskExecutor(
            client, repo=repo, remote=remote, cache_dir=cache, backend_resources=not local
        )
    finally:
        with anyio.CancelScope(shield=True):
            await stack.aclose()


class _NoTraceback(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        record.exc_info, record.exc_text, record.stack_info = None, None, None
        return True


def _one_line_logs() -> None:
    """distributed logs a traceback for a connection it lost (the scheduler going away, which
    the campaign reports itself): its handlers keep the message and drop the traceback."""
    for handler in logging.getLogger("distributed").handlers:
        if not any(isinstance(f, _NoTraceback) for f in handler.filters):
            handler.addFilter(_NoTraceback())


async def _connect(dd: ModuleType, address: str, within: float) -> Client:
    try:
        with anyio.fail_after(within):
            client: Client = await dd.Client(address, asynchronous=True, timeout=within)
    except (OSError, TimeoutError) as exc:
        reason = str(exc) or f"no answer within {within:g} s"
        raise ClusterUnavailable(
            f"cannot reach the Dask scheduler at {address}: {reason}"
        ) from None
    return client


def _allowed_failures(dask_scheduler: Any) -> int:
    """Runs on the scheduler (Dask passes it in by this parameter name)."""
    return int(dask_scheduler.allowed_failures)


async def _wait_for_a_worker(client: Client, address: str, within: float) -> None:
    # An asynchronous client's methods return awaitables; distributed types them as the
    # synchronous client's results, hence the casts to Any here and below.
    try:
        await cast(Any, client).wait_for_workers(1, timeout=within)
    except TimeoutError:
        raise ClusterUnavailable(
            f"no worker joined the Dask scheduler at {address} in {within:g} s"
        ) from None


async def _workers(client: Client) -> Mapping[str, Any]:
    info = await cast(Any, client.scheduler).identity(n_workers=-1)
    return cast(Mapping[str, Any], info.get("workers", {}))


async def dask_step(ticket: StepTicket) -> StepReturn:
    """The task each step is on its worker (a coroutine: Dask runs it on the worker's event
    loop, where `cancel_tickets` can reach its supervisor)."""
    return await run_ticket(ticket)


class DaskExecutor:
    """Runs each dispatch on a worker of `client`'s cluster; see the module docstring."""

    def __init__(
        self,
        client: Client,
        *,
        repo: Path,
        remote: str,
        cache_dir: Path | None,
        backend_resources: bool,
    ) -> None:
        self.client = client
        self.repo = repo
        self.remote = remote
        self.cache_dir = cache_dir
        self.backend_resources = backend_resources
        self._published: set[str] = set()
        self._publish_lock = anyio.Lock()

    def needs(self, plan: DispatchPlan) -> dict[str, float]:
        """The Dask resources a round asks for (see the module docstring)."""
        needs: dict[str, float] = {}
        memory = plan.limits.max_memory_bytes
        if memory is not None:
            needs["MEMORY"] = float(memory)
        if self.backend_resources:
            needs[f"backend-{plan.backend}"] = 1.0
        return needs

    async def run(self, order: StepOrder, announce: Announce) -> Dispatch:
        plan = await anyio.to_thread.run_sync(order.plan)
        announce(plan)
        ws = order.workspace
        if ws.base is None:
            raise ExecutorError("the Dask executors need a git workspace (a worktree per task)")
        label = f"{ws.label} R{plan.round.number}"
        start = await transfer.snapshot(ws.path, ws.base, f"runner: {ws.task_key} {label}")
        await self._publish(ws.base)
        run_dir = f"{ARTIFACTS_ROOT}/{plan.run_id}"
        carried = await anyio.to_thread.run_sync(lambda: transfer.collect(ws.path, run_dir))
        ticket = StepTicket(
            token=secrets.token_hex(8),
            task_id=ws.task_key,
            label=ws.label,
            kind=order.kind,
            pack=plan.pack_bytes,
            round_number=plan.round.number,
            remote=self.remote,
            base=ws.base,
            thread_id=order.thread_id,
            backend=plan.backend,
            shim_config=order.options.config,
            config_source=order.options.config_source,
            limits=order.options.limits,
            start=start,
            evidence={
                k: v for k, v in carried.files.items() if not k.startswith(plan.round.rel + "/")
            },
            cache_dir=str(self.cache_dir) if self.cache_dir else None,
        )
        back = await self._submit(ticket, self.needs(plan))
        log.info(
            "step.returned", task_id=ws.task_key, round=plan.round.number, worker=back.worker,
            changed=back.change is not None, evidence_files=len(back.evidence.files),
        )  # fmt: skip
        await anyio.to_thread.run_sync(transfer.write_files, ws.path, back.evidence.files)
        if back.evidence.cut:
            note = {"tail_bytes": transfer.EVIDENCE_FILE_CAP, "files": list(back.evidence.cut)}
            write_atomic(plan.round.root / "logs" / CUT_NOTE, msgspec.json.encode(note))
        if back.change is not None:
            await transfer.receive(ws.path, back.change, ws.base)
        if back.change is not None or start is not None:
            commit = back.change.commit if back.change is not None else None
            await transfer.check_out(ws.path, ws.base, commit)
        return Dispatch(plan=plan, run=back.dispatch.run, extraction=back.dispatch.extraction)

    async def _submit(self, ticket: StepTicket, needs: dict[str, float]) -> StepReturn:
        dd = _distributed()
        if self.client.status != "running":
            raise ExecutorLost(f"the Dask client is {self.client.status}")
        await self._check_capacity(needs)
        key = f"runner-{ticket.task_id}-{ticket.label}-R{ticket.round_number}-{ticket.token}"
        future = self.client.submit(dask_step, ticket, key=key, resources=needs or None, pure=False)
        try:
            return cast(StepReturn, await future)
        except dd.client.FutureCancelledError as exc:
            raise ExecutorLost(f"the Dask scheduler went away ({exc.reason})") from None
        except anyio.get_cancelled_exc_class():
            with anyio.CancelScope(shield=True), anyio.move_on_after(10):
                await self._cancel_remote(ticket.token)
                # The step ends as cancelled on its worker once it has killed the agent and
                # removed its worktree: wait for that, or closing the cluster right after
                # (a SIGINT to the controller) kills the worker halfway through its cleanup.
                with contextlib.suppress(Exception):
                    await future
                await cast(Any, self.client).cancel([future])
            raise
        except dd.KilledWorker as exc:
            raise StepLost("WORKER_LOST", f"the worker running the step died: {exc}") from None
        except (ExecutorLost, StepLost):
            raise
        except Exception as exc:
            raise StepLost("WORKER_ERROR", f"{type(exc).__name__}: {exc}"[:2000]) from None

    async def _cancel_remote(self, token: str) -> None:
        with contextlib.suppress(Exception):
            await cast(Any, self.client).run(cancel_tickets, [token], on_error="ignore")

    async def _check_capacity(self, needs: dict[str, float]) -> None:
        workers = await _workers(self.client)
        for info in workers.values():
            offered = info.get("resources") or {}
            if all(offered.get(name, 0) >= amount for name, amount in needs.items()):
                return
        have = "; ".join(
            f"{addr}: {info.get('resources') or 'no resources'}" for addr, info in workers.items()
        )
        wanted = ", ".join(f"{k}={v:g}" for k, v in needs.items())
        raise StepLost("NO_WORKER", f"no worker offers {wanted} ({have or 'no workers'})")

    async def _publish(self, base: str) -> None:
        """Make `base` fetchable from the remote: pushed once to ``refs/runner/bases/<sha>``
        unless the remote is the workspace repository itself."""
        if base in self._published or self._is_own_repo():
            return
        async with self._publish_lock:
            if base not in self._published:
                ref = f"refs/runner/bases/{base}"
                await git.git(self.repo, "push", "--quiet", self.remote, f"{base}:{ref}")
                self._published.add(base)

    def _is_own_repo(self) -> bool:
        with contextlib.suppress(OSError):
            return Path(self.remote).resolve() == self.repo.resolve()
        return False
