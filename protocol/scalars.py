"""Constrained scalars shared by the wire shapes: one definition each, so a bound (counts are
never negative, a hash is 64 lowercase hex digits) reads the same in every payload and its
JSON schema."""

from __future__ import annotations

from typing import Annotated

import msgspec

NonNegInt = Annotated[int, msgspec.Meta(ge=0)]
PosInt = Annotated[int, msgspec.Meta(ge=1)]
Rate = Annotated[float, msgspec.Meta(ge=0.0, le=1.0)]
Sha256 = Annotated[str, msgspec.Meta(pattern=r"^[0-9a-f]{64}$")]
