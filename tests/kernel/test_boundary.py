from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from kernel.boundary import Scope, escapes, first_match, matches, witnesses


@pytest.mark.parametrize(
    ("patterns", "path", "hit"),
    [
        (["src/**"], "src/a/b.py", True),
        (["src/**"], "src", False),
        (["*.lock"], "deep/dir/poetry.lock", True),
        (["/top.txt"], "a/top.txt", False),
        (["docs/"], "docs/x.md", True),
        (["src/**", "!src/gen/**"], "src/gen/x.py", False),
        (["a/**/b"], "a/b", True),
        (["src/*.py"], "src/a/x.py", False),
    ],
)
def test_gitignore_semantics(patterns: list[str], path: str, hit: bool) -> None:
    assert matches(patterns, path) is hit


def test_first_match_skips_negations() -> None:
    assert first_match(["!x/**", "x/**", "y"], "x/1") == 1
    assert first_match(["y"], "x") is None


@pytest.mark.parametrize(
    "pattern",
    ["src/**", "*.lock", "pyproject.toml", "docs/", "a/**/b", "src/*.py", "/top.txt", "**",
     "req*.txt", "[abc]x", "fi?e", r"\*lit", "!neg/**"],
)  # fmt: skip
def test_witnesses_match_their_own_pattern(pattern: str) -> None:
    found = witnesses(pattern)
    assert found
    positive = pattern.removeprefix("!")
    assert all(matches([positive], w) for w in found)


def test_witnesses_of_comments_and_blanks_are_empty() -> None:
    assert witnesses("# note") == witnesses("  ") == ()


OUTER = Scope(("src/**", "tests/**"), ("src/secrets/**", "*.lock"))


@pytest.mark.parametrize(
    ("inner", "expected"),
    [
        (Scope(("src/report/**",)), [(0, "*.lock")]),
        (Scope(("src/report/**",), ("*.lock",)), []),
        (Scope(("src/report/cli.py", "tests/test_x.py")), []),
        (Scope(("src/**",), ("src/secrets/**", "*.lock")), []),
        (Scope(("docs/**",)), [(0, None)]),
        (Scope(("src/**",)), [(0, "*.lock"), (0, "src/secrets/**")]),
        (Scope(("src/secrets/key.pem",)), [(0, "src/secrets/**")]),
        (
            Scope(("tests/**", "**")),
            [(0, "*.lock"), (1, None), (1, "*.lock"), (1, "src/secrets/**")],
        ),
        (Scope(("src/*.lock",)), [(0, "*.lock")]),
    ],
)
def test_escapes(inner: Scope, expected: list[tuple[int, str | None]]) -> None:
    found = escapes(inner, OUTER)
    assert [(e.inner_index, e.forbidden_by) for e in found] == expected
    for e in found:
        assert inner.allows(e.path) and not OUTER.allows(e.path)


def test_escape_examples_are_readable() -> None:
    (e,) = escapes(Scope(("docs/**",)), OUTER)
    assert e.path == "docs/w"


segments = st.sampled_from(["src", "tests", "docs", "lib", "*", "**", "*.py", "x.lock", "gen"])
patterns = st.lists(segments, min_size=1, max_size=3).map("/".join)


@given(st.lists(patterns, min_size=1, max_size=3), st.lists(patterns, max_size=2))
def test_a_scope_is_inside_itself_and_reported_escapes_are_real(
    allowed: list[str], forbidden: list[str]
) -> None:
    scope = Scope(tuple(allowed), tuple(forbidden))
    assert escapes(scope, scope) == []
    wider = Scope(("**",))
    assert escapes(scope, wider) == []
    for e in escapes(wider, scope):
        assert wider.allows(e.path) and not scope.allows(e.path)
