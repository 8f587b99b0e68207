"""The `runner` click group: global options and the one place errors become exit codes."""

from __future__ import annotations

from typing import Any

import click

from ledger import ChainBroken, LedgerDamaged, LedgerError, LedgerLocked
from protocol import ProtocolError
from runner import __version__
from runner.log import LEVELS, configure_logging

# Exit codes: 0 success; 1 a check ran and failed; 2 bad input or usage (as click uses 2);
# 3 busy (another process holds the lock).
EXIT_INPUT = 2
EXIT_BUSY = 3
ERROR_EXIT_CODES: list[tuple[type[BaseException], int]] = [
    (ProtocolError, EXIT_INPUT),
    (ChainBroken, 1),
    (LedgerDamaged, 1),
    (LedgerLocked, EXIT_BUSY),
    (LedgerError, EXIT_INPUT),
]


class RunnerGroup(click.Group):
    """Maps our packages' errors to one clear message and an exit code; a traceback is a bug."""

    def invoke(self, ctx: click.Context) -> Any:
        try:
            return super().invoke(ctx)
        except tuple(t for t, _ in ERROR_EXIT_CODES) as exc:
            code = next(c for t, c in ERROR_EXIT_CODES if isinstance(exc, t))
            click.echo(f"error: {exc}", err=True)
            ctx.exit(code)


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
