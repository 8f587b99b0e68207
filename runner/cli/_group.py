"""The `runner` click group: global options and the one place errors become exit codes."""

from __future__ import annotations

import math
from typing import Any

import click

from kernel import GuardRefused, KernelError
from ledger import ChainBroken, LedgerDamaged, LedgerError, LedgerLocked, WriterFailed
from protocol import ProtocolError
from runner import __version__
from runner.checkpoint import CheckpointError
from runner.engine import BackendsUnhealthy, EngineError, FreezeBlocked
from runner.executor import ClusterUnavailable, ExecutorError
from runner.facts import FactsError
from runner.log import LEVELS, configure_logging
from runner.progress import ProgressError, QueueLocked, SnapshotFrozen
from runner.requirements import RequirementsError
from runner.shim import ShimError
from runner.supervisor import SupervisorError
from runner.workspace import WorkspaceError

# Exit codes: 0 success; 1 a check ran and failed; 2 bad input or usage (as click uses 2);
# 3 busy (another process holds the lock); 4 the Dask cluster cannot be had (try again).
EXIT_INPUT = 2
EXIT_CHECK = 1
EXIT_BUSY = 3
EXIT_CLUSTER = 4
# First match wins: a specific type goes before its base.
ERROR_EXIT_CODES: list[tuple[type[BaseException], int]] = [
    (ProtocolError, EXIT_INPUT),
    (BackendsUnhealthy, EXIT_CHECK),
    (FreezeBlocked, EXIT_CHECK),
    (EngineError, EXIT_INPUT),
    (FactsError, EXIT_INPUT),
    (GuardRefused, EXIT_CHECK),
    (SnapshotFrozen, EXIT_CHECK),
    (QueueLocked, EXIT_BUSY),
    (LedgerLocked, EXIT_BUSY),
    (ChainBroken, EXIT_CHECK),
    (LedgerDamaged, EXIT_CHECK),
    (WriterFailed, EXIT_CHECK),
    (LedgerError, EXIT_INPUT),
    (KernelError, EXIT_INPUT),
    (ProgressError, EXIT_INPUT),
    (CheckpointError, EXIT_INPUT),
    (RequirementsError, EXIT_INPUT),
    (ShimError, EXIT_INPUT),
    (SupervisorError, EXIT_CHECK),
    (WorkspaceError, EXIT_INPUT),
    (ClusterUnavailable, EXIT_CLUSTER),
    (ExecutorError, EXIT_INPUT),
]


class FiniteFloatRange(click.FloatRange):
    """`click.FloatRange` that also refuses ``nan`` and ``inf``, which `float` accepts and a
    range check lets through (every comparison with nan is false): a limit of nan seconds
    would silently be no limit, and a poll interval of nan a crash deep in the event loop."""

    def convert(self, value: Any, param: click.Parameter | None, ctx: click.Context | None) -> Any:
        number = super().convert(value, param, ctx)
        if not math.isfinite(number):
            self.fail(f"{value!r} is not a finite number.", param, ctx)
        return number


def _leaves(group: BaseExceptionGroup[BaseException]) -> list[BaseException]:
    out: list[BaseException] = []
    for exc in group.exceptions:
        out.extend(_leaves(exc) if isinstance(exc, BaseExceptionGroup) else [exc])
    return out


def exit_code_for(exc: BaseException) -> int | None:
    """The exit code of the first `ERROR_EXIT_CODES` entry `exc` is an instance of, or None."""
    return next((code for t, code in ERROR_EXIT_CODES if isinstance(exc, t)), None)


class RunnerGroup(click.Group):
    """Maps our packages' errors to one clear message and an exit code; a traceback is a bug."""

    def invoke(self, ctx: click.Context) -> Any:
        try:
            return super().invoke(ctx)
        except tuple(t for t, _ in ERROR_EXIT_CODES) as exc:
            click.echo(f"error: {exc}", err=True)
            ctx.exit(exit_code_for(exc) or EXIT_INPUT)
        except BaseExceptionGroup as group:
            # A task group re-raises its tasks' errors in a group; ours are still ours.
            known = [e for e in _leaves(group) if exit_code_for(e) is not None]
            if not known:
                raise
            for leaf in known:
                click.echo(f"error: {leaf}", err=True)
            ctx.exit(exit_code_for(known[0]) or EXIT_INPUT)


@click.group(cls=RunnerGroup, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="runner")
@click.option(
    "--log-level",
    type=click.Choice(LEVELS, case_sensitive=False),
    default="info",
    show_default=True,
    envvar="RUNNER_LOG_LEVEL",
    help="Minimum level of log events written to stderr.",
)
@click.option(
    "--log-format",
    type=click.Choice(["auto", "json", "console"]),
    default="auto",
    show_default=True,
    envvar="RUNNER_LOG_FORMAT",
    help="auto: JSON lines when stderr is not a terminal, console otherwise.",
)
def main(log_level: str, log_format: str) -> None:
    """Run AI coding agents over a task queue, judge their work on evidence, and keep a
    tamper-evident ledger of every attempt."""
    configure_logging(log_level, log_format)  # type: ignore[arg-type]
