from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from kernel.boundary import escapes, witnesses
from kernel.scope import ScopeRules, matches


@pytest.mark.parametrize(
    "pattern",
    ["src/**", "*.lock", "pyproject.toml", "docs/", "a/**/b", "src/*.py", "**", "**/*.lock",
     "req*.txt", "[abc]x", "fi?e", r"a/\*lit", "!neg/**", "#hash", "ünï/*.md"],
)  # fmt: skip
def test_witnesses_match_their_own_pattern(pattern: str) -> None:
    found = witnesses(pattern)
    assert found
    assert all(matches(pattern, w) for w in found)


@pytest.mark.parametrize("pattern", ["  ", "/abs", "../up", "a\\", "[z-a]"])
def test_unusable_patterns_have_no_witnesses(pattern: str) -> None:
    assert witnesses(pattern) == ()


OUTER = ScopeRules(("src/**", "tests/**"), ("src/secrets/**", "**/*.lock"))


@pytest.mark.parametrize(
    ("inner", "expected"),
    [
        (ScopeRules(("src/report/**",)), [(0, "**/*.lock")]),
        (ScopeRules(("src/report/**",), ("**/*.lock",)), []),
        # anchored: `*.lock` forbids root lockfiles only, so it does not cover src/report/x.lock
        (ScopeRules(("src/report/**",), ("*.lock",)), [(0, "**/*.lock")]),
        (ScopeRules(("src/report/cli.py", "tests/test_x.py")), []),
        (ScopeRules(("src/**",), ("src/secrets/**", "**/*.lock")), []),
        (ScopeRules(("docs/**",)), [(0, None)]),
        (ScopeRules(("src/**",)), [(0, "**/*.lock"), (0, "src/secrets/**")]),
        (ScopeRules(("src/secrets/key.pem",)), [(0, "src/secrets/**")]),
        (
            ScopeRules(("tests/**", "**")),
            [(0, "**/*.lock"), (1, None), (1, "**/*.lock"), (1, "src/secrets/**")],
        ),
        (ScopeRules(("src/*.lock",)), [(0, "**/*.lock")]),
        (ScopeRules(("README.md",)), [(0, None)]),
        (ScopeRules(("**/README.md",)), [(0, None), (0, "src/secrets/**")]),
    ],
)
def test_escapes(inner: ScopeRules, expected: list[tuple[int, str | None]]) -> None:
    found = escapes(inner, OUTER)
    assert [(e.inner_index, e.forbidden_by) for e in found] == expected
    for e in found:
        assert inner.allows(e.path) and not OUTER.allows(e.path)


def test_escape_examples_are_readable() -> None:
    (e,) = escapes(ScopeRules(("docs/**",)), OUTER)
    assert e.path == "docs/w"


def test_a_tail_under_any_directory_is_placed_under_the_other_scopes_directories() -> None:
    (e,) = escapes(ScopeRules(("**/README.md",)), ScopeRules(("**",), ("vendor/**",)))
    assert (e.path, e.forbidden_by) == ("vendor/README.md", "vendor/**")


segments = st.sampled_from(["src", "tests", "docs", "lib", "*", "**", "*.py", "x.lock", "gen"])
patterns = st.lists(segments, min_size=1, max_size=3).map("/".join)


@given(st.lists(patterns, min_size=1, max_size=3), st.lists(patterns, max_size=2))
def test_a_scope_is_inside_itself_and_reported_escapes_are_real(
    allowed: list[str], forbidden: list[str]
) -> None:
    scope = ScopeRules(tuple(allowed), tuple(forbidden))
    assert escapes(scope, scope) == []
    wider = ScopeRules(("**",))
    assert escapes(scope, wider) == []
    for e in escapes(wider, scope):
        assert wider.allows(e.path) and not scope.allows(e.path)
