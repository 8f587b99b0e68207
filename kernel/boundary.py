"""Path scopes: gitignore-style globs matched with `pathspec`, and scope containment.

A scope is a pair of pattern lists: a path is inside when an allowed pattern matches it and no
forbidden pattern does (gitignore semantics for each list: ``**``, a leading ``/`` anchors, a
trailing ``/`` means a directory, a name without ``/`` matches at any depth, ``!`` re-includes).

Whether one scope lies inside another cannot be decided by matching strings, and glob
inclusion in general is expensive to decide exactly. `escapes` answers it on *witness paths*:
concrete paths made from every pattern of both scopes (each wildcard filled in three different
ways, bare names also placed under every directory the other witnesses name). A witness that the
inner scope allows and the outer refuses is a proven escape, reported with the pattern that let
it in. The check is conservative where it matters: what it reports is always a real escape; an
escape that needs a path no pattern hints at can be missed, which is why the QA review still
checks every changed file against the pack's own scope.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Sequence
from functools import lru_cache

import msgspec
import pathspec

_TOKENS = ("w", "", "w.x-y")
_DEEP = ((), ("w",), ("w", "x"))
_CLASS_CANDIDATES = "az09_-.AZ"


class Scope(msgspec.Struct, frozen=True):
    """Allowed and forbidden globs, relative to the workspace root."""

    allowed: tuple[str, ...]
    forbidden: tuple[str, ...] = ()

    def allows(self, path: str) -> bool:
        return _spec(self.allowed).match_file(path) and not _spec(self.forbidden).match_file(path)


class Escape(msgspec.Struct, frozen=True):
    """A path the inner scope allows and the outer refuses.

    `inner_index` is the position in the inner scope's allowed list of the pattern that lets
    `path` in; `forbidden_by` is the outer forbidden pattern that refuses it, or None when the
    path is simply outside every outer allowed pattern.
    """

    path: str
    inner_index: int
    inner_pattern: str
    forbidden_by: str | None


def matches(patterns: Sequence[str], path: str) -> bool:
    """Whether the gitignore-style `patterns` (as one list) match `path`."""
    return bool(_spec(tuple(patterns)).match_file(path))


def first_match(patterns: Sequence[str], path: str) -> int | None:
    """Index of the first positive pattern that matches `path` on its own."""
    for i, pattern in enumerate(patterns):
        if not pattern.startswith("!") and _spec((pattern,)).match_file(path):
            return i
    return None


def escapes(inner: Scope, outer: Scope) -> list[Escape]:
    """Witness paths `inner` allows and `outer` refuses: one per (inner pattern, reason)."""
    found: dict[tuple[int, str | None], Escape] = {}
    for path in sorted(_witness_set(inner, outer), key=_plainest_first):
        if not inner.allows(path) or outer.allows(path):
            continue
        index = first_match(inner.allowed, path)
        if index is None:  # allowed only through a re-include; attribute it to the list
            index = 0
        by = None
        if matches(outer.allowed, path):
            hit = first_match(outer.forbidden, path)
            by = outer.forbidden[hit] if hit is not None else "(forbidden list)"
        key = (index, by)
        if key not in found:
            found[key] = Escape(path, index, inner.allowed[index], by)
    return [found[k] for k in sorted(found, key=lambda k: (k[0], k[1] or ""))]


def _plainest_first(path: str) -> tuple[bool, int, str]:
    """Report the most readable witness: no dot-files from empty wildcards, short first."""
    return (any(part.startswith(".") for part in path.split("/")), len(path), path)


def _witness_set(inner: Scope, outer: Scope) -> set[str]:
    everything = (*inner.allowed, *inner.forbidden, *outer.allowed, *outer.forbidden)
    paths = {w for p in everything for w in witnesses(p)}
    names = {
        w for p in everything if _is_basename(p) for w in witnesses(p) if not w.startswith("d1/")
    }
    prefixes = {
        "/".join(parts[:depth])
        for parts in (path.split("/") for path in paths)
        for depth in range(1, len(parts))
    }
    paths.update(f"{prefix}/{name}" for prefix in prefixes for name in names)
    return paths


def _is_basename(pattern: str) -> bool:
    body = pattern.lstrip("!").rstrip("/")
    return "/" not in body


@lru_cache(maxsize=4096)
def witnesses(pattern: str) -> tuple[str, ...]:
    """Concrete paths `pattern` matches (as a positive pattern), for containment checks."""
    positive = pattern.strip().removeprefix("!")
    if not positive or positive.startswith("#"):
        return ()
    directory = positive.endswith("/")
    body = positive.strip("/")
    floating = "/" not in body and not positive.startswith("/")
    segments = body.split("/")
    last = segments[-1]
    # A last segment with a dot names files (cli.py, *.lock); one without names a directory
    # whose files are meant (src, docs/, Makefile alike: harmless); ``**`` expands itself.
    file_like = last == "**" or ("." in last and not directory)
    out: list[str] = []
    for mode in range(len(_TOKENS)):
        parts: list[str] = []
        for segment in segments:
            if segment == "**":
                parts.extend(_DEEP[mode])
            else:
                parts.append(_fill(segment, mode))
        if any(not p for p in parts) or not parts:
            continue
        base = "/".join(parts) + ("" if file_like else "/f1")
        out.append(base)
        if floating:
            out.append(f"d1/{base}")
    spec = _spec((positive,))
    return tuple(dict.fromkeys(p for p in out if spec.match_file(p)))


def _fill(segment: str, mode: int) -> str:
    """The segment with each wildcard replaced the `mode`-th way; escapes resolved."""
    out = []
    i = 0
    while i < len(segment):
        ch = segment[i]
        if ch == "\\" and i + 1 < len(segment):
            out.append(segment[i + 1])
            i += 2
        elif ch == "*":
            while i < len(segment) and segment[i] == "*":
                i += 1
            out.append(_TOKENS[mode])
        elif ch == "?":
            out.append("q")
            i += 1
        elif ch == "[":
            end = segment.find("]", i + 2)
            if end == -1:
                out.append(ch)
                i += 1
                continue
            out.append(_class_member(segment[i : end + 1]))
            i = end + 1
        else:
            out.append(ch)
            i += 1
    return "".join(out)


def _class_member(char_class: str) -> str:
    """A character the bracket expression matches (shell-style ``!`` or ``^`` negation)."""
    inner = char_class[1:-1]
    if inner[:1] in ("!", "^"):
        inner = "^" + inner[1:]
    try:
        rx = re.compile(f"[{inner}]")
    except re.error:
        return "x"
    return next((c for c in _CLASS_CANDIDATES if rx.fullmatch(c)), "x")


@lru_cache(maxsize=1024)
def _spec(patterns: tuple[str, ...]) -> pathspec.GitIgnoreSpec:
    return pathspec.GitIgnoreSpec.from_lines(patterns)


def scope_of(allowed: Iterable[str], forbidden: Iterable[str] = ()) -> Scope:
    return Scope(tuple(allowed), tuple(forbidden))
