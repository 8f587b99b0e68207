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
create command, or a command that gets the prompt neither as an argument, a file nor on stdin
are decode errors naming the file and the JSON path.
"""

from __future__ import annotations

import string
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Literal

import msgspec

import protocol

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
        """Raise ValueError ("reason - at `path`") for a template that cannot work."""
        for mode, argv in (("create", self.create), ("resume", self.resume)):
            if argv is None:
                continue
            fields: set[str] = set()
            for i, element in enumerate(argv):
                fields |= _fields(element, f"{at}.{mode}[{i}]")
            if mode == "create" and "thread_id" in fields:
                raise ValueError(f"a create command has no thread to name - at `{at}.create`")
            if not self.prompt_stdin and not fields & {"prompt", "prompt_file"}:
                raise ValueError(
                    f"the {mode} command never gets the prompt: use {{prompt}}, "
                    f'{{prompt_file}} or "prompt_stdin": true - at `{at}.{mode}`'
                )


class ShimConfig(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    backends: dict[str, BackendCommand]
    default_backend: str | None = None

    def __post_init__(self) -> None:
        for name, command in self.backends.items():
            command.check(f"$.backends.{name}")
        if self.default_backend is not None and self.default_backend not in self.backends:
            raise ValueError(
                f"default backend {self.default_backend!r} is not one of the backends"
                " - at `$.default_backend`"
            )


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
