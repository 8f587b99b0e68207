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
import signal
import sys
from pathlib import Path

import anyio
import click

import protocol
from protocol import EndReason
from runner.files import write_atomic
from runner.supervisor import Limits, StepRun, StepSpec, Supervisor

EXIT_LIMIT = 124
EXIT_RUNNER_FAILED = 125
EXIT_CANNOT_RUN = 126
EXIT_NOT_FOUND = 127
EXIT_MEMORY = 128 + signal.SIGKILL
STOP_SIGNALS = (signal.SIGINT, signal.SIGTERM, signal.SIGHUP)

_positive = click.FloatRange(min=0, min_open=True)


def limit_options(f: click.decorators.FC) -> click.decorators.FC:
    """The limit options shared by `exec` and the dispatch commands."""
    for option in reversed(
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
                type=click.FloatRange(min=0),
                default=2.0,
                show_default=True,
                help="Time between SIGTERM and SIGKILL.",
            ),
        ]
    ):
        f = option(f)
    return f


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


async def run_until_signalled(supervisor: Supervisor, spec: StepSpec) -> tuple[StepRun, int | None]:
    """Run one step; SIGINT, SIGTERM or SIGHUP cancel it (a second one skips the grace)."""
    received: list[int] = []
    async with anyio.create_task_group() as tg:

        async def watch() -> None:
            with anyio.open_signal_receiver(*STOP_SIGNALS) as signals:
                async for signum in signals:
                    received.append(signum)
                    supervisor.cancel(f"runner received {signal.Signals(signum).name}")

        tg.start_soon(watch)
        run = await supervisor.run(spec)
        tg.cancel_scope.cancel()
    return run, (received[0] if received else None)


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
    run, stop_signal = anyio.run(run_until_signalled, Supervisor(1), spec)
    line = protocol.encode(run.outcome) + b"\n"
    code = exit_status(run, stop_signal)
    if stop_signal is not None and run.outcome.reason is EndReason.CANCELLED:
        click.echo(
            f"runner: cancelled by {signal.Signals(stop_signal).name}; "
            "the command's process tree was killed",
            err=True,
        )
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
    """The outcome as the last line of stdout, on a line of its own."""
    out = sys.stdout.buffer
    if passthrough and run.stdout_last_byte not in (None, ord("\n")):
        out.write(b"\n")
    out.write(line)
    out.flush()
