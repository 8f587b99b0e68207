"""The one owner of what a workspace glob means: the QA reviewer, the boundary guard,
negotiation, intake validation and the dependency policy all match paths through this module.

Globs use gitignore syntax (``*`` stays inside one directory, ``**`` crosses any number,
``[abc]`` classes, a trailing ``/`` names a directory and everything below it) through
`pathspec`, the matcher black, pip-tools and others rely on, rather than a hand-written glob.
One difference from a ``.gitignore`` file, on purpose: every pattern is anchored at the
workspace root. In a ``.gitignore``, ``README.md`` matches at any depth; here it means the root
README only, so that allowing ``README.md`` never allows ``docs/README.md`` (write
``**/README.md`` for any depth). Negation (``!``) has no meaning in a list of separate patterns:
a leading ``!`` or ``#`` is literal. Dotfiles get no special treatment: ``*`` matches ``.env``.

A glob is usable when `protocol.scope_pattern_problem` accepts its form (relative, no ``..``,
no empty or ``.`` components: a pack with such a glob never decodes) and pathspec can compile
it (`parse_problem`: a trailing lone ``\\``, a reversed range ``[z-a]``). `glob_problem` is both.

Paths are workspace-relative strings with ``/`` separators, as git prints them; `normalize_path`
is their one canonical form. A path that is absolute or climbs with ``..`` is *unsafe*: it
never matches and is never looked up on disk.
"""

from __future__ import annotations

import re
import warnings
from collections.abc import Iterable
from functools import lru_cache

import msgspec
import pathspec

from protocol import ScopeCheck, StepPackView, scope_pattern_problem

from .errors import ScopePatternError

_WINDOWS_DRIVE = re.compile(r"^[A-Za-z]:")


@lru_cache(maxsize=16384)
def normalize_path(path: str) -> str | None:
    """The canonical workspace-relative form of `path`, or None when it is unsafe.

    Drops ``.`` and empty components (``./a//b`` is ``a/b``); refuses absolute paths (``/x``,
    ``C:/x``, ``\\\\server``), any ``..`` component, NUL bytes and the empty path. A usable glob
    is already in this form (see `protocol.scope_pattern_problem`), so matching a normalised
    path against it compares like with like.
    """
    if not path or "\x00" in path:
        return None
    if path.startswith(("/", "\\")) or _WINDOWS_DRIVE.match(path):
        return None
    parts = [p for p in path.split("/") if p not in ("", ".")]
    if not parts or ".." in parts:
        return None
    return "/".join(parts)


def is_under(path: str, directory: str) -> bool:
    """True when normalised `path` lies strictly inside `directory` (both workspace-relative)."""
    return path.startswith(directory.rstrip("/") + "/")


@lru_cache(maxsize=4096)
def _spec(patterns: tuple[str, ...]) -> pathspec.PathSpec[pathspec.Pattern]:
    """Anchored gitignore-style patterns as one matcher (any of them matches). Raises
    ValueError (or re.error) when one cannot be compiled."""
    return pathspec.PathSpec.from_lines("gitignore", ["/" + p for p in patterns])


@lru_cache(maxsize=4096)
def parse_problem(pattern: str) -> str | None:
    """Why pathspec cannot compile `pattern`, or None (says nothing about its form).

    A pattern Python compiles with a FutureWarning (``[[`` in a character class: "possible
    nested set") is refused too: a later Python may read it differently, and a scope must mean
    the same thing on every interpreter that reviews it.
    """
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", FutureWarning)
            _spec((pattern,))
    except FutureWarning as exc:
        return f"not a valid glob: ambiguous character class ({exc})"
    except re.error as exc:
        return f"not a valid glob: {exc.msg}"
    except ValueError as exc:  # pathspec's own errors quote the anchored form ("/" + pattern)
        return f"not a valid glob: {str(exc).replace(repr('/' + pattern), repr(pattern))}"
    return None


@lru_cache(maxsize=4096)
def glob_problem(pattern: str) -> str | None:
    """Why `pattern` cannot be used as a workspace glob, or None."""
    return scope_pattern_problem(pattern) or parse_problem(pattern)


def _hit(patterns: tuple[str, ...], norm: str | None) -> bool:
    """Do usable `patterns` (as one list) match the normalised path `norm`? None (an unsafe
    path) matches nothing."""
    return norm is not None and bool(patterns) and _spec(patterns).match_file(norm)


def matches(pattern: str, path: str) -> bool:
    """Does `pattern` match workspace path `path`? An unusable pattern matches nothing: call
    `glob_problem` first where that must be an error (`ScopeRules` does)."""
    return glob_problem(pattern) is None and _hit((pattern,), normalize_path(path))


def glob_matches(pattern: str, paths: Iterable[str]) -> list[str]:
    """The paths (sorted) that `pattern` matches; none when it is unusable."""
    if glob_problem(pattern) is not None:
        return []
    return sorted(p for p in paths if _hit((pattern,), normalize_path(p)))


class ScopeRules(msgspec.Struct, frozen=True):
    """Allowed and forbidden globs; a path is in scope when an allowed glob matches it and no
    forbidden one does (forbidden wins over allowed).

    Every glob is checked on construction (`ScopePatternError` names the first unusable one by
    `allowed_at[i]` or `forbidden_at[i]`), so a `ScopeRules` that exists can be matched
    without failing.
    """

    allowed: tuple[str, ...]
    forbidden: tuple[str, ...] = ()
    allowed_at: str = "$.allowed_paths"
    forbidden_at: str = "$.forbidden_paths"

    def __post_init__(self) -> None:
        for at, patterns in ((self.allowed_at, self.allowed), (self.forbidden_at, self.forbidden)):
            for i, pattern in enumerate(patterns):
                problem = glob_problem(pattern)
                if problem:
                    raise ScopePatternError(f"{at}[{i}]", pattern, problem)

    @classmethod
    def of(cls, view: StepPackView) -> ScopeRules:
        """A pack's rules; errors name the JSON path the pack used (``$.scope.allowed_paths``)."""
        return cls(
            allowed=view.allowed_paths,
            forbidden=view.forbidden_paths,
            allowed_at=view.allowed_paths_at,
            forbidden_at=view.forbidden_paths_at,
        )

    def allows(self, path: str) -> bool:
        norm = normalize_path(path)
        return _hit(self.allowed, norm) and not _hit(self.forbidden, norm)

    def first_allowed(self, path: str) -> int | None:
        """Index of the first allowed glob that matches `path`."""
        norm = normalize_path(path)
        return next((i for i, p in enumerate(self.allowed) if _hit((p,), norm)), None)

    def forbidden_matches(self, path: str) -> list[str]:
        """The forbidden globs that match `path`, in order."""
        return self._forbidden_hits(normalize_path(path))

    def check(self, path: str) -> ScopeCheck:
        """Allowed-ness and the forbidden globs `path` matches, for a review to record. An
        unsafe path is allowed by nothing."""
        norm = normalize_path(path)
        return ScopeCheck(
            file=path,
            allowed=_hit(self.allowed, norm),
            forbidden_matches=self._forbidden_hits(norm),
        )

    def _forbidden_hits(self, norm: str | None) -> list[str]:
        if not _hit(self.forbidden, norm):
            return []
        return [p for p in self.forbidden if _hit((p,), norm)]
