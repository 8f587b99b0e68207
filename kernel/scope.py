"""Which workspace paths a step may touch, where its evidence may live, and which changes the
dependency policy governs.

Scope globs use gitignore syntax (``*`` stays inside one directory, ``**`` crosses any number,
``[abc]`` classes, a trailing ``/`` names a directory and everything below it) through
`pathspec`, the matcher black, pip-tools and others rely on, rather than a hand-written glob.
One difference from a ``.gitignore`` file, on purpose: every scope pattern is anchored at the
workspace root. In a ``.gitignore``, ``README.md`` matches at any depth; in a scope it means the
root README only, so that allowing ``README.md`` never allows ``docs/README.md``. Negation
(``!``) has no meaning in a list of separate patterns: a leading ``!`` or ``#`` is literal.

Paths are workspace-relative strings with ``/`` separators, as git prints them. A path that is
absolute or climbs with ``..`` is *unsafe*: it never matches an allowed pattern and is never
looked up on disk.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from functools import lru_cache
from typing import Literal

import msgspec
import pathspec

from protocol import DependencyPolicy, ScopeCheck, StepPackView

from .errors import ScopePatternError

DependencyKind = Literal["manifest", "lockfile", "ci"]

# Files whose change adds, removes or pins dependencies, or changes what CI runs. Manifests and
# lockfiles count at any depth (a monorepo's packages/web/package.json is still a manifest); CI
# configuration counts where CI services read it, at the root.
_DEPENDENCY_FILES: dict[DependencyKind, tuple[str, ...]] = {
    "manifest": (
        "pyproject.toml", "setup.py", "setup.cfg", "Pipfile", "requirements*.txt",
        "requirements*.in", "constraints*.txt", "environment.yml", "environment.yaml",
        "package.json", "Cargo.toml", "go.mod", "Gemfile", "composer.json", "pom.xml",
        "build.gradle", "build.gradle.kts",
    ),
    "lockfile": (
        "poetry.lock", "uv.lock", "Pipfile.lock", "pdm.lock", "package-lock.json",
        "npm-shrinkwrap.json", "pnpm-lock.yaml", "yarn.lock", "bun.lockb", "bun.lock",
        "Cargo.lock", "go.sum", "Gemfile.lock", "composer.lock",
    ),
    "ci": (
        "/.github/workflows/", "/.gitlab-ci.yml", "/.circleci/", "/.travis.yml",
        "/azure-pipelines.yml", "/Jenkinsfile", "/.buildkite/", "/bitbucket-pipelines.yml",
    ),
}  # fmt: skip

_WINDOWS_DRIVE = re.compile(r"^[A-Za-z]:")


def normalize_path(path: str) -> str | None:
    """The canonical workspace-relative form of `path`, or None when it is unsafe.

    Drops ``.`` and empty components (``./a//b`` is ``a/b``); refuses absolute paths (``/x``,
    ``C:/x``, ``\\\\server``), any ``..`` component, NUL bytes and the empty path.
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
def _compile(pattern: str) -> pathspec.PathSpec[pathspec.Pattern]:
    """One anchored gitignore-style pattern. Raises ValueError (or re.error) if unusable."""
    return pathspec.PathSpec.from_lines("gitignore", ["/" + pattern])


@lru_cache(maxsize=4096)
def glob_problem(pattern: str) -> str | None:
    """Why `pattern` cannot be used as a workspace glob, or None."""
    if not pattern.strip():
        return "empty pattern"
    if normalize_path(pattern.rstrip("/")) is None:
        return "absolute, or climbs out of the workspace with '..'"
    try:
        _compile(pattern)
    except (ValueError, re.error) as exc:
        return str(exc)
    return None


def matches(pattern: str, path: str) -> bool:
    """Does the anchored gitignore-style `pattern` match workspace path `path`?

    Unsafe paths match nothing; so do unusable patterns (call `glob_problem` first where an
    unusable pattern must be an error rather than a non-match).
    """
    norm = normalize_path(path)
    if norm is None or glob_problem(pattern) is not None:
        return False
    return _compile(pattern).match_file(norm)


class ScopeRules(msgspec.Struct, frozen=True):
    """A step's allowed and forbidden globs, checked to be usable once."""

    allowed: tuple[str, ...]
    forbidden: tuple[str, ...]

    @classmethod
    def of(cls, view: StepPackView) -> ScopeRules:
        """The rules of a pack; raises `ScopePatternError` naming the first unusable glob."""
        for field, patterns in (
            ("allowed_paths", view.allowed_paths),
            ("forbidden_paths", view.forbidden_paths),
        ):
            for i, pattern in enumerate(patterns):
                problem = glob_problem(pattern)
                if problem:
                    raise ScopePatternError(f"{field}[{i}]", pattern, problem)
        return cls(allowed=view.allowed_paths, forbidden=view.forbidden_paths)

    def check(self, path: str) -> ScopeCheck:
        """Allowed-ness and the forbidden globs `path` matches (forbidden wins over allowed).
        An unsafe path is allowed by nothing."""
        norm = normalize_path(path)
        if norm is None:
            return ScopeCheck(file=path, allowed=False)
        return ScopeCheck(
            file=path,
            allowed=any(_compile(p).match_file(norm) for p in self.allowed),
            forbidden_matches=[p for p in self.forbidden if _compile(p).match_file(norm)],
        )


@lru_cache(maxsize=1)
def _dependency_specs() -> dict[DependencyKind, pathspec.PathSpec[pathspec.Pattern]]:
    return {
        kind: pathspec.PathSpec.from_lines("gitignore", lines)
        for kind, lines in _DEPENDENCY_FILES.items()
    }


def dependency_kind(path: str) -> DependencyKind | None:
    """Whether `path` is a dependency manifest, a lockfile, CI configuration, or none."""
    norm = normalize_path(path)
    if norm is None:
        return None
    for kind, spec in _dependency_specs().items():
        if spec.match_file(norm):
            return kind
    return None


def dependency_violation(path: str, policy: DependencyPolicy, *, in_scope: bool) -> str | None:
    """Why changing `path` breaks `policy`, or None.

    - a manifest may change when the policy allows manifest changes or new dependencies
      (``allow_dependency_manifest_changes``, ``allow_new_dependencies`` or mode
      ``allow-new-dependencies``: a new dependency is a manifest change);
    - a lockfile may change when it allows lockfile changes or new dependencies;
    - CI configuration may change when ``allow_ci_changes`` is true, or when
      ``allow_ci_workflow_changes_in_scope`` is true and the file is in the allowed scope.
      Unset CI flags allow nothing.
    """
    kind = dependency_kind(path)
    new_deps = policy.allow_new_dependencies or policy.mode == "allow-new-dependencies"
    if kind == "manifest" and not (policy.allow_dependency_manifest_changes or new_deps):
        return f"{path}: dependency manifest changed; the policy allows no manifest changes"
    if kind == "lockfile" and not (policy.allow_lockfile_changes or new_deps):
        return f"{path}: lockfile changed; the policy allows no lockfile changes"
    if kind == "ci":
        if policy.allow_ci_changes is True:
            return None
        if policy.allow_ci_workflow_changes_in_scope is True and in_scope:
            return None
        if policy.allow_ci_workflow_changes_in_scope is True:
            return f"{path}: CI configuration changed outside the allowed paths"
        return f"{path}: CI configuration changed; the policy allows no CI changes"
    return None


def glob_matches(pattern: str, paths: Iterable[str]) -> list[str]:
    """The paths (sorted) that anchored `pattern` matches; none when it is unusable."""
    if glob_problem(pattern) is not None:
        return []
    spec = _compile(pattern)
    return sorted(p for p in paths if (n := normalize_path(p)) is not None and spec.match_file(n))
