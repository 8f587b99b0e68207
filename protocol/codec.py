"""Strict JSON decoding and encoding for every wire payload.

All decoding goes through `decode`, so every failure (bytes that are not JSON, a wrong type, a
missing field, a cross-field rule) comes out as one `ProtocolError` with the JSON path.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any, TypeVar

import msgspec
import msgspec.inspect as mi

from .errors import ProtocolError
from .ids import ID_PATTERN

T = TypeVar("T")

_AT_PATH = re.compile(r"^(?P<reason>.*?) - at `(?P<path>\$[^`]*)`(?P<rest>.*)$", re.DOTALL)
_PATH_STEP = re.compile(r"\.(?P<field>[^.\[]+)|\[(?P<index>[^\]]*)\]")
_encoder = msgspec.json.Encoder()
# Regex failures are unreadable; say what the pattern means instead.
_FRIENDLY_PATTERNS = {
    f"Expected `str` matching regex {ID_PATTERN!r}": (
        "expected a safe id: 1-128 of [A-Za-z0-9._-], starting with a letter or digit, no '..'"
    ),
}


def _split_message(message: str) -> tuple[str, str]:
    """Split msgspec's "reason - at `$.a.b`" into (reason, path).

    Cross-field rules report a path relative to their own Struct ("- at `$.gates[2]`" appended
    by msgspec to a message that already names the field as "... - at `$.x`"): the outer
    location is a prefix of where the problem is, so the two are joined.
    """
    match = _AT_PATH.match(message)
    if match is None:
        return _FRIENDLY_PATTERNS.get(message, message), "$"
    reason, path, rest = match["reason"], match["path"], match["rest"]
    outer = _AT_PATH.match("x" + rest) if rest else None
    if outer is not None:
        # Inner path is relative to the outer Struct: "$.field" under "$.gates[2]".
        path = outer["path"] + path[1:]
    return _FRIENDLY_PATTERNS.get(reason, reason), path


def _enum_at(info: mi.Type, steps: list[re.Match[str]]) -> list[str]:
    """The values of the enum or literal found by walking `steps` of a JSON path through
    `info` (every branch of a union); empty when the path leads to none."""
    if isinstance(info, mi.UnionType):
        return [v for branch in info.types for v in _enum_at(branch, steps)]
    if not steps:
        if isinstance(info, mi.EnumType):
            return [str(m.value) for m in info.cls]
        if isinstance(info, mi.LiteralType):
            return [str(v) for v in info.values]
        return []
    step, rest = steps[0], steps[1:]
    if step["field"] is not None and isinstance(info, mi.StructType):
        field = next((f for f in info.fields if f.encode_name == step["field"]), None)
        return _enum_at(field.type, rest) if field else []
    if step["index"] is not None:
        if isinstance(info, mi.ListType | mi.SetType | mi.FrozenSetType | mi.VarTupleType):
            return _enum_at(info.item_type, rest)
        if isinstance(info, mi.DictType):
            return _enum_at(info.value_type, rest)
    return []


def _explained(reason: str, path: str, type: Any) -> str:
    """msgspec names a bad enum value but not the good ones; a person fixing the file needs
    those too, so they are looked up from the type at the error's path."""
    if not reason.startswith("Invalid enum value"):
        return reason
    try:
        values = _enum_at(mi.type_info(type), list(_PATH_STEP.finditer(path[1:])))
    except (TypeError, ValueError):
        return reason
    return f"{reason}; expected one of: {', '.join(dict.fromkeys(values))}" if values else reason


def decode(raw: bytes | str, type: type[T], *, source: str | None = None) -> T:
    """Decode JSON `raw` as `type`, raising `ProtocolError` and nothing else."""
    try:
        return msgspec.json.decode(raw, type=type, strict=True)
    except msgspec.ValidationError as exc:
        reason, path = _split_message(str(exc))
        raise ProtocolError(_explained(reason, path, type), path=path, source=source) from None
    except msgspec.DecodeError as exc:
        raise ProtocolError(f"not valid JSON: {exc}", source=source) from None
    except UnicodeDecodeError as exc:  # msgspec's own error for bad UTF-8 inside a string
        raise ProtocolError(
            f"not valid JSON: invalid UTF-8 at byte {exc.start} ({exc.reason})", source=source
        ) from None
    except (RecursionError, MemoryError) as exc:
        raise ProtocolError(
            f"payload too deeply nested or too large ({exc.__class__.__name__})", source=source
        ) from None


def convert(obj: Any, type: type[T], *, source: str | None = None) -> T:
    """Like `decode`, for an already parsed Python object (a dict from another decoder)."""
    try:
        return msgspec.convert(obj, type=type, strict=True)
    except msgspec.ValidationError as exc:
        reason, path = _split_message(str(exc))
        raise ProtocolError(_explained(reason, path, type), path=path, source=source) from None
    except RecursionError:
        raise ProtocolError("payload too deeply nested", source=source) from None


def read(path: str | Path, type: type[T]) -> T:
    """Read and decode a file; unreadable files are a `ProtocolError` naming the file too."""
    p = Path(path)
    try:
        raw = p.read_bytes()
    except OSError as exc:
        raise ProtocolError(f"cannot read file: {exc.strerror or exc}", source=str(p)) from None
    return decode(raw, type, source=str(p))


def encode(obj: Any) -> bytes:
    """Compact JSON, fields in declaration order."""
    return _encoder.encode(obj)


def encode_pretty(obj: Any) -> bytes:
    """Indented JSON with a trailing newline, for files people read."""
    return msgspec.json.format(_encoder.encode(obj), indent=2) + b"\n"


def to_builtins(obj: Any) -> Any:
    return msgspec.to_builtins(obj)
