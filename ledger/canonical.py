"""RFC 8785 canonical bytes of a ledger record, and its SHA-256.

msgspec with sorted keys writes exactly the RFC 8785 (JCS) form for the values ledger events
may hold, which `protocol.ledger_events` restricts to: strings, booleans, null, integers within
+-(2^53 - 1) (written as plain digits, as JCS writes such numbers), arrays, and objects whose
member names are ASCII (so msgspec's code-point ordering equals JCS's UTF-16 ordering).
String escaping matches JCS: ``\\"`` and ``\\\\``, the short forms ``\\b \\t \\n \\f \\r``,
``\\u00xx`` (lowercase hex) for other control characters, everything else (DEL, U+2028,
non-ASCII) as raw UTF-8. tests/ledger/test_canonical.py checks this against RFC 8785's own
examples. A string holding a lone surrogate has no UTF-8 form and is refused.
"""

from __future__ import annotations

import hashlib
from typing import Any

import msgspec

from .errors import InvalidEvent

_encoder = msgspec.json.Encoder(order="sorted")


def canonical(obj: Any) -> bytes:
    """The RFC 8785 bytes of `obj` (a record, an event, or plain JSON values)."""
    try:
        return _encoder.encode(obj)
    except UnicodeEncodeError as exc:
        raise InvalidEvent(f"event holds a string that is not valid Unicode: {exc}") from None
    except (TypeError, OverflowError) as exc:
        raise InvalidEvent(f"event has no canonical JSON form: {exc}") from None


def sha256_hex(data: bytes | bytearray | memoryview) -> str:
    return hashlib.sha256(data).hexdigest()
