"""The ledger: an append-only, hash-chained record of every attempt.

One chain per project (``events.jsonl``) and one per task (``tasks/<id>/events.jsonl``), each
line the RFC 8785 canonical JSON of an event with its SHA-256 and its predecessor's; the
project chain links every task event, so neither can be edited alone. One async writer per
project seals batches and a small commit process writes them (group commit, one disk write per
batch); `verify_project` checks everything in constant memory.
docs/FORMAT.md specifies the format exactly.
"""

from .canonical import canonical, sha256_hex
from .errors import (
    AttemptOrderRejected,
    AttemptStillOpen,
    ChainBroken,
    EventRejected,
    InvalidEvent,
    InvalidLedgerId,
    LedgerDamaged,
    LedgerError,
    LedgerExists,
    LedgerLocked,
    LedgerNotFound,
    PointerMismatch,
    TaskAlreadyClosed,
    UnsafeArchive,
    WriterFailed,
)
from .state import TaskState
from .store import ProjectPaths, project_ids
from .verify import Head, Problem, VerifyReport, verify_project
from .writer import Appended, Ledger, Mode, init_project, open_ledger

__all__ = [
    "Appended",
    "AttemptOrderRejected",
    "AttemptStillOpen",
    "ChainBroken",
    "EventRejected",
    "Head",
    "InvalidEvent",
    "InvalidLedgerId",
    "Ledger",
    "LedgerDamaged",
    "LedgerError",
    "LedgerExists",
    "LedgerLocked",
    "LedgerNotFound",
    "Mode",
    "PointerMismatch",
    "Problem",
    "ProjectPaths",
    "TaskAlreadyClosed",
    "TaskState",
    "UnsafeArchive",
    "VerifyReport",
    "WriterFailed",
    "canonical",
    "init_project",
    "open_ledger",
    "project_ids",
    "sha256_hex",
    "verify_project",
]
