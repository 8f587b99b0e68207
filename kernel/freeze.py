"""The freeze rules: is execution allowed, and what does a `freeze` run do.

The runner reads the input directory and passes hashes in (`FreezeFacts`); these functions
decide. Integrity comes before approval: an approved freeze whose current text was edited
afterwards blocks execution, because what would run is not what was approved.
"""

from __future__ import annotations

import enum
from collections.abc import Collection

import msgspec

from protocol.freeze import (
    CURRENT_FILE,
    META_FILE,
    FreezeCheck,
    FreezeDecision,
    FreezeMeta,
    FreezeReason,
    version_file,
)


class FreezeFacts(msgspec.Struct, frozen=True):
    """What the runner found in the input directory.

    `meta` is None when ``freeze_meta.json`` is missing or unreadable (`meta_problem` then says
    why, or is None for missing). Hashes are None for missing files. `version_sha256` is the
    hash of the version file `meta` names. `version_hashes` maps every ``requirements.vN.md``
    present to its hash.
    """

    meta: FreezeMeta | None = None
    meta_problem: str | None = None
    current_sha256: str | None = None
    version_sha256: str | None = None
    draft_sha256: str | None = None
    version_hashes: dict[int, str] = {}


def assess_freeze(facts: FreezeFacts) -> FreezeCheck:
    """May execution start? Approved and current, or blocked with the first reason found."""
    meta = facts.meta
    if meta is None:
        if facts.meta_problem is not None:
            return _blocked(FreezeReason.META_INVALID, f"{META_FILE}: {facts.meta_problem}")
        return _blocked(
            FreezeReason.NOT_FROZEN,
            f"no {META_FILE}: run `runner requirements freeze --input-dir DIR --approve "
            "--approved-by NAME`",
        )

    def blocked(reason: FreezeReason, detail: str) -> FreezeCheck:
        return _check(FreezeDecision.EXECUTION_BLOCKED_UNAPPROVED, reason, detail, meta, facts)

    frozen = version_file(meta.version)
    if facts.current_sha256 is None:
        return blocked(FreezeReason.CURRENT_MISSING, f"{CURRENT_FILE} is missing")
    if facts.current_sha256 != meta.sha256:
        return blocked(
            FreezeReason.EDITED_AFTER_FREEZE,
            f"{CURRENT_FILE} was edited after freeze v{meta.version} "
            f"(sha256 {facts.current_sha256[:12]}, frozen {meta.sha256[:12]})",
        )
    if facts.version_sha256 is None:
        return blocked(FreezeReason.VERSION_MISSING, f"{frozen} is missing")
    if facts.version_sha256 != meta.sha256:
        return blocked(FreezeReason.VERSION_EDITED, f"{frozen} was edited after it was frozen")
    if not meta.approved:
        return blocked(
            FreezeReason.UNAPPROVED,
            f"freeze v{meta.version} is not approved: run `runner requirements freeze "
            "--input-dir DIR --approve --approved-by NAME`",
        )
    return _check(
        FreezeDecision.EXECUTION_STARTED,
        FreezeReason.APPROVED_AND_CURRENT,
        f"freeze v{meta.version} approved by {meta.approved_by} at {meta.approved_at}",
        meta,
        facts,
    )


def _blocked(reason: FreezeReason, detail: str) -> FreezeCheck:
    return FreezeCheck(FreezeDecision.EXECUTION_BLOCKED_UNAPPROVED, reason, detail)


def _check(
    decision: FreezeDecision,
    reason: FreezeReason,
    detail: str,
    meta: FreezeMeta,
    facts: FreezeFacts,
) -> FreezeCheck:
    return FreezeCheck(
        decision,
        reason,
        detail,
        version=meta.version,
        sha256=meta.sha256,
        approved_by=meta.approved_by,
        approved_at=meta.approved_at,
        draft_changed=facts.draft_sha256 not in (None, meta.source_draft_sha256),
    )


class FreezeAction(enum.StrEnum):
    NEW_VERSION = "new_version"
    APPROVE = "approve"
    UNCHANGED = "unchanged"
    REFUSE = "refuse"


class FreezePlan(msgspec.Struct, frozen=True):
    action: FreezeAction
    version: int
    detail: str


def plan_freeze(facts: FreezeFacts, *, frozen_sha256: str, approve: bool) -> FreezePlan:
    """What `runner requirements freeze` should do with a draft whose frozen text hashes to
    `frozen_sha256`.

    Refuses rather than lose work: when ``requirements.current.md`` holds text found in no
    frozen version (edited by hand), or ``freeze_meta.json`` is unreadable. The same draft
    frozen again is a no-op, or only adds the approval; anything else is version N+1, where N
    is the highest version file present (so a freeze interrupted half-way never reuses a
    number).
    """
    meta = facts.meta
    if meta is None and facts.meta_problem is not None:
        return _refuse(f"{META_FILE} is unreadable ({facts.meta_problem}); fix or remove it")
    if facts.current_sha256 is not None and facts.current_sha256 not in _values(
        facts.version_hashes
    ):
        return _refuse(
            f"{CURRENT_FILE} holds text that is in no frozen version (edited after the "
            f"freeze?); move the edits into the draft or remove {CURRENT_FILE}, then freeze again"
        )
    intact = (
        meta is not None
        and meta.sha256 == frozen_sha256
        and facts.current_sha256 == meta.sha256
        and facts.version_sha256 == meta.sha256
    )
    if meta is not None and intact:
        if approve and not meta.approved:
            return FreezePlan(
                FreezeAction.APPROVE, meta.version, f"approving freeze v{meta.version}"
            )
        state = "approved" if meta.approved else "not approved"
        return FreezePlan(
            FreezeAction.UNCHANGED,
            meta.version,
            f"the draft is already frozen as v{meta.version} ({state})",
        )
    version = max(facts.version_hashes, default=0) + 1
    return FreezePlan(FreezeAction.NEW_VERSION, version, f"freezing the draft as v{version}")


def _values(hashes: dict[int, str]) -> Collection[str]:
    return set(hashes.values())


def _refuse(detail: str) -> FreezePlan:
    return FreezePlan(FreezeAction.REFUSE, 0, detail)
