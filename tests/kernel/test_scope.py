"""What a workspace glob matches, and that every part of the kernel that matches globs agrees:
the QA reviewer (a changed file against the pack's scope) and the boundary guard (a pack's
scope against the frozen boundary) give the same answer on the same glob and path."""

from __future__ import annotations

import msgspec
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import protocol
from kernel import ScopePatternError, ScopeRules, guard_violations, review
from kernel.guard import ViolationKind
from kernel.scope import glob_problem, matches, normalize_path
from kernel.snapshot import freeze
from protocol import BoundarySnapshot, ProtocolError, StepPack, scope_pattern_problem
from tests.kernel.qa_cases import small_case, small_pack

# (glob, path, does the glob match the path)
TABLE = [
    ("README.md", "README.md", True),
    ("README.md", "docs/README.md", False),  # anchored at the workspace root
    ("**/README.md", "docs/README.md", True),
    ("**/README.md", "README.md", True),
    ("**", "src/a/b.py", True),
    ("**", ".env", True),
    ("src/**", "src/a/b.py", True),
    ("src/**", "srcx/a.py", False),
    ("a/**/b.py", "a/b.py", True),
    ("a/**/b.py", "a/x/y/b.py", True),
    ("docs/", "docs/a.md", True),  # a trailing / names a directory and what is below it
    ("docs/", "docs/deep/a.md", True),
    ("docs/", "docsx/a.md", False),
    ("docs", "docs/a.md", True),
    ("*.lock", "yarn.lock", True),
    ("*.lock", "sub/yarn.lock", False),
    ("**/*.lock", "sub/yarn.lock", True),
    ("*", ".env", True),  # dotfiles get no special treatment
    (".*", ".env", True),
    (".*", "src/.env", False),
    ("src/*", "src/.hidden.py", True),
    ("src/*", "src/a/b.py", False),  # `*` stays inside one directory
    ("src/*.py", "src/a/x.py", False),
    ("ünï/*.md", "ünï/ä.md", True),
    ("ünï/*.md", "uni/a.md", False),
    ("日本/**", "日本/資料.txt", True),
    ("[ab].py", "a.py", True),
    ("[ab].py", "c.py", False),
    ("a?.py", "ab.py", True),
    ("!x.md", "!x.md", True),  # no negation: a leading ! is literal
    ("#x.md", "#x.md", True),  # nor comments
    ("a b/*.txt", "a b/c d.txt", True),
    ("Makefile", "Makefile", True),
    ("Makefile", "src/Makefile", False),
    ("docs/", "docs", False),  # a file named docs is not the directory docs/
    ("docs", "docs", True),
]


@pytest.mark.parametrize(("pattern", "path", "hit"), TABLE)
def test_glob_semantics(pattern: str, path: str, hit: bool) -> None:
    assert matches(pattern, path) is hit


@pytest.mark.parametrize(
    ("pattern", "path", "hit"),
    [
        ("src/**", "./src//a.py", True),  # paths are normalised first
        ("**", "../x.py", False),  # unsafe paths match nothing
        ("**", "/etc/passwd", False),
        ("**", "C:/x.py", False),
        ("./src/**", "src/a.py", False),  # unusable globs match nothing
        ("a\\", "a", False),
    ],
)
def test_paths_are_normalised_and_unusable_globs_match_nothing(
    pattern: str, path: str, hit: bool
) -> None:
    assert matches(pattern, path) is hit


def _reviewer_allows(pattern: str, path: str) -> tuple[bool, bool]:
    """What the QA reviewer says of `path` changed under a pack that allows `pattern`, and
    under one that allows everything but forbids `pattern`."""
    _, result, facts = small_case()
    result = msgspec.structs.replace(result, files_changed=[path])
    facts = msgspec.structs.replace(facts, changed_files=(path,))
    allowed = review(
        small_pack(allowed_paths=[pattern], forbidden_paths=[]), result, facts, round_no=1
    )
    forbidden = review(
        small_pack(allowed_paths=["**"], forbidden_paths=[pattern]), result, facts, round_no=1
    )
    (a,) = allowed.scope_checks
    (f,) = forbidden.scope_checks
    return a.allowed, f.forbidden_matches == [pattern]


def _guard_allows(pattern: str, path: str) -> tuple[bool, bool]:
    """What the guard says of a pack whose scope is exactly the file `path`, under a boundary
    that allows `pattern`, and under one that allows everything but forbids `pattern`.

    A glob without a trailing / also names a directory's contents, so the pack forbids
    ``path/`` to leave only the file itself in its scope.
    """
    pack = small_pack(allowed_paths=[path], forbidden_paths=[f"{path}/"])

    def kinds(allowed: list[str], forbidden: list[str]) -> set[ViolationKind]:
        boundary = BoundarySnapshot(
            source_sha256="0" * 64,
            allowed_paths=allowed,
            forbidden_paths=forbidden,
            allowed_commands=list(pack.commands_to_run),
        )
        return {v.kind for v in guard_violations(pack, freeze(boundary))}

    outside = kinds([pattern], [])
    inside_forbidden = kinds(["**"], [pattern])
    return (
        ViolationKind.PATH_OUTSIDE_BOUNDARY not in outside,
        ViolationKind.PATH_FORBIDDEN_BY_BOUNDARY in inside_forbidden,
    )


# The guard sees a path through a pack that allows exactly that path, so the paths must be
# free of glob characters.
AGREEMENT = [row for row in TABLE if not any(c in row[1] for c in "*?[")]


@pytest.mark.parametrize(("pattern", "path", "hit"), AGREEMENT)
def test_guard_and_reviewer_agree_on_what_a_glob_matches(
    pattern: str, path: str, hit: bool
) -> None:
    assert _reviewer_allows(pattern, path) == (hit, hit)
    assert _guard_allows(pattern, path) == (hit, hit)


segment = st.sampled_from(["src", "docs", "a.py", "*", "**", "*.py", ".env", "ü.md", "x.lock"])
file_name = st.sampled_from(["a.py", ".env", "ü.md", "x.lock", "README.md", "Makefile", "src"])
directory = st.sampled_from(["src", "docs", "src/deep", ".github", "ü"])


@settings(max_examples=60, deadline=None)
@given(
    st.lists(segment, min_size=1, max_size=3).map("/".join),
    st.lists(directory, max_size=2).map("/".join),
    file_name,
    st.booleans(),
)
def test_guard_and_reviewer_agree_on_generated_globs(
    pattern: str, where: str, name: str, trailing_slash: bool
) -> None:
    if trailing_slash and not pattern.endswith("**"):
        pattern += "/"
    path = f"{where}/{name}" if where else name
    hit = matches(pattern, path)
    assert _reviewer_allows(pattern, path) == (hit, hit)
    assert _guard_allows(pattern, path) == (hit, hit)


@given(st.text(alphabet="ab/.\\:*C \x00\n!#[]-", max_size=8))
def test_a_usable_glob_is_already_in_the_canonical_path_form(pattern: str) -> None:
    """Protocol decides a glob's form, the kernel normalises paths: a glob both accept is
    written exactly as the normalised paths it is matched against."""
    if glob_problem(pattern) is None:
        body = pattern.removesuffix("/")
        assert normalize_path(body) == body
    if scope_pattern_problem(pattern) is not None:
        assert glob_problem(pattern) == scope_pattern_problem(pattern)


def scoped_pack(**scope: list[str]) -> StepPack:
    """`small_pack` with its scope given only under ``scope``, as some real packs do."""
    raw = protocol.to_builtins(small_pack())
    del raw["allowed_paths"], raw["forbidden_paths"]
    return protocol.convert({**raw, "scope": scope}, StepPack)


def test_scope_rules_name_the_json_path_the_pack_used() -> None:
    pack = scoped_pack(allowed_paths=["src/**", "src/a\\"], forbidden_paths=["[z-a]"])
    with pytest.raises(ScopePatternError) as err:
        ScopeRules.of(pack.view)
    assert err.value.field == "$.scope.allowed_paths[1]"
    assert "$.scope.allowed_paths[1]: pattern 'src/a\\\\' is unusable" in str(err.value)
    with pytest.raises(ScopePatternError) as err:
        ScopeRules(("src/**",), ("[z-a]",))
    assert err.value.field == "$.forbidden_paths[0]"


@pytest.mark.parametrize(
    ("pattern", "words"),
    [
        ("/etc/**", "absolute"),
        ("C:src/**", "absolute"),
        ("../up/**", "'..'"),
        ("./src/**", "empty or '.' component"),
        ("src//x", "empty or '.' component"),
        (" ", "empty path pattern"),
    ],
)
def test_a_glob_of_bad_form_never_decodes_and_names_the_path_the_pack_used(
    pattern: str, words: str
) -> None:
    with pytest.raises(ProtocolError) as err:
        scoped_pack(allowed_paths=["src/**", pattern])
    assert err.value.path == "$.scope.allowed_paths[1]"
    assert words in err.value.reason


def test_a_pack_with_a_directory_glob_decodes() -> None:
    pack = small_pack(allowed_paths=["docs/", "src/**"])
    assert isinstance(pack, StepPack)
    assert ScopeRules.of(pack.view).allows("docs/a.md")


def test_a_glob_python_would_warn_about_is_refused_as_ambiguous() -> None:
    """``[[`` in a class compiles with a FutureWarning today and may mean a nested set later."""
    problem = glob_problem("src/[[]x.py")
    assert problem is not None and "ambiguous character class" in problem
    assert glob_problem("src/[ab]x.py") is None
