"""The shim adapter's command side: which command runs an agent for a backend, with what argv.

By default every backend runs through the original's shim::

    gxd-subagent-shim create "<prompt>" --backend=<name> --run-id <id> --task-id <id> --step-id <id>
    gxd-subagent-shim resume "<prompt>" <thread_id> --backend=<name> --run-id ... --step-id <id>

A shim config file (JSON, ``--shim-config`` or ``RUNNER_SHIM_CONFIG``) maps backend names to
argv templates instead, so the runner can drive ``codex exec``, ``claude -p`` or a script::

    {"default_backend": "claude",
     "backends": {
       "claude": {"create": ["claude", "-p", "--output-format", "json"],
                  "resume": ["claude", "-p", "--resume", "{thread_id}"],
                  "prompt_stdin": true},
       "codex": {"create": ["codex", "exec", "--full-auto", "{prompt}"],
                 "resume": ["codex", "exec", "resume", "{thread_id}", "{prompt}"]}}}

Each argv element is a template; the placeholders are `PLACEHOLDERS` (``{{`` and ``}}`` are
literal braces). A config is checked when it is read: unknown placeholders, ``{thread_id}`` in a
create command, a command that gets the prompt neither as an argument, a file nor on stdin, an
empty program name, a NUL byte (in argv, a backend name or ``env``), an ``env`` name that is
empty or holds ``=``, or one the runner sets itself (`RESERVED_ENV`) are decode errors naming
the file and the JSON path, so a config that cannot start a process never costs a round.
"""

from __future__ import annotations

import json
import re
import string
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Literal

import msgspec

import protocol

from ._proctree import TOKEN_ENV
from .supervisor import SupervisorError

DEFAULT_BACKEND = "codex"
GXD_IDS = ["--run-id", "{run_id}", "--task-id", "{task_id}", "--step-id", "{step_id}"]
GXD_CREATE = ["gxd-subagent-shim", "create", "{prompt}", "--backend={backend}", *GXD_IDS]
GXD_RESUME = ["gxd-subagent-shim", "resume", "{prompt}", "{thread_id}", "--backend={backend}"]
GXD_RESUME += GXD_IDS

PLACEHOLDERS = {
    "prompt": "the rendered prompt text",
    "prompt_file": "absolute path of the prompt file (logs/prompt.md in the round)",
    "thread_id": "the agent thread to resume (resume commands only)",
    "task_id": "the task id",
    "run_id": "the run id",
    "step_id": "the step id",
    "backend": "the backend name",
    "round": "the round number (1, 2, ...)",
    "round_dir": "absolute path of the round's evidence directory",
    "workspace": "absolute path of the workspace (the shim's working directory)",
    "pack_file": "absolute path of the copy of the step or rework pack in the round",
    "step_result_file": "absolute path where the StepResult is expected",
}
# The variables the runner sets for every step (runner.dispatch and the supervisor's token): a
# config that set one would either be overridden (the token) or mislead the shim (the round
# directory), so it is refused.
RESERVED_ENV = frozenset(
    {
        "RUNNER_PACK_KIND",
        "RUNNER_PACK_FILE",
        "RUNNER_TASK_ID",
        "RUNNER_RUN_ID",
        "RUNNER_STEP_ID",
        "RUNNER_ROUND",
        "RUNNER_ROUND_DIR",
        "RUNNER_WORKSPACE",
        "RUNNER_PROMPT_FILE",
        "RUNNER_STEP_RESULT_FILE",
        "RUNNER_BACKEND",
        "RUNNER_THREAD_ID",
        TOKEN_ENV,
    }
)
_PLAIN_KEY = re.compile(r"[A-Za-z0-9_-]+")
# Linux refuses one argv string longer than 32 pages (MAX_ARG_STRLEN), terminator included.
MAX_ARG_BYTES = 32 * 4096 - 1

Mode = Literal["create", "resume"]
Argv = Annotated[list[str], msgspec.Meta(min_length=1)]


class ShimError(SupervisorError):
    """A dispatch that cannot be set up (the pack and config decoded, but do not fit)."""


class UnknownBackend(ShimError):
    def __init__(self, name: str, known: list[str], source: str) -> None:
        self.name, self.known = name, known
        super().__init__(
            f"backend {name!r} is not in {source}; known: {', '.join(sorted(known)) or 'none'}"
        )


class PromptTooLong(ShimError):
    def __init__(self, size: int, backend: str) -> None:
        self.size = size
        super().__init__(
            f"an argument with the prompt is {size} bytes, more than one can hold "
            f"({MAX_ARG_BYTES}); give backend {backend!r} a template with {{prompt_file}} or "
            '"prompt_stdin": true'
        )


class BackendCommand(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    """The argv templates of one backend."""

    create: Argv
    resume: Argv | None = None
    prompt_stdin: bool = False
    env: dict[str, str] = {}

    def check(self, at: str) -> None:
        """Raise ValueError ("reason - at `path`") for a template or environment that cannot
        work: either would only fail when the shim is spawned, a round too late."""
        for mode, argv in (("create", self.create), ("resume", self.resume)):
            if argv is None:
                continue
            if not argv[0]:
                raise ValueError(f"the program name is empty - at `{at}.{mode}[0]`")
            fields: set[str] = set()
            for i, element in enumerate(argv):
                _no_nul(element, "an argument", f"{at}.{mode}[{i}]")
                fields |= _fields(element, f"{at}.{mode}[{i}]")
            if mode == "create" and "thread_id" in fields:
                raise ValueError(f"a create command has no thread to name - at `{at}.create`")
            if not self.prompt_stdin and not fields & {"prompt", "prompt_file"}:
                raise ValueError(
                    f"the {mode} command never gets the prompt: use {{prompt}}, "
                    f'{{prompt_file}} or "prompt_stdin": true - at `{at}.{mode}`'
                )
        for name, value in self.env.items():
            where = _key(f"{at}.env", name)
            _no_nul(name, "an environment variable name", where)
            _no_nul(value, "an environment variable value", where)
            if not name or "=" in name:
                problem = "is empty" if not name else "contains '='"
                raise ValueError(f"an environment variable name {problem} - at `{where}`")
            if name in RESERVED_ENV:
                raise ValueError(
                    f"{name} is set by the runner for every step and cannot be configured;"
                    f" reserved: {', '.join(sorted(RESERVED_ENV))} - at `{where}`"
                )


class ShimConfig(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    backends: dict[str, BackendCommand]
    default_backend: str | None = None

    def __post_init__(self) -> None:
        for name, command in self.backends.items():
            where = _key("$.backends", name)
            _no_nul(name, "a backend name", where)
            command.check(where)
        if self.default_backend is not None and self.default_backend not in self.backends:
            raise ValueError(
                f"default backend {self.default_backend!r} is not one of the backends"
                " - at `$.default_backend`"
            )


def _key(at: str, key: str) -> str:
    """The JSON path of `key` under `at`: ``$.a.b`` for a plain key, else ``$.a["b=c"]``."""
    if _PLAIN_KEY.fullmatch(key):
        return f"{at}.{key}"
    quoted = json.dumps(key).replace("`", "\\u0060")  # a backtick would end the path
    return f"{at}[{quoted}]"


def _no_nul(text: str, what: str, at: str) -> None:
    if "\0" in text:
        raise ValueError(f"{what} contains a NUL byte, which no process can be given - at `{at}`")


def _fields(template: str, at: str) -> set[str]:
    try:
        parsed = list(string.Formatter().parse(template))
    except ValueError as exc:
        raise ValueError(f"bad template {template!r}: {exc} - at `{at}`") from None
    names: set[str] = set()
    for _, name, spec, conversion in parsed:
        if name is None:
            continue
        if name not in PLACEHOLDERS or spec or conversion:
            raise ValueError(
                f"unknown placeholder {{{name}{'!' + conversion if conversion else ''}"
                f"{':' + spec if spec else ''}}} in {template!r}; known: "
                f"{', '.join('{' + p + '}' for p in PLACEHOLDERS)} - at `{at}`"
            )
        names.add(name)
    return names


GXD = BackendCommand(create=GXD_CREATE, resume=GXD_RESUME)


def load_config(path: Path) -> ShimConfig:
    """Read a shim config; raises `protocol.ProtocolError` naming the file and JSON path."""
    return protocol.read(path, ShimConfig)


def resolve_backend(
    config: ShimConfig | None, source: str, requested: str | None, pack_backend: str | None
) -> tuple[str, BackendCommand]:
    """The backend name and its command: the option, else the pack's, else the default."""
    if config is None:
        return requested or pack_backend or DEFAULT_BACKEND, GXD
    name = requested or pack_backend or config.default_backend or DEFAULT_BACKEND
    if name not in config.backends:
        raise UnknownBackend(name, list(config.backends), source)
    return name, config.backends[name]


@dataclass(frozen=True)
class Invocation:
    argv: list[str]
    stdin: bytes | None
    prompt_via: Literal["argv", "file", "stdin"]


def build_invocation(
    command: BackendCommand, mode: Mode, backend: str, values: Mapping[str, str]
) -> Invocation:
    """Fill the templates of `mode` with `values` (every placeholder but ``thread_id`` on
    create). The prompt travels on stdin, as an argument, or as a file, as configured."""
    templates = command.create if mode == "create" else command.resume
    if templates is None:
        raise ShimError(f"backend {backend!r} has no resume command; add one to the shim config")
    argv = [element.format_map(values) for element in templates]
    for i, element in enumerate(argv):
        if "\0" in element:  # the templates have none (checked on decode): the pack's text has
            raise ShimError(
                f"the {mode} command of backend {backend!r} would get a NUL byte in argument "
                f"{i} (from the pack's text), which no process can be given; give the backend "
                'a template with {prompt_file} or "prompt_stdin": true'
            )
    longest = max(len(element.encode()) for element in argv)
    if longest > MAX_ARG_BYTES:
        raise PromptTooLong(longest, backend)
    prompt = values["prompt"]
    uses_prompt_arg = any("prompt" in _fields(t, "") for t in templates)
    via: Literal["argv", "file", "stdin"] = (
        "stdin" if command.prompt_stdin else "argv" if uses_prompt_arg else "file"
    )
    return Invocation(
        argv=argv, stdin=prompt.encode() if command.prompt_stdin else None, prompt_via=via
    )
