"""Scope containment: does every path one scope allows lie inside another?

Matching is `kernel.scope`'s (anchored gitignore-style globs, forbidden wins over allowed);
this module adds only containment, which the guard needs to hold a StepPack inside the frozen
boundary. Whether one scope lies inside another cannot be decided by matching strings, and glob
inclusion in general is expensive to decide exactly. `escapes` answers it on *witness paths*:
concrete paths made from every pattern of both scopes (each wildcard filled in three different
ways; the tail of a ``**/`` pattern also placed under every directory the other witnesses
name). A witness that the inner scope allows and the outer refuses is a proven escape, reported
with the pattern that let it in. The check is conservative where it matters: what it reports is
always a real escape; an escape that needs a path no pattern hints at can be missed, which is
why the QA review still checks every changed file against the pack's own scope.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from functools import lru_cache

import msgspec

from protocol import BoundarySnapshot

from .scope import ScopeRules, matches

_TOKENS = ("w", "", "w.x-y")
_DEEP = ((), ("w",), ("w", "x"))
_CLASS_CANDIDATES = "az09_-.AZ"


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


def task_scope(
    allowed: Sequence[str], forbidden: Sequence[str], boundary: BoundarySnapshot | None
) -> tuple[list[str], list[str]]:
    """A task's scope under a frozen boundary: its own allowed globs, else the boundary's; its
    own forbidden globs, then the boundary's (each once). Negotiation and the planner both
    apply it, so a task never loses its boundary's forbidden paths, however it was made."""
    if boundary is None:
        return list(allowed), list(dict.fromkeys(forbidden))
    return (
        list(allowed) or list(boundary.allowed_paths),
        list(dict.fromkeys([*forbidden, *boundary.forbidden_paths])),
    )


def escapes(inner: ScopeRules, outer: ScopeRules) -> list[Escape]:
    """Witness paths `inner` allows and `outer` refuses: one per (inner pattern, reason)."""
    found: dict[tuple[int, str | None], Escape] = {}
    for path in sorted(_witness_set(inner, outer), key=_plainest_first):
        index = inner.first_allowed(path)
        if index is None or not inner.allows(path) or outer.allows(path):
            continue
        by = None
        if outer.first_allowed(path) is not None:
            by = outer.forbidden_matches(path)[0]
        key = (index, by)
        if key not in found:
            found[key] = Escape(path, index, inner.allowed[index], by)
    return [found[k] for k in sorted(found, key=lambda k: (k[0], k[1] or ""))]


def _plainest_first(path: str) -> tuple[bool, int, str]:
    """Report the most readable witness: no dot-files from empty wildcards, short first."""
    return (any(part.startswith(".") for part in path.split("/")), len(path), path)


def _witness_set(inner: ScopeRules, outer: ScopeRules) -> set[str]:
    everything = (*inner.allowed, *inner.forbidden, *outer.allowed, *outer.forbidden)
    paths = {w for p in everything for w in witnesses(p)}
    tails = {w for p in everything if p.startswith("**/") for w in witnesses(p[3:])}
    prefixes = {
        "/".join(parts[:depth])
        for parts in (path.split("/") for path in paths)
        for depth in range(1, len(parts))
    }
    paths.update(f"{prefix}/{tail}" for prefix in prefixes for tail in tails)
    return paths


@lru_cache(maxsize=4096)
def witnesses(pattern: str) -> tuple[str, ...]:
    """Concrete paths `pattern` matches, for containment checks (none when it is unusable)."""
    directory = pattern.endswith("/")
    segments = pattern.strip("/").split("/")
    last = segments[-1]
    # A last segment with a dot names files (cli.py, *.lock); one without may name a file
    # (Makefile) or a directory whose files are meant (src, docs/), so it gets both witnesses
    # (the filter below drops the file for a trailing /); ``**`` expands itself.
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
        base = "/".join(parts)
        out += [base] if file_like else [base, f"{base}/f1"]
    return tuple(dict.fromkeys(p for p in out if matches(pattern, p)))


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
