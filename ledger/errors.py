"""The ledger's errors: one base, `LedgerError`, and subclasses that carry the facts."""

from __future__ import annotations

from pathlib import Path

from protocol import AttemptOrderError, AttemptPointer


class LedgerError(Exception):
    """Base of every error the ledger raises on purpose."""


class InvalidLedgerId(LedgerError):
    """A project or task id that is not a safe file name; raised before anything is written."""


class LedgerNotFound(LedgerError):
    def __init__(self, path: Path) -> None:
        self.path = path
        super().__init__(f"no ledger at {path} (run `runner ledger init` first)")


class LedgerExists(LedgerError):
    def __init__(self, path: Path) -> None:
        self.path = path
        super().__init__(f"a ledger already exists at {path}")


class LedgerLocked(LedgerError):
    """Another process holds the project's writer lock."""

    def __init__(self, path: Path, waited_s: float) -> None:
        self.path = path
        self.waited_s = waited_s
        super().__init__(
            f"{path} is locked by another writer (waited {waited_s:g}s; see --lock-timeout)"
        )


class ChainBroken(LedgerError):
    """Damage found in a chain file: which file, which line (1-based) and why.

    `expected` and `found` hold the two values that disagree when there are two (hashes, seqs).
    """

    def __init__(
        self,
        path: Path | str,
        line: int,
        reason: str,
        expected: str | None = None,
        found: str | None = None,
    ) -> None:
        self.path = Path(path)
        self.line = line
        self.reason = reason
        self.expected = expected
        self.found = found
        detail = f" (expected {expected}, found {found})" if expected is not None else ""
        super().__init__(f"{path}:{line}: {reason}{detail}")


class LedgerDamaged(LedgerError):
    """Appends (or an export) refused: the ledger holds damage that recovery must not touch."""

    def __init__(self, cause: ChainBroken, refused: str = "appends refused") -> None:
        self.cause = cause
        super().__init__(f"ledger is damaged, {refused}: {cause}")


class InvalidEvent(LedgerError):
    """An event that cannot be written (it has no canonical form, or bad ids)."""


class EventRejected(LedgerError):
    """An append refused by the task's state; nothing was written."""

    def __init__(self, task_id: str, message: str) -> None:
        self.task_id = task_id
        super().__init__(f"task {task_id}: {message}")


class TaskAlreadyClosed(EventRejected):
    """The task has its final record; nothing may be appended to it.

    (Named so that it does not clash with the `TaskClosed` event.)"""

    def __init__(self, task_id: str, event_type: str) -> None:
        self.event_type = event_type
        super().__init__(task_id, f"is closed; {event_type!r} refused")


class AttemptOrderRejected(EventRejected):
    """A pointer that breaks the R/S rules; `error` says which rule and what is legal next."""

    def __init__(self, task_id: str, error: AttemptOrderError) -> None:
        self.error = error
        self.rule = error.rule
        self.legal = error.legal
        super().__init__(task_id, str(error.reason))


class PointerMismatch(EventRejected):
    """An event about an attempt that is not the task's current (or open) attempt."""

    def __init__(
        self, task_id: str, event_type: str, current: AttemptPointer | None, given: AttemptPointer
    ) -> None:
        self.event_type = event_type
        self.current = current
        self.given = given
        now = str(current) if current is not None else "no attempt yet"
        super().__init__(task_id, f"{event_type!r} names {given} but the current attempt is {now}")


class AttemptStillOpen(EventRejected):
    def __init__(self, task_id: str, current: AttemptPointer, given: AttemptPointer) -> None:
        self.current = current
        self.given = given
        super().__init__(
            task_id,
            f"attempt {current} is still open; record it (attempt) or interrupt it "
            f"(attempt_interrupted) before starting {given}",
        )


class WriterFailed(LedgerError):
    """The writer hit an I/O error (a full disk, say): appends are refused until the ledger is
    reopened, which recovers every acknowledged event from the journal."""

    def __init__(self, path: Path | str, reason: str) -> None:
        self.path = Path(path)
        self.reason = reason
        super().__init__(
            f"{path}: cannot write the ledger: {reason}; appends are refused until it is "
            "reopened (nothing acknowledged is lost: reopening recovers it)"
        )

    @classmethod
    def of(cls, exc: OSError, path: Path) -> WriterFailed:
        return cls(exc.filename or path, exc.strerror or str(exc))


class UnsafeArchive(LedgerError):
    """An archive refused on import; nothing was written under the root."""

    def __init__(self, archive: Path | str, reason: str, entry: str | None = None) -> None:
        self.archive = Path(archive)
        self.entry = entry
        self.reason = reason
        where = f" entry {entry!r}" if entry is not None else ""
        super().__init__(f"{archive}:{where} {reason}")
