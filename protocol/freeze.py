"""The requirements freeze: what was approved, by whom, and whether it is still what runs.

Files in the input directory (``input/`` by convention):

- ``requirements.draft.md``: the working draft, generated from dialogue and edited by people.
- ``controller_profile.json``: which controller produced the draft (`ControllerProfile`).
- ``requirements.vN.md``: frozen version N, never rewritten.
- ``requirements.current.md``: a copy of the latest frozen version (what `negotiate` is
  given to plan from; a campaign checks its hash, and reads nothing else of it).
- ``freeze_meta.json``: the latest freeze (`FreezeMeta`): version, hash, approval.

`FreezeCheck` is the answer the campaign acts on: `execution_started` only when the freeze is
approved and the current text is byte for byte what was approved.
"""

from __future__ import annotations

import enum
from typing import Annotated

import msgspec

from .scalars import PosInt, Sha256

Approver = Annotated[
    str,
    msgspec.Meta(
        pattern=r"^[^\x00-\x1f\x7f]*\S[^\x00-\x1f\x7f]*$",
        max_length=200,
        description="Who approved: a non-blank name without control characters.",
    ),
]

DRAFT_FILE = "requirements.draft.md"
CURRENT_FILE = "requirements.current.md"
META_FILE = "freeze_meta.json"
PROFILE_FILE = "controller_profile.json"


def version_file(version: int) -> str:
    """The file name of frozen version `version` (``requirements.v3.md``)."""
    return f"requirements.v{version}.md"


class ControllerBackend(enum.StrEnum):
    HEURISTIC = "heuristic"
    COMMAND = "command"


class ControllerProfile(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    """Who wrote the draft: the built-in heuristic or an external controller command.

    `draft_sha256` lets a later `draft` run tell a generated draft from one people have edited
    since (which it must not overwrite without ``--force``).
    """

    backend: ControllerBackend
    dialogue_sha256: Sha256
    draft_sha256: Sha256
    created_at: str
    model: str | None = None
    command: list[str] = []
    timeout_sec: Annotated[float, msgspec.Meta(gt=0)] | None = None


class FreezeMeta(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    """The latest freeze. `sha256` is the hash of ``requirements.v{version}.md`` and of
    ``requirements.current.md``; `source_draft_sha256` the hash of the draft it came from."""

    version: PosInt
    sha256: Sha256
    source_draft_sha256: Sha256
    frozen_at: str
    approved: bool = False
    approved_by: Approver | None = None
    approved_at: str | None = None

    def __post_init__(self) -> None:
        if self.approved and (self.approved_by is None or self.approved_at is None):
            raise ValueError("an approved freeze names approved_by and approved_at - at `$`")
        if not self.approved and (self.approved_by is not None or self.approved_at is not None):
            raise ValueError("approved_by/approved_at given but approved is false - at `$`")


class FreezeDecision(enum.StrEnum):
    """The ledger event the campaign records for its start."""

    EXECUTION_STARTED = "execution_started"
    EXECUTION_BLOCKED_UNAPPROVED = "execution_blocked_unapproved"


class FreezeReason(enum.StrEnum):
    APPROVED_AND_CURRENT = "approved_and_current"
    NOT_FROZEN = "not_frozen"
    META_INVALID = "meta_invalid"
    CURRENT_MISSING = "current_missing"
    EDITED_AFTER_FREEZE = "edited_after_freeze"
    VERSION_MISSING = "version_missing"
    VERSION_EDITED = "version_edited"
    UNAPPROVED = "unapproved"


class FreezeCheck(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    """Whether execution may start under the freeze, and why (one reason, one sentence)."""

    decision: FreezeDecision
    reason: FreezeReason
    detail: str
    version: PosInt | None = None
    sha256: Sha256 | None = None
    approved_by: str | None = None
    approved_at: str | None = None
    draft_changed: bool = False

    @property
    def allowed(self) -> bool:
        return self.decision is FreezeDecision.EXECUTION_STARTED
