"""The conformance report written beside a compiled tier3 master contract."""

from __future__ import annotations

import msgspec

from .ids import SafeId
from .scalars import Sha256


class HeadingCheck(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    """One required heading: present in the contract or not, and on which line (1-based)."""

    heading: str
    present: bool
    line: int | None = None


class ConformanceReport(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    """Does the compiled contract carry every heading the template promises?"""

    task_id: SafeId
    run_id: SafeId
    template_sha256: Sha256
    contract_sha256: Sha256
    conformant: bool
    headings: list[HeadingCheck]
    missing: list[str] = []
