"""Hostile input to every decoder: only `ProtocolError` may come out."""

from __future__ import annotations

import contextlib
import json
from typing import Any

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from protocol import KINDS, ProtocolError, StepPack, decode, decode_kind
from tests.conftest import SEED_PACKS

json_values = st.recursive(
    st.none()
    | st.booleans()
    | st.integers(min_value=-(2**70), max_value=2**70)
    | st.floats(allow_nan=False)
    | st.text(max_size=20),
    lambda children: (
        st.lists(children, max_size=5) | st.dictionaries(st.text(max_size=10), children, max_size=5)
    ),
    max_leaves=30,
)

SEEDS = [json.loads(p.read_text(encoding="utf-8")) for p in SEED_PACKS]


def decodes_or_protocol_error(raw: bytes | str, kind: str | None = None) -> None:
    with contextlib.suppress(ProtocolError):
        decode_kind(raw.encode() if isinstance(raw, str) else raw, kind)


@settings(max_examples=300, suppress_health_check=[HealthCheck.too_slow])
@given(st.binary(max_size=200), st.sampled_from([None, *sorted(KINDS)]))
def test_random_bytes_give_protocol_error(raw: bytes, kind: str | None) -> None:
    decodes_or_protocol_error(raw, kind)


@settings(max_examples=300, suppress_health_check=[HealthCheck.too_slow])
@given(json_values, st.sampled_from([None, *sorted(KINDS)]))
def test_arbitrary_json_gives_protocol_error(value: Any, kind: str | None) -> None:
    decodes_or_protocol_error(json.dumps(value), kind)


def paths(value: Any, prefix: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
    out = [prefix]
    if isinstance(value, dict):
        for k, v in value.items():
            out += paths(v, (*prefix, k))
    elif isinstance(value, list):
        for i, v in enumerate(value):
            out += paths(v, (*prefix, i))
    return out


@st.composite
def mutated_pack(draw: st.DrawFn) -> Any:
    doc = json.loads(json.dumps(draw(st.sampled_from(SEEDS))))
    for _ in range(draw(st.integers(1, 3))):
        where = draw(st.sampled_from(paths(doc)[1:]))
        parent: Any = doc
        for key in where[:-1]:
            parent = parent[key]
        action = draw(st.sampled_from(["replace", "delete"]))
        if action == "delete":
            del parent[where[-1]]
        else:
            parent[where[-1]] = draw(json_values)
    return doc


@settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(mutated_pack())
def test_mutated_real_packs_decode_or_give_protocol_error(doc: Any) -> None:
    try:
        decode(json.dumps(doc), StepPack)
    except ProtocolError as err:
        assert err.path.startswith("$")
        assert err.reason


def test_deep_nesting_is_a_protocol_error() -> None:
    raw = "[" * 100_000 + "]" * 100_000
    decodes_or_protocol_error(raw, "step-pack")
    raw = '{"task_id":' * 5000
    decodes_or_protocol_error(raw, "step-result")


def test_invalid_utf8_inside_a_string_is_a_protocol_error() -> None:
    # msgspec raises UnicodeDecodeError (not DecodeError) for these: it must not escape.
    for raw in (b'{"\x80": 1}', b'{"verdict": "P\xff"}', b'"\xed\xa0\x80"'):
        for kind in (None, "step-result", "step-pack"):
            decodes_or_protocol_error(raw, kind)
