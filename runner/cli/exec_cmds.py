"""`runner exec`: the supervisor as a tool of its own; `runner dispatch-step|dispatch-rework`.

Exit codes of `runner exec` (the outcome JSON says which case it was):

======  ==========================================================================
code    meaning
======  ==========================================================================
N       the command completed with exit code N
128+N   the command was killed by signal N (not by us)
124     runtime or silence limit: the tree was killed (as ``timeout(1)``)
137     memory limit: the tree was killed (128 + SIGKILL, as an OOM kill looks)
126     the command could not be started (not executable, bad cwd, output file)
127     the command was not found
130     the runner got SIGINT (Ctrl-C) and killed the tree; 143 for SIGTERM, 129 SIGHUP
125     the runner itself failed after running (the outcome file cannot be written)
2       bad usage (unknown option, missing command)
======  ==========================================================================
"""

from __future__ import annotations

import errno
import functools
import os
import signal
import sys
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

import anyio
import click

import protocol
from protocol import EndReason
from runner.cli._group import FiniteFloatRange
from runner.dispatch import (
    Dispatch,
    DispatchPlan,
    LimitOverrides,
    PlanOptions,
    execute,
    plan_rework,
    plan_step,
    record_dispatches,
)
from runner.files import write_atomic
from runner.shim import load_config
from runner.supervisor import Limits, StepRun, StepSpec, Supervisor

EXIT_LIMIT = 124
EXIT_RUNNER_FAILED = 125
EXIT_CANNOT_RUN = 126
EXIT_NOT_FOUND = 127
EXIT_MEMORY = 128 + signal.SIGKILL
STOP_SIGNALS = (signal.SIGINT, signal.SIGTERM, signal.SIGHUP)
# The original workflow logger's default root.
DEFAULT_LEDGER_ROOT = Path("workflow")

T = TypeVar("T")
LIMIT_NAMES = (
    "max_runtime_sec",
    "max_silence_sec",
    "max_memory_mb",
    "poll_interval_sec",
    "kill_grace_sec",
)
_positive = FiniteFloatRange(min=0, min_open=True)


def _with_options(f: Callable[..., Any], options: list[Callable[[Any], Any]]) -> Any:
    for option in reversed(options):
        f = option(f)
    return f


def limit_options(f: click.decorators.FC) -> click.decorators.FC:
    """The limit options shared by `exec` and the dispatch commands."""
    return _with_options(  # type: ignore[no-any-return]
        f,
        [
            click.option(
                "--max-runtime-sec", type=_positive, help="Wall-clock limit for the tree."
            ),
            click.option(
                "--max-silence-sec",
                type=_positive,
                help="Limit on time without a byte on stdout or stderr.",
            ),
            click.option(
                "--max-memory-mb",
                type=click.IntRange(min=1),
                help="Limit on the tree's memory (PSS sum; RSS sum screens it).",
            ),
            click.option(
                "--poll-interval-sec",
                type=_positive,
                default=0.25,
                show_default=True,
                help="How often the tree's memory is measured.",
            ),
            click.option(
                "--kill-grace-sec",
                type=FiniteFloatRange(min=0),
                default=2.0,
                show_default=True,
                help="Time between SIGTERM and SIGKILL.",
            ),
        ],
    )


def exit_status(run: StepRun, stop_signal: int | None) -> int:
    """The exit code `runner exec` reports for a run (see the module docstring)."""
    outcome = run.outcome
    if outcome.reason is EndReason.COMPLETED:
        code = outcome.exit_code or 0
        return code if code >= 0 else 128 - code
    if outcome.reason in (EndReason.RUNTIME_LIMIT, EndReason.SILENCE_LIMIT):
        return EXIT_LIMIT
    if outcome.reason is EndReason.MEMORY_LIMIT:
        return EXIT_MEMORY
    if outcome.reason is EndReason.SPAWN_FAILED:
        return EXIT_NOT_FOUND if run.spawn_errno == errno.ENOENT else EXIT_CANNOT_RUN
    return 128 + (stop_signal or signal.SIGINT)


async def with_stop_signals(
    supervisor: Supervisor, work: Callable[[], Awaitable[T]]
) -> tuple[T, int | None]:
    """Run `work`; SIGINT, SIGTERM or SIGHUP cancel the supervisor's steps (a second signal
    skips the kill grace period). Returns what `work` returned and the first signal."""
    received: list[int] = []
    async with anyio.create_task_group() as tg:

        async def watch() -> None:
            with anyio.open_signal_receiver(*STOP_SIGNALS) as signals:
                async for signum in signals:
                    received.append(signum)
                    supervisor.cancel(f"runner received {signal.Signals(signum).name}")

        tg.start_soon(watch)
        value = await work()
        tg.cancel_scope.cancel()
    return value, (received[0] if received else None)


def cancelled_message(stop_signal: int | None, what: str) -> None:
    if stop_signal is not None:
        click.echo(
            f"runner: cancelled by {signal.Signals(stop_signal).name}; {what} killed", err=True
        )


@click.command(
    "exec",
    context_settings={"allow_interspersed_args": False, "ignore_unknown_options": False},
)
@limit_options
@click.option(
    "--stdout",
    "stdout_file",
    type=click.Path(dir_okay=False, path_type=Path),
    help="Write the command's stdout here (else it passes through).",
)
@click.option(
    "--stderr",
    "stderr_file",
    type=click.Path(dir_okay=False, path_type=Path),
    help="Write the command's stderr here (else it passes through).",
)
@click.option(
    "--outcome-file",
    type=click.Path(dir_okay=False, path_type=Path),
    help="Write the outcome JSON here (else it is the last line of stdout).",
)
@click.argument("command", nargs=-1, required=True, type=click.UNPROCESSED)
@click.pass_context
def exec_command(
    ctx: click.Context,
    max_runtime_sec: float | None,
    max_silence_sec: float | None,
    max_memory_mb: int | None,
    poll_interval_sec: float,
    kill_grace_sec: float,
    stdout_file: Path | None,
    stderr_file: Path | None,
    outcome_file: Path | None,
    command: tuple[str, ...],
) -> None:
    """Run COMMAND under limits on its whole process tree; print the outcome as JSON.

    \b
    runner exec --max-runtime-sec 600 --max-silence-sec 60 -- make test
    Exit code: the command's, 124 runtime/silence limit, 137 memory limit, 126 cannot run,
    127 not found, 130/143/129 cancelled by SIGINT/SIGTERM/SIGHUP, 125 runner failure.
    """
    if outcome_file is not None:
        for option, path in (("--stdout", stdout_file), ("--stderr", stderr_file)):
            if path is not None and path.resolve() == outcome_file.resolve():
                raise click.BadParameter(
                    f"{outcome_file} is also {option}: the outcome would replace the "
                    "command's output",
                    param_hint="--outcome-file",
                )
    spec = StepSpec(
        argv=list(command),
        stdout=stdout_file if stdout_file is not None else sys.stdout.fileno(),
        stderr=stderr_file if stderr_file is not None else sys.stderr.fileno(),
        limits=Limits(
            max_runtime_sec=max_runtime_sec,
            max_silence_sec=max_silence_sec,
            max_memory_mb=max_memory_mb,
            poll_interval_sec=poll_interval_sec,
            kill_grace_sec=kill_grace_sec,
        ),
        label=command[0],
    )
    sys.stdout.flush()
    supervisor = Supervisor(1)
    run, stop_signal = anyio.run(with_stop_signals, supervisor, lambda: supervisor.run(spec))
    line = protocol.encode(run.outcome) + b"\n"
    code = exit_status(run, stop_signal)
    if run.outcome.reason is EndReason.CANCELLED:
        cancelled_message(stop_signal, "the command's process tree was")
    if outcome_file is not None:
        try:
            write_atomic(outcome_file, line)
        except OSError as exc:
            click.echo(f"error: cannot write {outcome_file}: {exc.strerror or exc}", err=True)
            _print_outcome(line, run, passthrough=stdout_file is None)
            ctx.exit(EXIT_RUNNER_FAILED)
    else:
        _print_outcome(line, run, passthrough=stdout_file is None)
    ctx.exit(code)


def _print_outcome(line: bytes, run: StepRun, *, passthrough: bool) -> None:
    """The outcome as the last line of stdout, on a line of its own (unless nobody reads it)."""
    out = sys.stdout.buffer
    try:
        if passthrough and run.stdout_last_byte not in (None, ord("\n")):
            out.write(b"\n")
        out.write(line)
        out.flush()
    except BrokenPipeError:
        # `runner exec ... | head`: the reader is gone, as the command found out too. Point
        # stdout at /dev/null so the interpreter's final flush does not complain either.
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        os.close(devnull)


@dataclass(frozen=True)
class DispatchArgs:
    """The options shared by `dispatch-step` and `dispatch-rework`, gathered."""

    dry_run: bool
    worker_backend: str | None
    workspace: Path
    shim_config: Path | None
    round_number: int | None
    max_parallel_steps: int
    limits: LimitOverrides
    ledger: tuple[Path, str] | None = None  # (root, project id) to record attempts in

    def plan_options(self) -> PlanOptions:
        """Read the shim config (errors name the file) and gather the planning options."""
        config = None if self.shim_config is None else load_config(self.shim_config)
        return PlanOptions(
            workspace=self.workspace,
            config=config,
            config_source=str(self.shim_config),
            backend=self.worker_backend,
            limits=self.limits,
            round_number=self.round_number,
        )


def dispatch_options(f: Callable[..., None]) -> Callable[..., None]:
    """Add the shared dispatch options; the command receives them as `args: DispatchArgs`."""

    @functools.wraps(f)
    def gather(*pos: Any, **kw: Any) -> None:
        project, root = kw.pop("log_project_id"), kw.pop("log_root_dir")
        if root is not None and project is None:
            raise click.UsageError("--log-root-dir needs --log-project-id")
        ledger = None if project is None else (root or DEFAULT_LEDGER_ROOT, project)
        limits = LimitOverrides(**{name: kw.pop(name) for name in LIMIT_NAMES})
        args = DispatchArgs(
            **{
                name: kw.pop(name)
                for name in DispatchArgs.__dataclass_fields__
                if name not in ("limits", "ledger")
            },
            limits=limits,
            ledger=ledger,
        )
        f(*pos, args=args, **kw)

    options = [
        click.option(
            "--dry-run", is_flag=True, help="Print the exact argv and limits; run nothing."
        ),
        click.option(
            "--worker-backend", help="Backend name (default: the pack's, the config's, codex)."
        ),
        click.option(
            "--workspace",
            type=click.Path(file_okay=False, path_type=Path),
            default=Path(),
            show_default=True,
            help="The workspace the agent works in (the shim's working directory).",
        ),
        click.option(
            "--shim-config",
            type=click.Path(dir_okay=False, path_type=Path),
            envvar="RUNNER_SHIM_CONFIG",
            help="JSON file mapping backends to command templates (docs/supervisor.md).",
        ),
        click.option(
            "--round",
            "round_number",
            type=click.IntRange(min=1),
            help="Evidence round number (default: the next free one).",
        ),
        click.option(
            "--max-parallel-steps",
            type=click.IntRange(min=1),
            default=1,
            show_default=True,
            help="Steps run at once when several packs are given.",
        ),
        click.option(
            "--log-project-id",
            help="Record each attempt in this ledger project (R/S pointer managed: a step is "
            "R0/S0 or a retry R/S+1, a rework a revision R+1/S0).",
        ),
        click.option(
            "--log-root-dir",
            type=click.Path(file_okay=False, path_type=Path),
            help=f"Root directory of the ledger [default: {DEFAULT_LEDGER_ROOT}].",
        ),
    ]
    wrapped: Callable[..., None] = _with_options(limit_options(gather), options)
    return wrapped


def _run_plans(
    plans: list[DispatchPlan], max_parallel: int, ledger: tuple[Path, str] | None = None
) -> int:
    """Run claimed plans; one JSON line per dispatch; returns the exit code (0, 1, 128+sig).
    With `ledger`, each dispatch is recorded as an attempt there."""
    supervisor = Supervisor(max_parallel)

    async def work() -> list[Dispatch]:
        results: list[Dispatch | None] = [None] * len(plans)

        async def one(i: int) -> None:
            results[i] = await execute(plans[i], supervisor)

        async with anyio.create_task_group() as tg:
            for i in range(len(plans)):
                tg.start_soon(one, i)
        return [d for d in results if d is not None]

    dispatches, stop_signal = anyio.run(with_stop_signals, supervisor, work)
    for dispatch in dispatches:
        click.echo(protocol.encode(dispatch.record()).decode())
    if ledger is not None and dispatches:
        root, project = ledger
        kind = dispatches[0].plan.kind
        pointers = anyio.run(record_dispatches, root, project, dispatches, kind)
        for dispatch, pointer in zip(dispatches, pointers, strict=True):
            click.echo(f"recorded {dispatch.plan.task_id} {pointer} in ledger {project}", err=True)
    if any(d.outcome.reason is EndReason.CANCELLED for d in dispatches):
        cancelled_message(stop_signal, "the agents' process trees were")
        return 128 + (stop_signal or signal.SIGINT)
    return 1 if any(d.infrastructure_failure for d in dispatches) else 0


def _dispatch(
    ctx: click.Context, args: DispatchArgs, plan: Callable[[bool], list[DispatchPlan]]
) -> None:
    planned = plan(False)  # validates every pack, backend and prompt before anything is written
    if args.dry_run:
        for dry in planned:
            click.echo(protocol.encode(dry.log()).decode())
        return
    ctx.exit(_run_plans(plan(True), args.max_parallel_steps, args.ledger))


@click.command("dispatch-step")
@click.option(
    "--step-pack-file",
    "pack_files",
    multiple=True,
    required=True,
    type=click.Path(dir_okay=False, path_type=Path),
    help="The StepPack to dispatch (repeat to dispatch several in parallel).",
)
@dispatch_options
@click.pass_context
def dispatch_step(ctx: click.Context, /, pack_files: tuple[Path, ...], args: DispatchArgs) -> None:
    """Validate a StepPack, run the agent on it under limits, read its StepResult.

    Prints one JSON line per dispatch (logs/command.json of the round). Exit 0 when every
    round produced a StepResult, 1 when one did not (limit, crash, parse failure), 2 on bad
    input, 130/143 when cancelled.
    """
    options = args.plan_options()

    def plan(claim: bool) -> list[DispatchPlan]:
        return [plan_step(path, options, claim=claim) for path in pack_files]

    _dispatch(ctx, args, plan)


@click.command("dispatch-rework")
@click.option(
    "--rework-pack-file",
    "pack_file",
    required=True,
    type=click.Path(dir_okay=False, path_type=Path),
    help="The ReworkPack to dispatch.",
)
@click.option("--thread-id", required=True, help="The agent thread to resume.")
@dispatch_options
@click.pass_context
def dispatch_rework(
    ctx: click.Context, /, pack_file: Path, thread_id: str, args: DispatchArgs
) -> None:
    """Validate a ReworkPack and resume the agent's thread on it, under limits.

    Output and exit codes as `dispatch-step`.
    """
    options = args.plan_options()

    def plan(claim: bool) -> list[DispatchPlan]:
        return [plan_rework(pack_file, thread_id, options, claim=claim)]

    _dispatch(ctx, args, plan)
