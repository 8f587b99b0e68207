"""Identifiers that end up in file names: project, task, run, step and thread ids.

They are validated at the wire boundary so that no later layer can be tricked into writing
outside its directory: one component, no separators, no ``..``, no control characters, bounded
length. The same rule serves msgspec decoding (`SafeId`) and direct calls (`check_id`).
"""

from __future__ import annotations

import re
from typing import Annotated

import msgspec

from .errors import ProtocolError

MAX_ID_LENGTH = 128
ID_PATTERN = r"^(?!.*\.\.)(?!.*\n)[A-Za-z0-9][A-Za-z0-9._-]{0,127}$"
_ID_RE = re.compile(ID_PATTERN)

SafeId = Annotated[
    str,
    msgspec.Meta(
        pattern=ID_PATTERN,
        max_length=MAX_ID_LENGTH,
        description="One path component: letters, digits, '.', '_', '-'; no '..'; max 128.",
    ),
]


def is_safe_id(value: str) -> bool:
    return bool(_ID_RE.fullmatch(value))


def check_id(kind: str, value: str) -> str:
    """Return `value` if it is a safe id, else raise `ProtocolError` naming `kind`."""
    if not isinstance(value, str) or not is_safe_id(value):
        shown = repr(value)[:80]
        raise ProtocolError(
            f"invalid {kind} {shown}: use 1-{MAX_ID_LENGTH} of [A-Za-z0-9._-], starting with a "
            "letter or digit, without '..'",
            path="",  # a value on its own (an option, an argument), not a place in a document
        )
    return value
