from __future__ import annotations

import pytest

from kernel.freeze import FreezeAction, FreezeFacts, assess_freeze, plan_freeze
from protocol import FreezeDecision, FreezeMeta, FreezeReason

H1 = "1" * 64
H2 = "2" * 64
H3 = "3" * 64

APPROVED = FreezeMeta(
    version=2,
    sha256=H1,
    source_draft_sha256=H1,
    frozen_at="2026-01-01T00:00:00Z",
    approved=True,
    approved_by="Ann",
    approved_at="2026-01-01T00:01:00Z",
)
UNAPPROVED = FreezeMeta(version=2, sha256=H1, source_draft_sha256=H1, frozen_at="t")


def facts(meta: FreezeMeta | None = APPROVED, **kw: object) -> FreezeFacts:
    base: dict[str, object] = {
        "meta": meta,
        "current_sha256": H1,
        "version_sha256": H1,
        "draft_sha256": H1,
        "version_hashes": {1: H3, 2: H1},
    }
    base.update(kw)
    return FreezeFacts(**base)  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("given", "reason"),
    [
        (facts(), FreezeReason.APPROVED_AND_CURRENT),
        (facts(None), FreezeReason.NOT_FROZEN),
        (facts(None, meta_problem="$: not valid JSON"), FreezeReason.META_INVALID),
        (facts(current_sha256=None), FreezeReason.CURRENT_MISSING),
        (facts(current_sha256=H2), FreezeReason.EDITED_AFTER_FREEZE),
        (facts(version_sha256=None), FreezeReason.VERSION_MISSING),
        (facts(version_sha256=H2), FreezeReason.VERSION_EDITED),
        (facts(UNAPPROVED), FreezeReason.UNAPPROVED),
        # Integrity before approval: edited and unapproved reports the edit.
        (facts(UNAPPROVED, current_sha256=H2), FreezeReason.EDITED_AFTER_FREEZE),
    ],
)
def test_assess(given: FreezeFacts, reason: FreezeReason) -> None:
    check = assess_freeze(given)
    assert check.reason is reason
    expected = (
        FreezeDecision.EXECUTION_STARTED
        if reason is FreezeReason.APPROVED_AND_CURRENT
        else FreezeDecision.EXECUTION_BLOCKED_UNAPPROVED
    )
    assert check.decision is expected
    assert check.allowed is (expected is FreezeDecision.EXECUTION_STARTED)
    assert check.detail


def test_assess_notes_a_draft_changed_since_the_freeze() -> None:
    assert not assess_freeze(facts()).draft_changed
    check = assess_freeze(facts(draft_sha256=H2))
    assert check.allowed and check.draft_changed


@pytest.mark.parametrize(
    ("given", "frozen", "approve", "action", "version"),
    [
        (facts(None, current_sha256=None, version_sha256=None, version_hashes={}), H1, False,
         FreezeAction.NEW_VERSION, 1),
        (facts(), H1, True, FreezeAction.UNCHANGED, 2),
        (facts(UNAPPROVED), H1, False, FreezeAction.UNCHANGED, 2),
        (facts(UNAPPROVED), H1, True, FreezeAction.APPROVE, 2),
        (facts(), H2, True, FreezeAction.NEW_VERSION, 3),
        # Current restored from v1 by hand: its text is frozen, so a new version may replace it.
        (facts(current_sha256=H3), H1, True, FreezeAction.NEW_VERSION, 3),
        # A crash after writing v3 and current but before the meta: v4, never v3 again.
        (facts(current_sha256=H2, version_hashes={1: H3, 2: H1, 3: H2}), H2, True,
         FreezeAction.NEW_VERSION, 4),
        (facts(current_sha256=H2, version_hashes={2: H1}), H1, True, FreezeAction.REFUSE, 0),
        (facts(None, meta_problem="bad"), H1, True, FreezeAction.REFUSE, 0),
        (facts(None, current_sha256=H1, version_sha256=None, version_hashes={}), H1, True,
         FreezeAction.REFUSE, 0),
    ],
)  # fmt: skip
def test_plan_freeze(
    given: FreezeFacts, frozen: str, approve: bool, action: FreezeAction, version: int
) -> None:
    plan = plan_freeze(given, frozen_sha256=frozen, approve=approve)
    assert (plan.action, plan.version) == (action, version)
    assert plan.detail
