"""Which changed files the dependency policy governs, and whether a change breaks it.

The file lists are globs like any other scope (`kernel.scope`, anchored at the workspace root),
so "is this a lockfile?" and "is this path allowed?" are answered by the same matcher.
"""

from __future__ import annotations

from typing import Literal

from protocol import DependencyPolicy

from .scope import ScopeRules

DependencyKind = Literal["manifest", "lockfile", "ci"]


def _any_depth(*names: str) -> tuple[str, ...]:
    return tuple(f"**/{name}" for name in names)


# Files whose change adds, removes or pins dependencies, or changes what CI runs. Manifests and
# lockfiles count at any depth (a monorepo's packages/web/package.json is still a manifest); CI
# configuration counts where CI services read it, at the root.
_KINDS: dict[DependencyKind, ScopeRules] = {
    "manifest": ScopeRules(_any_depth(
        "pyproject.toml", "setup.py", "setup.cfg", "Pipfile", "requirements*.txt",
        "requirements*.in", "constraints*.txt", "environment.yml", "environment.yaml",
        "package.json", "Cargo.toml", "go.mod", "Gemfile", "composer.json", "pom.xml",
        "build.gradle", "build.gradle.kts",
    )),
    "lockfile": ScopeRules(_any_depth(
        "poetry.lock", "uv.lock", "Pipfile.lock", "pdm.lock", "package-lock.json",
        "npm-shrinkwrap.json", "pnpm-lock.yaml", "yarn.lock", "bun.lockb", "bun.lock",
        "Cargo.lock", "go.sum", "Gemfile.lock", "composer.lock",
    )),
    "ci": ScopeRules((
        ".github/workflows/", ".gitlab-ci.yml", ".circleci/", ".travis.yml",
        "azure-pipelines.yml", "Jenkinsfile", ".buildkite/", "bitbucket-pipelines.yml",
    )),
}  # fmt: skip


def dependency_kind(path: str) -> DependencyKind | None:
    """Whether `path` is a dependency manifest, a lockfile, CI configuration, or none."""
    return next((kind for kind, rules in _KINDS.items() if rules.allows(path)), None)


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
