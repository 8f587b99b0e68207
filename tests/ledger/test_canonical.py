"""The canonical form is RFC 8785's for every value a ledger event can hold."""

from __future__ import annotations

import hashlib
import json
from typing import Any

import msgspec
import pytest
from hypothesis import given
from hypothesis import strategies as st

from ledger.canonical import canonical
from ledger.errors import InvalidEvent
from protocol.ledger_events import LEDGER_RECORD, MAX_SAFE_INT


def test_rfc8785_string_and_literal_example() -> None:
    # RFC 8785 section 3.2.2 example, without its "numbers" member (the ledger has no floats).
    given_doc = json.loads(
        r"""{"string": "\u20ac$\u000F\u000aA'\u0042\u0022\u005c\\\"\/", """
        r""""literals": [null, true, false]}"""
    )
    expected = r"""{"literals":[null,true,false],"string":"€$\u000f\nA'B\"\\\\\"/"}"""
    assert canonical(given_doc) == expected.encode()


def test_rfc8785_utf8_sorting_example() -> None:
    # RFC 8785 section 3.2.4: keys with non-ASCII characters sort by code unit, not by locale.
    doc = {"peach": 1, "péché": 2, "pêche": 3, "sin": 4}
    assert canonical(doc) == '{"peach":1,"péché":2,"pêche":3,"sin":4}'.encode()


def test_rfc8785_sorting_example_bmp_members() -> None:
    # RFC 8785 section 3.2.3, the members below U+FFFF: sorted as the RFC sorts them.
    doc = {"\u20ac": "Euro Sign", "\r": "Carriage Return", "1": "One", "\u0080": "Control",
           "\u00f6": "Latin Small Letter O With Diaeresis"}  # fmt: skip
    keys = list(msgspec.json.decode(canonical(doc)))
    assert keys == ["\r", "1", "\u0080", "\u00f6", "\u20ac"]


def test_supplementary_member_names_are_the_documented_restriction() -> None:
    # JCS sorts by UTF-16 code units, so U+1F600 (D83D DE00) sorts before U+FB33; msgspec
    # sorts by code point. Ledger events never carry such member names (next test).
    doc = {"\ufb33": 1, "\U0001f600": 2}
    assert list(msgspec.json.decode(canonical(doc))) == ["\ufb33", "\U0001f600"]


def test_every_member_name_in_ledger_events_is_ascii() -> None:
    schema = msgspec.json.schema(LEDGER_RECORD)

    def names(node: Any) -> list[str]:
        if isinstance(node, dict):
            found = list(node.get("properties", {}))
            return found + [n for v in node.values() for n in names(v)]
        if isinstance(node, list):
            return [n for v in node for n in names(v)]
        return []

    all_names = names(schema)
    assert all_names and all(name.isascii() for name in all_names)
    # No free-form maps: every object in the schema forbids members it does not name.
    extra = json.dumps(schema).count('"additionalProperties": false')
    assert json.dumps(schema).count('"additionalProperties"') == extra


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ("\x00\x1f", '"\\u0000\\u001f"'),
        ("\b\t\n\f\r", '"\\b\\t\\n\\f\\r"'),
        ("\x7f", '"\x7f"'),
        ("\u2028\u2029", '"\u2028\u2029"'),
        ("é😀", '"é😀"'),
        ("</script>", '"</script>"'),
        (MAX_SAFE_INT, "9007199254740991"),
        (-MAX_SAFE_INT, "-9007199254740991"),
        (0, "0"),
    ],
)
def test_escapes_and_integers_match_jcs(value: object, expected: str) -> None:
    assert canonical(value) == expected.encode()


def test_lone_surrogate_has_no_canonical_form() -> None:
    with pytest.raises(InvalidEvent):
        canonical({"a": "\ud800"})


json_values = st.recursive(
    st.none()
    | st.booleans()
    | st.integers(min_value=-MAX_SAFE_INT, max_value=MAX_SAFE_INT)
    | st.text(st.characters(exclude_categories=["Cs"])),
    lambda children: (
        st.lists(children, max_size=4)
        | st.dictionaries(
            st.text(st.characters(max_codepoint=127), max_size=6), children, max_size=4
        )
    ),
    max_leaves=20,
)


@given(json_values)
def test_canonical_equals_an_independent_jcs_rendering(value: object) -> None:
    # For these values (no floats, ASCII member names) JCS is what Python's json module writes
    # with sorted keys, no whitespace and raw UTF-8: an independent implementation to compare.
    reference = json.dumps(value, sort_keys=True, separators=(",", ":"), ensure_ascii=False)
    assert canonical(value) == reference.encode()
    assert (
        hashlib.sha256(canonical(value)).hexdigest()
        == hashlib.sha256(reference.encode()).hexdigest()
    )
