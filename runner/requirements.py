"""The requirements freeze workflow: dialogue to draft, draft to approved freeze, and the check
the campaign makes before it runs anything.

- `draft_requirements` turns dialogue text into ``requirements.draft.md`` with the built-in
  heuristic (`kernel.dialogue`) or an external controller command (an argv, the dialogue on
  stdin, markdown on stdout, under a timeout), and records ``controller_profile.json``.
- `freeze_requirements` writes ``requirements.vN.md``, ``requirements.current.md`` and
  ``freeze_meta.json`` (`kernel.freeze.plan_freeze` decides what to do).
- `check_freeze` answers ``execution_started`` or ``execution_blocked_unapproved`` with a
  reason (`kernel.freeze.assess_freeze`); `runner campaign --require-freeze` records it.

Every write is atomic; bad input raises a `RequirementsError` naming the file and the reason
before anything is written; nothing people wrote is overwritten without ``--force``.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import re
import shlex
from collections.abc import Iterator, Sequence
from datetime import UTC, datetime
from pathlib import Path

import anyio

from kernel.dialogue import draft_from_dialogue, render_draft
from kernel.freeze import FreezeAction, FreezeFacts, FreezePlan, assess_freeze, plan_freeze
from protocol import (
    CURRENT_FILE,
    DRAFT_FILE,
    META_FILE,
    PROFILE_FILE,
    ControllerBackend,
    ControllerProfile,
    EndReason,
    FreezeCheck,
    FreezeMeta,
    ProtocolError,
    convert,
    encode_pretty,
    read,
    version_file,
)
from protocol.freeze import Approver
from runner.files import write_atomic
from runner.log import get_logger
from runner.supervisor import Limits, StepSpec, StopRequest, run_step

DEFAULT_CONTROLLER_TIMEOUT = 300.0
MAX_CONTROLLER_OUTPUT = 1 << 20
# SIGTERM first (a model CLI may want to clean up), SIGKILL this much later.
CONTROLLER_KILL_GRACE_SEC = 1.0
_READ_CHUNK = 64 * 1024
HEURISTIC_MODEL = "heuristic-v1"
_DOC_MODE = 0o644
_VERSION_FILE = re.compile(r"^requirements\.v([1-9][0-9]{0,8})\.md$")

log = get_logger("runner.requirements")


class RequirementsError(Exception):
    """Base of the freeze workflow's failures; `str()` names the file and the reason."""


class RequirementsInputError(RequirementsError):
    """A file the workflow reads is missing, empty or not UTF-8 text."""

    def __init__(self, path: Path, reason: str) -> None:
        self.path = path
        self.reason = reason
        super().__init__(f"{path}: {reason}")


class ControllerFailed(RequirementsError):
    """The external controller command did not produce a draft."""

    def __init__(
        self, argv: Sequence[str], reason: str, *, exit_code: int | None = None, stderr: str = ""
    ) -> None:
        self.argv = list(argv)
        self.reason = reason
        self.exit_code = exit_code
        self.stderr = stderr
        tail = stderr.strip().splitlines()[-3:]
        said = f"; stderr: {' | '.join(tail)}" if tail else ""
        shown = shlex.join(argv)
        shown = shown if len(shown) <= 160 else shown[:157] + "..."
        super().__init__(f"controller command `{shown}` {reason}{said}")


class DraftEdited(RequirementsError):
    def __init__(self, path: Path) -> None:
        self.path = path
        super().__init__(
            f"{path}: edited since it was generated; not overwriting it (use --force to "
            "replace it, or freeze it as it is)"
        )


class FreezeRefused(RequirementsError):
    def __init__(self, input_dir: Path, reason: str) -> None:
        self.input_dir = input_dir
        self.reason = reason
        super().__init__(f"{input_dir}: {reason}")


@contextlib.contextmanager
def _os_errors(doing: str) -> Iterator[None]:
    """An `OSError` (permissions, a full disk, a file where a directory should be) becomes a
    `RequirementsError` saying what was being done and to which file."""
    try:
        yield
    except OSError as exc:
        where = f"{exc.filename}: " if exc.filename else ""
        raise RequirementsError(f"{doing}: {where}{exc.strerror or exc}") from exc


# --- draft ----------------------------------------------------------------------------------


async def draft_requirements(
    dialogue_file: str | os.PathLike[str],
    out_dir: str | os.PathLike[str],
    *,
    controller_command: Sequence[str] | None = None,
    controller_model: str | None = None,
    timeout_sec: float = DEFAULT_CONTROLLER_TIMEOUT,
    force: bool = False,
    now: datetime | None = None,
) -> ControllerProfile:
    """Write ``requirements.draft.md`` and ``controller_profile.json`` into `out_dir`.

    Refuses (`DraftEdited`) to replace a draft people edited since it was generated, unless
    `force`; checked before the controller runs, so no controller call is wasted.
    """
    dialogue = _read_text(Path(dialogue_file), what="dialogue")
    out = Path(out_dir)
    _guard_draft(out, force=force)
    if controller_command is not None:
        backend = ControllerBackend.COMMAND
        raw = await run_controller(controller_command, dialogue.encode(), timeout_sec=timeout_sec)
        markdown = _controller_markdown(controller_command, raw)
    else:
        backend = ControllerBackend.HEURISTIC
        label = controller_model or HEURISTIC_MODEL
        generator = f"the heuristic controller ({label})"
        markdown = render_draft(draft_from_dialogue(dialogue), generator=generator)
    data = markdown.encode()
    model = controller_model or (HEURISTIC_MODEL if controller_command is None else None)
    profile = ControllerProfile(
        backend=backend,
        dialogue_sha256=_sha256(dialogue.encode()),
        draft_sha256=_sha256(data),
        created_at=_stamp(now),
        model=model,
        command=list(controller_command or []),
        timeout_sec=timeout_sec if controller_command is not None else None,
    )
    # The draft first: a profile never describes a draft that is not there.
    with _os_errors("cannot write the draft"):
        write_atomic(out / DRAFT_FILE, data, mode=_DOC_MODE)
        write_atomic(out / PROFILE_FILE, encode_pretty(profile), mode=_DOC_MODE)
    log.info(
        "requirements.drafted",
        out_dir=str(out),
        backend=backend.value,
        model=profile.model,
        draft_sha256=profile.draft_sha256,
    )
    return profile


def _guard_draft(out: Path, *, force: bool) -> None:
    """An existing draft may be replaced only if it is what the last generation wrote."""
    draft = out / DRAFT_FILE
    if force or not draft.exists():
        return
    try:
        profile = read(out / PROFILE_FILE, ControllerProfile)
    except ProtocolError:
        raise DraftEdited(draft) from None
    with _os_errors("cannot read the existing draft"):
        edited = _sha256(draft.read_bytes()) != profile.draft_sha256
    if edited:
        raise DraftEdited(draft)


def _controller_markdown(argv: Sequence[str], raw: bytes) -> str:
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise ControllerFailed(argv, f"wrote output that is not UTF-8 ({exc.reason})") from None
    text = _normalize(text)
    if not text.strip():
        raise ControllerFailed(argv, "wrote no draft on stdout", exit_code=0)
    return text


async def run_controller(
    argv: Sequence[str], stdin: bytes, *, timeout_sec: float = DEFAULT_CONTROLLER_TIMEOUT
) -> bytes:
    """Run `argv` (no shell) with `stdin`, return its stdout; raise `ControllerFailed` when it
    cannot start, times out, exits non-zero or writes more than `MAX_CONTROLLER_OUTPUT`.

    It runs as a step of the supervisor (`runner.supervisor.run_step`): when it ends, times
    out or writes too much, its whole process tree is killed, processes that left its process
    group or session (``setsid``) included, and none is left behind.
    """
    if not argv:
        raise ControllerFailed(["<empty>"], "is empty")
    out = bytearray()
    overflow = False
    stop = StopRequest()
    # The supervisor copies the controller's stdout into this pipe; reading it here keeps
    # what fits and stops the controller as soon as it writes more.
    read_fd, write_fd = os.pipe2(os.O_CLOEXEC)
    os.set_blocking(read_fd, False)

    async def collect() -> None:
        nonlocal overflow
        while True:
            try:
                chunk = os.read(read_fd, _READ_CHUNK)
            except BlockingIOError:
                await anyio.wait_readable(read_fd)
                continue
            if not chunk:
                return
            if overflow:
                continue  # drained and dropped: the supervisor's copy never blocks
            if len(out) + len(chunk) > MAX_CONTROLLER_OUTPUT:
                overflow = True
                stop.set(f"wrote more than {MAX_CONTROLLER_OUTPUT} bytes")
                continue
            out.extend(chunk)

    spec = StepSpec(
        argv=list(argv),
        stdin=stdin,
        stdout=write_fd,
        stderr=None,  # discarded; the tail is kept for the message
        limits=Limits(max_runtime_sec=timeout_sec, kill_grace_sec=CONTROLLER_KILL_GRACE_SEC),
        label="controller",
    )
    try:
        async with anyio.create_task_group() as tg:
            tg.start_soon(collect)
            try:
                run = await run_step(spec, stop=stop)
            finally:
                os.close(write_fd)  # the last writer: `collect` sees end of file
    finally:
        os.close(read_fd)
    outcome = run.outcome
    stderr = run.stderr_tail.decode("utf-8", "replace")
    if outcome.reason is EndReason.SPAWN_FAILED:
        why = outcome.detail if run.spawn_errno is None else os.strerror(run.spawn_errno)
        raise ControllerFailed(argv, f"cannot be started: {why}")
    if outcome.reason is EndReason.RUNTIME_LIMIT:
        raise ControllerFailed(argv, f"timed out after {timeout_sec:g}s", stderr=stderr)
    if overflow:
        raise ControllerFailed(argv, f"wrote more than {MAX_CONTROLLER_OUTPUT} bytes")
    if outcome.reason is not EndReason.COMPLETED:
        raise ControllerFailed(argv, f"ended: {outcome.reason}: {outcome.detail}", stderr=stderr)
    code = outcome.exit_code
    if code != 0:
        raise ControllerFailed(argv, f"exited with code {code}", exit_code=code, stderr=stderr)
    return bytes(out)


# --- freeze ---------------------------------------------------------------------------------


def freeze_requirements(
    input_dir: str | os.PathLike[str],
    *,
    approve: bool = False,
    approved_by: str | None = None,
    now: datetime | None = None,
) -> tuple[FreezePlan, FreezeMeta]:
    """Freeze ``requirements.draft.md`` of `input_dir`; returns what was done and the meta.

    The same draft frozen again changes nothing (or only adds the approval); a changed draft
    becomes version N+1. Raises `FreezeRefused` rather than overwrite text found nowhere else.
    """
    directory = Path(input_dir)
    if approved_by is not None and not approve:
        raise RequirementsError("--approved-by is given without --approve")
    approver = _approver(approved_by) if approve else None
    draft_text = _read_text(directory / DRAFT_FILE, what="draft")
    frozen = _normalize(draft_text).encode()
    frozen_sha256 = _sha256(frozen)
    facts = gather_facts(directory)
    plan = plan_freeze(facts, frozen_sha256=frozen_sha256, approve=approve)
    stamp = _stamp(now)
    if plan.action is FreezeAction.REFUSE:
        raise FreezeRefused(directory, plan.detail)
    if plan.action is FreezeAction.UNCHANGED:
        assert facts.meta is not None  # plan_freeze says unchanged only with a meta
        return plan, facts.meta
    if plan.action is FreezeAction.APPROVE:
        assert facts.meta is not None
        meta = FreezeMeta(
            version=facts.meta.version,
            sha256=facts.meta.sha256,
            source_draft_sha256=facts.meta.source_draft_sha256,
            frozen_at=facts.meta.frozen_at,
            approved=True,
            approved_by=approver,
            approved_at=stamp,
        )
    else:
        meta = FreezeMeta(
            version=plan.version,
            sha256=frozen_sha256,
            source_draft_sha256=_sha256(draft_text.encode()),
            frozen_at=stamp,
            approved=approve,
            approved_by=approver,
            approved_at=stamp if approve else None,
        )
        versioned = directory / version_file(plan.version)
        if versioned.exists():  # plan_freeze picked max + 1; only a race gets here
            raise FreezeRefused(directory, f"{versioned.name} already exists")
        # Order matters for a crash half-way: the new version file, then current, then the
        # meta. Until the meta is written the check says "edited after freeze" (blocked), and
        # freezing again is allowed because current's text is in a version file.
        with _os_errors("cannot write the freeze"):
            write_atomic(versioned, frozen, mode=_DOC_MODE)
            write_atomic(directory / CURRENT_FILE, frozen, mode=_DOC_MODE)
    with _os_errors("cannot write the freeze"):
        write_atomic(directory / META_FILE, encode_pretty(meta), mode=_DOC_MODE)
    log.info(
        "requirements.frozen",
        input_dir=str(directory),
        action=plan.action.value,
        version=meta.version,
        approved=meta.approved,
        approved_by=meta.approved_by,
        sha256=meta.sha256,
    )
    return plan, meta


def _approver(name: str | None) -> str:
    if name is None:
        raise RequirementsError("--approve needs --approved-by NAME (who approves)")
    try:
        return convert(name, Approver, source="--approved-by")
    except ProtocolError:
        raise RequirementsError(
            f"--approved-by {name[:40]!r}: give a non-blank name without control characters, "
            "at most 200 characters"
        ) from None


# --- check ----------------------------------------------------------------------------------


def check_freeze(input_dir: str | os.PathLike[str]) -> FreezeCheck:
    """May execution start? Approved and current, or blocked with the reason.

    A missing or damaged freeze is a blocked answer, not an error; only a directory the
    runner cannot read (permissions, I/O) raises `RequirementsError`."""
    check = assess_freeze(gather_facts(Path(input_dir)))
    log.info(
        "requirements.checked",
        input_dir=str(input_dir),
        decision=check.decision.value,
        reason=check.reason.value,
        version=check.version,
    )
    return check


def gather_facts(directory: Path) -> FreezeFacts:
    """Hash what is in the input directory for the kernel's freeze rules."""
    with _os_errors(f"cannot read {directory}"):
        return _gather_facts(directory)


def _gather_facts(directory: Path) -> FreezeFacts:
    meta: FreezeMeta | None = None
    problem: str | None = None
    meta_path = directory / META_FILE
    if meta_path.exists():
        try:
            meta = read(meta_path, FreezeMeta)
        except ProtocolError as exc:
            problem = f"{exc.path}: {exc.reason}"
    versions: dict[int, str] = {}
    if directory.is_dir():
        for path in directory.iterdir():
            match = _VERSION_FILE.match(path.name)
            if match is not None and path.is_file():
                versions[int(match[1])] = _sha256(path.read_bytes())
    return FreezeFacts(
        meta=meta,
        meta_problem=problem,
        current_sha256=_hash_if_file(directory / CURRENT_FILE),
        version_sha256=versions.get(meta.version) if meta is not None else None,
        draft_sha256=_hash_if_file(directory / DRAFT_FILE),
        version_hashes=versions,
    )


# --- text -----------------------------------------------------------------------------------


def _read_text(path: Path, *, what: str) -> str:
    try:
        raw = path.read_bytes()
    except FileNotFoundError:
        raise RequirementsInputError(path, f"{what} file not found") from None
    except OSError as exc:
        raise RequirementsInputError(path, f"cannot read {what}: {exc.strerror or exc}") from None
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise RequirementsInputError(
            path, f"{what} is not UTF-8 text (byte {exc.start}: {exc.reason})"
        ) from None
    if not text.strip():
        raise RequirementsInputError(path, f"{what} is empty")
    return text


def _normalize(text: str) -> str:
    """LF line ends and exactly one final newline: the frozen form of a text."""
    return text.replace("\r\n", "\n").replace("\r", "\n").rstrip("\n") + "\n"


def _hash_if_file(path: Path) -> str | None:
    try:
        return _sha256(path.read_bytes())
    except (FileNotFoundError, IsADirectoryError, NotADirectoryError):
        return None


def _sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def _stamp(now: datetime | None) -> str:
    return (now or datetime.now(UTC)).astimezone(UTC).isoformat().replace("+00:00", "Z")
