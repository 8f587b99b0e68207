from __future__ import annotations

import pytest

from protocol import ProtocolError, check_id, is_safe_id


@pytest.mark.parametrize(
    "value", ["T-013", "MVP-2_20260224T162739Z_ctrl", "a", "A.b_c-d", "x" * 128]
)
def test_safe_ids(value: str) -> None:
    assert check_id("task id", value) == value


@pytest.mark.parametrize(
    "value",
    [
        "",
        "..",
        "a..b",
        "../x",
        "a/b",
        "a\\b",
        "/abs",
        ".hidden",
        "-flag",
        "a\x00b",
        "a\nb",
        "x" * 129,
        "sp ace",
        "é",
    ],
)
def test_unsafe_ids_are_rejected(value: str) -> None:
    assert not is_safe_id(value)
    with pytest.raises(ProtocolError, match="invalid task id"):
        check_id("task id", value)
