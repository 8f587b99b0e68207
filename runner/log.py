"""Logging set-up, in one place.

structlog with key-value events under stable names (``step.finished``). JSON lines when stderr
is not a terminal (CI, log shippers, ``jq``) or when asked; a readable console renderer on a
terminal.
"""

from __future__ import annotations

import logging
import sys
from typing import Literal, TextIO

import structlog

LogFormat = Literal["auto", "json", "console"]
LEVELS = ("debug", "info", "warning", "error", "critical")


# What `configure_logging` was last given: a process started for the runner (a Dask worker of
# `--executor dask-local`) is configured the same way.
configured: tuple[str, LogFormat] = ("info", "auto")


def configure_logging(
    level: str = "info", fmt: LogFormat = "auto", stream: TextIO | None = None
) -> None:
    """Configure structlog for the whole process; safe to call again (tests, nested CLIs)."""
    global configured
    configured = (level, fmt)
    out = stream if stream is not None else sys.stderr
    as_json = fmt == "json" or (fmt == "auto" and not _isatty(out))
    processors: list[structlog.typing.Processor] = [
        structlog.contextvars.merge_contextvars,
        structlog.processors.add_log_level,
        structlog.processors.TimeStamper(fmt="iso", utc=True),
    ]
    if as_json:
        processors += [
            structlog.processors.format_exc_info,
            structlog.processors.JSONRenderer(sort_keys=False),
        ]
    else:
        processors.append(structlog.dev.ConsoleRenderer(colors=_isatty(out)))
    structlog.configure(
        processors=processors,
        wrapper_class=structlog.make_filtering_bound_logger(
            logging.getLevelNamesMapping()[level.upper()]
        ),
        logger_factory=structlog.PrintLoggerFactory(file=out),
        cache_logger_on_first_use=False,
    )


def get_logger(name: str) -> structlog.typing.FilteringBoundLogger:
    logger: structlog.typing.FilteringBoundLogger = structlog.get_logger(name)
    return logger


def _isatty(stream: TextIO) -> bool:
    try:
        return stream.isatty()
    except (AttributeError, ValueError):
        return False
